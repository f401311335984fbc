"""gateway.energy.aggregate on both kernels: device payloads as mqtt.md shows, TOU, demand, state.

Edges in a real zone (Asia/Shanghai), points as the config describes them.
"""

from __future__ import annotations

from bisect import bisect_right
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from drivers.samples import SampleBatch
from gateway.energy.aggregate import AccountedPoint, Aggregator, integral_unit
from tests.kernel.conftest import DAY0
from tests.support.kernel_watch import WatchedKernel

pytestmark = pytest.mark.twin

SHANGHAI = ZoneInfo("Asia/Shanghai")
START = DAY0 - 8 * 3600  # local midnight in Shanghai (UTC+8)

SPECS = [
    AccountedPoint(
        "sub-a-main",
        "energy_import",
        "counter",
        "kWh",
        "electricity",
        rollover=1e8,
        max_rate=50000.0,
        grace=2.0,
        tou=True,
    ),
    AccountedPoint(
        "sub-a-main",
        "power_total",
        "rate",
        "kW",
        "electricity",
        max_gap=3.0,
        demand=True,
        grace=2.0,
        tou=True,
    ),
    AccountedPoint("sub-a-main", "furnace_temp", "gauge", "degC", grace=2.0),
    AccountedPoint(
        "bf2-plc", "gas_flow", "rate", "m3/h", "natural_gas", integration="hold", grace=1.0
    ),
]


class Calendar:
    """Valley 23:00-07:00, flat otherwise, local Shanghai time."""

    names = ("flat", "valley")
    prices = (0.6, 0.25)
    currency = "CNY"

    def _all(self) -> list[tuple[float, int]]:
        out = []
        for d in range(-3, 4):
            base = START + d * 86400
            out += [(base + 7 * 3600, 0), (base + 23 * 3600, 1)]
        return out

    def period_at(self, t: float) -> int:
        marks = self._all()
        i = bisect_right([b for b, _ in marks], t) - 1
        return marks[i][1]

    def boundaries(self, start: float, end: float) -> list[tuple[float, int]]:
        return [(b, p) for b, p in self._all() if start <= b < end]


def make(km: ModuleType, now: float) -> Aggregator:
    agg = Aggregator(
        SHANGHAI,
        [("1m", 60), ("15m", 900), ("1h", 3600)],
        demand_interval=900,
        tou=Calendar(),
        kernel_module=km,
        lookahead=3 * 3600.0,
    )
    agg.set_points(SPECS, now)
    return agg


def poll(agg: Aggregator, t: float, i: int) -> SampleBatch:
    b = SampleBatch()
    ids = agg.index
    b.append(ids.id("sub-a-main.energy_import"), t, 1203388.0 + i * 0.25)
    b.append(ids.id("sub-a-main.power_total"), t, 900.0)
    b.append(ids.id("sub-a-main.furnace_temp"), t, 1480.0 + (i % 3))
    if i % 10 == 0:
        b.append(ids.id("bf2-plc.gas_flow"), t, 360.0)
    return b


def run(agg: Aggregator, t0: float, n: int) -> list[Any]:
    out = []
    for i in range(n):
        t = t0 + i
        agg.ingest(poll(agg, t, i), t)
        out.append(agg.close_until(t))
    return out


