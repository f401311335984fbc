"""`[[groups]]` compiled for accounting: every point a group counts, with its factor to the
carrier's unit, its sign (recovered energy counts negative), and the benchmark that judges it.

Children come before their parents, so a parent can be summed from its children's windows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.energy import units
from gateway.energy.benchmarks import Benchmark, levels_of

__all__ = ["CarrierFactors", "GroupSpec", "MemberSpec", "ProductionSpec", "compile_groups"]


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
    """What a group needs of one point (gateway.energy.aggregate.AccountedPoint)."""

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
    children: tuple[str, ...]  # direct group members, compiled (and summed) first
    production: ProductionSpec | None
    leaves: tuple[MemberSpec, ...]  # every point counted, through the children too
    missing: tuple[str, ...] = ()  # members whose device is switched off
    benchmark: Benchmark | None = None
    # The production point, when its device is switched off (intensity then stays null).
    missing_production: str | None = None


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
    ValueError naming the group for what the config checks refuse (a cycle, a point counted
    twice, a unit that does not convert): the daemon never starts on such a table.
    """
    compiler = _Compiler(groups, points, carriers, set(disabled))
    for g in groups:
        compiler.build(g.name, ())
    return compiler.order


class _Compiler:
    def __init__(
        self,
        groups: Sequence[Any],
        points: Iterable[PointLike],
        carriers: Mapping[str, CarrierFactors],
        disabled: set[str],
    ) -> None:
        self._points = {f"{p.device}.{p.name}": p for p in points}
        self._carriers = carriers
        self._off = disabled
        self._groups = {g.name: g for g in groups}
        self._done: dict[str, GroupSpec] = {}
        self.order: list[GroupSpec] = []

    def member(self, group: str, key: str, recovered: bool) -> MemberSpec | None:
        """The point `key` as counted by `group`; None when its device is switched off."""
        point = self._points.get(key)
        if point is None:
            if key.partition(".")[0] in self._off:
                return None
            raise ValueError(f"group {group!r}: member {key!r} is not a configured point")
        carrier = self._carriers.get(point.carrier or "")
        if carrier is None:
            raise ValueError(f"group {group!r}: member {key!r} has no known carrier")
        factor = units.amount_factor(point.kind, point.unit, carrier.unit)
        if factor is None:
            raise ValueError(
                f"group {group!r}: member {key!r} in {point.unit!r} does not convert to "
                f"{point.carrier}'s unit {carrier.unit!r}"
            )
        unit = units.lookup(point.unit)
        # Block averages are in the reading's unit per hour (W, kW, MW): × factor = kW.
        demand = unit.factor if point.carrier == "electricity" and unit is not None else 0.0
        return MemberSpec(key, point.carrier or "", carrier.unit, factor, recovered, demand)

    def production(self, key: str | None) -> ProductionSpec | None:
        point = self._points.get(key) if key is not None else None
        if key is None or point is None:
            return None
        if units.lookup(point.unit) is None:  # a unit outside the table ("pcs") stays as is
            return ProductionSpec(key, point.unit, 1.0)
        quantity = units.integral_dimension(point.unit) if point.kind == "rate" else None
        target = units.of_dimension(quantity)[0] if quantity else units.canonical(point.unit)
        return ProductionSpec(
            key, target, units.amount_factor(point.kind, point.unit, target) or 1.0
        )

    def build(self, name: str, path: tuple[str, ...]) -> GroupSpec:
        if name in self._done:
            return self._done[name]
        if name in path:
            raise ValueError(f"group {name!r}: groups form a cycle: {' -> '.join((*path, name))}")
        g = self._groups[name]
        direct: list[MemberSpec] = []
        children: list[str] = []
        missing: list[str] = []
        recovered = tuple(getattr(g, "recovered", ()) or ())
        for key, back in [(k, False) for k in g.members] + [(k, True) for k in recovered]:
            if key in self._groups and not back:
                children.append(key)
                continue
            spec = self.member(name, key, back)
            if spec is None:
                missing.append(key)
            else:
                direct.append(spec)
        leaves: dict[str, MemberSpec] = {}
        for child in children:
            sub = self.build(child, (*path, name))
            missing += sub.missing
            _add_leaves(name, leaves, sub.leaves)
        _add_leaves(name, leaves, direct)
        if not leaves and not missing:
            raise ValueError(f"group {name!r} has no member")
        compiled = GroupSpec(
            name, tuple(direct), tuple(children), self.production(g.production),
            tuple(leaves.values()), tuple(dict.fromkeys(missing)), levels_of(g),
            g.production if g.production is not None and g.production not in self._points
            else None,
        )  # fmt: skip
        self._done[name] = compiled
        self.order.append(compiled)
        return compiled


def _add_leaves(group: str, into: dict[str, MemberSpec], more: Iterable[MemberSpec]) -> None:
    for leaf in more:
        if leaf.key in into:
            raise ValueError(f"group {group!r}: {leaf.key!r} is counted twice")
        into[leaf.key] = leaf
