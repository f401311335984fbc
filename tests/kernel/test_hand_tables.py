"""Hand-computed windows for the rules the other tables touch lightly (energy.md, point by point).

Every expected number is worked out in the comment beside it from the readings, not by a kernel.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import pytest

from tests.kernel.conftest import DAY0, close, feed, kernel, pick

pytestmark = pytest.mark.twin


def minutes(recs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The 1m windows of point 0 by minute index, highest revision only."""
    out: dict[int, dict[str, Any]] = {}
    for r in pick(recs, interval=0, point=0):
        i = round((r["start"] - DAY0) / 60)
        if i not in out or r["revision"] > out[i]["revision"]:
            out[i] = r
    return out


def identity(r: dict[str, Any], rollover: float) -> float:
    """energy.md: without resets, delta = last - first + rollovers x rollover."""
    return float(r["last"] - r["first"] + r["rollovers"] * rollover)


def test_first_and_last_are_nearest_reading_or_interpolated(km: ModuleType) -> None:
    k = kernel(km)
    k.configure_point(0, "m.e", km.COUNTER, since=DAY0)
    feed(k, [(0, DAY0 + 30, 100.0), (0, DAY0 + 90, 106.0)])
    w = minutes(close(k, DAY0 + 121))
    # minute 0: no reading before its start edge, so first = the nearest reading (100);
    # last = 100 + 6 x 30/60 = 103 at the edge; covered 30..60 of 60 s
    assert (w[0]["first"], w[0]["last"], w[0]["delta"]) == (100.0, 103.0, 3.0)
    assert (w[0]["coverage"], w[0]["samples"]) == (0.5, 1)
    # minute 1: first chains from minute 0 (103); the reading at 90 s is last
    assert (w[1]["first"], w[1]["last"], w[1]["delta"]) == (103.0, 106.0, 3.0)
    assert (w[1]["coverage"], w[1]["samples"]) == (0.5, 1)


def test_counter_span_longer_than_max_gap_is_spread_but_not_covered(km: ModuleType) -> None:
    k = kernel(km)
    k.configure_point(0, "m.e", km.COUNTER, since=DAY0, max_gap=30.0)
    feed(k, [(0, DAY0 + 10, 100.0), (0, DAY0 + 20, 101.0), (0, DAY0 + 100, 109.0)])
    w = minutes(close(k, DAY0 + 121))
    # 20..100 s is 80 s > max_gap: its 8 kWh are spread by time (4 before the edge, 4 after),
    # marked estimated, and the span counts as uncovered; only 10..20 s is covered
    assert w[0]["delta"] == pytest.approx(1.0 + 8.0 * 40 / 80)
    assert (w[0]["first"], w[0]["last"]) == (100.0, 105.0)
    assert w[0]["coverage"] == pytest.approx(10 / 60)
    assert w[0]["estimated"] == 1
    assert w[1]["delta"] == pytest.approx(8.0 * 40 / 80)
    assert (w[1]["first"], w[1]["last"], w[1]["coverage"]) == (105.0, 109.0, 0.0)
    assert w[1]["estimated"] == 1


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        # 990 -> 30 in 20 s is a 40 kWh wrap; at the edge (60 s) the register reads
        # 990 + 40 x 10/20 = 1010, i.e. 10 after the wrap: the wrap is minute 0's
        ([(50, 990.0), (70, 30.0), (80, 40.0)], [(990.0, 10.0, 20.0, 1), (10.0, 40.0, 30.0, 0)]),
        # 990 -> 10: at the edge the register reads exactly 1000 = 0, the wrap is minute 0's
        ([(50, 990.0), (70, 10.0)], [(990.0, 0.0, 10.0, 1), (0.0, 10.0, 10.0, 0)]),
        # 980 -> 10 in 40 s is a 30 kWh wrap: 995 at the edge, 1000 at 66.7 s: minute 1's
        ([(40, 980.0), (80, 10.0)], [(980.0, 995.0, 15.0, 0), (995.0, 10.0, 15.0, 1)]),
    ],
)
def test_wrap_belongs_to_the_window_where_the_register_passes_its_modulus(
    km: ModuleType,
    readings: list[tuple[float, float]],
    expected: list[tuple[float, float, float, int]],
) -> None:
    k = kernel(km)
    k.configure_point(0, "m.e", km.COUNTER, since=DAY0, rollover=1000.0)
    feed(k, [(0, DAY0 + t, v) for t, v in readings])
    w = minutes(close(k, DAY0 + 121))
    for i, (first, last, delta, rollovers) in enumerate(expected):
        got = (w[i]["first"], w[i]["last"], w[i]["delta"], w[i]["rollovers"])
        assert got == pytest.approx((first, last, delta, rollovers))
        assert w[i]["delta"] == pytest.approx(identity(w[i], 1000.0))


