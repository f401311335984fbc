"""Checks that span several keys of a config that already has the right shape.

Each check yields findings, (key path, message) pairs (`drivers.plugin.Finding`); the loader
(`load.py`) gives them their file:line. Nothing here raises on a bad config: every problem is
collected, so the technician sees them all at once.
"""

from __future__ import annotations

import difflib
import logging
import re
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from drivers.fields import parse_duration
from drivers.models import PointBase
from drivers.plugin import Finding, Loc
from drivers.registry import plugin_of
from drivers.wording import error_text, format_duration, quote, without_password
from gateway.config.credentials import Credential, credential_of, find_sources, inside_unit
from gateway.config.locator import format_path
from gateway.config.model import Carrier, Config, GroupConfig
from gateway.config.tariff import check_tariff
from gateway.energy import units
from gateway.energy.benchmarks import BENCHMARKS
from gateway.energy.carriers import DEFAULT_CARRIERS
from gateway.energy.windows import check_interval

__all__ = ["check_config"]

log = logging.getLogger("ironwatt.config")


def check_config(cfg: Config) -> list[Finding]:
    problems: list[Finding] = []
    problems += _check_gateway(cfg)
    problems += _check_mqtt(cfg)
    problems += _check_energy(cfg)
    problems += _check_devices(cfg)
    problems += _check_groups(cfg)
    if cfg.tariff is not None:
        problems += check_tariff(cfg)
    return problems


def _check_gateway(cfg: Config) -> Iterator[Finding]:
    zone = cfg.gateway.timezone
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(zone, sorted(available_timezones()), n=1, cutoff=0.8)
        hint = (
            f"did you mean {close[0]}?"
            if close
            else 'expected an IANA name such as "Asia/Shanghai" or "UTC"; without timezone '
            "the system zone is used"
        )
        yield ("gateway", "timezone"), f"{quote(zone)} is not a known time zone ({hint})"


def _check_secret_file(loc: Loc, path: Path | None) -> Iterator[Finding]:
    if path is None:
        return
    credential = credential_of(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if credential is not None and not inside_unit(credential):
            # Before the first start (or from another user): the unit's LoadCredential= says
            # where systemd will read it from; that file is what can be checked now.
            yield from _check_credential(loc, credential)
            return
        hint = "check the path"
        if credential is not None:
            hint = (
                f"systemd provides only the credentials {credential.unit} loads: add "
                f"LoadCredential={credential.name}:/etc/ironwatt/credentials/{credential.name} "
                "to the unit or a drop-in, then systemctl daemon-reload"
            )
        yield loc, f"cannot read {quote(str(path))}: {error_text(exc)} ({hint})"
        return
    problem = _private_file_problem(path, mode)
    if problem is not None:
        yield loc, problem


def _private_file_problem(path: Path, mode: int) -> str | None:
    if not stat.S_ISREG(mode):
        return f"{quote(str(path))} is not a file"
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"{quote(str(path))} is readable by group or others (mode "
            f"{stat.S_IMODE(mode):04o}): a secret must be private: chmod 600 {path}"
        )
    return None


def _check_credential(loc: Loc, credential: Credential) -> Iterator[Finding]:
    """A credential path that does not exist yet: check the file the unit loads it from."""
    unit, name = credential.unit, credential.name
    where = f"{credential.directory / name}"
    files, sources = find_sources(credential)
    if not files:
        _note(
            loc,
            f"{where} will be provided by systemd when {unit} starts ({unit} is not installed "
            "here, so its LoadCredential= could not be checked)",
        )
        return
    if not sources:
        read = ", ".join(str(f) for f in files)
        yield (
            loc,
            f"{quote(where)} is a credential of {unit}, but {unit} loads none called "
            f"{quote(name)} (read: {read}): add LoadCredential={name}:"
            f"/etc/ironwatt/credentials/{name} to the unit or a drop-in",
        )
        return
    source = sources[-1]  # the last assignment of an id wins
    said = f"{source.directive} in {source.unit_file}"
    if source.path is None:
        _note(loc, f"{where} will be provided by systemd when {unit} starts ({said})")
        return
    try:
        mode = source.path.stat().st_mode
    except FileNotFoundError:
        yield (
            loc,
            f"{quote(where)} is loaded from {source.path} ({said}), which does not exist: "
            f"systemd would refuse to start {unit} (install -m 600 /dev/stdin {source.path})",
        )
        return
    except OSError as exc:
        _note(
            loc,
            f"{where} will be provided by systemd when {unit} starts, from {source.path} "
            f"({said}; not checked here: {error_text(exc)})",
        )
        return
    problem = None if source.encrypted else _private_file_problem(source.path, mode)
    if problem is not None:
        yield loc, f"{problem} (systemd copies it to {where} when {unit} starts)"
        return
    _note(
        loc, f"{where} will be provided by systemd when {unit} starts, from {source.path} ({said})"
    )


