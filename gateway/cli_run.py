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

from gateway.config_base import DEFAULT_PATH

__all__ = ["register"]


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
        "exit 0 when applied, 2 when the file was refused (the running config stays), 1 when no "
        "gateway answered. The unit's ExecReload= runs it, so `systemctl reload ironwatt` fails "
        "when the file is refused. It reads no config and needs no credentials.",
    )
    reload.add_argument(
        "--socket", metavar="PATH", type=Path,
        help="the gateway's control socket (default: control.sock in $RUNTIME_DIRECTORY or "
        "/run/ironwatt, else in the data_dir of the config)",
    )  # fmt: skip
    _config_arg(reload)
    reload.add_argument(
        "--timeout", type=float, default=50.0, metavar="SECONDS",
        help="how long to wait for the verdict (default 50, within the unit's TimeoutStartSec)",
    )  # fmt: skip
    reload.set_defaults(func=_reload)

    status = subparsers.add_parser(
        "status",
        help="show a running gateway's devices, buffer and uplink",
        description="Reads /status from the gateway's local listener ([http] listen in the "
        "config, or --url) and prints it as a table (or --json).",
    )
    _config_arg(status)
    status.add_argument("--url", help="the listener, e.g. http://127.0.0.1:9108")
    status.add_argument("--json", action="store_true", help="print the raw JSON document")
    status.set_defaults(func=_status)

    demo = subparsers.add_parser(
        "demo",
        help="run a simulated plant, a broker and the gateway; print what gets published",
        description="Starts simulated Modbus meters and an OPC UA PLC, a Mosquitto on a free "
        "loopback port and the gateway with 10 s windows, and prints the MQTT messages.",
    )
    demo.add_argument(
        "--duration", type=float, default=60.0, metavar="SECONDS",
        help="stop after this long (default 60; Ctrl-C stops earlier)",
    )  # fmt: skip
    demo.add_argument("--no-opcua", action="store_true", help="leave the OPC UA PLC out")
    demo.add_argument("--keep", action="store_true", help="keep the demo's temporary directory")
    demo.set_defaults(func=_demo)


def _run(args: argparse.Namespace) -> int:
    from gateway.logs import setup_logging
    from gateway.runtime import run_gateway

    setup_logging(args.run_log_level or args.log_level, args.log_format)
    return run_gateway(args.config)


def _reload_socket(args: argparse.Namespace) -> Path:
    """--socket, else the unit's runtime folder, else the data_dir of the config (a gateway run
    by hand). The config is only looked into for data_dir: a broken file must not stop the
    reload that is to say it is broken."""
    import tomllib

    from gateway.reload_control import SOCKET_NAME, default_socket

    if args.socket is not None:
        return Path(args.socket)
    path = default_socket()
    if path.exists():
        return path
    config = Path(args.config)
    try:
        data_dir = tomllib.loads(config.read_text(encoding="utf-8"))["gateway"]["data_dir"]
    except (OSError, ValueError, KeyError, TypeError):
        return path
    if not isinstance(data_dir, str):
        return path
    folder = Path(data_dir) if Path(data_dir).is_absolute() else config.parent / data_dir
    return folder / SOCKET_NAME


def _reload(args: argparse.Namespace) -> int:
    from gateway.reload_control import ask_reload

    path = _reload_socket(args)
    try:
        outcome = ask_reload(path, args.timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        print(
            f"ironwatt reload: no verdict from a gateway at {path} ({exc}): is it running "
            "(systemctl status ironwatt)?",
            file=sys.stderr,
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
    import urllib.error
    import urllib.request

    from gateway.runtime_status import render_table

    url = args.url
    if url is None:
        from gateway.config import load_config

        cfg = load_config(args.config)
        if cfg.http is None:
            print(
                f"{args.config} has no [http] section: the gateway serves no status. Add\n"
                '  [http]\n  listen = "127.0.0.1:9108"\n'
                "and restart the gateway (systemctl restart ironwatt: a reload does not open the\n"
                "listener), or pass --url.",
                file=sys.stderr,
            )
            return 2
        host, _, port = cfg.http.listen.rpartition(":")
        host = host.strip("[]")
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=5) as response:
            doc = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(
            f"no answer from {url}/status ({exc}): is the gateway running "
            "(systemctl status ironwatt) and is [http] enabled in its config?",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        sys.stdout.write(render_table(doc))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from gateway.sim.plant import run_demo

    return run_demo(duration=args.duration, opcua=not args.no_opcua, keep=args.keep)
