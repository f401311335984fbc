"""Steel-plant loads for the simulated meters: power over time, and its exact integral.

A meter's energy register is the integral of its power, computed in closed form rather than
summed tick by tick, so a window's energy can be checked against `energy_kwh(t1) -
energy_kwh(t0)` to the register's resolution. Times are seconds since the load started.

- `Cycle`: named phases of constant power repeating (an electric arc furnace's heat: bore-in,
  main melt, refining, tap; a rolling mill's burst per billet and the gap between).
- `Steady`: a base load with a slow sinusoidal swing (auxiliaries: fans, pumps, lighting).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Cycle", "Load", "Phase", "Steady", "eaf_heat", "rolling_mill"]


class Load(Protocol):
    def power_kw(self, t: float) -> float: ...

    def energy_kwh(self, t: float) -> float:
        """kWh used from 0 to t (the integral of power_kw)."""
        ...


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    kw: float


@dataclass(frozen=True)
class Cycle:
    """Phases of constant power, repeating; the integral is exact at any t."""

    phases: Sequence[Phase]
    _ends: list[float] = field(init=False, repr=False, compare=False)
    _kwh_at_end: list[float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.phases or any(p.seconds <= 0 for p in self.phases):
            raise ValueError("a cycle needs phases, each longer than 0 s")
        ends, kwh, t, e = [], [], 0.0, 0.0
        for p in self.phases:
            t += p.seconds
            e += p.kw * p.seconds / 3600.0
            ends.append(t)
            kwh.append(e)
        object.__setattr__(self, "_ends", ends)
        object.__setattr__(self, "_kwh_at_end", kwh)

    @property
    def period(self) -> float:
        return self._ends[-1]

    def _locate(self, t: float) -> tuple[int, float, int]:
        """(whole cycles before t, seconds into the cycle, the phase index)."""
        cycles = math.floor(t / self.period)
        into = t - cycles * self.period
        return cycles, into, min(bisect.bisect_right(self._ends, into), len(self.phases) - 1)

    def phase_at(self, t: float) -> str:
        return self.phases[self._locate(t)[2]].name

    def power_kw(self, t: float) -> float:
        return self.phases[self._locate(t)[2]].kw

    def energy_kwh(self, t: float) -> float:
        cycles, into, i = self._locate(t)
        before = self._kwh_at_end[i - 1] if i else 0.0
        start = self._ends[i - 1] if i else 0.0
        return cycles * self._kwh_at_end[-1] + before + self.phases[i].kw * (into - start) / 3600.0


@dataclass(frozen=True)
class Steady:
    """kw + swing_kw x sin(2 pi t / period_s)."""

    kw: float
    swing_kw: float = 0.0
    period_s: float = 60.0

    def power_kw(self, t: float) -> float:
        return self.kw + self.swing_kw * math.sin(2.0 * math.pi * t / self.period_s)

    def energy_kwh(self, t: float) -> float:
        w = 2.0 * math.pi / self.period_s
        return (self.kw * t + self.swing_kw * (1.0 - math.cos(w * t)) / w) / 3600.0


def eaf_heat(scale: float = 1.0) -> Cycle:
    """An electric arc furnace heat of a ~100 t furnace, its ~60 min tap-to-tap compressed by
    `scale` (1.0: 120 s of demo time): power-on at bore-in, full power for the main melt, less
    while refining, off while tapping and charging."""
    return Cycle([
        Phase("bore-in", 18.0 * scale, 38_000.0),
        Phase("main melt", 54.0 * scale, 62_000.0),
        Phase("refining", 30.0 * scale, 41_000.0),
        Phase("tap and charge", 18.0 * scale, 1_500.0),
    ])  # fmt: skip


def rolling_mill(scale: float = 1.0) -> Cycle:
    """A bar mill's stands: a burst of load while a billet is in the stands, little between
    (a billet every 20 s of demo time at scale 1.0)."""
    return Cycle([
        Phase("billet in stands", 12.0 * scale, 9_500.0),
        Phase("between billets", 8.0 * scale, 1_200.0),
    ])  # fmt: skip
