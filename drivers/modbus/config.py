"""The Modbus device table of ironwatt.toml: its models and the checks that span its keys.

The validating side only (pydantic): the config worker and `ironwatt check` load it through
`MODBUS.config()`; the daemon gets records with the same field names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, Field, PrivateAttr, ValidationError

from drivers.fields import Bool, Duration, Float, Int, Name, Rollover, in_range, positive
from drivers.modbus import profiles
from drivers.modbus.points import BIT_FUNCTIONS, REGISTER_TYPES, REGISTER_WORDS
from drivers.models import ConfigModel, PointBase
from drivers.plugin import Finding, Loc
from drivers.wording import format_duration, quote

__all__ = ["ModbusDevice", "ModbusPoint", "check", "device_model", "point_model"]

if TYPE_CHECKING:
    RegisterType = str
else:
    # The choices are the driver's own table (drivers/modbus/points.py), never a copy.
    RegisterType = Literal[tuple(REGISTER_TYPES)]


class ModbusPoint(PointBase):
    function: Literal["coil", "discrete", "input", "holding"] = "holding"
    address: Annotated[Int, in_range(0, 65535)] = Field(
        description="0-based register or coil number as on the wire: address = 0x004A"
    )
    type: RegisterType = "uint16"
    order: Literal["ABCD", "CDAB", "BADC", "DCBA"] = "ABCD"
    rollover: Rollover | None = None
    bit: Annotated[Int, in_range(0, 15)] | None = None
    multiply_by: Literal["ct", "pt", "ct*pt"] | None = None

    @property
    def words(self) -> int:
        return REGISTER_WORDS[self.type]


class ModbusDevice(ConfigModel):
    name: Name = Field(description='the device\'s name, a topic level: name = "sub-a-main"')
    driver: Literal["modbus"]
    transport: Literal["tcp", "rtu", "rtu-over-tcp"] = "tcp"
    host: str | None = None
    port: Annotated[Int, in_range(1, 65535)] = 502
    unit: Annotated[Int, in_range(0, 247)] = 1
    serial_port: str | None = None
    baudrate: Annotated[Int, in_range(300, 4_000_000)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    ct_ratio: Annotated[Float, AfterValidator(positive)] = 1.0
    pt_ratio: Annotated[Float, AfterValidator(positive)] = 1.0
    poll: Duration = 1.0
    timeout: Duration = 0.5
    # The longest time between two attempts to reach a device that stopped answering; default
    # 5 s alone on its link, 60 s on a shared one (drivers/modbus/recovery.py).
    reconnect_max: Duration | None = None
    profile: str | None = None
    retries: Annotated[Int, in_range(0, 10)] = 2
    max_gap_registers: Annotated[Int, in_range(0, 124)] = 10
    max_registers_per_request: Annotated[Int, in_range(1, 125)] = 125
    max_bits_per_request: Annotated[Int, in_range(1, 2000)] = 2000
    enabled: Bool = True
    points: tuple[ModbusPoint, ...] = ()

    _resolved: tuple[ModbusPoint, ...] | None = PrivateAttr(default=None)

    def resolved_points(self) -> tuple[ModbusPoint, ...]:
        """The profile's points (if any) with the device's own, which override by name.

        Computed once per device (the profile file itself is parsed once per process);
        KeyError for an unknown profile (`ironwatt check` reports it first).
        """
        if self._resolved is None:
            self._resolved = self._merge_profile()
        return self._resolved

    def _merge_profile(self) -> tuple[ModbusPoint, ...]:
        if not self.profile:
            return self.points
        merged: list[ModbusPoint] = []
        for fields in profiles.points_of(self.profile, {p.name for p in self.points}):
            try:
                merged.append(ModbusPoint.model_validate(fields))
            except ValidationError as exc:
                error = exc.errors(include_url=False)[0]
                where = ".".join(str(part) for part in error["loc"])
                raise ValueError(
                    f"point {fields['name']}: {where}: {error['msg']} (got {quote(error['input'])})"
                ) from None
        return (*merged, *self.points)


device_model = ModbusDevice
point_model = ModbusPoint


def check(device: ModbusDevice) -> Iterator[Finding]:
    """Problems that span several keys of one Modbus device (locs below its table)."""
    yield from _check_device((), device)


def _check_device(loc: Loc, device: ModbusDevice) -> Iterator[Finding]:
    if device.transport in ("tcp", "rtu-over-tcp"):
        host = device.host or ""
        if host.count(":") == 1 and host.rpartition(":")[2].isdigit():  # not an IPv6 address
            name, _, port = host.rpartition(":")
            yield (
                (*loc, "host"),
                (f"{quote(host)} includes a port: write host = {quote(name)} and port = {port}"),
            )
        if not device.host:
            yield (
                (*loc, "host"),
                (
                    f'transport {quote(device.transport)} needs host = "IP or name" '
                    '(for a serial line: transport = "rtu" and serial_port = "/dev/ttyUSB0")'
                ),
            )
        if device.serial_port:
            yield (
                (*loc, "serial_port"),
                f'serial_port is for transport = "rtu", not {quote(device.transport)}',
            )
    elif not device.serial_port:
        yield (
            (*loc, "serial_port"),
            (
                'transport "rtu" needs serial_port = "/dev/ttyUSB0" (or the port the RS-485 '
                "adapter is on)"
            ),
        )
    if device.timeout >= device.poll * 4:
        yield (
            (*loc, "timeout"),
            (
                f"{format_duration(device.timeout)} is 4 poll periods or more (poll is "
                f"{format_duration(device.poll)}): a silent device would hold up its link; "
                "shorten timeout or poll less often"
            ),
        )
    if device.profile is not None:
        known = profiles.available()
        if device.profile not in known:
            close = difflib.get_close_matches(device.profile, known, n=1, cutoff=0.8)
            hint = f"did you mean {close[0]}?" if close else f"built-in: {', '.join(known)}"
            yield (*loc, "profile"), f"unknown profile {quote(device.profile)} ({hint})"
        else:
            yield from _check_profile(loc, device)
    for p, point in enumerate(device.points):
        yield from _check_register(device, (*loc, "points", p), point)


def _check_profile(loc: Loc, device: ModbusDevice) -> Iterator[Finding]:
    """A built-in profile is tested, but a broken one must still be a problem, not a crash."""
    try:
        resolved = device.resolved_points()
    except (ValueError, KeyError, TypeError) as exc:
        yield (
            (*loc, "profile"),
            (
                f"profile {quote(device.profile)} cannot be used: {exc} (a bug in the profile "
                "file: report it)"
            ),
        )
        return
    own = {point.name for point in device.points}
    for point in resolved:
        if point.name in own:
            continue
        for _, message in _check_register(device, (), point):
            yield (
                (*loc, "profile"),
                (f"profile {quote(device.profile)}, point {point.name}: {message}"),
            )


def _check_register(device: ModbusDevice, loc: Loc, point: ModbusPoint) -> Iterator[Finding]:
    bit_function = point.function in BIT_FUNCTIONS
    if bit_function and point.type != "bool":
        yield (
            (*loc, "type"),
            (
                f'a {point.function} is a single bit: type must be "bool", not {quote(point.type)} '
                '(for a number, read function = "holding" or "input")'
            ),
        )
    if point.bit is not None and bit_function:
        yield (*loc, "bit"), f"bit selects a bit of a register; a {point.function} is one already"
    elif not bit_function and point.type == "bool" and point.bit is None:
        yield (
            (*loc, "bit"),
            f'type "bool" on a {point.function} register needs bit = 0..15 (which bit of it)',
        )
    elif point.bit is not None and point.type not in ("bool", "uint16", "int16"):
        yield (
            (*loc, "bit"),
            (
                f"bit reads one bit of a 16-bit register: type must be uint16, int16 or bool, "
                f"not {point.type}"
            ),
        )
    last = point.address + point.words - 1
    if last > 65535:
        yield (
            (*loc, "address"),
            (
                f"{point.type} needs {point.words} registers: {point.address}..{last} runs past "
                "65535 (the last register)"
            ),
        )
    if point.rollover == "auto" and not REGISTER_TYPES[point.type].unsigned:
        yield (
            (*loc, "rollover"),
            (
                f'"auto" needs an unsigned integer register (uint16, uint32, uint64), not '
                f"{point.type}: give the modulus as a number (e.g. rollover = 100000000)"
            ),
        )
    if point.words > device.max_registers_per_request:
        yield (
            (*loc, "type"),
            (
                f"{point.type} needs {point.words} registers but the device reads at most "
                f"{device.max_registers_per_request} per request"
            ),
        )
