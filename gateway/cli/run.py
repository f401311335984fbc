"""`ironwatt run` (the daemon), `ironwatt reload` and `ironwatt status` (talk to a running one)
and `ironwatt demo`.

Heavy imports (drivers, the kernel, paho) happen inside the handlers, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from gateway.config.base import DEFAULT_PATH

__all__ = ["register"]

# gateway.daemon.reload_control.RELOAD_WAIT_S (not imported here: --help stays light; a test
# keeps the two equal): within the unit's TimeoutStartSec=, longer than a reload's validations.
_RELOAD_WAIT_S = 50.0
# gateway.config.model.GatewayConfig.data_dir's default (pydantic is not imported for it).
_DEFAULT_DATA_DIR = Path("/var/lib/ironwatt")


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", default=str(DEFAULT_PATH), metavar="FILE",
        help=f"the config file (default: {DEFAULT_PATH})",
    )  # fmt: skip


def register(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run",
        help="run the gateway (the daemon systemd starts)",
        description="Poll the devices, aggregate, buffer and publish until SIGTERM. "
        "SIGHUP reloads the config (a broken file is refused and the running one stays).",
    )
    _config_arg(run)
    run.add_argument(
        "--log-format", choices=["text", "json"], default="text",
        help="log lines on stderr: text (journald) or one JSON object per line",
    )  # fmt: skip
    run.add_argument(
        "--log-level", dest="run_log_level", default=None,
        choices=["debug", "info", "warning", "error"], help="overrides the global --log-level",
    )  # fmt: skip
    run.set_defaults(func=_run)

    reload = subparsers.add_parser(
        "reload",
        help="reload a running gateway's config and say whether it was applied",
        description="Asks the running gateway to re-read its config and waits for the verdict: "
        "exit 0 when applied, 2 when the file was refused (the running config stays), 3 when "
        "the gateway took the request but is still reloading after --timeout (it applies or "
        "refuses the file when done: systemctl status ironwatt, the journal), 1 when no gateway "
        "answered. The unit's ExecReload= runs it, so `systemctl reload ironwatt` fails when the "
        "file is refused. It validates nothing and needs no credentials: of -c FILE it reads "
        "only data_dir, to find the socket of a gateway run by hand.",
    )
    reload.add_argument(
        "--socket", metavar="PATH", type=Path,
        help="the gateway's control socket (default: control.sock in $RUNTIME_DIRECTORY when "
        "systemd runs this, else in the data_dir of -c FILE when given, else in /run/ironwatt, "
        "where the unit's gateway listens)",
    )  # fmt: skip
    reload.add_argument(
        "-c", "--config", default=None, metavar="FILE",
        help="the config of a gateway run by hand: ask the one listening in its data_dir",
    )  # fmt: skip
    reload.add_argument(
        "--timeout", type=float, default=_RELOAD_WAIT_S, metavar="SECONDS",
        help=f"how long to wait for the verdict (default {_RELOAD_WAIT_S:g}, within the unit's "
        "TimeoutStartSec=60s)",
    )  # fmt: skip
    reload.set_defaults(func=_reload)

    status = subparsers.add_parser(
        "status",
        help="show a running gateway's devices, buffer and uplink",
        description="Reads /status from the gateway's local listener ([http] listen in the "
        "config, or --url) or, without [http], from its control socket (owner-only: run as "
        "root or the service user), and prints it as a table (or --json).",
    )
    _config_arg(status)
    status.add_argument("--url", help="the listener, e.g. http://127.0.0.1:9108")
    status.add_argument(
        "--socket", type=Path, metavar="PATH",
        help="the control socket (default: /run/ironwatt/control.sock, else data_dir's)",
    )  # fmt: skip
    status.add_argument("--json", action="store_true", help="print the raw JSON document")
    status.set_defaults(func=_status)

    demo = subparsers.add_parser(
        "demo",
        help="run a simulated plant, a broker and the gateway; print what gets published",
        description="Starts a simulated steel works (four Modbus meters under plant loads and an "
        "OPC UA PLC), an MQTT broker on a free loopback port (Mosquitto, or amqtt when Mosquitto "
        "is not installed) and the gateway with 10 s windows and process groups; shows what a "
        "subscriber receives (a live view, or lines), takes a meter away and cuts the gateway's "
        "network to the broker on cue, and ends with a verdict (seq holes, revisions, replays, "
        "a meter's total against the simulator's).",
    )
    demo.add_argument(
        "--for", "--duration", dest="duration", type=_demo_span, default=90.0, metavar="SPAN",
        help="stop after this long: 90s, 2m or seconds (default 90s; Ctrl-C stops earlier)",
    )  # fmt: skip
    demo.add_argument("--no-opcua", action="store_true", help="leave the OPC UA PLC out")
    demo.add_argument("--keep", action="store_true", help="keep the demo's temporary directory")
    demo.add_argument(
        "--plain", action="store_true",
        help="print each message as lines instead of the live view (chosen by itself when "
        "stdout is not a terminal)",
    )  # fmt: skip
    demo.set_defaults(func=_demo)

    sim = subparsers.add_parser(
        "sim",
        help="run the demo's simulated steel works alone, for the CLI tools to try",
        description="Starts the demo's Modbus meters and OPC UA PLC on loopback and keeps them "
        "running; with --config-out writes the gateway config that reads them.",
    )
    sim.add_argument("--config-out", type=Path, metavar="FILE", help="write the matching config")
    sim.add_argument(
        "--broker", default="mqtt://127.0.0.1:1883", metavar="URL",
        help="the MQTT broker the written config names (default mqtt://127.0.0.1:1883)",
    )  # fmt: skip
    sim.add_argument("--for", dest="duration", type=_sim_span, metavar="SPAN",
                     help="stop after this long (default: until Ctrl-C)")  # fmt: skip
    sim.add_argument("--no-opcua", action="store_true", help="leave the OPC UA PLC out")
    sim.set_defaults(func=_sim)


def _demo_span(text: str) -> float:
    """--for: "90s", "2m", "1m30s" or plain seconds; at least 60 s (the cues need them)."""
    seconds = _sim_span(text)
    if seconds < 60:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the demo needs at least 60 s (a meter drops out and the network to the "
            "broker goes down on cue)"
        )
    return seconds


def _sim_span(text: str) -> float:
    """A span: "90s", "2m", "1m30s" or plain seconds."""
    from drivers.fields import parse_duration

    try:
        return float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _run(args: argparse.Namespace) -> int:
    from gateway.daemon import run_gateway
    from gateway.daemon.logs import setup_logging

    setup_logging(args.run_log_level or args.log_level, args.log_format)
    return run_gateway(args.config)


class _NoSocket(Exception):
    """Where the gateway listens cannot be told (the message says why)."""


def _by_config(args: argparse.Namespace) -> bool:
    """Whether the socket is looked up in the data_dir of -c FILE (see _reload_socket)."""
    return (
        args.socket is None and args.config is not None and not os.environ.get("RUNTIME_DIRECTORY")
    )


def _reload_socket(args: argparse.Namespace) -> Path:
    """--socket; else the unit's runtime folder when systemd runs this ($RUNTIME_DIRECTORY,
    ExecReload=) or when no -c was given (/run/ironwatt, the unit's gateway); else the data_dir
    of -c FILE, where a gateway run by hand with that file listens (never another gateway's
    socket). Of the file only data_dir is read, as plain TOML: a file the gateway will refuse
    must still reach it, to be refused with its report."""
    import tomllib

    from gateway.daemon.reload_control import SOCKET_NAME, default_socket

    if args.socket is not None:
        return Path(args.socket)
    if not _by_config(args):
        return default_socket()
    config = Path(args.config)
    try:
        doc = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeError) as exc:
        raise _NoSocket(f"cannot read {config} ({exc}); pass --socket") from None
    except tomllib.TOMLDecodeError as exc:
        raise _NoSocket(
            f"{config} is not TOML ({exc}): see `ironwatt check -c {config}`, or pass --socket"
        ) from None
    table = doc.get("gateway", {})
    data_dir = table.get("data_dir", str(_DEFAULT_DATA_DIR)) if isinstance(table, dict) else None
    if not isinstance(data_dir, str) or not data_dir:
        raise _NoSocket(f"{config}: gateway.data_dir is not a path; pass --socket")
    folder = Path(data_dir) if Path(data_dir).is_absolute() else config.parent / data_dir
    return folder / SOCKET_NAME


def _reload(args: argparse.Namespace) -> int:
    from gateway.daemon.reload_control import BadAnswer, NoVerdictYet, ask_reload

    try:
        path = _reload_socket(args)
    except _NoSocket as exc:
        print(f"ironwatt reload: cannot tell where the gateway listens: {exc}", file=sys.stderr)
        return 1
    try:
        outcome = ask_reload(path, args.timeout)
    except NoVerdictYet as exc:
        print(
            f"ironwatt reload: the gateway is still reloading ({exc}): it applies or refuses the "
            "file when done; see `systemctl status ironwatt` (Status:) or the journal "
            "(journalctl -u ironwatt)",
            file=sys.stderr,
        )
        return 3
    except BadAnswer as exc:
        print(
            f"ironwatt reload: the answer from {path} is not a verdict ({exc}): is that socket "
            "an ironwatt gateway of this version (restart it after an upgrade)?",
            file=sys.stderr,
        )
        return 1
    except (OSError, ValueError) as exc:  # ValueError: a path connect() cannot take
        hint = "is it running (systemctl status ironwatt)?"
        if _by_config(args):
            hint = (
                f"is a gateway running with {args.config}? (the one systemd runs listens in "
                "/run/ironwatt: `ironwatt reload` without -c)"
            )
        print(
            f"ironwatt reload: no verdict from a gateway at {path} ({exc}): {hint}", file=sys.stderr
        )
        return 1
    if outcome.applied:
        print(f"config reloaded: {outcome.summary}")
        for warning in outcome.warnings:
            print(f"warning: {warning}")
        return 0
    if os.environ.get("INVOCATION_ID") and outcome.report:
        # Run by systemd (ExecReload=): the gateway has just logged the whole report to the
        # same journal; one line here says why `systemctl reload` failed.
        print(f"reload refused, the running config stays: {outcome.summary}", file=sys.stderr)
    else:
        print(
            f"reload refused, the running config stays:\n{outcome.report or outcome.summary}",
            file=sys.stderr,
        )
    return 2


def _status(args: argparse.Namespace) -> int:
    from gateway.daemon.status import render_table

    got = _status_over_socket(args) if args.socket is not None else None
    if got is None:
        got = _status_document(args)
    if isinstance(got, int):
        return got
    if args.json:
        print(json.dumps(got, indent=2))
    else:
        sys.stdout.write(render_table(got))
    return 0


def _status_document(args: argparse.Namespace) -> dict[str, Any] | int:
    """/status over [http] (or --url); without [http], over the control socket."""
    from gateway.status_client import fetch_status

    url = args.url
    if url is None:
        from gateway.config.load import load_config

        cfg = load_config(args.config)
        if cfg.http is None:
            return _status_over_socket(args, Path(cfg.gateway.data_dir), cfg.gateway.id)
        host, _, port = cfg.http.listen.rpartition(":")
        host = host.strip("[]")
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    try:
        return fetch_status(url, 5.0)
    except (OSError, ValueError) as exc:  # urllib's URLError is an OSError
        print(
            f"no answer from {url}/status ({exc}): is the gateway running "
            "(systemctl status ironwatt) and is [http] enabled in its config?",
            file=sys.stderr,
        )
        return 1


def _status_over_socket(
    args: argparse.Namespace, data_dir: Path | None = None, gw: str | None = None
) -> dict[str, Any] | int:
    """The status from the daemon's control socket: --socket, else data_dir's (a gateway run
    by hand: only this config's makes one there), else the unit's runtime folder's. An answer
    from another gateway (`gw` differs) is passed over, never shown as this one's."""
    from gateway.daemon.reload_control import SOCKET_NAME, BadAnswer, ask_status, default_socket

    tried = [args.socket] if args.socket is not None else []
    if args.socket is None:
        tried += [data_dir / SOCKET_NAME] if data_dir is not None else []
        tried.append(default_socket())
    problems = []
    for path in tried:
        try:
            doc = ask_status(path, 5.0)
            if gw is not None and doc.get("gw") != gw:
                problems.append(f"{path}: gateway {doc.get('gw')!r} answered, not {gw!r}")
                continue
            return doc
        except PermissionError:
            problems.append(f"{path}: permission denied (the socket is the service user's: sudo)")
        except (OSError, BadAnswer) as exc:
            problems.append(f"{path}: {exc}")
    print(
        "no status from the gateway's control socket (the config has no [http]): "
        + "; ".join(problems)
        + ". Is the gateway running (systemctl status ironwatt)?",
        file=sys.stderr,
    )
    return 1


def _demo(args: argparse.Namespace) -> int:
    from gateway.sim.demo import run_demo

    plain = True if args.plain else None  # else: the live view on a terminal, lines otherwise
    return run_demo(duration=args.duration, opcua=not args.no_opcua, keep=args.keep, plain=plain)


def _sim(args: argparse.Namespace) -> int:
    from gateway.sim.plant import run_sim

    return run_sim(args.config_out, args.duration, not args.no_opcua, args.broker)
