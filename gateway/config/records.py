"""The validated config as the daemon keeps it: compact read-only records, and no pydantic.

`ironwatt run` validates its file in a child process (gateway/config/worker.py: pydantic, the
models, every check and its `file:line:` report) and receives the result packed into plain
values. Here the packed tree becomes records: one small class per model, with the model's field
names as slots and the few methods the runtime calls (`tz`, `password()`,
`resolved_points()`, `device()`, `mqtt_client_id`; a protocol's own through its plugin).

Why a child: pydantic's modules and validators, plus one model object per point, cost a
Modbus gateway with 8,000 points ~30 MB of resident memory for as long as it runs, half of
its budget; validated once, the config needs none of it. A point's record is ~180 bytes (its
model ~1.3 KB), strings are interned (8,000 points share one "holding", one "kW") and equal
definitions are one record.

Code that also runs with the pydantic models (tests, `ironwatt check`) reads the same names:
the records are built from the models' own field lists, never from a second copy of them.
"""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, cast
from zoneinfo import ZoneInfo

from drivers.registry import PLUGINS
from drivers.secrets import read_secret
from gateway.child import python_child_env
from gateway.config.base import device_named
from gateway.errors import ConfigError, ConfigWorkerError, Problem

if TYPE_CHECKING:
    from gateway.config.model import Config

__all__ = ["WORKER_MODULE", "Packed", "Record", "load_config_isolated", "read_packed"]

WORKER_MODULE = "gateway.config.worker"
# Validating 8,000 points takes about a second here; a small PC under load, several. A reload
# passes a shorter `timeout` (gateway.daemon.reload_control.RELOAD_WORKER_TIMEOUT_S): its
# verdict must reach `ironwatt reload` within the unit's TimeoutStartSec=.
_WORKER_TIMEOUT_S = 300.0


class Packed:
    """One model on the wire: its class name and its field values, in `fields[model]` order.

    Unpickled by `_ConfigUnpickler`, a Packed never exists in the daemon: the record is built
    in its place, straight from the stream (no intermediate tree to outlive as fragmentation).
    """

    __slots__ = ("model", "values")

    def __init__(self, model: str, values: tuple[Any, ...]) -> None:
        self.model = model
        self.values = values

    def __reduce__(self) -> tuple[Any, ...]:
        return (Packed, (self.model, self.values))


