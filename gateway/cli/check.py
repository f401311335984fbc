"""`ironwatt check` (validate a config and say what it will do) and `ironwatt config schema`.

`check` prints where data will be read from and published to; a refused config exits 2 with
every problem (raised as ConfigError and reported by gateway.cli.main). Nothing here connects.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

from drivers.registry import plugin_of
from drivers.wording import format_duration, plural
from gateway.config.base import DEFAULT_PATH
from gateway.topics import Topics

if TYPE_CHECKING:
    from gateway.config.model import Config

# The validating side (pydantic) is imported by the handlers only: `ironwatt run` registers
# this command too and must not load it (see gateway/config/records.py).

__all__ = ["json_schema", "register", "summary"]


def register(subparsers: Any) -> None:
    check = subparsers.add_parser(
        "check",
        help="validate a config file and print what it will read and publish",
        description="Validate the config; print a summary (exit 0) or every problem (exit 2).",
    )
    check.add_argument(
        "-c",
        "--config",
        default=str(DEFAULT_PATH),
        metavar="FILE",
        help=f"the config file (default: {DEFAULT_PATH})",
    )
    check.add_argument("--points", action="store_true", help="list every point of every device")
    check.add_argument(
        "--json", action="store_true",
        help="print the verdict as JSON: the devices, points and groups, or every problem "
        "(exit 2) with its line, key and message",
    )  # fmt: skip
    check.set_defaults(func=_run_check)

    config = subparsers.add_parser("config", help="tools for the config file")
    config_commands = config.add_subparsers(dest="config_command", metavar="COMMAND")
    config_commands.required = True
    schema = config_commands.add_parser(
        "schema", help="print the JSON Schema of the config (for editors with TOML schema support)"
    )
    schema.set_defaults(func=_run_schema)


def _run_check(args: argparse.Namespace) -> int:
    from gateway.config.load import load_config
    from gateway.errors import ConfigError

    if not args.json:
        cfg = load_config(args.config)
        return _write(sys.stdout, summary(cfg, points=args.points))
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        problems = [
            {"line": p.line, "key": p.path or None, "message": p.message} for p in exc.problems
        ]
        doc = {"file": exc.file, "ok": False, "problems": problems}
        print(json.dumps(doc, indent=2, allow_nan=False))
        return 2
    try:  # allow_nan=False: a NaN or infinite scale would be invalid JSON
        text = json.dumps(summary_document(cfg), indent=2, ensure_ascii=False, allow_nan=False)
    except ValueError:
        print(
            f"{cfg.path}: a value is NaN or infinite (a point's scale or offset?): JSON cannot "
            "carry it; check the file",
            file=sys.stderr,
        )
        return 2
    print(text)
    return 0


def summary_document(cfg: Config) -> dict[str, Any]:
    """`ironwatt check --json` for a valid config: what it reads and publishes, as data."""
    devices = []
    for device in cfg.devices:
        plugin = plugin_of(device)
        # the describe lines that say something is wrong: warnings, unreadable points (Modbus),
        # "!" findings (OPC UA)
        warnings = [
            line.strip().removeprefix("warning: ").removeprefix("! ")
            for line in plugin.describe(device)
            if line.strip().startswith(("warning: ", "UNREADABLE ", "! "))
        ]
        devices.append({
            "name": device.name,
            "driver": device.driver,
            "enabled": bool(device.enabled),
            "summary": plugin.summary(device, device.resolved_points()),
            "points": [
                {"name": p.name, "kind": p.kind, "unit": p.unit or None,
                 "carrier": p.carrier or None, "where": plugin.point_where(p), "scale": p.scale}
                for p in device.resolved_points()
            ],
            "warnings": warnings,
        })  # fmt: skip
    return {
        "file": str(cfg.path),
        "ok": True,
        "gateway": {"id": cfg.gateway.id, "site": cfg.gateway.site},
        "intervals": list(cfg.energy.all_intervals),
        "devices": devices,
        "groups": [g.name for g in cfg.groups],
    }


def _run_schema(args: argparse.Namespace) -> int:
    text = json.dumps(json_schema(), indent=2, ensure_ascii=False)
    return _write(sys.stdout, iter(text.splitlines()))


def _write(out: TextIO, lines: Iterator[str]) -> int:
    try:
        for line in lines:
            out.write(line + "\n")
        out.flush()
    except BrokenPipeError:
        # `ironwatt check | head`: the reader is gone, which is not an error of ours. Point
        # stdout at /dev/null so the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
    return 0


# -- the summary ----------------------------------------------------------------------------


def summary(cfg: Config, *, points: bool = False) -> Iterator[str]:
    """The lines `ironwatt check` prints for a valid config."""
    resolved = {d.name: d.resolved_points() for d in cfg.devices}
    total = sum(len(p) for p in resolved.values())
    yield (
        f"{cfg.path}: OK ({plural(len(cfg.devices), 'device')}, {plural(total, 'point')}, "
        f"{plural(len(cfg.groups), 'group')})"
    )
    yield ""
    yield from _gateway_lines(cfg)
    yield ""
    yield from _topic_lines(cfg)
    yield ""
    yield "devices"
    for device in cfg.devices:
        yield from _device_lines(device, resolved[device.name], points)
    if not cfg.devices:
        yield "  (none)"
    yield ""
    yield from _group_lines(cfg, resolved)
    used = sorted({p.carrier for pts in resolved.values() for p in pts if p.carrier})
    if used:
        yield ""
        yield "carriers in use (factors per unit)"
        for name in used:
            c = cfg.energy.carriers[name]
            yield (
                f"  {name}: {c.unit}, {c.kgce_per_unit:g} kgce, {c.kgco2e_per_unit:g} kgCO2e, "
                f"method {c.method}"
            )
            yield f"    source: {c.source}"


def _group_lines(cfg: Config, resolved: dict[str, tuple[Any, ...]]) -> Iterator[str]:
    """Each group: members with their carriers, recovered points, production, benchmark."""
    from gateway.energy.benchmarks import levels_of

    intervals = "|".join(cfg.energy.all_intervals)
    yield f"groups (published as group/{{{intervals}}}/{{group}})" if cfg.groups else "groups"
    carriers = {
        f"{d}.{p.name}": f"{p.carrier or '-'}, {p.unit or 'no unit'}"
        for d, pts in resolved.items()
        for p in pts
    }
    names = {g.name for g in cfg.groups}

    def listed(keys: tuple[str, ...]) -> str:
        return ", ".join(
            f"group {k}" if k in names else f"{k} ({carriers.get(k, '?')})" for k in keys
        )

    for group in cfg.groups:
        yield f"  {group.name}: {listed(group.members)}"
        if group.recovered:
            yield f"    recovered (counted negative): {listed(group.recovered)}"
        if group.production:
            yield f"    production (intensity denominator): {listed((group.production,))}"
        b = levels_of(group)
        if b is not None:
            grades = "/".join(f"{b.limits[g]:g}" if g in b.limits else "-" for g in "123")
            judged = [i for i in cfg.energy.benchmark_intervals if i in cfg.energy.all_intervals]
            on = ", ".join(judged) or "no published interval"
            yield (
                f"    benchmark: {b.process} by {b.standard}: benchmark {b.benchmark:g}, baseline "
                f"{b.baseline:g}, grades {grades} {b.unit}, on {on}"
            )
            yield f"      source: {b.source}"
    if not cfg.groups:
        yield "  (none)"


def _tariff_lines(t: Any) -> Iterator[str]:
    def day(periods: Any) -> str:
        return "; ".join(f"{p.name} {p.price:g} {' '.join(p.hours)}" for p in periods)

    yield f"tariff   {t.currency} per kWh, weekdays: {day(t.periods)}"
    for s in t.seasons:
        yield f"         weekdays in months {s.months}: {day(s.periods)}"
    if t.weekend is not None:
        yield f"         weekends: {day(t.weekend)}"
    if t.holidays:
        holiday = t.holiday if t.holiday is not None else t.weekend
        rule = day(holiday) if holiday is not None else "as weekdays"
        yield f"         {plural(len(t.holidays), 'holiday')}: {rule}"


def _gateway_lines(cfg: Config) -> Iterator[str]:
    g, m = cfg.gateway, cfg.mqtt
    yield f"gateway  {g.id} at site {g.site}, time zone {g.timezone}, data in {g.data_dir}"
    yield (
        f"mqtt     {m.url} as {cfg.mqtt_client_id} (MQTT {m.protocol}, "
        f"keepalive {format_duration(m.keepalive)}, at most {m.max_inflight} in flight"
        + (f", drain {m.drain_rate:g} msg/s" if m.drain_rate else "")
        + ")"
    )
    if m.username:
        yield f"         user {m.username}, {_secret_source(m.password_file, m.password_env)}"
    if m.ca_file or m.cert_file:
        tls = [f"trust {m.ca_file}" if m.ca_file else "system trust store"]
        if m.cert_file:
            tls.append(f"client certificate {m.cert_file}")
        yield f"         TLS: {', '.join(tls)}"
    b = cfg.buffer
    yield f"buffer   at most {_size(b.max_size)}, durability {b.durability}"
    yield (
        f"http     {cfg.http.listen} (/healthz, /status, /metrics)"
        if cfg.http
        else "http     off (no [http] table)"
    )
    e = cfg.energy
    yield (
        f"energy   windows {' '.join(e.all_intervals)}, demand blocks "
        f"{format_duration(e.demand_interval)}, revisions up to "
        f"{format_duration(e.max_revision_age)} back"
    )
    if e.shifts:
        yield "         shifts " + ", ".join(f"{x.name} from {x.start_text}" for x in e.shifts)
    yield f"         electricity CO2 from the {e.grid_region} grid factor"
    if cfg.tariff is not None:
        yield from _tariff_lines(cfg.tariff)


def _topic_lines(cfg: Config) -> Iterator[str]:
    topics = Topics.of(cfg)
    intervals = "|".join(cfg.energy.all_intervals)
    devices = [d.name for d in cfg.devices if d.enabled]
    rows = [
        (topics.status, "retained, QoS 1, gateway online/offline (Last Will)"),
        (topics.event, "QoS 1, device up/down, gaps, buffer drops, reloads"),
        (topics.energy(f"{{{intervals}}}", "{device}"), f"QoS 1, for {_names(devices)}"),
    ]
    if cfg.groups:
        groups = [g.name for g in cfg.groups]
        rows.append((topics.group(f"{{{intervals}}}", "{group}"), f"QoS 1, for {_names(groups)}"))
    if cfg.mqtt.telemetry:
        rows.append(
            (
                topics.telemetry("{device}"),
                f"QoS {cfg.mqtt.telemetry_qos}, live values by exception, heartbeat "
                f"{format_duration(cfg.mqtt.telemetry_heartbeat)}",
            )
        )
    yield "publishes"
    width = max(len(topic) for topic, _ in rows)
    for topic, what in rows:
        yield f"  {topic.ljust(width)}  {what}"
    if not cfg.mqtt.telemetry:
        yield "  (telemetry off: mqtt.telemetry = false)"


def _device_lines(device: Any, resolved: tuple[Any, ...], show_points: bool) -> Iterator[str]:
    plugin = plugin_of(device)
    state = "" if device.enabled else " [disabled]"
    yield f"  {device.name}{state}: {plugin.summary(device, resolved)}"
    if getattr(device, "username", None):  # a user name identity: where its password comes from
        secret = _secret_source(
            getattr(device, "password_file", None), getattr(device, "password_env", None)
        )
        yield f"    {secret}"
    for line in plugin.describe(device):
        yield f"    {line}"
    if show_points:
        for point in resolved:
            yield f"    - {_point_line(plugin.point_where(point), point)}"


def _point_line(where: str, point: Any) -> str:
    unit = f" {point.unit}" if point.unit else ""
    carrier = f", {point.carrier}" if point.carrier else ""
    scale = f", x{point.scale:g}" if point.scale != 1.0 else ""
    return f"{point.name}: {where}, {point.kind}{unit}{carrier}{scale}"


def _secret_source(path: Any, env: str | None) -> str:
    if path is not None:
        return f"password from {path}"
    if env is not None:
        note = "" if env in os.environ else " (not set in this shell)"
        return f"password from ${env}{note}"
    return "no password"


def _names(names: list[str], limit: int = 6) -> str:
    if not names:
        return "no device"
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])} and {len(names) - limit} more"


def _size(n: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n} bytes"


# -- the JSON Schema -------------------------------------------------------------------------


def json_schema() -> dict[str, Any]:
    """The config's JSON Schema as the file is written (durations as strings, no defaults of
    whole tables), for editors such as VS Code's Even Better TOML or taplo."""
    from gateway.config.model import Config

    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ironwatt.toml"
    _fix_defaults(schema)
    return schema


def _fix_defaults(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _fix_defaults(item)
        return
    if not isinstance(node, dict):
        return
    if "default" in node:
        default = node["default"]
        if isinstance(default, dict):
            del node["default"]  # a table's defaults are its keys' defaults
        elif node.get("type") == "string" and isinstance(default, int | float):
            node["default"] = format_duration(float(default))
        elif isinstance(default, list) and all(
            isinstance(d, dict) and "name" in d for d in default
        ):
            node["default"] = [d["name"] for d in default]
    for value in node.values():
        _fix_defaults(value)
