"""The `ironwatt` command line: one module per command group, `main` the entry point."""

from gateway.cli.main import main

__all__ = ["main"]
