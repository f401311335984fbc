"""Accounting groups: closed device windows in, `group/{interval}/{group}` payloads out.

A group's window is the sum of its members' windows of the same slot (interval, start), taken
from the device payloads as they close: per carrier the amounts converted to the carrier's unit,
kgce and kgCO2e by the carrier factors, recovered (exported) members netted out, production and
intensity, cost by TOU period, demand as the highest sum of simultaneous block averages, and
the benchmark. A window is published once every member point present in the config has
delivered its window for the slot, never half-summed; it is published again (revision + 1,
estimated) when a member's window is revised by gap energy. The rules: docs/energy.md#groups.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.energy.benchmarks import judge
from gateway.energy.group_specs import (
    CarrierFactors,
    GroupSpec,
    MemberSpec,
    ProductionSpec,
    compile_groups,
)
from gateway.timefmt import utc_iso

__all__ = [
    "CarrierFactors",
    "GroupAccountant",
    "GroupSpec",
    "MemberSpec",
    "ProductionSpec",
    "compile_groups",
]

# Slots kept for a revision are forgotten this many of their windows past max_revision_age
# (the aggregator keeps its revisable device windows as long).
_SLOT_KEEP_WINDOWS = 2


@dataclass(slots=True)
class _Input:
    """One member point's window in one slot; `rev` counts its revisions."""

    value: float | None  # delta or integral, in the point's unit
    coverage: float
    estimated: bool
    cost: dict[str, float] | None  # per period name, in the tariff's currency
    rev: int = 1
    revisable: bool = False  # from a window a gap may still revise (or a revision)


@dataclass(slots=True)
class _Slot:
    interval: str
    start: float
    end: float
    shift: str | None = None
    inputs: dict[str, _Input] = field(default_factory=dict)
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: dict[str, dict[str, int]] = field(default_factory=dict)  # group -> key -> rev used
    done: set[str] = field(default_factory=set)  # groups published and let go of


