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
    "gateway.cli.run",
    "gateway.cli.check",
    "gateway.cli.modbus",
    "gateway.cli.opcua",
    "gateway.cli.outbox",
    "gateway.cli.accounting",
)


def _version() -> str:
    import ext

    return f"ironwatt {__version__} (kernel: {ext.IMPLEMENTATION})"


def _global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: info)",
    )


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with `only` just the command group that registers `only`."""
    parser = argparse.ArgumentParser(
        prog="ironwatt",
        description="Edge gateway: Modbus and OPC UA in, energy windows out over MQTT.",
    )
    _global_options(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        before = set(subparsers.choices)
        importlib.import_module(name).register(subparsers)
        if only is not None and only in set(subparsers.choices) - before:
            break
    _options_after_the_command(parser)
    return parser


def _options_after_the_command(parser: argparse.ArgumentParser) -> None:
    """`ironwatt check --log-level debug` as well as `ironwatt --log-level debug check`: every
    command (at any depth) takes the global --log-level too. Its default is SUPPRESS, so a
    command given none leaves the global value in place."""
    for action in parser._actions:  # argparse offers no public walk of its subcommands
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if "--log-level" not in sub._option_string_actions:
                    sub.add_argument(
                        "--log-level", default=argparse.SUPPRESS,
                        choices=["debug", "info", "warning", "error"],
                        help="log verbosity (as before the command)",
                    )  # fmt: skip
                _options_after_the_command(sub)


def _daemon_command(argv: Sequence[str]) -> str | None:
    """The daemon's command ("run") when that is what `argv` asks for, else None.

    The daemon registers only its own command group: the others import what the technician's
    tools need (the OPC UA helpers among them, ~0.7 MB that would stay resident for as long as
    the daemon runs)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--log-level")
    try:
        _known, rest = pre.parse_known_args(argv)
    except SystemExit:  # a malformed global option: the full parser says what is wrong
        return None
    return "run" if rest[:1] == ["run"] else None


def main(argv: Sequence[str] | None = None) -> int:
    from gateway.errors import ConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_daemon_command(argv))
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
