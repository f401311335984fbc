"""ironwatt's exceptions, in one tree: catch what you mean, and a bug still looks like a bug.

    IronwattError                 anything ironwatt raises on purpose
    ├── ConfigError               the config was refused (`problems`: each with line, key, text)
    ├── StorageError              the outbox database cannot do what was asked
    │   ├── OutboxBusy            the writer's queue is full (backpressure: retry or wait)
    │   ├── OutboxLocked          another process holds the database
    │   ├── OutboxClosed          the outbox was closed (shutdown)
    │   └── SchemaError           the database's schema is newer, or a migration failed
    ├── DriverError               a device or its link failed a request (drivers' own subclasses)
    │   ├── ModbusError           LinkDown, NoResponse, DeviceError (an exception answer)
    │   ├── BadAnswer             a Modbus answer that cannot be decoded
    │   └── OpcuaConnectError,    a session that cannot be opened, or died
    │       ConnectionLost
    ├── ConfigWorkerError         the child that validates the config failed (not the config)
    ├── UplinkError               the MQTT uplink cannot be set up as configured
    └── SimulatorError            the simulated plant cannot start (a broker missing, a port taken)

The root and `DriverError` live in `drivers/errors.py` (the drivers are the lowest layer and
import nothing of `gateway`); this module re-exports them and defines the rest.
Anything else that escapes (`RuntimeError`, `KeyError`, ...) is a defect, and the daemon logs it
with its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from drivers.errors import DriverError, IronwattError

__all__ = [
    "ConfigError",
    "ConfigWorkerError",
    "DriverError",
    "IronwattError",
    "OutboxBusy",
    "OutboxClosed",
    "OutboxLocked",
    "Problem",
    "SchemaError",
    "SimulatorError",
    "StorageError",
    "UplinkError",
]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the config: where (line, dotted key) and what to do about it."""

    line: int | None
    path: str
    message: str


class ConfigError(IronwattError):
    """The config was refused; `problems` lists each one, `str()` is the full report."""

    def __init__(self, file: str, problems: Sequence[Problem]) -> None:
        self.file = file
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.path))
        super().__init__(self.report())

    def report(self) -> str:
        lines = []
        for p in self.problems:
            where = f"{self.file}:{p.line}" if p.line else self.file
            lines.append(f"{where}: {p.path}: {p.message}" if p.path else f"{where}: {p.message}")
        count = len(self.problems)
        lines.append(f"{count} problem{'s' if count != 1 else ''}: the configuration was refused")
        return "\n".join(lines)


class ConfigWorkerError(IronwattError):
    """The child process that validates the config failed; its message says how."""


class StorageError(IronwattError):
    """The outbox database cannot do what was asked."""


class OutboxBusy(StorageError):
    """The writer's queue is full: backpressure (the caller waits or retries)."""


class OutboxLocked(StorageError):
    """Another process holds the outbox database."""


class OutboxClosed(StorageError):
    """The outbox was closed; nothing more can be stored or read through it."""


class SchemaError(StorageError):
    """The database's schema is not one this version reads, or a migration failed."""


class UplinkError(IronwattError):
    """The MQTT uplink cannot be set up as configured."""


class SimulatorError(IronwattError):
    """The simulated plant cannot start."""
