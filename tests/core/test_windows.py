"""Window edges: local-time alignment, DST days, whole-day intervals, and the interval rule."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.energy.windows import DAY, check_interval, edges_between, next_edge, window_of
from gateway.timefmt import utc_iso

BERLIN = ZoneInfo("Europe/Berlin")
SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def local(t: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M%z")


@pytest.mark.parametrize(
    ("seconds", "ok"),
    [
        (1, True),
        (60, True),
        (900, True),
        (3600, True),
        (43200, True),
        (86400, True),
        (7 * 86400, True),
        (7, False),
        (7 * 60, False),
        (0, False),
        (-60, False),
        (90000, False),
    ],
)
def test_interval_rule(seconds: int, ok: bool) -> None:
    assert (check_interval(seconds) is None) is ok


def test_fall_back_day_repeats_its_hour_and_lasts_25_hours() -> None:
    midnight = utc(2026, 10, 24, 22)  # 2026-10-25 00:00 +02:00
    hours = edges_between(BERLIN, 3600, midnight, midnight + 25 * 3600)
    assert len(hours) == 25
    assert [local(t, BERLIN) for t in hours[2:4]] == [
        "2026-10-25 02:00+0200",
        "2026-10-25 02:00+0100",
    ]
    days = edges_between(BERLIN, DAY, midnight, midnight + 3 * DAY)
    assert days[1] - days[0] == 25 * 3600
    assert days[2] - days[1] == 24 * 3600


def test_spring_forward_day_skips_its_hour_and_lasts_23_hours() -> None:
    midnight = utc(2026, 3, 28, 23)  # 2026-03-29 00:00 +01:00
    hours = edges_between(BERLIN, 3600, midnight, midnight + 23 * 3600)
    labels = [local(t, BERLIN)[11:16] for t in hours]
    assert "02:00" not in labels
    assert len(hours) == 23
    days = edges_between(BERLIN, DAY, midnight, midnight + 2 * DAY)
    assert days[1] - days[0] == 23 * 3600


def test_quarter_hours_align_to_local_midnight_in_a_half_hour_zone() -> None:
    tz = ZoneInfo("Asia/Kolkata")  # +05:30: local quarter hours are not UTC quarter hours
    edges = edges_between(tz, 900, utc(2026, 1, 1), utc(2026, 1, 1, 2))
    assert len(edges) == 8  # 05:30 to 07:15 local
    assert all(datetime.fromtimestamp(t, tz).minute % 15 == 0 for t in edges)
    assert len(edges) == 8


def test_window_of_and_next_edge() -> None:
    t = utc(2026, 11, 29, 6, 7, 30)  # 14:07:30 in Shanghai
    start, end = window_of(SHANGHAI, 900, t)
    assert (local(start, SHANGHAI)[11:], local(end, SHANGHAI)[11:]) == ("14:00+0800", "14:15+0800")
    assert next_edge(SHANGHAI, 900, start) == end
    assert window_of(SHANGHAI, 900, start) == (start, end)  # half-open: start belongs to it


def test_whole_day_intervals_longer_than_a_day_tile_time() -> None:
    edges = edges_between(SHANGHAI, 7 * DAY, utc(2026, 1, 1), utc(2026, 3, 1))
    # Weekly at local midnight, the first on Sunday 2026-01-04: nine edges in these 59 days.
    assert [local(e, SHANGHAI) for e in edges[:1]] == ["2026-01-04 00:00+0800"]
    assert len(edges) == 9
    assert all(b - a == 7 * DAY for a, b in pairwise(edges))


def test_utc_iso_has_milliseconds_and_z() -> None:
    assert utc_iso(utc(2026, 11, 29, 6, 15) + 0.2049) == "2026-11-29T06:15:00.204Z"


def test_bad_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="divide 24 h"):
        edges_between(SHANGHAI, 7 * 60, 0, 3600)


ZONES = st.sampled_from(
    [BERLIN, SHANGHAI, NEW_YORK, ZoneInfo("UTC"), ZoneInfo("Australia/Lord_Howe")]
)
INTERVALS = st.sampled_from([60, 300, 900, 1800, 3600, 7200, 21600, 43200, DAY])


@settings(max_examples=60, deadline=None)
@given(tz=ZONES, interval=INTERVALS, start=st.floats(1.6e9, 1.9e9), hours=st.integers(1, 60))
def test_edges_are_sorted_distinct_and_window_of_agrees(
    tz: ZoneInfo, interval: int, start: float, hours: int
) -> None:
    end = start + hours * 3600
    edges = edges_between(tz, interval, start, end)
    assert edges == sorted(set(edges))
    assert all(start <= e < end for e in edges)
    pairs = list(pairwise(edges))
    for a, b in pairs:
        # A window never lasts more than its interval plus a DST shift (at most 1 h; 30 min
        # at Lord Howe), nor less than the interval minus it.
        assert interval - 3600 <= b - a <= interval + 3600
    # window_of recomputes days of edges per call: check the first, a middle and the last.
    for a, b in pairs[:1] + pairs[len(pairs) // 2 :][:1] + pairs[-1:]:
        assert window_of(tz, interval, (a + b) / 2) == (a, b)
        assert window_of(tz, interval, a) == (a, b)


@settings(max_examples=40, deadline=None)
@given(tz=ZONES, fine=st.sampled_from([60, 300, 900]), start=st.floats(1.6e9, 1.9e9))
def test_coarser_edges_are_finer_edges(tz: ZoneInfo, fine: int, start: float) -> None:
    """Intervals that divide each other nest, which lets the kernel roll windows up."""
    end = start + 3 * DAY
    fine_edges = set(edges_between(tz, fine, start, end))
    assert set(edges_between(tz, 3600, start, end)) <= fine_edges
    assert set(edges_between(tz, DAY, start, end)) <= fine_edges
