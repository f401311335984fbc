"""Rate and gauge rules on both kernels: trapezoid and hold, max_gap, mean/min/max, demand.

Table tests over hand-computed windows (energy.md, "rate", "gauge", "Demand").
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import pytest

from tests.kernel.conftest import DAY0, close, feed, kernel, pick

pytestmark = pytest.mark.twin


def test_trapezoid_split_exactly_at_the_edge(km: ModuleType) -> None:
    k = kernel(km)
    k.configure_point(0, "m.power", km.RATE, since=DAY0)
    feed(k, [(0, DAY0 + 30, 0.0), (0, DAY0 + 90, 3600.0)])  # ramp: 1800 kW at the edge
    recs = close(k, DAY0 + 121)
    (w0,) = pick(recs, interval=0, start=DAY0)
    (w1,) = pick(recs, interval=0, start=DAY0 + 60)
    assert w0["delta"] == pytest.approx((0 + 1800) / 2 * 30 / 3600)
    assert w1["delta"] == pytest.approx((1800 + 3600) / 2 * 30 / 3600)
    assert (w0["coverage"], w1["coverage"]) == (0.5, 0.5)
    assert w1["mean"] == pytest.approx(2700.0)
    assert (w1["min"], w1["max"], w1["samples"]) == (3600.0, 3600.0, 1)
    assert math.isnan(w0["first"])
    assert math.isnan(w0["last"])


def test_constant_power_for_an_hour(km: ModuleType) -> None:
    k = kernel(km)
    k.configure_point(0, "m.power", km.RATE, since=DAY0, max_gap=30.0)
    feed(k, [(0, DAY0 + 10.0 * i, 100.0) for i in range(361)])
    recs = close(k, DAY0 + 3601)
    (h,) = pick(recs, interval=2, start=DAY0)
    assert h["delta"] == pytest.approx(100.0, rel=1e-12)
    assert h["mean"] == pytest.approx(100.0, rel=1e-12)
    assert h["coverage"] == 1.0
    assert sum(w["delta"] for w in pick(recs, interval=1)) == pytest.approx(100.0, rel=1e-12)


@pytest.mark.parametrize(
    ("integration", "max_gap", "expected", "coverage"),
    [
        # hold: each value stands until the next one
        ("hold", 0.0, (1000 * 20 + 2000 * 30) / 3600, 50 / 60),
        ("trapezoid", 0.0, (1500 * 20 + 2000 * 30) / 3600, 50 / 60),
        # a span longer than max_gap is uncovered and adds nothing
        ("trapezoid", 25.0, 1500 * 20 / 3600, 20 / 60),
    ],
)
def test_integration_table(
    km: ModuleType, integration: str, max_gap: float, expected: float, coverage: float
) -> None:
    k = kernel(km)
    mode = km.HOLD if integration == "hold" else km.TRAPEZOID
    k.configure_point(0, "m.p", km.RATE, since=DAY0, integration=mode, max_gap=max_gap)
    feed(k, [(0, DAY0 + 10, 1000.0), (0, DAY0 + 30, 2000.0), (0, DAY0 + 60, 2000.0)])
    (w,) = pick(close(k, DAY0 + 61), interval=0, start=DAY0)
    assert w["delta"] == pytest.approx(expected)
    assert w["coverage"] == pytest.approx(coverage)


def test_hold_without_max_gap_stands_through_silence_until_bad(km: ModuleType) -> None:
    k = kernel(km)
    k.configure_point(0, "m.p", km.RATE, since=DAY0, integration=km.HOLD)
    feed(k, [(0, DAY0, 600.0)])
    recs = close(k, DAY0 + 181)  # a subscribed point: silence means unchanged
    assert [w["delta"] for w in pick(recs, interval=0)] == [10.0, 10.0, 10.0]
    feed(k, [(0, DAY0 + 210, 0.0, 1)])  # status bad: the value stands until here, then unknown
    (w3,) = pick(close(k, DAY0 + 241), interval=0)
    assert w3["delta"] == pytest.approx(5.0)
    assert (w3["coverage"], w3["bad"]) == (0.5, 1)


def test_gauge_time_weighted_mean(km: ModuleType) -> None:
    k = kernel(km)
    k.configure_point(0, "m.temp", km.GAUGE, since=DAY0)
    feed(k, [(0, DAY0, 10.0), (0, DAY0 + 30, 20.0), (0, DAY0 + 59, 20.0)])
    (w,) = pick(close(k, DAY0 + 61), interval=0, start=DAY0)
    assert w["mean"] == pytest.approx((15 * 30 + 20 * 29) / 59)
    assert (w["min"], w["max"], w["last"], w["samples"]) == (10.0, 20.0, 20.0, 3)
    assert math.isnan(w["delta"])


def demand_kernel(km: ModuleType) -> Any:
    k = kernel(km, demand_interval=1)
    k.configure_point(0, "m.power", km.RATE, since=DAY0, demand=True, max_gap=30.0)
    k.configure_point(1, "m.other", km.RATE, since=DAY0, max_gap=30.0)
    # 100 kW, then 400 kW during the second quarter hour, then 100 kW again
    rows = []
    for i in range(361):
        t = DAY0 + 10.0 * i
        p = 400.0 if DAY0 + 900 <= t <= DAY0 + 1800 else 100.0
        rows.append((0, t, p))
        rows.append((1, t, p))
    feed(k, rows)
    return k


def test_peak_demand_over_blocks_wholly_inside(km: ModuleType) -> None:
    k = demand_kernel(km)
    wins, blocks = k.close_until(DAY0 + 3601)
    peaks = {
        (wins["interval"][i], wins["start"][i]): (wins["peak"][i], wins["peak_at"][i])
        for i in range(len(wins["point"]))
        if wins["point"][i] == 0
    }
    hour_peak, hour_at = peaks[(2, DAY0)]
    assert hour_at == DAY0 + 1800
    assert hour_peak == pytest.approx(400.0)  # the block [900, 1800) at 400 kW throughout
    assert math.isnan(peaks[(0, DAY0)][0])  # a 1m window holds no whole 15m block
    assert peaks[(1, DAY0 + 900)][1] == DAY0 + 1800
    # every block of the demand point is kept, for group demand; none of the other point
    assert list(blocks["point"]) == [0, 0, 0, 0]
    assert list(blocks["start"]) == [DAY0 + 900 * i for i in range(4)]
    assert blocks["demand"][0] == pytest.approx(100.0 + 150.0 * 10 / 900)  # ramp 890..900 s
    assert all(c == 1.0 for c in blocks["coverage"])
    other = [wins["peak"][i] for i in range(len(wins["point"])) if wins["point"][i] == 1]
    assert len(other) == len(peaks)  # the same windows as the demand point: not none at all
    assert all(math.isnan(x) for x in other)