def _note(loc: Loc, text: str) -> None:
    # Not a problem: `ironwatt check` shows it on stderr, the daemon never gets here (inside the
    # unit the file exists).
    log.info("%s: %s", format_path(loc), text)


def _check_file(loc: Loc, path: Path | None) -> Iterator[Finding]:
    if path is not None and not path.is_file():
        yield loc, f"{quote(str(path))} does not exist or is not a file"


def _check_mqtt(cfg: Config) -> Iterator[Finding]:
    m = cfg.mqtt
    parts = urlsplit(m.url)
    masked = without_password(m.url)
    if masked is not None:
        yield (
            ("mqtt", "url"),
            (
                f"{quote(masked)} carries a password: never write one in the config; put the user "
                "in username and the password in password_file (chmod 600) or password_env"
            ),
        )
        return
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        yield (
            ("mqtt", "url"),
            (
                f"{quote(m.url)} is not a broker URL "
                "(expected mqtt://HOST[:PORT], or mqtts://HOST[:PORT] for TLS)"
            ),
        )
    else:
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            yield ("mqtt", "url"), f"{quote(m.url)} has an invalid port (1..65535)"
    if m.password_file is not None and m.password_env is not None:
        yield ("mqtt", "password_env"), "give password_file or password_env, not both"
    if (m.password_file or m.password_env) and not m.username:
        yield ("mqtt", "username"), "a password is set but no username"
    yield from _check_secret_file(("mqtt", "password_file"), m.password_file)
    if m.password_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", m.password_env):
        yield (
            ("mqtt", "password_env"),
            (
                f"{quote(m.password_env)} is not an environment variable name "
                "(e.g. IRONWATT_MQTT_PASSWORD)"
            ),
        )
    yield from _check_file(("mqtt", "ca_file"), m.ca_file)
    yield from _check_file(("mqtt", "cert_file"), m.cert_file)
    yield from _check_secret_file(("mqtt", "key_file"), m.key_file)
    if (m.cert_file is None) != (m.key_file is None):
        yield ("mqtt", "cert_file"), "mutual TLS needs both cert_file and key_file"
    if (m.ca_file or m.cert_file) and parts.scheme == "mqtt":
        yield ("mqtt", "url"), "TLS files are set but the URL is mqtt:// (use mqtts://)"
    prefix_levels = m.topic_prefix.split("/")
    if not m.topic_prefix or any(not lvl or set(lvl) & set("+#") for lvl in prefix_levels):
        yield (
            ("mqtt", "topic_prefix"),
            f"{quote(m.topic_prefix)} is not a valid topic prefix (no empty levels, no + or #)",
        )


