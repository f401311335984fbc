"""`ironwatt opcua browse|read|trust`: the technician's tools for OPC UA servers.

asyncua is imported inside the handlers only, so `ironwatt --help` and `check` stay light.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from drivers.opcua import (
    ConnectionSettings,
    NodeIdError,
    OpcuaConnectError,
    describe_device,
    parse_node_id,
)
from drivers.opcua.security import (
    POLICIES,
    fingerprint,
    load_der,
    read_password,
    status_name,
    ua_module,
)

__all__ = ["describe_device", "register"]

DEFAULT_DATA_DIR = Path(os.environ.get("IRONWATT_DATA_DIR", "/var/lib/ironwatt"))
NUMERIC_TYPES = {
    "Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64",
    "Float", "Double",
}  # fmt: skip
SERVER_OBJECT = "i=2253"
STAMP = "%Y-%m-%d %H:%M"
T = TypeVar("T")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    security = argparse.ArgumentParser(add_help=False)
    group = security.add_argument_group("security")
    group.add_argument("--security-policy", choices=list(POLICIES), default="None")
    group.add_argument(
        "--security-mode", choices=["None", "Sign", "SignAndEncrypt"], default=None,
        help="default: SignAndEncrypt when a policy is set, else None",
    )  # fmt: skip
    group.add_argument("--username")
    group.add_argument("--password-file", type=Path)
    group.add_argument("--password-env", metavar="VAR")
    group.add_argument(
        "--server-certificate", type=Path, help="the pinned server certificate (from `trust`)"
    )
    group.add_argument("--certificate", type=Path, help="the client's own certificate (DER/PEM)")
    group.add_argument("--private-key", type=Path, help="the key of --certificate (PEM)")
    group.add_argument("--user-certificate", type=Path, help="X.509 user identity")
    group.add_argument("--user-key", type=Path)
    group.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR,
        help=f"where the client certificate is created and reused (default {DEFAULT_DATA_DIR})",
    )  # fmt: skip
    group.add_argument("--application-uri", default="urn:ironwatt:tools")
    group.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")

    opcua = subparsers.add_parser("opcua", help="browse, read and trust OPC UA servers")
    commands = opcua.add_subparsers(dest="opcua_command", metavar="SUBCOMMAND", required=True)

    browse = commands.add_parser(
        "browse", parents=[security], help="the address space as a tree, with values"
    )
    browse.add_argument("endpoint", type=_endpoint)
    browse.add_argument("--node", default="i=85", help="start node (default: Objects, i=85)")
    browse.add_argument("--depth", type=int, default=3)
    browse.add_argument(
        "--toml", action="store_true", help="print [[devices.points]] for numeric variables"
    )
    browse.set_defaults(func=_browse)

    read = commands.add_parser("read", parents=[security], help="read the current value of nodes")
    read.add_argument("endpoint", type=_endpoint)
    read.add_argument("nodes", nargs="+", metavar="NODE")
    read.add_argument(
        "--json", action="store_true",
        help="print the values as JSON: node, type, value, status, source timestamp",
    )  # fmt: skip
    read.set_defaults(func=_read)

    trust = commands.add_parser(
        "trust", parents=[security], help="show the server certificate and pin it after you confirm"
    )
    trust.add_argument("endpoint", type=_endpoint)
    trust.add_argument("--out", type=Path, required=True, help="where to save it (DER)")
    trust.add_argument("--yes", action="store_true", help="do not ask (scripts)")
    trust.set_defaults(func=_trust)


# -- settings ----------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> ConnectionSettings:
    mode = args.security_mode or ("None" if args.security_policy == "None" else "SignAndEncrypt")
    password = read_password(args.password_file, args.password_env, args.endpoint)
    return ConnectionSettings(
        endpoint=args.endpoint,
        label=args.endpoint,
        security_policy=args.security_policy,
        security_mode=mode,
        username=args.username,
        password=password,
        server_certificate=args.server_certificate,
        certificate=args.certificate,
        private_key=args.private_key,
        user_certificate=args.user_certificate,
        user_key=args.user_key,
        timeout=args.timeout,
        application_uri=args.application_uri,
        pki_dir=args.data_dir / "pki",
    )


def _fail(message: str) -> int:
    print(f"error: {message.removeprefix('device ')}", file=sys.stderr)
    return 1


def _run(coro: Coroutine[Any, Any, T], endpoint: str = "") -> T | int:
    # asyncua logs every browse and session step at INFO: noise between the lines a technician
    # reads. Its warnings stay; `--log-level debug` shows everything.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("asyncua").setLevel(logging.WARNING)
    try:
        return asyncio.run(coro)
    except OpcuaConnectError as exc:
        # The messages start "device LABEL: " and the CLI's label is the endpoint: say it once.
        message = str(exc).removeprefix("device ")
        lead = f"{endpoint}: "
        if endpoint and message.startswith(lead) and endpoint in message[len(lead) :]:
            message = message[len(lead) :]
        return _fail(message)


async def _connected(args: argparse.Namespace) -> Any:
    from drivers.opcua.security import connect

    return await connect(_settings(args))


# -- node ids ----------------------------------------------------------------------------------


def _to_nodeid(text: str, namespaces: Sequence[str], ua: Any) -> Any:
    from drivers.opcua.nodes import resolve_namespace

    ref = parse_node_id(text)
    return ua.NodeId(ref.identifier, resolve_namespace(ref, namespaces))


def _stable_text(nodeid: Any, namespaces: Sequence[str]) -> str:
    """The config form of a node id: nsu= (survives index changes) except in namespace 0."""
    text: str = nodeid.to_string()
    if nodeid.NamespaceIndex == 0 or nodeid.NamespaceIndex >= len(namespaces):
        return text
    _ns, _, ident = text.partition(";")
    return f"nsu={namespaces[nodeid.NamespaceIndex]};{ident}"


# -- browse ------------------------------------------------------------------------------------


def _browse(args: argparse.Namespace) -> int:
    return _run(_browse_async(args), args.endpoint)


async def _browse_async(args: argparse.Namespace) -> int:
    ua = ua_module()
    client = await _connected(args)
    try:
        namespaces = await client.get_namespace_array()
        try:
            start = client.get_node(_to_nodeid(args.node, namespaces, ua))
            await start.read_browse_name()
        except NodeIdError as exc:
            return _fail(f"--node {args.node}: {exc}")
        except ua.UaStatusCodeError as exc:
            return _fail(f"--node {args.node}: the server answered {status_name(exc)}")
        variables: list[tuple[str, str, str]] = []  # (path, node, type)
        await _walk(client, start, args.depth, 0, [], namespaces, variables, not args.toml, ua)
        if args.toml:
            _print_toml(variables)
    finally:
        await client.disconnect()
    return 0


async def _walk(
    client: Any,
    node: Any,
    depth: int,
    level: int,
    path: list[str],
    namespaces: Sequence[str],
    variables: list[tuple[str, str, str]],
    show: bool,
    ua: Any,
) -> None:
    name = (await node.read_browse_name()).Name
    node_class = await node.read_node_class()
    line = f"{'  ' * level}{name}  {_stable_text(node.nodeid, namespaces)}"
    if node_class == ua.NodeClass.Variable:
        dtype, value = await _type_and_value(client, node, ua)
        line += f"  {dtype} = {value}"
        if dtype in NUMERIC_TYPES:
            variables.append(
                ("_".join([*path, name]), _stable_text(node.nodeid, namespaces), dtype)
            )
    else:
        line += f"  ({node_class.name})"
    if show:
        print(line)
    if level >= depth:
        return
    for child in await node.get_children():
        if (
            child.nodeid.to_string() == SERVER_OBJECT
            and level == 0
            and node.nodeid.Identifier == 85
        ):
            if show:
                print(
                    f"{'  ' * (level + 1)}Server  i=2253  (skipped; browse it with --node i=2253)"
                )
            continue
        child_path = [*path, name] if level > 0 else path
        await _walk(client, child, depth, level + 1, child_path, namespaces, variables, show, ua)


async def _data_type(client: Any, node: Any) -> str:
    """The name of a variable's data type ("?" when the server will not say)."""
    try:
        dtype_id = await node.read_data_type()
        return str((await client.get_node(dtype_id).read_browse_name()).Name)
    except Exception:
        return "?"