class Record:
    """An immutable stand-in for one validated model: its fields as slots, equal by value."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *values: Any) -> None:
        for name, value in zip(self._fields, values, strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only (the config is frozen)")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields if n[0] != "_")
        return f"{type(self).__name__}({shown})"

    def __copy__(self) -> Record:
        return self  # immutable: a copy is the same value

    def __deepcopy__(self, memo: dict[int, Any]) -> Record:
        return self

    def model_dump(self) -> dict[str, Any]:
        """The fields as plain values, nested records included (like the model's)."""
        return {n: _dump(getattr(self, n)) for n in self._fields if n[0] != "_"}


def _dump(value: Any) -> Any:
    if isinstance(value, Record):
        return value.model_dump()
    if isinstance(value, tuple | list):
        return type(value)(_dump(v) for v in value)
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


# ---- the methods of the models the runtime calls ------------------------------------------------


class _GatewayConfig(Record):
    __slots__ = ()
    timezone: str

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class _WithPassword(Record):
    __slots__ = ()
    password_file: Path | None
    password_env: str | None

    def password(self) -> str | None:
        return read_secret(self.password_file, self.password_env)


class _Device(Record):
    __slots__ = ()
    _resolved: tuple[Any, ...]

    def resolved_points(self) -> tuple[Any, ...]:
        """The device's points, a profile's merged in (by the worker, once)."""
        return self._resolved


class _Config(Record):
    __slots__ = ()
    devices: tuple[Any, ...]
    mqtt: Any
    gateway: Any
    path: Path

    def device(self, name: str) -> Any:
        return device_named(self.devices, name, self.path)

    @property
    def mqtt_client_id(self) -> str:
        return str(self.mqtt.client_id or f"ironwatt-{self.gateway.site}-{self.gateway.id}")


# Model class name -> the record base that carries its methods. Devices (the worker sends
# their `_resolved` points) and tables with a password are told by their fields, whatever
# their protocol; a protocol adds its own properties through its plugin (`record_bases`).
_BASES: dict[str, type[Record]] = {
    "GatewayConfig": _GatewayConfig,
    "Config": _Config,
}


def _bases_of(model: str, names: tuple[str, ...]) -> tuple[type, ...]:
    bases: list[type] = [
        mixin for p in PLUGINS.values() if (mixin := p.record_bases.get(model)) is not None
    ]
    if "_resolved" in names:
        bases.append(_Device)
    if "password_file" in names and "password_env" in names:
        bases.append(_WithPassword)
    bases.append(_BASES.get(model, Record))
    return tuple(bases)


# One class per (model, fields) for the life of the process: a reloaded config's records
# must compare equal to the running one's (same class) when nothing changed.
_CLASSES: dict[tuple[str, tuple[str, ...]], type[Record]] = {}


def record_classes(fields: Mapping[str, tuple[str, ...]]) -> dict[str, type[Record]]:
    """One record class per model, its slots the model's fields (as the worker sent them)."""
    out: dict[str, type[Record]] = {}
    for model, names in fields.items():
        cls = _CLASSES.get((model, names))
        if cls is None:
            cls = type(model, _bases_of(model, names), {"__slots__": names, "_fields": names})
            _CLASSES[(model, names)] = cls
        out[model] = cls
    return out


class _ConfigUnpickler(pickle.Unpickler):
    """Builds each record as its Packed arrives; strings are interned (8,000 points share one
    "holding", one "kW")."""

    def __init__(self, stream: BinaryIO, classes: Mapping[str, type[Record]]) -> None:
        super().__init__(stream)
        self.classes = classes

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name == "Packed":
            return self._record
        return super().find_class(module, name)

    def _record(self, model: str, values: tuple[Any, ...]) -> Record:
        intern = sys.intern
        return self.classes[model](*[intern(v) if type(v) is str else v for v in values])


def read_packed(stream: BinaryIO) -> Any:
    """What the worker wrote: the config as records, or ConfigError raised with its problems."""
    kind, head = _ConfigUnpickler(stream, {}).load()
    if kind == "error":
        file, problems = head
        raise ConfigError(file, [Problem(*p) for p in problems])
    # A second unpickler for the second pickle: each numbers its memo from zero.
    return _ConfigUnpickler(stream, record_classes(head)).load()


def load_config_isolated(
    path: str | Path,
    *,
    timeout: float = _WORKER_TIMEOUT_S,
    run: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run,
) -> Config:
    """Validate `path` in a child process and return the config as records.

    ConfigError exactly as `gateway.config.load.load_config` raises it (the same report, every
    problem with its line). The child's warnings go to this process's stderr (the journal).
    ConfigWorkerError when the child itself fails (it should not: the message says what it printed),
    or takes more than `timeout` seconds (it is killed).
    """
    try:
        done = run(
            [sys.executable, "-m", WORKER_MODULE, str(path)],
            stdout=subprocess.PIPE, env=python_child_env(), timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ConfigWorkerError(
            f"validating {path} took more than {timeout:g} s and was given up (the config "
            "worker hung, or the machine is overloaded)"
        ) from None
    except OSError as exc:
        raise ConfigWorkerError(
            f"the config worker ({sys.executable}) could not start: {exc}"
        ) from None
    if done.returncode != 0 or not done.stdout:
        raise ConfigWorkerError(
            f"the config worker ({sys.executable} -m {WORKER_MODULE}) failed with exit status "
            f"{done.returncode}; its error is in the log just above"
        )
    # Our own child wrote these bytes, from our own installation: pickle is safe here.
    try:
        return cast("Config", read_packed(io.BytesIO(done.stdout)))
    except ConfigError:
        raise
    except Exception as exc:  # a worker of another version (upgraded in place), a torn stream
        raise ConfigWorkerError(
            f"the config worker's answer could not be read ({type(exc).__name__}: {exc}); "
            "was the gateway upgraded while running? restart it"
        ) from None
