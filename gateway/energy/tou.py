"""The time-of-use calendar: the `[tariff]` table compiled to instants the kernel splits at.

A period is in force at an instant when the local wall time of the gateway's zone at that
instant falls in one of its ranges, on that local date's day type (holiday, weekend, a season's
weekday, or a plain weekday). So a DST day needs no rule of its own: on a fall-back day the
repeated hour is priced twice by its wall time, on a spring-forward day the skipped hour has no
energy to price. The kernel knows no zones: it is handed the boundaries (instants where the
period changes) and an index per period.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

__all__ = ["TariffCalendar", "parse_hours", "parse_months"]

_HOURS_RE = re.compile(r"(\d{1,2}):(\d\d)\s*-\s*(\d{1,2}):(\d\d)")
_MONTHS_RE = re.compile(r"(\d{1,2})(?:-(\d{1,2}))?")
_DAY_MIN = 1440


def parse_hours(text: str) -> tuple[int, int] | None:
    """ "23:00-07:00" -> (1380, 420) in minutes after local midnight; None when malformed."""
    match = _HOURS_RE.fullmatch(text.strip())
    if not match:
        return None
    h1, m1, h2, m2 = (int(x) for x in match.groups())
    if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59 or (h1 == 24 and m1) or (h2 == 24 and m2):
        return None
    return h1 * 60 + m1, h2 * 60 + m2


def parse_months(text: str) -> list[int] | None:
    """ "12-2" -> [12, 1, 2]; "6" -> [6]; None when malformed or outside 1..12."""
    match = _MONTHS_RE.fullmatch(text.strip())
    if not match:
        return None
    first = int(match.group(1))
    last = int(match.group(2) or first)
    if not (1 <= first <= 12 and 1 <= last <= 12):
        return None
    out = [first]
    while out[-1] != last:
        out.append(out[-1] % 12 + 1)
    return out


class PeriodLike(Protocol):
    """One `[[tariff.periods]]` entry (gateway.config.model.TariffPeriod)."""

    @property
    def name(self) -> str: ...
    @property
    def price(self) -> float: ...
    @property
    def hours(self) -> Sequence[str]: ...


class SeasonLike(Protocol):
    @property
    def months(self) -> str: ...
    @property
    def periods(self) -> Sequence[PeriodLike]: ...


class TariffLike(Protocol):
    """The validated `[tariff]` table (gateway.config.model.TariffConfig)."""

    @property
    def currency(self) -> str: ...
    @property
    def periods(self) -> Sequence[PeriodLike]: ...
    @property
    def seasons(self) -> Sequence[SeasonLike]: ...
    @property
    def weekend(self) -> Sequence[PeriodLike] | None: ...
    @property
    def holiday(self) -> Sequence[PeriodLike] | None: ...
    @property
    def holidays(self) -> Sequence[date]: ...


@dataclass(frozen=True, slots=True)
class _DayPlan:
    """One day type: `owner[m]` is the period index in force during minute m of the day."""

    owner: tuple[int, ...]


class TariffCalendar:
    """TOU periods as instants (gateway.energy.aggregate.TouCalendar) with their prices.

    Kernel period indexes are the distinct (name, price) pairs: a season may price "peak"
    differently, so `names` may repeat a name; payloads add the energy of equal names up.
    """

    def __init__(self, tariff: TariffLike, tz: ZoneInfo) -> None:
        self.tz = tz
        self.currency = tariff.currency
        self._index: dict[tuple[str, float], int] = {}
        self.names: list[str] = []
        self.prices: list[float] = []
        self._weekday = self._plan(tariff.periods)
        self._weekend = self._plan(tariff.weekend) if tariff.weekend is not None else None
        holiday = tariff.holiday if tariff.holiday is not None else tariff.weekend
        self._holiday = self._plan(holiday) if holiday is not None else None
        self._holidays = frozenset(tariff.holidays)
        self._seasons: dict[int, _DayPlan] = {}
        for season in tariff.seasons:
            months = parse_months(season.months)
            if months is None:
                raise ValueError(f"tariff season months {season.months!r}: not a month range")
            plan = self._plan(season.periods)
            for month in months:
                self._seasons[month] = plan

    def _plan(self, periods: Sequence[PeriodLike]) -> _DayPlan:
        owner = [-1] * _DAY_MIN
        for period in periods:
            key = (period.name, float(period.price))
            index = self._index.get(key)
            if index is None:
                index = self._index[key] = len(self.names)
                self.names.append(period.name)
                self.prices.append(float(period.price))
            for text in period.hours:
                span = parse_hours(text)
                if span is None:
                    raise ValueError(f"tariff period {period.name!r}: {text!r} is not HH:MM-HH:MM")
                start, end = span
                for step in range((end - start) % _DAY_MIN or _DAY_MIN):
                    owner[(start + step) % _DAY_MIN] = index
        if -1 in owner:
            minute = owner.index(-1)
            raise ValueError(
                f"tariff: no period at {minute // 60:02d}:{minute % 60:02d} (the config checks "
                "refuse such a table)"
            )
        return _DayPlan(tuple(owner))

    def plan_of(self, day: date) -> _DayPlan:
        """The day type in force on a local date: holiday, weekend, season, weekday."""
        if day in self._holidays and self._holiday is not None:
            return self._holiday
        if day.weekday() >= 5 and self._weekend is not None:
            return self._weekend
        return self._seasons.get(day.month, self._weekday)

    def period_at(self, t: float) -> int:
        wall = datetime.fromtimestamp(t, self.tz)
        return self.plan_of(wall.date()).owner[wall.hour * 60 + wall.minute]

    def boundaries(self, start: float, end: float) -> list[tuple[float, int]]:
        """Every instant b in [start, end) where the period in force changes, with the new one.

        Candidates are each day's minute boundaries of its plan (both instants of a repeated
        wall time) and the zone's transitions; a candidate is kept when the period in force
        there differs from the one just before it.
        """
        candidates: set[float] = set()
        day = datetime.fromtimestamp(start, self.tz).date() - timedelta(days=1)
        last = datetime.fromtimestamp(end, self.tz).date() + timedelta(days=1)
        while day <= last:
            owner = self.plan_of(day).owner
            midnight = datetime.combine(day, time(), tzinfo=self.tz)
            for minute in range(_DAY_MIN):
                if minute == 0 or owner[minute] != owner[minute - 1]:
                    wall = midnight + timedelta(minutes=minute)
                    for fold in (0, 1):
                        candidates.add(wall.replace(fold=fold).timestamp())
            candidates.update(self._transitions(day))
            day += timedelta(days=1)
        out: list[tuple[float, int]] = []
        for b in sorted(candidates):
            if start <= b < end:
                now = self.period_at(b)
                # A second earlier is in the previous period (boundaries are whole minutes).
                if now != self.period_at(b - 1.0):
                    out.append((b, now))
        return out

    def _transitions(self, day: date) -> list[float]:
        """The instants the zone's UTC offset changes during a local day (DST), to the second."""
        lo = datetime.combine(day, time(), tzinfo=self.tz).timestamp()
        hi = lo + 86_400 + 7_200
        offset = self._offset(lo)
        if self._offset(hi) == offset:
            return []
        a, b = int(lo), int(hi)
        while b - a > 1:
            mid = (a + b) // 2
            if self._offset(float(mid)) == offset:
                a = mid
            else:
                b = mid
        return [float(b)]

    def _offset(self, t: float) -> float:
        delta = datetime.fromtimestamp(t, self.tz).utcoffset()
        return delta.total_seconds() if delta is not None else 0.0