async def _type_and_value(client: Any, node: Any, ua: Any) -> tuple[str, str]:
    dtype = await _data_type(client, node)
    try:
        dv = await node.read_data_value(raise_on_bad_status=False)
    except Exception as exc:
        return dtype, f"<{type(exc).__name__}>"
    if dv.StatusCode is not None and not dv.StatusCode.is_good():
        return dtype, f"<{dv.StatusCode.name}>"
    return dtype, repr(dv.Value.Value if dv.Value is not None else None)


def _point_name(path: str, used: set[str]) -> str:
    # CamelCase to snake_case, but a unit's last capital stays joined: "Power.kW" -> power_kw.
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z][A-Za-z0-9])", "_", path)
    name = re.sub(r"[^a-z0-9_-]+", "_", snake.lower())
    name = name.strip("_")[:60] or "point"
    candidate, n = name, 2
    while candidate in used:
        candidate, n = f"{name}_{n}", n + 1
    used.add(candidate)
    return candidate


def _print_toml(variables: list[tuple[str, str, str]]) -> None:
    used: set[str] = set()
    for path, node, dtype in variables:
        print("[[devices.points]]")
        print(f'name = "{_point_name(path, used)}"')
        print(f'node = "{node}"')
        print(f'kind = "gauge"   # {dtype}; counter for totals (kWh, t, pieces), rate for flows')
        print('unit = ""')
        print()


# -- read --------------------------------------------------------------------------------------


def _read(args: argparse.Namespace) -> int:
    return _run(_read_async(args), args.endpoint)


