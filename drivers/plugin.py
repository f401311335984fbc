"""The driver interface: what a protocol package exports (one `DriverPlugin`) and what it builds.

In the spirit of Telegraf's inputs: the daemon, the config loader, the energy stage and
`ironwatt check` ask the plugin of a device's `driver = "..."` (drivers/registry.py) and never
name a protocol. Stdlib only, and so is every plugin module: the daemon imports them all, and a
protocol's library (pymodbus, asyncua) comes with `build`, its config models with `config`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from drivers.base import DeviceSink
from drivers.samples import PointIndex

__all__ = [
    "ConfigFace",
    "Driver",
    "DriverContext",
    "DriverPlugin",
    "Finding",
    "Loc",
    "PointFacts",
    "Timing",
]

# A key path in the config: ("devices", 2, "points", 0, "node"); a protocol's checks give them
# below the device's table (("points", 0, "node")). The one definition: the loader's are these.
Loc = tuple[str | int, ...]
# What a check finds: where, and what is wrong there. The loader makes each a
# gateway.errors.Problem (with the file's line and the dotted key) when it refuses the file.
Finding = tuple[Loc, str]


class Driver(Protocol):
    """A running driver: one task for its devices. `run()` until cancelled; raising is a crash
    (the daemon restarts it with backoff). `status()` is per device name, for `/status`."""

    async def run(self) -> None: ...

    def status(self) -> Mapping[str, Mapping[str, object]]: ...


@dataclass(frozen=True, slots=True)
class DriverContext:
    """What a driver may need of the gateway beyond its devices (state files, identities)."""

    data_dir: Path
    gateway_id: str
    site: str


@dataclass(frozen=True, slots=True)
class Timing:
    """How a device's readings arrive: every `period` s (polled), or when they change."""

    period: float
    timeout: float
    polled: bool


@dataclass(frozen=True, slots=True)
class PointFacts:
    """What the energy stage needs of a point beyond its config keys.

    `modulus`: 2^bits x |scale| for an unsigned integer register (`rollover = "auto"`), else
    None; `resolution`: the step its readings move in (0: continuous); `source`: what it reads,
    as the refusal of `rollover = "auto"` names it ("float32", "an OPC UA node").
    """

    modulus: float | None
    resolution: float
    source: str


class ConfigFace(Protocol):
    """The validating side of a protocol (imports pydantic): `plugin.config()` returns it."""

    # The pydantic models of the device table and of one of its points.
    device_model: type[Any]
    point_model: type[Any]

    def check(self, device: Any) -> Iterator[Finding]:
        """Problems spanning several keys of one device (locs below its table)."""
        ...


class DriverPlugin(Protocol):
    """One protocol. Attributes are plain data; methods take the validated device (model or
    record: the same names)."""

    name: str  # the config's `driver = "..."`
    # Device keys that change what a reading means (the same address on another meter).
    source_keys: tuple[str, ...]
    # Device keys naming a file: relative paths are anchored to the config's folder; `secret`
    # ones must be private (chmod 600).
    file_keys: tuple[str, ...]
    secret_keys: tuple[str, ...]
    # A minimal valid device table, stood in for one whose driver is unknown so the checks of
    # the rest of the file still run.
    placeholder: Mapping[str, Any]

    @property
    def record_bases(self) -> Mapping[str, type]:
        """Per model class name, a stdlib mixin (`__slots__ = ()`) giving the daemon's records
        of that model the properties the drivers read (`ModbusPoint.words`)."""
        ...

    def config(self) -> ConfigFace: ...

    def unit_key(self, device: Any) -> str:
        """Devices with one key run in one driver (a shared connection: a Modbus link)."""
        ...

    def build(
        self, devices: Sequence[Any], index: PointIndex, sink: DeviceSink, context: DriverContext
    ) -> Driver: ...

    def timing(self, device: Any) -> Timing: ...

    def point_facts(self, device: Any) -> Mapping[str, PointFacts]:
        """Per point name (resolved points, profile included)."""
        ...

    def summary(self, device: Any, resolved: Sequence[Any]) -> str:
        """`ironwatt check`'s header of the device, after "name: "."""
        ...

    def describe(self, device: Any) -> list[str]:
        """`ironwatt check`'s lines under the header: the read plan, what to fix first."""
        ...

    def point_where(self, point: Any) -> str:
        """Where a point is read from, for `ironwatt check --points`."""
        ...