def test_wrap_during_a_gap_is_counted_in_the_revised_window(km: ModuleType) -> None:
    k = kernel(km)
    k.configure_point(0, "m.e", km.COUNTER, since=DAY0, rollover=1000.0)
    feed(k, [(0, DAY0 + 20, 990.0), (0, DAY0 + 30, 995.0)])
    close(k, DAY0 + 181)  # minutes 0, 1, 2 published during the gap
    # 995 -> 13 after 180 s: an 18 kWh wrap, 0.1 kWh/s; the register passes 1000 at 80 s
    feed(k, [(0, DAY0 + 210, 13.0)])
    w = minutes(close(k, DAY0 + 241))
    # (first, last, delta, rollovers) per minute, from 995 + 0.1 x (t - 30):
    table = {
        0: (990.0, 998.0, 5.0 + 3.0, 0),  # 5 measured + 3 spread over 30..60 s
        1: (998.0, 4.0, 6.0, 1),  # 998 -> 1004 = 4 after the wrap
        2: (4.0, 10.0, 6.0, 0),
        3: (10.0, 13.0, 3.0, 0),  # the open window: 180..210 s
    }
    for i, (first, last, delta, rollovers) in table.items():
        got = (w[i]["first"], w[i]["last"], w[i]["delta"], w[i]["rollovers"])
        assert got == pytest.approx((first, last, delta, rollovers))
        assert w[i]["estimated"] == 1
        assert w[i]["revision"] == (2 if i < 3 else 1)
    rest = close(k, DAY0 + 3601)
    for interval in (1, 2):  # the open 15m and 1h windows: 990 -> 13 with one wrap = 23
        (r,) = pick(rest, interval=interval, start=DAY0)
        assert (r["first"], r["last"], r["delta"], r["rollovers"]) == pytest.approx(
            (990.0, 13.0, 23.0, 1)
        )


@pytest.mark.parametrize(
    ("integration", "rows", "w0", "w1"),
    [
        # trapezoid, max_gap 30: 10..40 s at 100 kW = 3000 kWs; 40..100 s (60 s) is not joined;
        # 100..110 s ramps 100 -> 400 kW = 2500 kWs
        (
            "trapezoid",
            [(10, 100.0), (40, 100.0), (100, 100.0), (110, 400.0)],
            (3000 / 3600, 30 / 60, 100.0, 100.0, 100.0, 2),
            (2500 / 3600, 10 / 60, 250.0, 100.0, 400.0, 2),
        ),
        # hold, max_gap 30: 600 kW stands 10..30 s = 12000 kWs; 30..100 s (70 s) is not joined
        (
            "hold",
            [(10, 600.0), (30, 1200.0), (100, 0.0)],
            (12000 / 3600, 20 / 60, 600.0, 600.0, 1200.0, 2),
            (0.0, 0.0, math.nan, 0.0, 0.0, 1),
        ),
    ],
)
def test_rate_max_gap_across_an_edge(
    km: ModuleType,
    integration: str,
    rows: list[tuple[float, float]],
    w0: tuple[float, ...],
    w1: tuple[float, ...],
) -> None:
    mode = km.HOLD if integration == "hold" else km.TRAPEZOID
    k = kernel(km)
    k.configure_point(0, "m.p", km.RATE, since=DAY0, integration=mode, max_gap=30.0)
    feed(k, [(0, DAY0 + t, v) for t, v in rows])
    w = minutes(close(k, DAY0 + 121))
    for rec, (delta, coverage, mean, vmin, vmax, samples) in ((w[0], w0), (w[1], w1)):
        assert rec["delta"] == pytest.approx(delta)
        assert rec["coverage"] == pytest.approx(coverage)
        if math.isnan(mean):
            assert math.isnan(rec["mean"])
        else:
            assert rec["mean"] == pytest.approx(mean)
        assert (rec["min"], rec["max"], rec["samples"]) == (vmin, vmax, samples)


def test_peak_demand_only_from_blocks_wholly_inside_windows_that_do_not_nest(
    km: ModuleType,
) -> None:
    # 15m demand blocks, 20m windows: [0, 20m) holds the block [0, 15m); [20m, 40m) holds
    # none ([15m, 30m) and [30m, 45m) stick out); [40m, 60m) holds [45m, 60m)
    k = kernel(km, (900, 1200, 3600), demand_interval=0)
    k.configure_point(0, "m.p", km.RATE, since=DAY0, demand=True, max_gap=30.0)
    # 100 kW until 45 min, then 300 kW: the ramp 2690..2700 s lies in block [30m, 45m)
    feed(k, [(0, DAY0 + 10.0 * i, 300.0 if i > 269 else 100.0) for i in range(361)])
    wins, blocks = k.close_until(DAY0 + 3601)
    peaks = {
        (wins["interval"][i], round(wins["start"][i] - DAY0)): (
            wins["peak"][i],
            wins["peak_at"][i] - DAY0,
        )
        for i in range(len(wins["point"]))
    }
    assert peaks[(1, 0)] == (100.0, 900.0)
    assert math.isnan(peaks[(1, 1200)][0])
    assert math.isnan(peaks[(1, 1200)][1])
    assert peaks[(1, 2400)] == (300.0, 3600.0)
    assert peaks[(2, 0)] == (300.0, 3600.0)
    # block [30m, 45m): 890 s at 100 kW, then 10 s ramping 100 -> 300 kW (mean 200)
    assert blocks["demand"][2] == pytest.approx((100.0 * 890 + 200.0 * 10) / 900)