async def _read_async(args: argparse.Namespace) -> int:
    ua = ua_module()
    client = await _connected(args)
    rows: list[dict[str, Any]] = []
    try:
        namespaces = await client.get_namespace_array()
        for text in args.nodes:
            row = await _read_one(client, text, namespaces, ua)
            rows.append(row)
            if not args.json:  # as it comes: a long list shows its first values at once
                print(_read_line(row))
    finally:
        # what was read stands even if the goodbye fails (a server that dropped us)
        with contextlib.suppress(Exception):
            await client.disconnect()
    if args.json:
        shown = [{k: v for k, v in r.items() if k != "raw"} for r in rows]
        print(json.dumps(shown, indent=2, ensure_ascii=False, allow_nan=False))
    return 1 if any(r.get("error") or not r["status"].startswith("Good") for r in rows) else 0


def _read_line(row: dict[str, Any]) -> str:
    if row.get("error") and row["type"] is None:
        return f"{row['node']}  error: {row['error']}"
    status = row["status"]
    shown = f"<{status}>" if not status.startswith("Good") else repr(row["raw"])
    return f"{row['node']}  {row['type']} = {shown}  {status}  source {row['source'] or '-'}"


def _json_value(value: Any) -> Any:
    """A read value as JSON can carry it: numbers (finite), text, lists, times as ISO 8601,
    bytes as hex; anything else as its text."""
    import datetime
    import math

    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return str(value)


async def _read_one(client: Any, text: str, namespaces: list[str], ua: Any) -> dict[str, Any]:
    """One node read: {node, type, value, status, source} (a JSON-able value; others as text),
    or {node, type: None, error} for a node id that does not parse."""
    try:
        node = client.get_node(_to_nodeid(text, namespaces, ua))
    except NodeIdError as exc:
        return {"node": text, "type": None, "error": str(exc)}
    dtype = await _data_type(client, node)
    try:
        dv = await node.read_data_value(raise_on_bad_status=False)
    except Exception as exc:
        return {"node": text, "type": dtype, "value": None, "raw": None,
                "status": type(exc).__name__, "source": None,
                "error": str(exc) or type(exc).__name__}  # fmt: skip
    status = dv.StatusCode.name if dv.StatusCode is not None else "Good"
    raw = dv.Value.Value if dv.Value is not None and status.startswith("Good") else None
    stamp = dv.SourceTimestamp.isoformat() if dv.SourceTimestamp else None
    return {"node": text, "type": dtype, "value": _json_value(raw), "raw": raw,
            "status": status, "source": stamp}  # fmt: skip


# -- trust -------------------------------------------------------------------------------------


def _trust(args: argparse.Namespace) -> int:
    # Only the fetch runs on the event loop; the questions and the file come after it.
    der = _run(_fetch_certificate(args), args.endpoint)
    return der if isinstance(der, int) else _pin(args, der)


async def _fetch_certificate(args: argparse.Namespace) -> bytes | int:
    """The server's certificate, or the exit status after saying why there is none."""
    from drivers.opcua.security import fetch_server_certificate

    policy = "Basic256Sha256" if args.security_policy == "None" else args.security_policy
    mode = args.security_mode or "SignAndEncrypt"
    try:
        return await fetch_server_certificate(args.endpoint, policy, mode, args.timeout)
    except (OSError, TimeoutError) as exc:
        return _fail(f"cannot reach {args.endpoint}: {exc!r}")


def _pin(args: argparse.Namespace, der: bytes) -> int:
    """Show the certificate, ask (unless --yes), and save it to --out."""
    from drivers.opcua.security import certificate_info

    info = certificate_info(der)
    print(f"Server certificate of {args.endpoint}")
    print(f"  SHA-256 fingerprint: {info.fingerprint}")
    print(f"  subject:             {info.subject}")
    print(f"  issuer:              {info.issuer}")
    print(f"  valid:               {info.not_before:{STAMP}} to {info.not_after:{STAMP}} UTC")
    print(f"  application URI:     {info.application_uri or '-'}")
    print(f"  DNS names:           {', '.join(info.dns_names) or '-'}")
    out: Path = args.out
    if out.exists():
        old = load_der(out)
        if old == der:
            print(f"{out} already holds this certificate: nothing to do.")
            return 0
        print(f"{out} holds ANOTHER certificate ({fingerprint(old)}): it will be replaced.")
    if not args.yes:
        print("Compare the fingerprint with the one the PLC shows (its web page or panel).")
        try:
            answer = input(f"Trust this certificate and save it to {out}? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("Not saved.", file=sys.stderr)
            return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(der)
    tmp.replace(out)
    print(f'Saved. Set server_certificate = "{out}" on the device.')
    return 0


def _endpoint(text: str) -> str:
    """argparse type: a malformed endpoint is a usage error (exit 2) that says what is wrong."""
    from drivers.opcua.config import endpoint_problem

    problem = endpoint_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text
