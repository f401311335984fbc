"""Checks of the `[tariff]` table: every day type and season covers 24 h exactly once.

Part of the config checks (see checks.py); yields findings, (key path, message) pairs.
"""

from __future__ import annotations

from collections.abc import Iterator

from drivers.plugin import Finding, Loc
from drivers.wording import quote
from gateway.config.model import Config, TariffPeriod
from gateway.energy.tou import parse_hours, parse_months

__all__ = ["check_tariff"]


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _check_day(loc: Loc, periods: tuple[TariffPeriod, ...]) -> Iterator[Finding]:
    """Periods of one day type must cover 24 h exactly once (ranges may cross midnight)."""
    owner: list[tuple[str, str] | None] = [None] * 1440  # (period, range) owning each minute
    names: set[str] = set()
    complete = True
    if not periods:
        yield (
            loc,
            (
                "no periods: a day needs periods covering 24 h "
                '(e.g. [{ name = "flat", price = 0.65, hours = ["00:00-24:00"] }])'
            ),
        )
    for p, period in enumerate(periods):
        if period.name in names:
            yield (*loc, p, "name"), f"period {quote(period.name)} appears twice"
        names.add(period.name)
        if not period.hours:
            yield (*loc, p, "hours"), 'a period needs at least one range (hours = ["08:00-11:00"])'
        for h, text in enumerate(period.hours):
            span = parse_hours(text)
            if span is None:
                complete = False
                yield (
                    (*loc, p, "hours", h),
                    (
                        f'{quote(text)} is not a time range (expected "HH:MM-HH:MM" from 00:00 to '
                        '24:00, e.g. "23:00-07:00")'
                    ),
                )
                continue
            start, end = span
            if start % 1440 == end % 1440 and (start, end) != (0, 1440):
                complete = False
                yield (
                    (*loc, p, "hours", h),
                    f'{quote(text)} is empty (for the whole day write "00:00-24:00")',
                )
                continue
            length = (end - start) % 1440 or 1440
            for step in range(length):
                m = (start + step) % 1440
                other = owner[m]
                if other is not None:
                    whose = (
                        f"period {quote(other[0])} ({other[1]})"
                        if other[0] != period.name
                        else f"{other[1]} of the same period"
                    )
                    yield (*loc, p, "hours", h), f"{quote(text)} overlaps {whose} at {_clock(m)}"
                    break
                owner[m] = (period.name, text)
    if periods and complete:
        gaps = _ranges([m for m, o in enumerate(owner) if o is None])
        if gaps:
            yield (
                loc,
                (
                    f"the periods do not cover 24 h: no period for {', '.join(gaps)} (every minute "
                    "of the day needs a price)"
                ),
            )


def _ranges(minutes: list[int]) -> list[str]:
    """[420, 421, ..., 479] -> ["07:00-08:00"]."""
    out: list[str] = []
    start = prev = None
    for m in [*minutes, None]:
        if m is not None and prev is not None and m == prev + 1:
            prev = m
            continue
        if start is not None and prev is not None:
            out.append(f"{_clock(start)}-{_clock(prev + 1)}")
        start = prev = m
    return out


def check_tariff(cfg: Config) -> Iterator[Finding]:
    tariff = cfg.tariff
    assert tariff is not None
    yield from _check_day(("tariff", "periods"), tariff.periods)
    if tariff.weekend is not None:
        yield from _check_day(("tariff", "weekend"), tariff.weekend)
    if tariff.holiday is not None:
        yield from _check_day(("tariff", "holiday"), tariff.holiday)
    months: dict[int, int] = {}
    for s, season in enumerate(tariff.seasons):
        loc: Loc = ("tariff", "seasons", s)
        # The calendar's own parser (gateway/energy/tou.py): what it takes is what runs.
        listed = parse_months(season.months)
        if listed is None:
            shape = season.months.strip().replace("-", "", 1)
            if not (shape.isdigit() and len(shape) <= 4):
                yield (
                    (*loc, "months"),
                    f'{quote(season.months)} is not a month range (expected "7-8", "12-2" or "6")',
                )
            else:
                yield (*loc, "months"), f"{quote(season.months)}: months are 1..12"
            continue
        for month in listed:
            if month in months:
                yield (*loc, "months"), f"month {month} is already in seasons[{months[month]}]"
                break
            months[month] = s
        yield from _check_day((*loc, "periods"), season.periods)