def _check_energy(cfg: Config) -> Iterator[Finding]:
    if not cfg.energy.intervals:
        yield (
            ("energy", "intervals"),
            ('no intervals: nothing would be published (e.g. intervals = ["15m", "1h", "1d"])'),
        )
    seen: dict[int, str] = {}
    for i, interval in enumerate(cfg.energy.intervals):
        if interval.seconds in seen:
            yield (
                ("energy", "intervals", i),
                f"{quote(interval.name)} is the same length as {quote(seen[interval.seconds])}",
            )
        seen.setdefault(interval.seconds, interval.name)
    for i, name in enumerate(cfg.energy.benchmark_intervals):
        # Names not configured are allowed (the default names "1d" and "1mo"): only those that
        # cannot be an interval at all are mistakes.
        if name not in ("shift", "1mo") and not _is_interval(name):
            yield (
                ("energy", "benchmark_intervals", i),
                f"{quote(name)} is not an interval (expected one of energy.intervals, "
                '"shift" or "1mo")',
            )
        elif name not in cfg.energy.all_intervals and name not in ("shift", "1d", "1mo"):
            _note(
                ("energy", "benchmark_intervals", i),
                f"{quote(name)} is not published (not in energy.intervals): no window of it "
                "is judged",
            )
    demand = cfg.energy.demand_interval
    if not demand.is_integer() or check_interval(int(demand)) or demand > 86400:
        yield (
            ("energy", "demand_interval"),
            (
                f'{quote(format_duration(demand))} must divide 24 h (e.g. "15m", "30m") so '
                "demand blocks align like windows"
            ),
        )
    for name, carrier in cfg.energy.carriers.items():
        if units.lookup(carrier.unit) is None:
            yield ("energy", "carriers", name, "unit"), _unknown_unit(carrier.unit)
        default = DEFAULT_CARRIERS.get(name)
        if (
            default is not None
            and carrier.method != default.method
            and carrier.kgce_per_unit == default.kgce_per_unit
        ):
            # The default factor belongs to the default method: relabelling it is a wrong number.
            yield (
                ("energy", "carriers", name, "method"),
                (
                    f"method {quote(carrier.method)} needs its own kgce_per_unit: the default "
                    f"{default.kgce_per_unit:g} is the {quote(default.method)} value"
                ),
            )


def _is_interval(name: str) -> bool:
    try:
        seconds = parse_duration(name)
    except ValueError:
        return False
    return seconds.is_integer() and check_interval(int(seconds)) is None


def _unknown_unit(unit: str) -> str:
    guess = units.suggest(unit)
    if guess:
        return f"{quote(unit)} is not a known unit (did you mean {guess}?)"
    return (
        f"{quote(unit)} is not a known unit (known: {', '.join(u for u in units.UNITS if u)}; "
        "see docs/config.md, Units)"
    )


def _check_devices(cfg: Config) -> Iterator[Finding]:
    names: dict[str, int] = {}
    carriers = cfg.energy.carriers
    for d, device in enumerate(cfg.devices):
        loc: Loc = ("devices", d)
        if device.name in names:
            yield (
                (*loc, "name"),
                (
                    f"device {quote(device.name)} is already defined as "
                    f"devices[{names[device.name]}]"
                ),
            )
        names.setdefault(device.name, d)
        plugin = plugin_of(device)
        for where, message in plugin.config().check(device):
            yield (*loc, *where), message
        for key in plugin.file_keys:
            check_file = _check_secret_file if key in plugin.secret_keys else _check_file
            yield from check_file((*loc, key), getattr(device, key))
        seen: dict[str, int] = {}
        own: tuple[PointBase, ...] = device.points
        for p, point in enumerate(own):
            ploc: Loc = (*loc, "points", p)
            if point.name in seen:
                yield (
                    (*ploc, "name"),
                    (
                        f"point {quote(point.name)} is already defined in device "
                        f"{quote(device.name)} "
                        f"as points[{seen[point.name]}]"
                    ),
                )
            seen.setdefault(point.name, p)
            yield from _check_point_units(ploc, point, carriers)


def _check_point_units(
    loc: Loc, point: PointBase, carriers: Mapping[str, Carrier]
) -> Iterator[Finding]:
    if point.max_gap is not None and point.kind != "rate":
        yield (*loc, "max_gap"), f'max_gap applies to kind = "rate" points, not {point.kind}s'
    if point.integration is not None and point.kind != "rate":
        yield (
            (*loc, "integration"),
            f'integration applies to kind = "rate" points, not {point.kind}s',
        )
    if getattr(point, "rollover", None) is not None and point.kind != "counter":
        yield (
            (*loc, "rollover"),
            f'rollover applies to kind = "counter" points, not {point.kind}s',
        )
    if point.max_rate is not None and point.kind != "counter":
        yield (
            (*loc, "max_rate"),
            f'max_rate applies to kind = "counter" points, not {point.kind}s',
        )
    if point.kind in ("counter", "rate") and point.unit and units.lookup(point.unit) is None:
        yield (*loc, "unit"), _unknown_unit(point.unit)
        return
    if point.carrier is None:
        return
    carrier = carriers.get(point.carrier)
    if carrier is None:
        yield (
            (*loc, "carrier"),
            (
                f"unknown carrier {quote(point.carrier)} (known: {', '.join(sorted(carriers))}; "
                "add one under [energy.carriers.NAME])"
            ),
        )
        return
    carrier_unit = carrier.unit
    if point.kind == "gauge":
        yield (
            (*loc, "carrier"),
            'a gauge is not accounted: carrier applies to kind = "counter" or "rate" points',
        )
        return
    yield from _check_carrier_unit(loc, point, point.carrier, carrier_unit)


