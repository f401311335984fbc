"""Accounting groups: closed device windows in, `group/{interval}/{group}` payloads out.

A group's window is the sum of its members' windows of the same slot (interval, start), taken
from the device payloads as they close: per carrier the amounts converted to the carrier's unit,
kgce and kgCO2e by the carrier factors, recovered (exported) members netted out, production and
intensity, cost by TOU period, and demand as the highest sum of simultaneous block averages.
A window is published once every member point present in the config has delivered its window
for the slot, never half-summed; it is published again (revision + 1, estimated) when a
member's window is revised by gap energy.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.energy import units
from gateway.timefmt import utc_iso

__all__ = [
    "CarrierFactors",
    "GroupAccountant",
    "GroupSpec",
    "MemberSpec",
    "compile_groups",
]

# Slots whose inputs are kept for a revision are forgotten after this many longest windows
# past max_revision_age (the aggregator keeps its revisable device windows as long).
_SLOT_KEEP_WINDOWS = 2


class CarrierFactors(Protocol):
    """A carrier of `energy.carriers` (gateway.config.model.Carrier)."""

    @property
    def unit(self) -> str: ...
    @property
    def kgce_per_unit(self) -> float: ...
    @property
    def kgco2e_per_unit(self) -> float: ...
    @property
    def method(self) -> str: ...
    @property
    def source(self) -> str: ...


class PointLike(Protocol):
    """What a group needs of one point (gateway.energy.aggregate's per-point spec)."""

    @property
    def device(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def carrier(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class MemberSpec:
    """One point counted by a group: its window value × `factor` is an amount of `carrier`."""

    key: str
    carrier: str
    unit: str  # the carrier's unit
    factor: float
    recovered: bool = False
    demand_factor: float = 0.0  # block average × this = kW (electricity members only)


@dataclass(frozen=True, slots=True)
class ProductionSpec:
    key: str
    unit: str
    factor: float


@dataclass(frozen=True, slots=True)
class GroupSpec:
    name: str
    points: tuple[MemberSpec, ...]  # direct point members
    children: tuple[str, ...]  # direct group members, computed first
    production: ProductionSpec | None
    leaves: tuple[MemberSpec, ...]  # every point counted, through the children too
    missing: tuple[str, ...] = ()  # configured members whose device is disabled


@dataclass(slots=True)
class _Input:
    """One member point's window in one slot."""

    value: float | None  # delta or integral, in the point's unit
    coverage: float
    estimated: bool
    cost: dict[str, float] | None  # per period name, in the tariff's currency
    energy: dict[str, float] | None  # per period name, in the point's unit


@dataclass(slots=True)
class _Slot:
    interval: str
    start: float
    end: float
    inputs: dict[str, _Input] = field(default_factory=dict)
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: dict[str, dict[str, _Input]] = field(default_factory=dict)  # the inputs used, by group
    revisable: bool = False


def compile_groups(
    groups: Sequence[Any],
    points: Iterable[PointLike],
    carriers: Mapping[str, CarrierFactors],
    *,
    disabled: Iterable[str] = (),
) -> list[GroupSpec]:
    """The validated `[[groups]]` as specs, children before parents.

    `points` are the points the aggregator accounts (enabled devices); `disabled` the names of
    configured devices that are switched off: their members are listed as missing. Raises
    ValueError naming the group for what the config checks refuse (a cycle, a unit that does
    not convert): the daemon never starts on such a table.
    """
    by_key = {f"{p.device}.{p.name}": p for p in points}
    off = set(disabled)
    names = {g.name: g for g in groups}
    done: dict[str, GroupSpec] = {}
    order: list[GroupSpec] = []

    def member(group: str, key: str, recovered: bool) -> MemberSpec | None:
        point = by_key.get(key)
        if point is None:
            if key.partition(".")[0] in off:
                return None
            raise ValueError(f"group {group!r}: member {key!r} is not a configured point")
        carrier = carriers.get(point.carrier or "")
        if carrier is None:
            raise ValueError(f"group {group!r}: member {key!r} has no known carrier")
        factor = units.amount_factor(point.kind, point.unit, carrier.unit)
        if factor is None:
            raise ValueError(
                f"group {group!r}: member {key!r} in {point.unit!r} does not convert to "
                f"{point.carrier}'s unit {carrier.unit!r}"
            )
        unit = units.lookup(point.unit)
        electric = point.carrier == "electricity" and unit is not None
        return MemberSpec(
            key, point.carrier or "", carrier.unit, factor, recovered,
            unit.factor if electric and unit is not None else 0.0,
        )  # fmt: skip

    def build(name: str, path: tuple[str, ...]) -> GroupSpec:
        if name in done:
            return done[name]
        if name in path:
            raise ValueError(f"group {name!r}: groups form a cycle: {' -> '.join((*path, name))}")
        g = names[name]
        direct: list[MemberSpec] = []
        children: list[str] = []
        missing: list[str] = []
        recovered = tuple(getattr(g, "recovered", ()) or ())
        for key, back in [(k, False) for k in g.members] + [(k, True) for k in recovered]:
            if key in names and not back:
                children.append(key)
                continue
            spec = member(name, key, back)
            if spec is None:
                missing.append(key)
            else:
                direct.append(spec)
        leaves: dict[str, MemberSpec] = {}
        for child in children:
            sub = build(child, (*path, name))
            missing += sub.missing
            for leaf in sub.leaves:
                if leaf.key in leaves:
                    raise ValueError(f"group {name!r}: {leaf.key!r} is counted twice")
                leaves[leaf.key] = leaf
        for spec in direct:
            if spec.key in leaves:
                raise ValueError(f"group {name!r}: {spec.key!r} is counted twice")
            leaves[spec.key] = spec
        if not leaves and not missing:
            raise ValueError(f"group {name!r} has no member")
        production = None
        if g.production is not None and g.production in by_key:
            p = by_key[g.production]
            quantity = units.lookup(p.unit)
            # The production's canonical unit (kg -> t); an unknown unit ("pcs") stays as is.
            canon = units.canonical(p.unit) if quantity is not None else p.unit
            if p.kind == "rate":
                dim = units.integral_dimension(p.unit)
                canon = units.of_dimension(dim)[0] if dim else f"{p.unit}*h"
            factor = units.amount_factor(p.kind, p.unit, canon) if quantity else 1.0
            production = ProductionSpec(g.production, canon, factor or 1.0)
        compiled = GroupSpec(
            name, tuple(direct), tuple(children), production, tuple(leaves.values()),
            tuple(dict.fromkeys(missing)),
        )  # fmt: skip
        done[name] = compiled
        order.append(compiled)
        return compiled

    for name in names:
        build(name, ())
    return order


class TariffPrices(Protocol):
    """What groups need of the TOU calendar (gateway.energy.tou.TariffCalendar)."""

    currency: str


class GroupAccountant:
    """Collects member windows per slot and builds each group's window once it is whole."""

    def __init__(
        self,
        groups: Sequence[GroupSpec],
        carriers: Mapping[str, CarrierFactors],
        *,
        currency: str | None = None,
        demand_interval: float | None = 900.0,
        max_revision_age: float = 86400.0,
        longest: float = 86400.0,
    ) -> None:
        self._groups = list(groups)
        self._carriers = carriers
        self._currency = currency
        self._demand_s = float(demand_interval or 0.0)
        self._keep = float(max_revision_age) + _SLOT_KEEP_WINDOWS * float(longest)
        self._wanted = {leaf.key for g in self._groups for leaf in g.leaves} | {
            g.production.key for g in self._groups if g.production is not None
        }
        self._slots: dict[tuple[str, float], _Slot] = {}
        self._longest = float(longest)
        # Per group: blocks some members have delivered, by start: [sum of kW, members in, end];
        # and the whole ones as (start, end, sum) in start order, for the peaks of the windows.
        self._partial: dict[str, dict[float, list[float]]] = {g.name: {} for g in self._groups}
        self._whole: dict[str, list[tuple[float, float, float]]] = {
            g.name: [] for g in self._groups
        }
        self._electric = {
            g.name: {m.key: m for m in g.leaves if m.demand_factor} for g in self._groups
        }

    # ---- input ------------------------------------------------------------------------------

    def take_window(
        self, interval: str, start: float, end: float, payload: Mapping[str, Any],
        revisable: bool = False,
    ) -> None:  # fmt: skip
        """Keep what the groups need of one closed (or revised) device window."""
        device = payload["device"]
        points = payload["points"]
        wanted = [
            (f"{device}.{name}", body)
            for name, body in points.items()
            if f"{device}.{name}" in self._wanted
        ]
        if not wanted:
            return
        slot = self._slots.get((interval, start))
        if slot is None:
            slot = self._slots[(interval, start)] = _Slot(interval, start, end)
        revised = payload.get("revision", 1) > 1
        for key, body in wanted:
            value = body.get("delta") if body["kind"] == "counter" else body.get("integral")
            cost = body.get("cost")
            slot.inputs[key] = _Input(
                None if value is None else float(value),
                float(body["coverage"]),
                bool(body.get("estimated", False) or revised),
                dict(cost["by_period"]) if cost else None,
                dict(body["by_period"]) if "by_period" in body else None,
            )
        slot.revisable |= revisable or revised

    def take_block(self, key: str, start: float, end: float, demand: float | None) -> None:
        """One closed demand block of an electricity point (its average over the block)."""
        for name, members in self._electric.items():
            spec = members.get(key)
            if spec is None:
                continue
            partial = self._partial[name]
            acc = partial.setdefault(start, [0.0, 0.0, end])
            if demand is None or math.isnan(demand):
                acc[0] = math.nan  # a member without data: no simultaneous sum for this block
            else:
                sign = -1.0 if spec.recovered else 1.0
                acc[0] += sign * demand * spec.demand_factor
            acc[1] += 1
            if acc[1] >= len(members):
                del partial[start]
                if not math.isnan(acc[0]):
                    bisect.insort(self._whole[name], (start, acc[2], acc[0]))

    # ---- output -----------------------------------------------------------------------------

    def complete(self, now: float) -> list[dict[str, Any]]:
        """The group windows that became whole (or were revised) since the last call."""
        out: list[dict[str, Any]] = []
        for key in sorted(self._slots, key=lambda k: (k[1], k[0])):
            slot = self._slots[key]
            for group in self._groups:
                payload = self._window_of(group, slot)
                if payload is not None:
                    out.append(payload)
            if len(slot.published) == len(self._groups) and not slot.revisable:
                del self._slots[key]
        for key in [k for k, s in self._slots.items() if s.end < now - self._keep]:
            del self._slots[key]
        self._prune_blocks(now)
        return out

    def _window_of(self, group: GroupSpec, slot: _Slot) -> dict[str, Any] | None:
        before = slot.published.get(group.name)
        keys = [leaf.key for leaf in group.leaves]
        if group.production is not None:
            keys.append(group.production.key)
        inputs = [slot.inputs.get(k) for k in keys]
        if any(i is None for i in inputs):
            return None  # a member's window is still to come
        if before is not None:
            used = slot.seen[group.name]
            if all(used.get(k) is slot.inputs[k] for k in keys):
                return None  # published, and no member revised since
        children = [slot.published[c] for c in group.children if c in slot.published]
        if len(children) != len(group.children):
            return None
        payload = self._build(group, slot, children)
        if before is not None:
            payload["revision"] = before["revision"] + 1
            payload["estimated"] = True
            if "demand" in before:  # blocks are never revised: the peak stands
                payload["demand"] = before["demand"]
        slot.published[group.name] = payload
        slot.seen[group.name] = {k: slot.inputs[k] for k in keys}
        return payload

    def _build(
        self, group: GroupSpec, slot: _Slot, children: list[dict[str, Any]]
    ) -> dict[str, Any]:
        carriers: dict[str, float | None] = {}
        recovered: dict[str, float | None] = {}
        members: dict[str, dict[str, Any]] = {}
        by_period: dict[str, float] = {}
        cost_total: float | None = None
        coverage = 0.0 if group.missing else 1.0
        estimated = False

        def add(into: dict[str, float | None], carrier: str, amount: float | None) -> None:
            if amount is None:
                into.setdefault(carrier, None)
            else:
                into[carrier] = (into.get(carrier) or 0.0) + amount

        for child in children:
            # Children first, as published: a parent is auditable as the sum of its parts.
            for carrier, body in child["carriers"].items():
                add(carriers, carrier, body["amount"])
            for carrier, body in child.get("recovered", {}).items():
                add(recovered, carrier, body["amount"])
            if "cost" in child:
                cost_total = (cost_total or 0.0) + child["cost"]["amount"]
                for name, c in child["cost"]["by_period"].items():
                    by_period[name] = by_period.get(name, 0.0) + c
            coverage = min(coverage, child["coverage"])
            estimated |= child["estimated"]
        for spec in group.points:
            got = slot.inputs[spec.key]
            amount = None if got.value is None else got.value * spec.factor
            add(recovered if spec.recovered else carriers, spec.carrier, amount)
            members[spec.key] = {"carrier": spec.carrier, "unit": spec.unit, "amount": amount,
                                 "coverage": got.coverage}  # fmt: skip
            if spec.recovered:
                members[spec.key]["recovered"] = True
            if got.cost is not None:
                sign = -1.0 if spec.recovered else 1.0
                cost_total = (cost_total or 0.0) + sign * sum(got.cost.values())
                for name, c in got.cost.items():
                    by_period[name] = by_period.get(name, 0.0) + sign * c
            coverage = min(coverage, got.coverage)
            estimated |= got.estimated
        kgce, kgco2e, factors = self._factors(carriers, recovered)
        payload: dict[str, Any] = {
            "group": group.name,
            "interval": slot.interval,
            "start": utc_iso(slot.start),
            "end": utc_iso(slot.end),
            "revision": 1,
            "estimated": estimated,
            "carriers": {c: {"unit": self._carriers[c].unit, "amount": a}
                         for c, a in carriers.items()},
        }  # fmt: skip
        if recovered:
            payload["recovered"] = {
                c: {"unit": self._carriers[c].unit, "amount": a} for c, a in recovered.items()
            }
        payload["kgce"] = kgce
        payload["kgco2e"] = kgco2e
        production = None
        if group.production is not None:
            got = slot.inputs[group.production.key]
            amount = None if got.value is None else got.value * group.production.factor
            production = {"unit": group.production.unit, "amount": amount}
        payload["production"] = production
        payload["intensity_kgce_per_unit"] = _intensity(kgce, production)
        if cost_total is not None and self._currency is not None:
            payload["cost"] = {"currency": self._currency, "amount": cost_total,
                               "by_period": by_period}  # fmt: skip
        demand = self._demand(group, slot)
        if demand is not None:
            payload["demand"] = demand
        payload["factors"] = factors
        payload["coverage"] = coverage
        payload["members"] = members
        if group.children:
            payload["groups"] = list(group.children)
        if group.missing:
            payload["missing"] = list(group.missing)
        return payload

    def _factors(
        self, carriers: Mapping[str, float | None], recovered: Mapping[str, float | None]
    ) -> tuple[float | None, float | None, dict[str, dict[str, Any]]]:
        """Net kgce and kgCO2e (recovered amounts count negative) and the factors used."""
        kgce = kgco2e = None
        factors: dict[str, dict[str, Any]] = {}
        for sign, table in ((1.0, carriers), (-1.0, recovered)):
            for name, amount in table.items():
                c = self._carriers[name]
                factors[name] = {
                    "unit": c.unit, "kgce_per_unit": c.kgce_per_unit,
                    "kgco2e_per_unit": c.kgco2e_per_unit, "method": c.method, "source": c.source,
                }  # fmt: skip
                if amount is None:
                    continue
                kgce = (kgce or 0.0) + sign * amount * c.kgce_per_unit
                kgco2e = (kgco2e or 0.0) + sign * amount * c.kgco2e_per_unit
        return kgce, kgco2e, factors

    def _demand(self, group: GroupSpec, slot: _Slot) -> dict[str, Any] | None:
        """The highest simultaneous sum of the members' block averages wholly in the window."""
        whole = self._whole.get(group.name)
        if not whole:
            return None
        best: tuple[float, float] | None = None
        for i in range(bisect.bisect_left(whole, (slot.start,)), len(whole)):
            _, end, total = whole[i]
            if end > slot.end:
                break
            if best is None or total > best[0]:
                best = (total, end)
        if best is None:
            return None
        return {"unit": "kW", "peak": best[0], "at": utc_iso(best[1])}

    def _prune_blocks(self, now: float) -> None:
        """Blocks older than the longest window (a revision keeps its window's peak)."""
        horizon = now - self._longest - 2 * self._demand_s
        for name, whole in self._whole.items():
            cut = bisect.bisect_left(whole, (horizon,))
            if cut:
                del whole[:cut]
            partial = self._partial[name]
            for start in [s for s in partial if s < horizon]:
                del partial[start]

    def pending(self) -> int:
        """Slots held: waiting for members, or kept for a revision."""
        return len(self._slots)


def _intensity(kgce: float | None, production: Mapping[str, Any] | None) -> float | None:
    """kgce per unit of production; null without production, or with none or a negative one."""
    if kgce is None or production is None:
        return None
    amount = production["amount"]
    if amount is None or not amount > 0.0:
        return None
    return float(kgce / amount)
