"""Counter rules on both kernels: edges split by time, wraps, resets, jitter, rejects, drops.

Table tests over hand-computed windows (energy.md, "counter").
"""

from __future__ import annotations

import itertools
import math
from types import ModuleType
from typing import Any

import pytest

from tests.kernel.conftest import DAY0, close, feed, kernel, pick

pytestmark = pytest.mark.twin


def one_counter(km: ModuleType, **cfg: Any) -> Any:
    k = kernel(km)
    k.configure_point(0, "m.energy", km.COUNTER, since=DAY0, **cfg)
    return k


def minute(recs: list[dict[str, Any]], i: int) -> dict[str, Any]:
    (rec,) = pick(recs, interval=0, start=DAY0 + 60 * i)
    return rec


def test_delta_split_by_time_across_an_edge(km: ModuleType) -> None:
    k = one_counter(km)
    feed(k, [(0, DAY0, 100.0), (0, DAY0 + 30, 110.0), (0, DAY0 + 90, 130.0)])
    recs = close(k, DAY0 + 121)
    w0, w1 = minute(recs, 0), minute(recs, 1)
    assert (w0["delta"], w0["first"], w0["last"]) == (20.0, 100.0, 120.0)
    assert (w1["delta"], w1["first"], w1["last"]) == (10.0, 120.0, 130.0)
    assert (w0["samples"], w1["samples"]) == (2, 1)
    assert (w0["coverage"], w1["coverage"]) == (1.0, 0.5)
    assert w0["revision"] == 1
    assert not w0["estimated"]
    assert math.isnan(w0["mean"])
    assert w0["kind"] == km.COUNTER


@pytest.mark.parametrize(
    ("cfg", "readings", "delta", "rollovers", "resets", "bad"),
    [
        # wrap at the display maximum, plausible under max_rate (20 kWh in 10 s <= 27.7)
        ({"rollover": 1000.0, "max_rate": 10000.0}, [990.0, 10.0], 20.0, 1, 0, 0),
        # the same fall in 1 s is implausible as a wrap (20 > 2.77): a reset, nothing credited
        ({"rollover": 1000.0, "max_rate": 10000.0}, [990.0, 10.0, 12.0], 2.0, 0, 1, 0),
        # no max_rate: a wrap must be less than half the modulus
        ({"rollover": 1000.0}, [600.0, 10.0], 410.0, 1, 0, 0),
        ({"rollover": 1000.0}, [600.0, 100.0], 0.0, 0, 1, 0),
        # no modulus: every fall beyond the resolution is a reset, the new value a baseline
        ({}, [500.0, 20.0, 25.0], 5.0, 0, 1, 0),
        # a fall within one resolution step is jitter: delta 0, the baseline stays
        ({"resolution": 0.1}, [100.0, 99.95, 100.5], 0.5, 0, 0, 0),
        # a rise above max_rate (word-order glitch) is a bad sample; the baseline stays
        ({"max_rate": 3600.0}, [100.0, 70000.0, 101.0], 1.0, 0, 0, 1),
        # NaN is a bad sample
        ({}, [100.0, math.nan, 103.0], 3.0, 0, 0, 1),
        # a reading outside 0..rollover (a sentinel such as 0xFFFFFFFF scaled) is bad
        ({"rollover": 1000.0}, [100.0, 4294967.295, 101.0], 1.0, 0, 0, 1),
    ],
)
def test_counter_table(
    km: ModuleType,
    cfg: dict[str, float],
    readings: list[float],
    delta: float,
    rollovers: int,
    resets: int,
    bad: int,
) -> None:
    k = one_counter(km, **cfg)
    step = 1.0 if cfg.get("max_rate") == 10000.0 and len(readings) == 3 else 10.0
    if cfg.get("max_rate") == 3600.0:
        step = 1.0
    feed(k, [(0, DAY0 + 1 + i * step, x) for i, x in enumerate(readings)])
    w = minute(close(k, DAY0 + 61), 0)
    assert w["delta"] == pytest.approx(delta)
    assert (w["rollovers"], w["resets"], w["bad"]) == (rollovers, resets, bad)
    assert w["samples"] == len(readings) - bad


def test_bad_quality_out_of_order_and_duplicates(km: ModuleType) -> None:
    k = one_counter(km)
    feed(
        k,
        [
            (0, DAY0 + 1, 100.0),
            (0, DAY0 + 5, 150.0, 1),  # bad quality: skipped, counted
            (0, DAY0 + 10, 101.0),
            (0, DAY0 + 10, 105.0),  # duplicate timestamp: dropped
            (0, DAY0 + 8, 90.0),  # older than the last: dropped, no reset
            (0, DAY0 + 20, 102.0),
        ],
    )
    w = minute(close(k, DAY0 + 61), 0)
    assert w["delta"] == pytest.approx(2.0)
    assert (w["samples"], w["bad"], w["resets"]) == (3, 3, 0)
    assert k.stats()["out_of_order"] == 2