@dataclass(slots=True)
class _Sums:
    """A group window's running sums while it is built."""

    carriers: dict[str, float | None] = field(default_factory=dict)
    recovered: dict[str, float | None] = field(default_factory=dict)
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    cost: float | None = None
    by_period: dict[str, float] = field(default_factory=dict)
    coverage: float = 1.0
    estimated: bool = False

    def add(self, recovered: bool, carrier: str, amount: float | None) -> None:
        into = self.recovered if recovered else self.carriers
        if amount is None:
            into.setdefault(carrier, None)
        else:
            into[carrier] = (into.get(carrier) or 0.0) + amount

    def add_cost(self, sign: float, by_period: Mapping[str, float]) -> None:
        self.cost = (self.cost or 0.0) + sign * sum(by_period.values())
        for name, c in by_period.items():
            self.by_period[name] = self.by_period.get(name, 0.0) + sign * c


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
        lengths: Mapping[str, float] | None = None,
        benchmark_intervals: Sequence[str] = ("shift", "1d", "1mo"),
    ) -> None:
        self._groups = list(groups)
        self._carriers = carriers
        self._currency = currency
        self._demand_s = float(demand_interval or 0.0)
        self._max_age = float(max_revision_age)
        # How long a window of each interval lasts at most (months: 31 days and an hour).
        self._length = dict(lengths or {})
        self._longest = max(self._length.values(), default=86400.0)
        self._judged = set(benchmark_intervals)
        self._wanted = {leaf.key for g in self._groups for leaf in g.leaves} | {
            g.production.key for g in self._groups if g.production is not None
        }
        self._slots: dict[tuple[str, float], _Slot] = {}
        self._dirty: set[tuple[str, float]] = set()  # slots with new inputs since complete()
        self.unrevised = 0  # member revisions of slots no longer held (not republished)
        self._pruned_at = -math.inf
        # Every point a group counts (and its production).
        self._keys = {g.name: _keys_of(g) for g in self._groups}

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
        self,
        interval: str,
        start: float,
        end: float,
        payload: Mapping[str, Any],
        revisable: bool = False,
    ) -> None:
        """Keep what the groups need of one closed (or revised) device window."""
        device = payload["device"]
        wanted = [
            (key, body)
            for name, body in payload["points"].items()
            if (key := f"{device}.{name}") in self._wanted
        ]
        if not wanted:
            return
        revised = payload.get("revision", 1) > 1
        slot = self._slots.get((interval, start))
        if slot is None:
            if revised:
                # The slot was let go of (nothing of it could be revised, or its group changed)
                # or lost: a group window rebuilt from this one member would be wrong.
                self.unrevised += 1
                return
            slot = _Slot(interval, start, end, payload.get("shift"))
            self._slots[(interval, start)] = slot
        self._dirty.add((interval, start))
        for key, body in wanted:
            value = body.get("delta") if body["kind"] == "counter" else body.get("integral")
            cost = body.get("cost")
            before = slot.inputs.get(key)
            slot.inputs[key] = _Input(
                None if value is None else float(value),
                float(body["coverage"]),
                bool(body.get("estimated", False) or revised),
                dict(cost["by_period"]) if cost else None,
                before.rev + 1 if before is not None else 1,
                revisable or revised,
            )

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
                acc[0] += (-1.0 if spec.recovered else 1.0) * demand * spec.demand_factor
            acc[1] += 1
            if acc[1] >= len(members):
                del partial[start]
                if not math.isnan(acc[0]):
                    bisect.insort(self._whole[name], (start, acc[2], acc[0]))

    # ---- output -----------------------------------------------------------------------------

    def complete(self, now: float) -> list[dict[str, Any]]:
        """The group windows that became whole (or were revised) since the last call."""
        out: list[dict[str, Any]] = []
        for key in sorted(self._dirty, key=lambda k: (k[1], k[0])):
            slot = self._slots.get(key)
            if slot is None:
                continue
            for group in self._groups:
                payload = self._window_of(group, slot)
                if payload is not None:
                    out.append(payload)
            if self._let_go(slot):
                del self._slots[key]
        self._dirty.clear()
        if now - self._pruned_at >= 60.0:  # a scan of every slot held, once a minute
            self._pruned_at = now
            horizon = now - self._max_age
            for key in [
                key
                for key, slot in self._slots.items()
                if slot.end < horizon - _SLOT_KEEP_WINDOWS * self._length.get(key[0], self._longest)
            ]:
                del self._slots[key]
            self._prune_blocks(now)
        return out

    def _let_go(self, slot: _Slot) -> bool:
        """Forget what no revision can need; True when nothing of the slot is needed any more.

        A group's published window is kept while an input of its own may still be revised, or
        while a parent of it may be revised or is still to be published (the parent is summed
        from it); everything else goes, so a dead meter holds only its own groups' windows."""
        keep: set[str] = set()
        waiting = False
        for g in self._groups:
            if g.name in slot.done:
                continue
            if g.name not in slot.published:
                waiting = True  # a member's window is still to come
                keep.update(g.children)  # it will be summed from them
            elif any(slot.inputs[k].revisable for k in self._keys[g.name] if k in slot.inputs):
                keep.add(g.name)
                keep.update(g.children)
        for g in self._groups:
            if g.name in slot.published and g.name not in keep:
                del slot.published[g.name]
                slot.seen.pop(g.name, None)
                slot.done.add(g.name)
        # Inputs the kept groups (or those still waiting) may need; the rest go.
        needed: set[str] = set()
        for g in self._groups:
            if g.name in keep or (g.name not in slot.done and g.name not in slot.published):
                needed.update(self._keys[g.name])
        for k in [k for k in slot.inputs if k not in needed]:
            del slot.inputs[k]
        return not (keep or waiting)

    def pending(self) -> int:
        """Slots held: waiting for members, or kept for a revision."""
        return len(self._slots)

    def _window_of(self, group: GroupSpec, slot: _Slot) -> dict[str, Any] | None:
        if group.name in slot.done:
            return None  # published, and beyond revision
        keys = self._keys[group.name]
        if any(k not in slot.inputs for k in keys):
            return None  # a member's window is still to come
        before = slot.published.get(group.name)
        used = {k: slot.inputs[k].rev for k in keys}
        if before is not None and slot.seen[group.name] == used:
            return None  # published, and no member revised since
        children = [slot.published.get(c) for c in group.children]
        if any(c is None for c in children):
            return None
        payload = self._build(group, slot, [c for c in children if c is not None])
        if before is not None:
            payload["revision"] = before["revision"] + 1
            payload["estimated"] = True
            if "demand" in before:  # blocks are never revised: the peak stands
                payload["demand"] = before["demand"]
        slot.published[group.name] = payload
        slot.seen[group.name] = used
        return payload

    def _build(
        self, group: GroupSpec, slot: _Slot, children: list[dict[str, Any]]
    ) -> dict[str, Any]:
        sums = _Sums(coverage=0.0 if group.missing else 1.0)
        for child in children:
            _sum_child(sums, child)
        for spec in group.points:
            _sum_point(sums, spec, slot.inputs[spec.key])
        kgce, kgco2e, factors = self._factors(sums)
        payload: dict[str, Any] = {
            "group": group.name,
            "interval": slot.interval,
            "start": utc_iso(slot.start),
            "end": utc_iso(slot.end),
        }
        if slot.shift is not None:
            payload["shift"] = slot.shift
        payload.update(revision=1, estimated=sums.estimated, carriers=self._amounts(sums.carriers))
        if sums.recovered:
            payload["recovered"] = self._amounts(sums.recovered)
        payload.update(kgce=kgce, kgco2e=kgco2e)
        production = _production(group.production, slot)
        payload["production"] = production
        intensity = _intensity(kgce, production)
        payload["intensity_kgce_per_unit"] = intensity
        if sums.cost is not None and self._currency is not None:
            payload["cost"] = {
                "currency": self._currency, "amount": sums.cost, "by_period": sums.by_period
            }  # fmt: skip
        demand = self._demand(group, slot)
        if demand is not None:
            payload["demand"] = demand
        if group.benchmark is not None and slot.interval in self._judged:
            payload["benchmark"] = judge(group.benchmark, intensity)
        payload.update(factors=factors, coverage=sums.coverage, members=sums.members)
        if group.children:
            payload["groups"] = list(group.children)
        if group.missing or group.missing_production:
            extra = [group.missing_production] if group.missing_production else []
            payload["missing"] = [*group.missing, *extra]
        return payload

    def _amounts(self, table: Mapping[str, float | None]) -> dict[str, dict[str, Any]]:
        return {c: {"unit": self._carriers[c].unit, "amount": a} for c, a in table.items()}

    def _factors(self, sums: _Sums) -> tuple[float | None, float | None, dict[str, dict[str, Any]]]:
        """Net kgce and kgCO2e (recovered amounts count negative) and the factors used."""
        kgce = kgco2e = None
        factors: dict[str, dict[str, Any]] = {}
        for sign, table in ((1.0, sums.carriers), (-1.0, sums.recovered)):
            for name, amount in table.items():
                c = self._carriers[name]
                factors[name] = {
                    "unit": c.unit, "kgce_per_unit": c.kgce_per_unit,
                    "kgco2e_per_unit": c.kgco2e_per_unit, "method": c.method, "source": c.source,
                }  # fmt: skip
                if amount is not None:
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

    # ---- state ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """JSON-able: the slots held and the demand blocks (for the aggregator's snapshot)."""
        slots = [
            {
                "interval": s.interval, "start": s.start, "end": s.end, "shift": s.shift,
                "done": sorted(s.done), "published": s.published, "seen": s.seen,
                "inputs": {k: [i.value, i.coverage, i.estimated, i.cost, i.rev, i.revisable]
                           for k, i in s.inputs.items()},
            }
            for s in self._slots.values()
        ]  # fmt: skip
        specs = {g.name: repr(g) for g in self._groups}
        return {"slots": slots, "partial": self._partial, "whole": self._whole, "specs": specs}

    def restore(self, state: Mapping[str, Any] | None) -> int:
        """Take back `state()` after a restart or a reload; returns the slots resumed.

        A group whose definition changed (or is new) publishes nothing for the slots taken
        back: their windows were (or would have been) summed under the old membership, and
        republishing them would rewrite history. A malformed state raises ValueError."""
        if not state:
            return 0
        try:
            before = state.get("specs", {}) if isinstance(state, Mapping) else None
            if not isinstance(before, Mapping):
                raise TypeError("specs is not a table")
            sealed = {g.name for g in self._groups if before.get(g.name) != repr(g)}
            slots = [_slot_of(s) for s in state["slots"]]
            for slot in slots:
                # Sealed, not forgotten: a parent may still be summed from its published window.
                slot.done |= sealed
            partial = {
                g: {float(k): list(v) for k, v in blocks.items()}
                for g, blocks in state["partial"].items()
                if g in self._partial
            }
            whole = {
                g: [(a, b, c) for a, b, c in blocks]
                for g, blocks in state["whole"].items()
                if g in self._whole
            }
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the groups' saved state is unreadable ({exc!r})") from None
        for slot in slots:
            self._slots[(slot.interval, slot.start)] = slot
            self._dirty.add((slot.interval, slot.start))
        self._partial.update(partial)
        self._whole.update(whole)
        return len(slots)


