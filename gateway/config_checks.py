"""Checks that span several keys of a config that already has the right shape.

Each check yields (key path, message) pairs; `config.py` gives them their file:line. Nothing
here raises on a bad config: every problem is collected, so the technician sees them all at once.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway import units
from gateway.config_model import (
    Config,
    ModbusDevice,
    ModbusPoint,
    OpcuaDevice,
    OpcuaPoint,
    TariffPeriod,
)
from gateway.config_types import NAME_RE, parse_duration
from gateway.windows import check_interval

__all__ = ["Problem", "check_config"]

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]

_NODE_RE = re.compile(r"(?:(?:ns=\d+|nsu=[^;]+);)?(?:i=\d+|s=.+|g=[0-9a-fA-F-]{36}|b=.+)")
_HOURS_RE = re.compile(r"(\d\d):(\d\d)-(\d\d):(\d\d)")
_MONTHS_RE = re.compile(r"(\d{1,2})(?:-(\d{1,2}))?")
UNSIGNED = {"uint16", "uint32", "uint64"}
REGISTER_BITS = {"uint16": 16, "uint32": 32, "uint64": 64, "int16": 16}


def check_config(cfg: Config) -> list[Problem]:
    problems: list[Problem] = []
    problems += _check_gateway(cfg)
    problems += _check_mqtt(cfg)
    problems += _check_energy(cfg)
    problems += _check_devices(cfg)
    problems += _check_groups(cfg)
    if cfg.tariff is not None:
        problems += _check_tariff(cfg)
    return problems


def _check_gateway(cfg: Config) -> Iterator[Problem]:
    try:
        ZoneInfo(cfg.gateway.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        yield ("gateway", "timezone"), (
            f"{cfg.gateway.timezone!r} is not a known time zone (expected an IANA name "
            "such as \"Asia/Shanghai\" or \"UTC\")"
        )


def _check_secret_file(loc: Loc, path: Path | None) -> Iterator[Problem]:
    if path is None:
        return
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        yield loc, f"cannot read {str(path)!r}: {exc.strerror} (check the path)"
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        yield loc, (
            f"{str(path)!r} is readable by group or others (mode {stat.S_IMODE(mode):o}): "
            "a secret must be private (chmod 600)"
        )


def _check_file(loc: Loc, path: Path | None) -> Iterator[Problem]:
    if path is not None and not path.is_file():
        yield loc, f"{str(path)!r} does not exist or is not a file"


def _check_mqtt(cfg: Config) -> Iterator[Problem]:
    m = cfg.mqtt
    parts = urlsplit(m.url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        yield ("mqtt", "url"), (
            f"{m.url!r} is not a broker URL (expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT])"
        )
    else:
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            yield ("mqtt", "url"), f"{m.url!r} has an invalid port (1..65535)"
    if m.password_file is not None and m.password_env is not None:
        yield ("mqtt", "password_env"), "give password_file or password_env, not both"
    if (m.password_file or m.password_env) and not m.username:
        yield ("mqtt", "username"), "a password is set but no username"
    yield from _check_secret_file(("mqtt", "password_file"), m.password_file)
    if m.password_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", m.password_env):
        yield ("mqtt", "password_env"), f"{m.password_env!r} is not an environment variable name"
    yield from _check_file(("mqtt", "ca_file"), m.ca_file)
    yield from _check_file(("mqtt", "cert_file"), m.cert_file)
    yield from _check_secret_file(("mqtt", "key_file"), m.key_file)
    if (m.cert_file is None) != (m.key_file is None):
        yield ("mqtt", "cert_file"), "mutual TLS needs both cert_file and key_file"
    if (m.ca_file or m.cert_file) and parts.scheme == "mqtt":
        yield ("mqtt", "url"), "TLS files are set but the URL is mqtt:// (use mqtts://)"
    prefix_levels = m.topic_prefix.split("/")
    if not m.topic_prefix or any(not lvl or set(lvl) & set("+#") for lvl in prefix_levels):
        yield ("mqtt", "topic_prefix"), (
            f"{m.topic_prefix!r} is not a valid topic prefix (no empty levels, no + or #)"
        )


def _check_energy(cfg: Config) -> Iterator[Problem]:
    seen: dict[int, str] = {}
    for i, name in enumerate(cfg.energy.intervals):
        loc: Loc = ("energy", "intervals", i)
        try:
            seconds = parse_duration(name)
        except ValueError as exc:
            yield loc, str(exc)
            continue
        if not NAME_RE.fullmatch(name):
            yield loc, f"{name!r} cannot name a topic level (lowercase units: \"15m\", \"1h\")"
        if not float(seconds).is_integer():
            yield loc, f"{name!r} is not a whole number of seconds"
            continue
        reason = check_interval(int(seconds))
        if reason:
            yield loc, f"{name!r} {reason}"
        elif int(seconds) in seen:
            yield loc, f"{name!r} is the same length as {seen[int(seconds)]!r}"
        seen.setdefault(int(seconds), name)
    demand = cfg.energy.demand_interval
    if not demand.is_integer() or check_interval(int(demand)):
        yield ("energy", "demand_interval"), (
            "must divide 24 h (e.g. \"15m\", \"30m\") so demand blocks align like windows"
        )
    for name, carrier in cfg.energy.resolved_carriers.items():
        if carrier.unit and units.lookup(carrier.unit) is None:
            yield ("energy", "carriers", name, "unit"), _unknown_unit(carrier.unit)
        elif not carrier.unit:
            yield ("energy", "carriers", name, "unit"), "a new carrier needs a unit"


def _unknown_unit(unit: str) -> str:
    return f"{unit!r} is not a known unit (known: {', '.join(u for u in units.UNITS if u)})"


def _check_devices(cfg: Config) -> Iterator[Problem]:
    names: dict[str, int] = {}
    carriers = cfg.energy.resolved_carriers
    for d, device in enumerate(cfg.devices):
        loc: Loc = ("devices", d)
        if device.name in names:
            yield (*loc, "name"), (
                f"device {device.name!r} is already defined as devices[{names[device.name]}]"
            )
        names.setdefault(device.name, d)
        if isinstance(device, ModbusDevice):
            yield from _check_modbus(loc, device)
        else:
            yield from _check_opcua(loc, device)
        seen: dict[str, int] = {}
        for p, point in enumerate(device.points):
            ploc: Loc = (*loc, "points", p)
            if point.name in seen:
                yield (*ploc, "name"), (
                    f"point {point.name!r} is already defined in device {device.name!r} "
                    f"as points[{seen[point.name]}]"
                )
            seen.setdefault(point.name, p)
            yield from _check_point_units(ploc, point, carriers)


def _check_modbus(loc: Loc, device: ModbusDevice) -> Iterator[Problem]:
    if device.transport in ("tcp", "rtu-over-tcp"):
        if not device.host:
            yield (*loc, "host"), f"transport {device.transport!r} needs a host"
        if device.serial_port:
            yield (*loc, "serial_port"), f"serial_port is for transport \"rtu\", not {device.transport!r}"
    elif not device.serial_port:
        yield (*loc, "serial_port"), "transport \"rtu\" needs a serial_port (e.g. \"/dev/ttyUSB0\")"
    if device.timeout >= device.poll * 4:
        yield (*loc, "timeout"), "must be shorter than a few poll periods"
    if device.profile is not None:
        from drivers.modbus import profiles

        if device.profile not in profiles.available():
            yield (*loc, "profile"), (
                f"unknown profile {device.profile!r} (known: {', '.join(profiles.available())})"
            )
    for p, point in enumerate(device.points):
        yield from _check_register(device, (*loc, "points", p), point)


def _check_register(device: ModbusDevice, loc: Loc, point: ModbusPoint) -> Iterator[Problem]:
    bit_function = point.function in ("coil", "discrete")
    if bit_function and point.type != "bool":
        yield (*loc, "type"), f"{point.function} points are single bits: type must be \"bool\""
    if not bit_function and point.type == "bool" and point.bit is None:
        yield (*loc, "bit"), "a bool in a register needs `bit` (0..15)"
    if point.bit is not None and point.type not in ("bool", "uint16", "int16"):
        yield (*loc, "bit"), f"bit fields are read from one 16-bit register, not {point.type}"
    last = point.address + point.words - 1
    if last > 65535:
        yield (*loc, "address"), (
            f"{point.type} needs {point.words} registers: {point.address}..{last} runs past 65535"
        )
    if point.rollover == "auto" and point.type not in UNSIGNED:
        yield (*loc, "rollover"), (
            f"\"auto\" needs an unsigned integer register (uint16/32/64), not {point.type}"
        )
    if point.words > device.max_registers_per_request:
        yield (*loc, "type"), (
            f"{point.type} needs {point.words} registers but the device reads at most "
            f"{device.max_registers_per_request} per request"
        )


def _check_opcua(loc: Loc, device: OpcuaDevice) -> Iterator[Problem]:
    if not device.endpoint.startswith("opc.tcp://"):
        yield (*loc, "endpoint"), f"{device.endpoint!r} is not an opc.tcp:// endpoint"
    none_policy = device.security_policy == "None"
    none_mode = device.security_mode == "None"
    if none_policy != none_mode:
        which = "security_policy" if none_policy else "security_mode"
        yield (*loc, which), (
            "security_policy and security_mode go together: both \"None\", or a policy "
            "(e.g. \"Basic256Sha256\") with \"Sign\" or \"SignAndEncrypt\""
        )
    if device.password_file is not None and device.password_env is not None:
        yield (*loc, "password_env"), "give password_file or password_env, not both"
    if (device.password_file or device.password_env) and not device.username:
        yield (*loc, "username"), "a password is set but no username"
    yield from _check_secret_file((*loc, "password_file"), device.password_file)
    yield from _check_file((*loc, "server_certificate"), device.server_certificate)
    yield from _check_file((*loc, "user_certificate"), device.user_certificate)
    yield from _check_secret_file((*loc, "user_key"), device.user_key)
    if (device.user_certificate is None) != (device.user_key is None):
        yield (*loc, "user_certificate"), "an X.509 user identity needs user_certificate and user_key"
    for p, point in enumerate(device.points):
        if not _NODE_RE.fullmatch(point.node):
            yield (*loc, "points", p, "node"), (
                f"{point.node!r} is not a node id (expected e.g. \"ns=2;s=Line1.Power\", "
                "\"nsu=urn:plant;i=1001\")"
            )
        if point.deadband_type == "percent" and point.deadband_value > 100:
            yield (*loc, "points", p, "deadband_value"), "a percent deadband is 0..100"


def _check_point_units(
    loc: Loc, point: ModbusPoint | OpcuaPoint, carriers: dict[str, object]
) -> Iterator[Problem]:
    if point.max_gap is not None and point.kind != "rate":
        yield (*loc, "max_gap"), "max_gap applies to rate points only"
    if point.integration is not None and point.kind != "rate":
        yield (*loc, "integration"), "integration applies to rate points only"
    if point.rollover is not None and point.kind != "counter":
        yield (*loc, "rollover"), "rollover applies to counter points only"
    if point.kind in ("counter", "rate") and point.unit and units.lookup(point.unit) is None:
        yield (*loc, "unit"), _unknown_unit(point.unit)
        return
    if point.carrier is None:
        return
    carrier = carriers.get(point.carrier)
    if carrier is None:
        yield (*loc, "carrier"), (
            f"unknown carrier {point.carrier!r} (known: {', '.join(sorted(carriers))}; "
            "add one under [energy.carriers.NAME])"
        )
        return
    carrier_unit: str = getattr(carrier, "unit")  # noqa: B009 - Carrier, typed loosely above
    if point.kind == "gauge":
        yield (*loc, "carrier"), "a gauge is not accounted: carrier applies to counters and rates"
        return
    amount_unit = point.unit if point.kind == "counter" else units.integral_unit(point.unit)
    if amount_unit is None or units.conversion_factor(amount_unit, carrier_unit) is None:
        what = "its unit" if point.kind == "counter" else "its integral"
        yield (*loc, "unit"), (
            f"{point.unit!r} does not convert to {point.carrier}'s unit {carrier_unit!r} "
            f"({what} must be a {units.lookup(carrier_unit).dimension if units.lookup(carrier_unit) else '?'})"  # noqa: E501
        )


def _check_groups(cfg: Config) -> Iterator[Problem]:
    points: dict[str, ModbusPoint | OpcuaPoint] = {}
    for device in cfg.devices:
        try:
            resolved = device.resolved_points()
        except (KeyError, ValueError):
            resolved = device.points  # the profile problem is reported with the device
        for point in resolved:
            points[f"{device.name}.{point.name}"] = point
    groups = {g.name: g for g in cfg.groups}
    device_names = {d.name for d in cfg.devices}
    seen: dict[str, int] = {}
    for g, group in enumerate(cfg.groups):
        loc: Loc = ("groups", g)
        if group.name in seen:
            yield (*loc, "name"), f"group {group.name!r} is already defined as groups[{seen[group.name]}]"
        seen.setdefault(group.name, g)
        if not group.members:
            yield (*loc, "members"), "a group needs at least one member"
        for m, member in enumerate(group.members):
            if member in groups:
                continue
            point = points.get(member)
            if point is None:
                hint = (
                    f"device {member.split('.')[0]!r} has no such point"
                    if member.split(".")[0] in device_names
                    else "expected \"device.point\" of a configured device, or a group name"
                )
                yield (*loc, "members", m), f"{member!r} does not exist ({hint})"
            elif point.kind == "gauge" or point.carrier is None:
                yield (*loc, "members", m), (
                    f"{member!r} cannot be accounted: members are counter or rate points with "
                    "a carrier"
                )
        if group.production is not None:
            point = points.get(group.production)
            if point is None:
                yield (*loc, "production"), f"{group.production!r} is not a configured point"
            elif point.kind == "gauge":
                yield (*loc, "production"), "production must be a counter (or rate) point"
    yield from _check_group_cycles(cfg)


def _check_group_cycles(cfg: Config) -> Iterator[Problem]:
    groups = {g.name: g for g in cfg.groups}
    index = {g.name: i for i, g in enumerate(cfg.groups)}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    reported: set[str] = set()

    def visit(name: str, path: list[str]) -> Iterator[Problem]:
        state[name] = 1
        for member in groups[name].members:
            if member not in groups:
                continue
            if state.get(member) == 1:
                cycle = [*path[path.index(member):], member] if member in path else [name, member]
                if member not in reported:
                    reported.add(member)
                    yield ("groups", index[name], "members"), (
                        f"groups form a cycle: {' -> '.join(cycle)}"
                    )
            elif state.get(member) is None:
                yield from visit(member, [*path, member])
        state[name] = 2

    for name in groups:
        if name not in state:
            yield from visit(name, [name])


def _minutes(text: str) -> tuple[int, int] | None:
    match = _HOURS_RE.fullmatch(text)
    if not match:
        return None
    h1, m1, h2, m2 = (int(x) for x in match.groups())
    if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59 or (h1 == 24 and m1) or (h2 == 24 and m2):
        return None
    return h1 * 60 + m1, h2 * 60 + m2


def _check_day(loc: Loc, periods: tuple[TariffPeriod, ...]) -> Iterator[Problem]:
    """Periods of one day type must cover 24 h exactly once (ranges may cross midnight)."""
    owner: list[str | None] = [None] * 1440
    names: set[str] = set()
    for p, period in enumerate(periods):
        if period.name in names:
            yield (*loc, p, "name"), f"period {period.name!r} appears twice"
        names.add(period.name)
        for h, text in enumerate(period.hours):
            span = _minutes(text)
            if span is None:
                yield (*loc, p, "hours", h), f"{text!r} is not a time range (expected \"HH:MM-HH:MM\")"
                continue
            start, end = span
            if start == end:
                yield (*loc, p, "hours", h), f"{text!r} is empty"
                continue
            minute = start
            while minute != end:
                m = minute % 1440
                if owner[m] is not None and owner[m] != period.name:
                    yield (*loc, p, "hours", h), (
                        f"{text!r} overlaps period {owner[m]!r} at {m // 60:02d}:{m % 60:02d}"
                    )
                    break
                owner[m] = period.name
                minute = (minute + 1) % 1440
                if minute == end % 1440:
                    break
    if periods:
        gaps = [m for m, o in enumerate(owner) if o is None]
        if gaps:
            first = gaps[0]
            yield loc, (
                f"periods do not cover 24 h: nothing from {first // 60:02d}:{first % 60:02d} "
                f"({len(gaps)} minutes uncovered)"
            )


def _check_tariff(cfg: Config) -> Iterator[Problem]:
    tariff = cfg.tariff
    assert tariff is not None
    yield from _check_day(("tariff", "periods"), tariff.periods)
    if tariff.weekend is not None:
        yield from _check_day(("tariff", "weekend"), tariff.weekend)
    if tariff.holiday is not None:
        yield from _check_day(("tariff", "holiday"), tariff.holiday)
    months: dict[int, int] = {}
    for s, season in enumerate(tariff.seasons):
        match = _MONTHS_RE.fullmatch(season.months)
        loc: Loc = ("tariff", "seasons", s)
        if not match:
            yield (*loc, "months"), f"{season.months!r} is not a month range (expected \"7-8\" or \"12-2\")"
            continue
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if not (1 <= first <= 12 and 1 <= last <= 12):
            yield (*loc, "months"), f"{season.months!r}: months are 1..12"
            continue
        month = first
        while True:
            if month in months:
                yield (*loc, "months"), f"month {month} is already in seasons[{months[month]}]"
                break
            months[month] = s
            if month == last:
                break
            month = month % 12 + 1
        yield from _check_day((*loc, "periods"), season.periods)
