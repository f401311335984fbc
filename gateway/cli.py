"""The `ironwatt` command: argparse front end; each command group lives in its own module.

A module in COMMAND_MODULES exposes `register(subparsers)`; handlers return an exit code.
Config problems exit 2 with the report and never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from gateway import __version__

__all__ = ["main"]

# Command groups, in the order `ironwatt --help` lists them. Each imports its heavy
# dependencies inside its handlers, so `ironwatt check` never loads asyncua.
COMMAND_MODULES = (
    "gateway.cli_run",
    "gateway.cli_check",
    "gateway.cli_modbus",
    "gateway.cli_opcua",
    "gateway.cli_buffer",
)


def _version() -> str:
    import ext

    return f"ironwatt {__version__} (kernel: {ext.IMPLEMENTATION})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ironwatt",
        description="Edge gateway: Modbus and OPC UA in, energy windows out over MQTT.",
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: info)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from gateway.config_base import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler = getattr(args, "func", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(handler(args))
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `ironwatt ... | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