def test_device_payloads_match_the_contract(km: ModuleType) -> None:
    t0 = START + 22 * 3600 + 59 * 60  # 22:59 local: the 23:00 edge is a TOU boundary too
    agg = make(km, t0)
    closed = run(agg, t0, 125)
    wins = [w for c in closed for w in c.windows]
    minute = [w for w in wins if w.interval == "1m" and w.device == "sub-a-main"]
    assert [w.payload["start"] for w in minute] == [
        "2026-11-29T14:59:00.000Z",
        "2026-11-29T15:00:00.000Z",
    ]
    p = minute[1].payload
    assert set(p) == {"device", "interval", "start", "end", "revision", "estimated", "points"}
    assert (p["device"], p["interval"], p["revision"], p["estimated"]) == (
        "sub-a-main",
        "1m",
        1,
        False,
    )
    assert p["end"] == "2026-11-29T15:01:00.000Z"
    e = p["points"]["energy_import"]
    assert {k: e[k] for k in ("kind", "unit", "carrier", "rollovers", "resets")} == {
        "kind": "counter",
        "unit": "kWh",
        "carrier": "electricity",
        "rollovers": 0,
        "resets": 0,
    }
    assert e["delta"] == pytest.approx(15.0)
    assert e["last"] - e["first"] == pytest.approx(15.0)
    assert (e["samples"], e["bad"], e["coverage"]) == (60, 0, 1.0)
    assert e["by_period"] == pytest.approx({"flat": 0.0, "valley": 15.0})
    assert e["cost"]["currency"] == "CNY"
    assert e["cost"]["by_period"] == pytest.approx({"flat": 0.0, "valley": 15.0 * 0.25})
    assert e["cost"]["amount"] == pytest.approx(15.0 * 0.25)
    pw = p["points"]["power_total"]
    assert pw["integral"] == pytest.approx(15.0)
    assert pw["integral_unit"] == "kWh"
    assert (pw["mean"], pw["min"], pw["max"]) == (900.0, 900.0, 900.0)
    assert "peak_demand" not in pw  # no whole 15m block in a 1m window
    g = p["points"]["furnace_temp"]
    assert set(g) == {"kind", "unit", "mean", "min", "max", "last", "samples", "bad", "coverage"}
    gas = [w for w in wins if w.device == "bf2-plc" and w.interval == "1m"][1].payload
    flow = gas["points"]["gas_flow"]
    assert flow["integral"] == pytest.approx(6.0)
    assert flow["integral_unit"] == "m3"
    assert flow["carrier"] == "natural_gas"


def test_peak_demand_and_blocks(km: ModuleType) -> None:
    t0 = START + 10 * 3600 - 5
    agg = make(km, t0)
    closed = run(agg, t0, 910)
    blocks = [b for c in closed for b in c.blocks]
    assert [b.key for b in blocks] == ["sub-a-main.power_total"] * 2
    # the block average is its energy over its whole length: 5 s of 900 kW in 15 min is 5 kW
    assert blocks[0].demand == pytest.approx(5.0)
    assert blocks[0].coverage == 5 / 900
    assert blocks[1].demand == pytest.approx(900.0)
    assert blocks[1].coverage == 1.0
    q = [w for c in closed for w in c.windows if w.interval == "15m" and w.device == "sub-a-main"]
    pw = q[-1].payload["points"]["power_total"]
    assert pw["peak_demand"] == pytest.approx(900.0)
    assert pw["peak_demand_at"] == q[-1].payload["end"]


def test_snapshot_survives_a_restart(km: ModuleType) -> None:
    t0 = START + 10 * 3600 + 30
    straight = make(km, t0)
    expected = [w.payload for c in run(straight, t0, 200) for w in c.windows]

    first = make(km, t0)
    got = [w.payload for c in run(first, t0, 100) for w in c.windows]
    data = first.snapshot()
    second = make(km, t0 + 100)
    assert sorted(second.restore(data)) == sorted(s.key for s in SPECS)
    for i in range(100, 200):
        second.ingest(poll(second, t0 + i, i), t0 + i)
        got += [w.payload for w in second.close_until(t0 + i).windows]
    assert got == expected


def test_reload_adds_and_retires_points(km: ModuleType) -> None:
    t0 = START + 10 * 3600 + 30
    agg = make(km, t0)
    run(agg, t0, 10)
    agg.set_points(SPECS[:2], t0 + 10)
    assert "sub-a-main.furnace_temp" not in agg.index
    closed = run_subset(agg, t0 + 10, 60)
    pts = closed[-1].payload["points"]
    assert set(pts) == {"energy_import", "power_total"}


