"""Windows, DST days, time of use, snapshots and reloads on both kernels.

Edges come from gateway.energy.windows (the gateway zone), as the daemon hands them to the kernel.
"""

from __future__ import annotations

import math
from datetime import datetime
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.kernel.conftest import DAY0, batch, close, feed, kernel, pick, records

pytestmark = pytest.mark.twin

BERLIN = ZoneInfo("Europe/Berlin")


def local_midnight(y: int, m: int, d: int) -> float:
    return datetime(y, m, d, tzinfo=BERLIN).timestamp()


@pytest.mark.parametrize(("day", "hours"), [((2026, 10, 25), 25), ((2026, 3, 29), 23)])
def test_dst_days(km: ModuleType, day: tuple[int, int, int], hours: int) -> None:
    start = local_midnight(*day)
    k = kernel(km, (900, 3600, 86400), start=start, hours=26, tz=BERLIN)
    k.configure_point(0, "m.power", km.RATE, since=start, max_gap=120.0)
    k.configure_point(1, "m.energy", km.COUNTER, since=start, max_gap=120.0)
    rows = []
    for i in range(hours * 60 + 1):
        t = start + 60.0 * i
        rows += [(0, t, 100.0), (1, t, 1000.0 + i * 100.0 / 60)]
    feed(k, rows)
    recs = close(k, start + hours * 3600 + 1)
    (d_rate,) = pick(recs, point=0, interval=2)
    (d_ctr,) = pick(recs, point=1, interval=2)
    assert d_rate["end"] - d_rate["start"] == hours * 3600
    assert d_rate["delta"] == pytest.approx(100.0 * hours, rel=1e-12)
    assert d_ctr["delta"] == pytest.approx(100.0 * hours, rel=1e-12)
    hour_windows = pick(recs, point=0, interval=1)
    assert len(hour_windows) == hours
    assert all(w["end"] - w["start"] == 3600 for w in hour_windows)
    assert all(w["coverage"] == 1.0 for w in hour_windows)
    assert len(pick(recs, point=1, interval=0)) == hours * 4


def test_intervals_that_do_not_nest(km: ModuleType) -> None:
    # 10m and 15m edges interleave: the base grid is their union (5 min cells).
    k = kernel(km, (600, 900, 3600))
    k.configure_point(0, "m.energy", km.COUNTER, since=DAY0)
    k.configure_point(1, "m.power", km.RATE, since=DAY0)
    rows = []
    for i in range(0, 3601, 7):
        rows += [(0, DAY0 + i, 5.0 + i * 0.01), (1, DAY0 + i, 50.0 + (i % 13))]
    feed(k, rows)
    recs = close(k, DAY0 + 3601)
    for point in (0, 1):
        (hour,) = pick(recs, point=point, interval=2)
        tens = pick(recs, point=point, interval=0)
        fifteens = pick(recs, point=point, interval=1)
        assert (len(tens), len(fifteens)) == (6, 4)
        assert sum(w["delta"] for w in tens) == pytest.approx(hour["delta"], rel=1e-12)
        assert sum(w["delta"] for w in fifteens) == pytest.approx(hour["delta"], rel=1e-12)


def test_time_of_use_crossing_midnight(km: ModuleType) -> None:
    # valley 23:00-07:00 (period 0), flat 07:00-23:00 (period 1), 12 h windows, UTC zone
    start = DAY0 - 12 * 3600
    tou = [(DAY0 - 3600, 0), (DAY0 + 7 * 3600, 1), (DAY0 + 23 * 3600, 0)]
    k = kernel(km, (43200,), start=start, hours=24, tou=tou, initial_period=1, n_periods=2)
    k.configure_point(0, "m.power", km.RATE, since=start, tou=True)
    k.configure_point(1, "m.energy", km.COUNTER, since=start, tou=True)
    k.configure_point(2, "m.plain", km.RATE, since=start)
    rows = []
    for i in range(24 * 60 + 1):
        t = start + 60.0 * i
        rows += [(0, t, 60.0), (1, t, float(i)), (2, t, 60.0)]
    feed(k, rows)
    recs = close(k, start + 24 * 3600 + 1, n_periods=2)
    (evening,) = pick(recs, point=0, start=start)
    (morning,) = pick(recs, point=0, start=DAY0)
    assert evening["periods"] == pytest.approx([60.0, 660.0])
    assert morning["periods"] == pytest.approx([420.0, 300.0])
    (c_evening,) = pick(recs, point=1, start=start)
    (c_morning,) = pick(recs, point=1, start=DAY0)
    assert c_evening["periods"] == pytest.approx([60.0, 660.0])
    assert c_morning["periods"] == pytest.approx([420.0, 300.0])
    (plain,) = pick(recs, point=2, start=DAY0)
    assert len(plain["periods"]) == 2  # a slot per period, both NaN: not an empty list
    assert all(math.isnan(x) for x in plain["periods"])


