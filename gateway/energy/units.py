"""The one unit table: every unit a point may carry, its dimension, and its factor to canonical.

Accounting works in canonical units only (kWh, kW, m3, m3/h, t, t/h, ...); a rate's integral
over hours is the matching quantity (kW -> kWh, m3/h -> m3, t/h -> t).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

__all__ = [
    "RATE_TO_QUANTITY",
    "UNITS",
    "Unit",
    "amount_factor",
    "canonical",
    "conversion_factor",
    "integral_dimension",
    "integral_unit",
    "lookup",
    "of_dimension",
    "rate_dimension",
    "suggest",
]


@dataclass(frozen=True, slots=True)
class Unit:
    name: str
    dimension: str
    factor: float  # value in this unit × factor = value in the dimension's canonical unit


def _table(dimension: str, canonical_name: str, factors: dict[str, float]) -> dict[str, Unit]:
    assert factors[canonical_name] == 1.0, canonical_name
    return {name: Unit(name, dimension, f) for name, f in factors.items()}


# Canonical unit of each dimension comes first and has factor 1.
UNITS: dict[str, Unit] = {
    **_table("energy", "kWh", {"kWh": 1.0, "Wh": 1e-3, "MWh": 1e3, "GWh": 1e6}),
    **_table("power", "kW", {"kW": 1.0, "W": 1e-3, "MW": 1e3}),
    **_table("reactive_energy", "kvarh", {"kvarh": 1.0, "varh": 1e-3, "Mvarh": 1e3}),
    **_table("reactive_power", "kvar", {"kvar": 1.0, "var": 1e-3, "Mvar": 1e3}),
    **_table("apparent_energy", "kVAh", {"kVAh": 1.0, "VAh": 1e-3, "MVAh": 1e3}),
    **_table("apparent_power", "kVA", {"kVA": 1.0, "VA": 1e-3, "MVA": 1e3}),
    **_table("heat", "GJ", {"GJ": 1.0, "MJ": 1e-3, "kJ": 1e-6, "TJ": 1e3}),
    **_table("heat_rate", "GJ/h", {"GJ/h": 1.0, "MJ/h": 1e-3, "MW_th": 3.6}),
    **_table("volume", "m3", {"m3": 1.0, "Nm3": 1.0, "L": 1e-3, "km3": 1e3}),
    **_table(
        "volume_flow",
        "m3/h",
        {"m3/h": 1.0, "Nm3/h": 1.0, "m3/min": 60.0, "m3/s": 3600.0, "L/s": 3.6, "L/min": 0.06},
    ),
    **_table("mass", "t", {"t": 1.0, "kg": 1e-3}),
    **_table("mass_flow", "t/h", {"t/h": 1.0, "kg/h": 1e-3, "kg/s": 3.6, "t/min": 60.0}),
    **_table("voltage", "V", {"V": 1.0, "kV": 1e3}),
    **_table("current", "A", {"A": 1.0, "kA": 1e3, "mA": 1e-3}),
    **_table("frequency", "Hz", {"Hz": 1.0}),
    **_table("temperature", "degC", {"degC": 1.0}),
    **_table("pressure", "kPa", {"kPa": 1.0, "Pa": 1e-3, "MPa": 1e3, "bar": 100.0}),
    **_table("ratio", "1", {"1": 1.0, "%": 0.01}),
    **_table("count", "", {"": 1.0}),
}

_CANONICAL: dict[str, str] = {}
for _unit in UNITS.values():
    if _unit.factor == 1.0:
        _CANONICAL.setdefault(_unit.dimension, _unit.name)

# A rate integrated over hours gives this quantity (both canonical).
RATE_TO_QUANTITY: dict[str, str] = {
    "power": "energy",
    "reactive_power": "reactive_energy",
    "apparent_power": "apparent_energy",
    "heat_rate": "heat",
    "volume_flow": "volume",
    "mass_flow": "mass",
}


def lookup(name: str) -> Unit | None:
    return UNITS.get(name)


def of_dimension(dimension: str) -> list[str]:
    """The units of one dimension, canonical first: of_dimension("energy") -> [kWh, Wh, ...]."""
    return [u.name for u in UNITS.values() if u.dimension == dimension]


def rate_dimension(quantity: str) -> str | None:
    """The dimension whose integral is `quantity`: "energy" -> "power", None if none."""
    for rate, amount in RATE_TO_QUANTITY.items():
        if amount == quantity:
            return rate
    return None


def suggest(name: str) -> str | None:
    """The known unit a mistyped one most likely meant ("kwh" -> "kWh", "m³" -> "m3")."""
    folded = name.replace("³", "3").replace("²", "2").replace(" ", "").casefold()
    for unit in UNITS:
        if unit and unit.casefold() == folded:
            return unit
    close = difflib.get_close_matches(name, [u for u in UNITS if u], n=1, cutoff=0.75)
    return close[0] if close else None


def canonical(name: str) -> str:
    """The canonical unit of the dimension `name` belongs to; KeyError for an unknown unit."""
    return _CANONICAL[UNITS[name].dimension]


def conversion_factor(source: str, target: str) -> float | None:
    """Factor from `source` to `target` when both share a dimension, else None."""
    a, b = UNITS.get(source), UNITS.get(target)
    if a is None or b is None or a.dimension != b.dimension:
        return None
    return a.factor / b.factor


def integral_dimension(rate_unit: str) -> str | None:
    """The dimension of a rate's integral over hours ("kW" -> "energy"), None for non-rates."""
    unit = UNITS.get(rate_unit)
    return RATE_TO_QUANTITY.get(unit.dimension) if unit is not None else None


def integral_unit(rate_unit: str) -> str | None:
    """The unit a rate's integral over hours is in, its readings taken as they are: kW -> kWh,
    MW -> MWh, W -> Wh, m3/h -> m3, Nm3/h -> Nm3, kg/h -> kg, kvar -> kvarh.

    The one answer: the window payload's `integral_unit` (the kernel integrates readings
    without converting them, so MW integrate to MWh, not kWh) and the config checks both ask
    here. None for a unit that is not a rate, or a rate whose integral the table has no name
    for (m3/s integrates to 3600 m3 per unit: no such unit).
    """
    unit = UNITS.get(rate_unit)
    quantity = integral_dimension(rate_unit)
    if unit is None or quantity is None:
        return None
    same = [u.name for u in UNITS.values() if u.dimension == quantity and u.factor == unit.factor]
    # Of equal factors (m3 and Nm3), the one the rate is spelled from: Nm3/h -> Nm3.
    for spelled in (rate_unit.removesuffix("/h"), rate_unit + "h"):
        if spelled in same:
            return spelled
    return same[0] if same else None


def amount_factor(kind: str, unit: str, target: str) -> float | None:
    """Factor from a point's window value to an amount in `target`, None when they do not meet.

    A counter's delta is in its own unit (Wh -> kWh: 0.001); a rate's integral is its reading
    unit times hours (m3/s over hours -> m3: 3600; MW over hours -> kWh: 1000).
    """
    if kind == "counter":
        return conversion_factor(unit, target)
    source, dest = UNITS.get(unit), UNITS.get(target)
    if source is None or dest is None:
        return None
    if RATE_TO_QUANTITY.get(source.dimension) != dest.dimension:
        return None
    return source.factor / dest.factor
