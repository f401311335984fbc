"""Calendar-month and shift windows on the local calendar, DST days included."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from gateway.energy.windows import (
    MONTH,
    SHIFT,
    Cadence,
    Shift,
    month_edges_between,
    shift_edges_between,
)

BERLIN = ZoneInfo("Europe/Berlin")
SHIFTS = (Shift("night", 23 * 60), Shift("day", 7 * 60), Shift("swing", 15 * 60))


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M")


def test_months_start_at_local_midnight_on_the_first() -> None:
    edges = month_edges_between(BERLIN, utc("2026-01-15T00:00"), utc("2026-05-01T00:00"))
    # CET is UTC+1 until 29 March, CEST UTC+2 after: April's first starts at 22:00Z.
    assert [iso(e) for e in edges] == [
        "2026-01-31T23:00", "2026-02-28T23:00", "2026-03-31T22:00", "2026-04-30T22:00"
    ]  # fmt: skip
    march = Cadence(MONTH)
    start, end = march.window_of(BERLIN, utc("2026-03-29T12:00"))
    assert (iso(start), iso(end)) == ("2026-02-28T23:00", "2026-03-31T22:00")
    assert end - start == 31 * 86400 - 3600  # the spring-forward month is an hour short


def test_months_cross_the_year() -> None:
    edges = month_edges_between(BERLIN, utc("2026-12-15T00:00"), utc("2027-02-15T00:00"))
    assert [iso(e) for e in edges] == ["2026-12-31T23:00", "2027-01-31T23:00"]


def test_shifts_follow_the_wall_clock_through_a_fall_back_night() -> None:
    got = shift_edges_between(BERLIN, SHIFTS, utc("2026-10-24T12:00"), utc("2026-10-25T16:00"))
    assert [(iso(e), name) for e, name in got] == [
        ("2026-10-24T13:00", "swing"),  # 15:00 CEST
        ("2026-10-24T21:00", "night"),  # 23:00 CEST
        ("2026-10-25T06:00", "day"),  # 07:00 CET: the night shift lasted 9 h
        ("2026-10-25T14:00", "swing"),
    ]


def test_a_shift_starting_in_the_skipped_hour_starts_at_the_transition() -> None:
    shifts = (Shift("early", 2 * 60 + 30), Shift("late", 14 * 60 + 30))
    got = shift_edges_between(BERLIN, shifts, utc("2026-03-28T12:00"), utc("2026-03-29T12:00"))
    # 02:30 does not exist on 29 March: the clock jumps from 02:00 CET to 03:00 CEST (01:00Z).
    assert [(iso(e), n) for e, n in got] == [
        ("2026-03-28T13:30", "late"), ("2026-03-29T01:00", "early")
    ]  # fmt: skip


def test_a_shift_window_knows_its_name() -> None:
    cadence = Cadence(SHIFT, shifts=SHIFTS)
    start, end = cadence.window_of(BERLIN, utc("2026-12-02T03:00"))  # 04:00 CET
    assert (iso(start), iso(end)) == ("2026-12-01T22:00", "2026-12-02T06:00")
    assert cadence.label(BERLIN, start) == "night"
    assert cadence.label(BERLIN, end) == "day"
    assert cadence.label(BERLIN, start + 60) is None
    assert Cadence("15m", 900).label(BERLIN, start) is None


def test_fixed_cadences_are_the_old_windows() -> None:
    quarter = Cadence("15m", 900)
    assert quarter.window_of(BERLIN, utc("2026-12-02T03:07")) == (
        utc("2026-12-02T03:00"), utc("2026-12-02T03:15")
    )  # fmt: skip
    assert quarter.nominal == 900
