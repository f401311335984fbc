"""The read-side view of a Modbus point: where it lives on the wire and how to turn it into a value.

Merges a device's profile points with its own (own override by name) and folds CT/PT ratios in.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from drivers.modbus import profiles

__all__ = [
    "BIT_FUNCTIONS",
    "FUNCTION_CODES",
    "REGISTER_TYPES",
    "REGISTER_WORDS",
    "PointSpec",
    "RegisterType",
    "resolve",
    "width",
]


@dataclass(frozen=True, slots=True)
class RegisterType:
    """What a register type is on the wire and what that means for its readings."""

    words: int  # registers on register functions; coils/discrete inputs are one bit per point
    integer: bool  # readings move in steps of the scale (one step down is jitter)
    unsigned: bool  # wraps at 2^(16 x words): `rollover = "auto"` applies

    @property
    def bits(self) -> int:
        return 16 * self.words


# The one list of register types: the config model's choices, the CLI's, the decoder's, the
# energy stage's facts all come from here.
REGISTER_TYPES: dict[str, RegisterType] = {
    "bool": RegisterType(1, integer=True, unsigned=False),
    "int16": RegisterType(1, integer=True, unsigned=False),
    "uint16": RegisterType(1, integer=True, unsigned=True),
    "int32": RegisterType(2, integer=True, unsigned=False),
    "uint32": RegisterType(2, integer=True, unsigned=True),
    "int64": RegisterType(4, integer=True, unsigned=False),
    "uint64": RegisterType(4, integer=True, unsigned=True),
    "float32": RegisterType(2, integer=False, unsigned=False),
    "float64": RegisterType(4, integer=False, unsigned=False),
}
REGISTER_WORDS: dict[str, int] = {name: t.words for name, t in REGISTER_TYPES.items()}
FUNCTION_CODES: dict[str, int] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
BIT_FUNCTIONS = frozenset({"coil", "discrete"})

_POINT_KEYS = (
    "name",
    "function",
    "address",
    "type",
    "order",
    "scale",
    "offset",
    "unit",
    "kind",
    "carrier",
    "bit",
    "multiply_by",
)
_DEFAULTS: dict[str, Any] = {
    "function": "holding",
    "type": "uint16",
    "order": "ABCD",
    "scale": 1.0,
    "offset": 0.0,
    "unit": "",
    "kind": "gauge",
    "carrier": None,
    "bit": None,
    "multiply_by": None,
}


class DeviceLike(Protocol):
    """The attributes of `drivers.modbus.config.ModbusDevice` (or its record) this module reads."""

    @property
    def name(self) -> str: ...
    @property
    def profile(self) -> str | None: ...
    @property
    def ct_ratio(self) -> float: ...
    @property
    def pt_ratio(self) -> float: ...
    @property
    def points(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class PointSpec:
    """One point as the driver reads it; `scale` already includes the CT/PT factor."""

    key: str  # "device.point"
    name: str
    function: str  # coil | discrete | input | holding
    address: int  # 0-based wire address
    type: str
    order: str
    scale: float
    offset: float
    unit: str
    kind: str
    carrier: str | None
    bit: int | None = None

    @property
    def width(self) -> int:
        """Registers (or bits, for coils/discrete inputs) the point occupies."""
        return width(self.function, self.type)


def width(function: str, type_: str) -> int:
    return 1 if function in BIT_FUNCTIONS else REGISTER_WORDS[type_]


def _as_dict(point: Any) -> dict[str, Any]:
    if isinstance(point, Mapping):
        return dict(point)
    return {k: getattr(point, k) for k in _POINT_KEYS if hasattr(point, k)}


def _merged(device: DeviceLike) -> list[dict[str, Any]]:
    """Profile points then the device's own; an own point replaces the profile's of that name."""
    resolved = getattr(device, "resolved_points", None)
    if callable(resolved):
        return [_as_dict(p) for p in resolved()]
    own = [_as_dict(p) for p in (device.points or ())]
    if not device.profile:
        return own
    return profiles.points_of(device.profile, {p["name"] for p in own}) + own


def _factor(multiply_by: str | None, ct: float, pt: float, where: str) -> float:
    if multiply_by is None:
        return 1.0
    factors = {"ct": ct, "pt": pt, "ct*pt": ct * pt, "pt*ct": ct * pt}
    try:
        return factors[multiply_by.lower()]
    except KeyError:
        raise ValueError(f"{where}: multiply_by {multiply_by!r} is not ct, pt or ct*pt") from None


def resolve(device: DeviceLike) -> list[PointSpec]:
    """Every point of `device` ready to plan and decode, in declaration order."""
    specs: list[PointSpec] = []
    for raw in _merged(device):
        p = {**_DEFAULTS, **{k: v for k, v in raw.items() if v is not None or k == "bit"}}
        where = f"device {device.name!r} point {p['name']!r}"
        if p["type"] not in REGISTER_WORDS:
            raise ValueError(f"{where}: unknown type {p['type']!r}")
        if p["function"] not in FUNCTION_CODES:
            raise ValueError(f"{where}: unknown function {p['function']!r}")
        factor = _factor(p["multiply_by"], device.ct_ratio, device.pt_ratio, where)
        specs.append(
            PointSpec(
                # Interned: the energy stage and the point index hold the same key (one
                # string per point, not one per holder: 8,000 points x 4 holders otherwise).
                key=sys.intern(f"{device.name}.{p['name']}"),
                name=p["name"],
                function=p["function"],
                address=int(p["address"]),
                type=p["type"],
                order=p["order"],
                scale=float(p["scale"]) * factor,
                offset=float(p["offset"]),
                unit=p["unit"] or "",
                kind=p["kind"],
                carrier=p["carrier"],
                bit=p["bit"],
            )
        )
    return specs