def _check_carrier_unit(
    loc: Loc, point: PointBase, carrier: str, carrier_unit: str
) -> Iterator[Finding]:
    """A counter's unit, or a rate's integral, must convert to its carrier's unit."""
    target = units.lookup(carrier_unit)
    if target is None:
        return  # reported on [energy.carriers]
    if not point.unit:
        yield (
            (*loc, "unit"),
            (
                f"a {point.kind} of {carrier} needs its unit (e.g. unit = "
                f'"{_example_unit(point.kind, target.dimension)}")'
            ),
        )
        return
    if point.kind == "counter":
        if units.conversion_factor(point.unit, carrier_unit) is None:
            yield (
                (*loc, "unit"),
                (
                    f"{quote(point.unit)} does not convert to {carrier_unit}, the unit of "
                    f"{carrier}: "
                    f"a counter of {carrier} counts {target.dimension.replace('_', ' ')}: use "
                    f"{_one_of(units.of_dimension(target.dimension))}"
                ),
            )
        return
    # What the integral measures decides, not its unit's name: a rate in m3/s integrates to
    # volume (in units of 3600 m3) and converts to an m3 carrier.
    quantity = units.integral_dimension(point.unit)
    amount = units.of_dimension(quantity)[0] if quantity else None
    if amount is None or units.conversion_factor(amount, carrier_unit) is None:
        rate = units.rate_dimension(target.dimension)
        expected = (
            f"is a {rate.replace('_', ' ')}: use {_one_of(units.of_dimension(rate))}"
            if rate
            else f'cannot be a rate: make it kind = "counter" in {carrier_unit}'
        )
        integral = f" integrates to {amount}, which" if amount else ""
        yield (
            (*loc, "unit"),
            (
                f"{quote(point.unit)}{integral} does not convert to {carrier_unit}, the unit of "
                f"{carrier}: a rate of {carrier} {expected}"
            ),
        )


