"""Window edges: where every aggregation window starts and ends, in UTC epoch seconds.

Edges are the instants whose local wall time (in the gateway's zone) is a whole multiple of
the interval after local midnight. Fall-back days repeat an hour (its edges appear twice, at
distinct UTC instants); spring-forward days skip one (its edges do not exist). Whole-day
intervals start at local midnight. The kernel knows no time zones: it is handed these edges.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = [
    "DAY",
    "MONTH",
    "SHIFT",
    "Cadence",
    "Shift",
    "check_interval",
    "edges_between",
    "month_edges_between",
    "next_edge",
    "shift_edges_between",
    "window_of",
]

MONTH = "1mo"  # the interval name of calendar months
SHIFT = "shift"  # the interval name of shift windows

DAY = 86_400


def check_interval(seconds: int) -> str | None:
    """Why `seconds` cannot be a window length, or None when it can."""
    if seconds <= 0:
        return "must be positive"
    if seconds < DAY:
        if DAY % seconds:
            return "must divide 24 h (1s, 2s, ..., 1m, 5m, 15m, 1h, 12h) or be whole days"
        return None
    if seconds % DAY:
        return "must divide 24 h or be whole days"
    return None


def _local_instant(tz: ZoneInfo, day: date, seconds_after_midnight: int) -> list[float]:
    """UTC instants at which the wall clock reads `day` + `seconds_after_midnight`.

    Zero instants in a spring-forward gap, two in a fall-back overlap, one otherwise.
    """
    wall = datetime.combine(day, time(), tzinfo=tz) + timedelta(seconds=seconds_after_midnight)
    found: list[float] = []
    for fold in (0, 1):
        candidate = wall.replace(fold=fold)
        instant = candidate.timestamp()
        # A wall time that does not exist does not survive the round trip.
        back = datetime.fromtimestamp(instant, tz).replace(tzinfo=None)
        if back == wall.replace(tzinfo=None) and instant not in found:
            found.append(instant)
    return found


def _day_start(tz: ZoneInfo, day: date) -> float:
    """The first instant of a local day: midnight, or the transition when midnight is skipped."""
    instants = _local_instant(tz, day, 0)
    if instants:
        return instants[0]
    # Midnight falls in a gap (a few zones shift at 00:00): the day starts at the transition,
    # which the pre-transition offset maps midnight onto.
    return datetime.combine(day, time(), tzinfo=tz).replace(fold=0).timestamp()


def _edges_of_day(tz: ZoneInfo, interval_s: int, day: date) -> Iterator[float]:
    if interval_s >= DAY:
        days = interval_s // DAY
        if day.toordinal() % days == 0:
            yield _day_start(tz, day)
        return
    yield _day_start(tz, day)
    for k in range(1, DAY // interval_s):
        yield from _local_instant(tz, day, k * interval_s)


def edges_between(tz: ZoneInfo, interval_s: int, start: float, end: float) -> list[float]:
    """Every edge e with start <= e < end, ascending."""
    reason = check_interval(interval_s)
    if reason:
        raise ValueError(f"interval of {interval_s} s {reason}")
    first_day = datetime.fromtimestamp(start, tz).date() - timedelta(days=1)
    last_day = datetime.fromtimestamp(end, tz).date() + timedelta(days=1)
    if interval_s > DAY:
        # Whole-day windows longer than a day start on ordinals divisible by their length.
        first_day -= timedelta(days=interval_s // DAY)
    found: set[float] = set()
    day = first_day
    while day <= last_day:
        for edge in _edges_of_day(tz, interval_s, day):
            if start <= edge < end:
                found.add(edge)
        day += timedelta(days=1)
    return sorted(found)


def next_edge(tz: ZoneInfo, interval_s: int, t: float) -> float:
    """The first edge strictly after t."""
    span = max(interval_s, DAY) * 2 + 3 * 3600
    while True:
        edges = edges_between(tz, interval_s, t, t + span)
        for edge in edges:
            if edge > t:
                return edge
        t += span


def window_of(tz: ZoneInfo, interval_s: int, t: float) -> tuple[float, float]:
    """The half-open window [start, end) that contains instant t."""
    span = max(interval_s, DAY) * 2 + 3 * 3600
    # Half-open windows: an edge at exactly t starts t's window.
    start = max(e for e in edges_between(tz, interval_s, t - span, t + 1.0) if e <= t)
    return start, next_edge(tz, interval_s, t)


# ---- calendar months and shifts ------------------------------------------------------------


def _first_at_or_after(tz: ZoneInfo, day: date, seconds_after_midnight: int) -> float:
    """The first instant the wall clock of `day` reads `seconds_after_midnight` or later.

    The wall time itself when it exists (its first occurrence on a fall-back day); on a
    spring-forward day a time inside the skipped hour starts at the transition.
    """
    found = _local_instant(tz, day, seconds_after_midnight)
    if found:
        return found[0]
    wall = datetime.combine(day, time(), tzinfo=tz) + timedelta(seconds=seconds_after_midnight)
    lo, hi = sorted(int(wall.replace(fold=f).timestamp()) for f in (0, 1))
    target = wall.replace(tzinfo=None)
    while hi - lo > 1:  # the wall clock jumps over `target` between lo and hi
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= target:
            hi = mid
        else:
            lo = mid
    return float(hi)


def month_edges_between(tz: ZoneInfo, start: float, end: float) -> list[float]:
    """Every local midnight on the 1st of a month, start <= e < end, ascending."""
    first = datetime.fromtimestamp(start, tz).date().replace(day=1)
    last = datetime.fromtimestamp(end, tz).date()
    out: list[float] = []
    month = date(first.year, first.month, 1)
    while month <= last:
        edge = _day_start(tz, month)
        if start <= edge < end:
            out.append(edge)
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return out


@dataclass(frozen=True, slots=True)
class Shift:
    """One shift of `energy.shifts`: its name and its local start, minutes after midnight."""

    name: str
    minute: int


def shift_edges_between(
    tz: ZoneInfo, shifts: Sequence[Shift], start: float, end: float
) -> list[tuple[float, str]]:
    """Every shift start in [start, end) with the shift's name, ascending.

    A shift starts at its local time's first occurrence (a fall-back day repeats an hour, the
    shift does not start twice); a start inside a skipped hour moves to the transition.
    """
    out: dict[float, str] = {}
    day = datetime.fromtimestamp(start, tz).date() - timedelta(days=1)
    last = datetime.fromtimestamp(end, tz).date() + timedelta(days=1)
    while day <= last:
        for shift in shifts:
            edge = _first_at_or_after(tz, day, shift.minute * 60)
            if start <= edge < end:
                out[edge] = shift.name
        day += timedelta(days=1)
    return sorted(out.items())


@dataclass(frozen=True, slots=True)
class Cadence:
    """One kind of window: a fixed length on the local day, calendar months, or shifts."""

    name: str
    seconds: int = 0
    shifts: tuple[Shift, ...] = ()

    @property
    def monthly(self) -> bool:
        return self.name == MONTH and not self.seconds

    @property
    def nominal(self) -> float:
        """The longest window this cadence makes (for how long to keep things about it)."""
        if self.monthly:
            return 31.0 * DAY + 3600.0
        if self.shifts:
            return float(DAY)
        return float(self.seconds)

    def edges(self, tz: ZoneInfo, start: float, end: float) -> list[float]:
        if self.monthly:
            return month_edges_between(tz, start, end)
        if self.shifts:
            return [e for e, _ in shift_edges_between(tz, self.shifts, start, end)]
        return edges_between(tz, self.seconds, start, end)

    def window_of(self, tz: ZoneInfo, t: float) -> tuple[float, float]:
        """The half-open window [start, end) that contains instant t."""
        if not (self.monthly or self.shifts):
            return window_of(tz, self.seconds, t)
        span = self.nominal + 2 * 3600.0
        edges = self.edges(tz, t - span, t + span)
        return max(e for e in edges if e <= t), min(e for e in edges if e > t)

    def label(self, tz: ZoneInfo, start: float) -> str | None:
        """The name of the shift a window starting at `start` is (None for other cadences)."""
        if not self.shifts:
            return None
        for edge, name in shift_edges_between(tz, self.shifts, start - 1.0, start + 1.0):
            if edge == start:
                return name
        return None