def scenario(km: ModuleType) -> Any:
    k = kernel(km, demand_interval=1)
    k.configure_point(0, "m.energy", km.COUNTER, since=DAY0, rollover=1000.0, grace=3.0)
    k.configure_point(1, "m.power", km.RATE, since=DAY0, demand=True, max_gap=30.0)
    k.configure_point(2, "m.temp", km.GAUGE, since=DAY0, integration=km.HOLD)
    return k


def scenario_rows(lo: int, hi: int) -> list[tuple[int, float, float, int]]:
    rows = []
    for i in range(lo, hi):
        t = DAY0 + 10.0 * i + 0.25
        rows += [
            (0, t, (990.0 + 0.7 * i) % 1000.0, 0),
            (1, t, 100.0 + (i % 17), 1 if i % 53 == 0 else 0),
            (2, t, 20.0 + (i % 5), 0),
        ]
    return rows


def all_output(k: Any, t: float) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    wins, blocks = k.close_until(t)
    return records(wins), {n: list(c) for n, c in blocks.items()}


def same(a: Any, b: Any) -> bool:
    return repr(a) == repr(b)  # NaN-aware, bit-exact through repr


def test_snapshot_restore_resumes_open_windows(km: ModuleType) -> None:
    straight = scenario(km)
    feed(straight, scenario_rows(0, 1000))
    expected = all_output(straight, DAY0 + 3 * 3600)

    first = scenario(km)
    feed(first, scenario_rows(0, 400))
    early = all_output(first, DAY0 + 400 * 10.0 - 30)
    data = first.snapshot()
    second = scenario(km)
    keys = second.restore(data, {"m.energy": 0, "m.power": 1, "m.temp": 2})
    assert sorted(keys) == ["m.energy", "m.power", "m.temp"]
    feed(second, scenario_rows(400, 1000))
    late = all_output(second, DAY0 + 3 * 3600)
    assert same(early[0] + late[0], expected[0])
    assert same({n: early[1][n] + late[1][n] for n in early[1]}, expected[1])


def test_snapshot_is_keyed_by_point_key_and_shared_by_twins(km: ModuleType) -> None:
    k = scenario(km)
    feed(k, scenario_rows(0, 100))
    data = k.snapshot()
    other = kernel(km, demand_interval=1)
    # different ids, one point gone, one of another kind: only the matching key resumes
    other.configure_point(7, "m.power", km.RATE, since=DAY0, demand=True, max_gap=30.0)
    other.configure_point(3, "m.energy", km.GAUGE, since=DAY0)
    assert other.restore(data, {"m.power": 7, "m.energy": 3}) == ["m.power"]
    import ext._kernel_py as pure

    twin = scenario(pure)
    feed(twin, scenario_rows(0, 100))
    assert twin.snapshot() == data


def test_unknown_snapshot_version_is_refused(km: ModuleType) -> None:
    k = scenario(km)
    data = bytearray(k.snapshot())
    data[3] = 99
    with pytest.raises(ValueError, match="version 99 is not supported"):
        k.restore(bytes(data), {"m.energy": 0})
    with pytest.raises(ValueError, match="not an ironwatt kernel snapshot"):
        k.restore(b"{}", {})


def test_points_added_and_removed_without_disturbing_others(km: ModuleType) -> None:
    alone = scenario(km)
    feed(alone, [r for r in scenario_rows(0, 400) if r[0] == 0])
    expected = pick(all_output(alone, DAY0 + 3 * 3600)[0], point=0)

    k = scenario(km)
    feed(k, scenario_rows(0, 200))
    k.remove_point(1)
    k.configure_point(5, "m.new", km.GAUGE, since=DAY0 + 2000)
    k.configure_point(0, "m.energy", km.COUNTER, since=DAY0, rollover=1000.0, grace=3.0)
    feed(k, scenario_rows(200, 400))
    feed(k, [(5, DAY0 + 2500.0, 1.0)])
    recs = all_output(k, DAY0 + 3 * 3600)[0]
    assert same(pick(recs, point=0), expected)
    assert k.stats()["unknown_point"] == 200
    assert pick(recs, point=5, interval=0)[0]["start"] == DAY0 + 1980


def test_extend_grid_rejects_edges_that_do_not_increase(km: ModuleType) -> None:
    k = kernel(km, (60,), hours=1)
    with pytest.raises(ValueError, match="must increase"):
        k.extend_grid([DAY0 + 60.0], [1], [0])
    k.extend_grid([DAY0 + 3660.0], [1], [0])
    assert k.horizon == DAY0 + 3660.0


def test_samples_beyond_the_grid_are_dropped_and_counted(km: ModuleType) -> None:
    k = kernel(km, (60,), hours=1)
    k.configure_point(0, "m.p", km.RATE, since=DAY0)
    k.ingest(*batch([(0, DAY0 + 10.0, 1.0), (0, DAY0 + 99999.0, 1.0)]))
    assert k.stats()["future"] == 1