def test_no_baseline_means_null_delta_and_silent_windows_still_close(km: ModuleType) -> None:
    k = one_counter(km)
    recs = close(k, DAY0 + 121)
    assert len(pick(recs, interval=0)) == 2
    w = minute(recs, 0)
    assert math.isnan(w["delta"])
    assert math.isnan(w["first"])
    assert (w["samples"], w["coverage"]) == (0, 0.0)
    # once a baseline exists, a silent window reports 0 and the nearest reading
    feed(k, [(0, DAY0 + 130, 7.0)])
    recs = close(k, DAY0 + 241)
    w3 = minute(recs, 3)
    assert (w3["delta"], w3["first"], w3["last"], w3["samples"]) == (0.0, 7.0, 7.0, 0)


def test_window_waits_for_grace(km: ModuleType) -> None:
    k = one_counter(km, grace=5.0)
    feed(k, [(0, DAY0 + 1, 1.0), (0, DAY0 + 59, 2.0)])
    assert close(k, DAY0 + 64) == []
    feed(k, [(0, DAY0 + 63, 2.4)])  # the first reading after the edge still counts
    w = minute(close(k, DAY0 + 65), 0)
    assert w["delta"] == pytest.approx(1.1)
    assert w["coverage"] == 59 / 60


@pytest.mark.parametrize(
    ("max_age", "revised", "open_share"),
    [
        (86400.0, {0: 3.0, 1: 6.0, 2: 6.0}, 3.0),
        # windows that ended more than max_revision_age before the reading are not revised:
        # their share goes to the first open window
        (90.0, {1: 6.0, 2: 6.0}, 6.0),
    ],
)
def test_gap_energy_revises_closed_windows(
    km: ModuleType, max_age: float, revised: dict[int, float], open_share: float
) -> None:
    k = kernel(km, max_revision_age=max_age)
    k.configure_point(0, "m.energy", km.COUNTER, since=DAY0)
    feed(k, [(0, DAY0 + 20, 99.0), (0, DAY0 + 30, 100.0)])
    first = close(k, DAY0 + 181)  # windows 0, 1, 2 closed without a later reading
    assert [w["delta"] for w in pick(first, interval=0)] == [1.0, 0.0, 0.0]
    assert [w["gap"] for w in pick(first, interval=0)] == [1, 1, 1]
    feed(k, [(0, DAY0 + 210, 118.0)])  # 18 kWh over 180 s: 3 per 30 s
    recs = close(k, DAY0 + 241)
    again = pick(recs, interval=0, revision=2)
    assert {round((w["start"] - DAY0) / 60): w["delta"] for w in again} == pytest.approx(
        {i: d + (1.0 if i == 0 else 0.0) for i, d in revised.items()}
    )
    assert all(w["estimated"] == 1 and w["gap"] == 0 for w in again)
    for w in again:  # first/last interpolated at the edges inside the gap
        assert w["last"] == pytest.approx(100.0 + 0.1 * (w["end"] - DAY0 - 30))
    (w3,) = pick(recs, interval=0, revision=1)
    assert w3["estimated"] == 1
    assert w3["delta"] == pytest.approx(open_share)
    assert w3["first"] == pytest.approx(115.0)
    hour = close(k, DAY0 + 3601)
    (h,) = pick(hour, interval=2)
    assert h["delta"] == pytest.approx(19.0)
    assert h["estimated"] == 1


def test_conservation_over_many_edges(km: ModuleType) -> None:
    k = one_counter(km, rollover=1000.0)
    values = [(DAY0 + 7 + 37 * i, (900.0 + 3.3 * i) % 1000.0) for i in range(250)]
    feed(k, [(0, t, v) for t, v in values])
    recs = close(k, DAY0 + 3 * 3600 + 1)
    for interval in (0, 1, 2):
        ws = pick(recs, interval=interval)
        total = sum(w["delta"] for w in ws if not math.isnan(w["delta"]))
        assert total == pytest.approx(3.3 * 249, rel=1e-12)
        assert sum(w["rollovers"] for w in ws) == 1
    # windows chain: one window's last is the next one's first
    ms = pick(recs, interval=0)
    for a, b in itertools.pairwise(ms):
        if not math.isnan(b["first"]):
            assert a["last"] == b["first"]


def test_uncertain_quality_is_not_folded_in(km: ModuleType) -> None:
    k = one_counter(km)
    feed(k, [(0, DAY0 + 1, 100.0), (0, DAY0 + 2, 500.0, 2), (0, DAY0 + 3, 101.0)])
    w = minute(close(k, DAY0 + 61), 0)
    assert (w["delta"], w["samples"], w["bad"]) == (1.0, 2, 1)


def test_settings_are_checked_with_the_point_named(km: ModuleType) -> None:
    k = kernel(km)
    with pytest.raises(ValueError, match=r"point m\.energy: max_rate must be >= 0"):
        k.configure_point(0, "m.energy", km.COUNTER, since=DAY0, max_rate=-1.0)
    with pytest.raises(ValueError, match=r"point m\.energy: start .* outside the window grid"):
        k.configure_point(0, "m.energy", km.COUNTER, since=DAY0 - 10.0)