def _one_of(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _example_unit(kind: str, dimension: str) -> str:
    rate = units.rate_dimension(dimension)
    names = units.of_dimension(rate if kind == "rate" and rate else dimension)
    return names[0] if names else ""


def _check_groups(cfg: Config) -> Iterator[Finding]:
    points: dict[str, PointBase] = {}
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
            yield (
                (*loc, "name"),
                f"group {quote(group.name)} is already defined as groups[{seen[group.name]}]",
            )
        seen.setdefault(group.name, g)
        if not group.members:
            yield (*loc, "members"), "a group needs at least one member"
        for m, member in enumerate(group.members):
            if member in groups:
                continue
            yield from _check_member((*loc, "members", m), member, points, device_names)
        for m, member in enumerate(group.recovered):
            if member in groups:
                yield (
                    (*loc, "recovered", m),
                    f"{quote(member)} is a group: recovered members are points (list the "
                    "group's recovered points here, or declare them recovered in that group)",
                )
                continue
            yield from _check_member((*loc, "recovered", m), member, points, device_names)
        yield from _check_benchmark(loc, group)
        if group.production is not None:
            produced = points.get(group.production)
            if produced is None:
                yield (
                    (*loc, "production"),
                    (
                        f"{quote(group.production)} is not a configured point (expected "
                        '"device.point")'
                    ),
                )
            elif produced.kind == "gauge":
                yield (
                    (*loc, "production"),
                    (
                        f"{quote(group.production)} is a gauge: production must be a counter "
                        "(or rate) point"
                    ),
                )
    yield from _check_group_cycles(cfg)
    yield from _counted_twice(cfg)


def _check_member(
    loc: Loc,
    member: str,
    points: dict[str, PointBase],
    device_names: set[str],
) -> Iterator[Finding]:
    point = points.get(member)
    device, _, name = member.partition(".")
    if point is None:
        if device in device_names:
            known = sorted(k.partition(".")[2] for k in points if k.partition(".")[0] == device)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {device}.{close[0]}?" if close else "check the point name"
            yield (
                loc,
                f"{quote(member)} does not exist: device {device} has no point {name} ({hint})",
            )
        else:
            yield (
                loc,
                (
                    f'{quote(member)} does not exist (expected "device.point" of a configured '
                    "device, or a group name)"
                ),
            )
    elif point.kind == "gauge":
        yield (
            loc,
            (
                f"{quote(member)} is a gauge: group members are counter or rate points "
                "with a carrier"
            ),
        )
    elif point.carrier is None:
        yield (
            loc,
            (
                f"{quote(member)} has no carrier: set carrier on the point (e.g. carrier = "
                '"electricity") so the group knows what it sums'
            ),
        )


def _check_benchmark(loc: Loc, group: GroupConfig) -> Iterator[Finding]:
    """A process needs production (kgce per what?) and a table for it; an EAF its size."""
    if group.process is None:
        for key in ("standard", "benchmark", "furnace_capacity_t"):
            if getattr(group, key) is not None:
                yield (*loc, key), f"{key} judges a process: set process too (or drop {key})"
        return
    if group.production is None:
        yield (
            (*loc, "production"),
            f"process {quote(group.process)} is judged in kgce per tonne: the group needs "
            'production (e.g. production = "plc.steel_tons")',
        )
    process = group.benchmark_process
    if process is None:
        yield (
            (*loc, "furnace_capacity_t"),
            'process "eaf" needs furnace_capacity_t (the nominal furnace size in t: its '
            'benchmark class depends on it), or name the class: "eaf_below_50t", '
            '"eaf_50_70t", "eaf_70t_up"',
        )
        return
    tables = BENCHMARKS[process]
    if group.standard is not None and group.standard not in tables:
        yield (
            (*loc, "standard"),
            f"{quote(group.standard)} has no table for {process} (known: "
            f"{', '.join(quote(t) for t in tables)}; `ironwatt benchmarks` lists them)",
        )


def _counted_twice(cfg: Config) -> Iterator[Finding]:
    """A point reached twice from one group (directly and through a member group, or through
    two member groups) would be summed twice."""
    groups = {g.name: g for g in cfg.groups}
    index = {g.name: i for i, g in enumerate(cfg.groups)}

    def leaves(name: str, path: tuple[str, ...]) -> list[tuple[str, str]]:
        """(point, via) for every point the group counts; a cycle is reported elsewhere."""
        g = groups[name]
        out = [(m, name) for m in (*g.members, *g.recovered) if m not in groups]
        for m in g.members:
            if m in groups and m not in path:
                out += leaves(m, (*path, m))
        return out

    for name in groups:
        seen: dict[str, str] = {}
        for point, via in leaves(name, (name,)):
            if point in seen:
                first, second = seen[point], via
                yield (
                    ("groups", index[name], "members"),
                    f"{quote(point)} is counted twice in group {quote(name)} (through "
                    f"{quote(first)} and {quote(second)}): list each point once",
                )
                break
            seen[point] = via


def _check_group_cycles(cfg: Config) -> Iterator[Finding]:
    groups = {g.name: g for g in cfg.groups}
    index = {g.name: i for i, g in enumerate(cfg.groups)}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(name: str, path: list[str]) -> Iterator[Finding]:
        state[name] = 1
        for m, member in enumerate(groups[name].members):
            if member not in groups:
                continue
            if state.get(member) == 1:
                cycle = [*path[path.index(member) :], member]
                yield (
                    ("groups", index[name], "members", m),
                    f"groups form a cycle: {' -> '.join(cycle)} (a group cannot contain itself)",
                )
            elif state.get(member) is None:
                yield from visit(member, [*path, member])
        state[name] = 2

    for name in groups:
        if name not in state:
            yield from visit(name, [name])