def run_subset(agg: Aggregator, t0: float, n: int) -> list[Any]:
    out = []
    for i in range(n):
        t = t0 + i
        b = SampleBatch()
        b.append(agg.index.id("sub-a-main.energy_import"), t, 5.0 + i)
        b.append(agg.index.id("sub-a-main.power_total"), t, 1.0)
        agg.ingest(b, t)
        out += agg.close_until(t).windows
    return out


def test_units_and_bad_config() -> None:
    assert [integral_unit(u) for u in ("kW", "MW", "m3/h", "t/h", "A")] == [
        "kWh",
        "MWh",
        "m3",
        "t",
        "A*h",
    ]
    agg = Aggregator(SHANGHAI, [("1m", 60)])
    with pytest.raises(ValueError, match="kind 'meter'"):
        agg.set_points([AccountedPoint("d", "p", "meter", "kWh")], DAY0)


def test_gap_revision_republishes_the_whole_device_window(km: ModuleType) -> None:
    t0 = START + 10 * 3600
    agg = make(km, t0)
    ids = agg.index
    published = []
    for i in range(300):
        t = t0 + i
        b = SampleBatch()
        if not 30 < i < 200:  # the counter is silent for almost three minutes
            b.append(ids.id("sub-a-main.energy_import"), t, 1000.0 + i * 0.5)
        b.append(ids.id("sub-a-main.power_total"), t, 30.0)
        agg.ingest(b, t)
        published += agg.close_until(t).windows
    minutes = [w.payload for w in published if w.interval == "1m" and w.device == "sub-a-main"]
    second = [p for p in minutes if p["start"] == "2026-11-29T02:01:00.000Z"]
    assert [p["revision"] for p in second] == [1, 2]
    original, again = second
    assert original["points"]["energy_import"]["delta"] == 0.0
    assert again["estimated"] is True
    assert again["points"]["energy_import"]["delta"] == pytest.approx(30.0)
    assert again["points"]["energy_import"]["estimated"] is True
    assert again["points"]["power_total"] == original["points"]["power_total"]
    assert original["revision"] == 1  # what was handed out before is left as it was


def test_revisions_survive_a_restart(km: ModuleType) -> None:
    t0 = START + 10 * 3600
    agg = make(km, t0)
    ids = agg.index

    def step(a: Aggregator, i: int) -> list[Any]:
        t = t0 + i
        b = SampleBatch()
        if not 30 < i < 200:
            b.append(a.index.id("sub-a-main.energy_import"), t, 1000.0 + i * 0.5)
        b.append(a.index.id("sub-a-main.power_total"), t, 30.0)
        a.ingest(b, t)
        return a.close_until(t).windows

    for i in range(150):
        step(agg, i)
    assert ids is agg.index
    later = make(km, t0 + 150)
    later.restore(agg.snapshot())
    published = [w.payload for i in range(150, 300) for w in step(later, i)]
    again = [p for p in published if p["interval"] == "1m" and p["revision"] == 2]
    assert [p["start"] for p in again][:1] == ["2026-11-29T02:00:00.000Z"]
    every = ["energy_import", "furnace_temp", "power_total"]  # the whole device window
    assert [sorted(p["points"]) for p in again] == [every] * 3


def test_aggregator_snapshot_version_is_checked(km: ModuleType) -> None:
    agg = make(km, START + 3600)
    data = bytearray(agg.snapshot())
    data[3] = 7
    with pytest.raises(ValueError, match="version 7 is not supported"):
        agg.restore(bytes(data))


def gap_state(km: ModuleType) -> tuple[Aggregator, float]:
    """An aggregator holding device windows a counter gap may revise (and its kernel, gap
    windows), with the points' windows open."""
    t0 = START + 10 * 3600
    agg = make(km, t0)
    for i in range(150):
        b = SampleBatch()
        if not 30 < i < 200:
            b.append(agg.index.id("sub-a-main.energy_import"), t0 + i, 1000.0 + i * 0.5)
        b.append(agg.index.id("sub-a-main.power_total"), t0 + i, 30.0)
        agg.ingest(b, t0 + i)
        agg.close_until(t0 + i)
    return agg, t0 + 150