def _keys_of(group: GroupSpec) -> tuple[str, ...]:
    keys = [leaf.key for leaf in group.leaves]
    if group.production is not None:
        keys.append(group.production.key)
    return tuple(keys)


def _slot_of(s: Mapping[str, Any]) -> _Slot:
    inputs = {
        k: _Input(v, float(cov), bool(est), cost, int(rev), bool(revisable))
        for k, (v, cov, est, cost, rev, revisable) in s["inputs"].items()
    }
    return _Slot(
        s["interval"], float(s["start"]), float(s["end"]), s["shift"], inputs,
        dict(s["published"]), {g: dict(r) for g, r in s["seen"].items()}, set(s["done"]),
    )  # fmt: skip


def _sum_child(sums: _Sums, child: Mapping[str, Any]) -> None:
    """A member group's window, as published: a parent is auditable as the sum of its parts."""
    for carrier, body in child["carriers"].items():
        sums.add(False, carrier, body["amount"])
    for carrier, body in child.get("recovered", {}).items():
        sums.add(True, carrier, body["amount"])
    if "cost" in child:
        sums.add_cost(1.0, child["cost"]["by_period"])
    sums.coverage = min(sums.coverage, child["coverage"])
    sums.estimated |= child["estimated"]


def _sum_point(sums: _Sums, spec: MemberSpec, got: _Input) -> None:
    amount = None if got.value is None else got.value * spec.factor
    sums.add(spec.recovered, spec.carrier, amount)
    member: dict[str, Any] = {
        "carrier": spec.carrier, "unit": spec.unit, "amount": amount, "coverage": got.coverage
    }  # fmt: skip
    if spec.recovered:
        member["recovered"] = True
    sums.members[spec.key] = member
    if got.cost is not None:
        sums.add_cost(-1.0 if spec.recovered else 1.0, got.cost)
    sums.coverage = min(sums.coverage, got.coverage)
    sums.estimated |= got.estimated


def _production(spec: ProductionSpec | None, slot: _Slot) -> dict[str, Any] | None:
    if spec is None:
        return None  # none configured, or on a switched-off device (then in `missing`)
    got = slot.inputs[spec.key]
    return {"unit": spec.unit, "amount": None if got.value is None else got.value * spec.factor}


def _intensity(kgce: float | None, production: Mapping[str, Any] | None) -> float | None:
    """kgce per unit of production; null without production, or with none or a negative one."""
    if kgce is None or production is None:
        return None
    amount = production["amount"]
    if amount is None or not amount > 0.0:
        return None
    return float(kgce / amount)
