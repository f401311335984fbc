"""Window edges: where every aggregation window starts and ends, in UTC epoch seconds.

Edges are the instants whose local wall time (in the gateway's zone) is a whole multiple of
the interval after local midnight. Fall-back days repeat an hour (its edges appear twice, at
distinct UTC instants); spring-forward days skip one (its edges do not exist). Whole-day
intervals start at local midnight. The kernel knows no time zones: it is handed these edges.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = [
    "DAY",
    "check_interval",
    "edges_between",
    "next_edge",
    "window_of",
]

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