def test_a_damaged_aggregator_snapshot_changes_nothing(km: ModuleType) -> None:
    agg, now = gap_state(km)
    data = agg.snapshot()
    assert b'"revision":1' in data  # the revisable device windows are in it
    n = int.from_bytes(data[4:12], "little")
    flipped = bytearray(data)
    flipped[12 + n // 2] ^= 0x10
    old_kernel = b"IWK\x01" + b'{"intervals":4,"periods":2,"points":{}}'
    # Each damage and the refusal it gets.
    damaged = {
        "json cut": (data[:-3], "its revisable windows are unreadable"),
        "kernel cut": (data[: 12 + n - 1], "aggregator snapshot is truncated"),
        "kernel flipped": (bytes(flipped), r"kernel snapshot is truncated or corrupt \(checksum"),
        "json of version 1": (data[: 12 + n] + b"[]", "its revisable windows are unreadable"),
        "kernel v1": (
            data[:4] + len(old_kernel).to_bytes(8, "little") + old_kernel + b'{"revisable":[]}',
            "kernel snapshot version 1 is not supported",
        ),
    }
    later = make(km, now)
    run(later, now, 5)
    before = later.snapshot()
    for name, (bad, refusal) in damaged.items():
        with pytest.raises(ValueError, match=refusal):
            later.restore(bad)
        assert later.snapshot() == before, name
    assert sorted(later.restore(data)) == sorted(s.key for s in SPECS)


def test_restore_hands_the_kernel_part_over_without_a_copy(km: ModuleType) -> None:
    agg, now = gap_state(km)
    data = agg.snapshot()
    later = make(km, now)
    seen: list[Any] = []
    kernel = later._k

    class Spy:
        def restore(self, part: Any, ids: Any) -> Any:
            seen.append(part)
            return kernel.restore(part, ids)

    later._k = Spy()
    assert sorted(later.restore(data)) == sorted(s.key for s in SPECS)
    assert isinstance(seen[0], memoryview)
    assert seen[0].obj is data


def test_intervals_that_do_not_nest(km: ModuleType) -> None:
    agg = Aggregator(
        ZoneInfo("UTC"), [("10m", 600), ("15m", 900)], demand_interval=None, kernel_module=km
    )
    agg.set_points([AccountedPoint("m", "e", "counter", "kWh")], DAY0)
    published = []
    for i in range(361):
        t = DAY0 + 10.0 * i
        b = SampleBatch()
        b.append(agg.index.id("m.e"), t, 100.0 + i)
        agg.ingest(b, t)
        published += agg.close_until(t + 1.0).windows
    by = {name: [w.payload for w in published if w.interval == name] for name in ("10m", "15m")}
    assert [len(by["10m"]), len(by["15m"])] == [6, 4]
    for ws in by.values():
        assert all(p["points"]["e"]["delta"] == pytest.approx(360 / len(ws)) for p in ws)


def test_windows_handed_over_as_they_complete_equal_the_collected_ones(km: ModuleType) -> None:
    """close_until(now, on_window): each device window once, whole, the same as collected (the
    gap scenario above, so revisions are in it too); only the order may differ."""
    t0 = START + 10 * 3600

    def scenario(handed: bool) -> list[Any]:
        agg = make(km, t0)
        ids = agg.index
        out: list[Any] = []
        for i in range(300):
            t = t0 + i
            b = SampleBatch()
            if not 30 < i < 200:
                b.append(ids.id("sub-a-main.energy_import"), t, 1000.0 + i * 0.5)
            b.append(ids.id("sub-a-main.power_total"), t, 30.0)
            b.append(ids.id("bf2-plc.gas_flow"), t, 360.0)
            agg.ingest(b, t)
            if handed:
                closed = agg.close_until(t, out.append)
                assert closed.windows == []
            else:
                out += agg.close_until(t).windows
        return [(w.interval, w.device, w.start, w.payload["revision"], w.payload) for w in out]

    def key(item: Any) -> tuple[Any, ...]:
        return item[:4]

    collected, handed = scenario(False), scenario(True)
    assert any(item[3] > 1 for item in collected)  # the scenario does revise
    assert sorted(handed, key=key) == sorted(collected, key=key)
    assert len({key(item) for item in handed}) == len(handed)  # each window once


@pytest.mark.parametrize("slice_rows", [1, 2, 3, 7])
def test_windows_taken_in_slices_equal_those_taken_at_once(
    km: ModuleType, monkeypatch: pytest.MonkeyPatch, slice_rows: int
) -> None:
    """A close taken from the kernel a few rows at a time (a device window's points split
    across slices, revisions among them) publishes the same windows, each once and whole, in
    the same order, as one taken at once."""
    t0 = START + 10 * 3600

    def scenario() -> list[Any]:
        agg = make(km, t0)
        ids = agg.index
        out: list[Any] = []
        for i in range(0, 300, 7):
            t = t0 + i
            b = SampleBatch()
            if not 30 < i < 200:
                b.append(ids.id("sub-a-main.energy_import"), t, 1000.0 + i * 0.5)
            b.append(ids.id("sub-a-main.power_total"), t, 30.0)
            b.append(ids.id("bf2-plc.gas_flow"), t, 360.0)
            agg.ingest(b, t)
            agg.close_until(t, out.append)
        agg.close_until(t0 + 4000.0, out.append)
        return [(w.interval, w.device, w.start, w.payload) for w in out]

    whole = scenario()
    monkeypatch.setattr("gateway.energy.aggregate.SLICE_ROWS", slice_rows)
    sliced = scenario()
    assert any(p["revision"] > 1 for *_, p in whole)  # revisions are in it
    assert any(len(p["points"]) > 1 for *_, p in whole)  # windows of several points
    assert sliced == whole


@pytest.mark.parametrize("step", [60.0, 900.0])
def test_a_close_far_behind_the_clock_catches_up_a_step_at_a_time(
    km: ModuleType, monkeypatch: pytest.MonkeyPatch, step: float
) -> None:
    """The first close after 2 h 50 min of silence (a restart after an outage): the same
    windows as one close of it all (each once; in time order now), and the kernel never holds
    more than one step's of them; the counter's energy spread back over them by the first
    reading after is the same too."""
    t0 = START + 6 * 3600

    def scenario(catch_up: float) -> tuple[list[Any], int]:
        monkeypatch.setattr("gateway.energy.aggregate.CATCH_UP_STEP_S", catch_up)
        agg = make(km, t0)
        for i in range(0, 600, 5):
            agg.ingest(poll(agg, t0 + i, i), t0 + i)
            agg.close_until(t0 + i)
        watched = WatchedKernel(agg._k)
        monkeypatch.setattr(agg, "_k", watched)
        out: list[Any] = []
        back = t0 + 600 + 170 * 60
        agg.close_until(back, out.append)  # the first pass after the restart: no samples yet
        most = watched.most
        agg.ingest(poll(agg, back + 1, 5000), back + 1)
        agg.close_until(back + 4 * 3600, out.append)
        windows = [(w.interval, w.device, w.start, w.payload["revision"], w.payload) for w in out]
        return windows, most

    at_once, most_at_once = scenario(10**9)
    stepped, most_stepped = scenario(step)
    assert len(stepped) == len(at_once) > 170
    assert sorted(stepped, key=lambda w: w[:4]) == sorted(at_once, key=lambda w: w[:4])
    assert len({w[:4] for w in stepped}) == len(stepped)
    firsts = [w[2] for w in stepped if w[0] == "1m" and w[3] == 1 and w[1] == "sub-a-main"]
    assert firsts == sorted(firsts)  # the downtime's windows in time order
    assert any(w[3] > 1 for w in stepped)  # the first reading revised the gap windows
    # per point: 1m, 15m and 1h due in one 60 s step (and the 1m before it, waiting out its
    # grace); in 15 min steps 15 of the 1m windows and the 1h
    n = len(SPECS)
    assert most_stepped <= n * (3 + 1 if step == 60.0 else 15 + 2 + 1)
    assert most_at_once > n * 170
