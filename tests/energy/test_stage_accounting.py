"""The energy stage end to end without I/O: samples in, device and group window messages out.

Hand-computed: every increment below is a power of two fraction, so each number is exact in
binary floating point and asserted with ==.
"""

from __future__ import annotations

import json
import tomllib
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from drivers.samples import SampleBatch
from gateway.config.load import validate_document
from gateway.daemon.energy_stage import EnergyStage

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")

CONFIG = """
[gateway]
id = "gw1"
site = "plant1"
timezone = "{tz}"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[energy]
intervals = {intervals}
{energy}

[tariff]
currency = "CNY"
{tariff}

[[devices]]
name = "meter"
driver = "modbus"
host = "127.0.0.1"
poll = "{poll}"
[[devices.points]]
name = "energy_import"
address = 0
type = "uint32"
kind = "counter"
unit = "kWh"
carrier = "electricity"
rollover = 100000
max_rate = 10000
[[devices.points]]
name = "power"
address = 2
type = "float32"
kind = "rate"
unit = "kW"
carrier = "electricity"

[[devices]]
name = "plc"
driver = "opcua"
endpoint = "opc.tcp://127.0.0.1:4840"
mode = "poll"
interval = "{poll}"
[[devices.points]]
name = "gas_flow"
node = "ns=2;s=Gas"
kind = "rate"
unit = "m3/h"
carrier = "natural_gas"
[[devices.points]]
name = "hot_metal"
node = "ns=2;s=HotMetal"
kind = "counter"
unit = "t"
carrier = "product"

[[groups]]
name = "bf"
members = ["meter.energy_import", "plc.gas_flow"]
production = "plc.hot_metal"
process = "blast_furnace"
"""


VALLEY_FLAT = """periods = [
  { name = "flat", price = 0.625, hours = ["07:00-23:00"] },
  { name = "valley", price = 0.25, hours = ["23:00-07:00"] },
]"""


def stage_at(
    tz: ZoneInfo, now: float, *, intervals: str, poll: str = "1s", energy: str = "",
    tariff: str = VALLEY_FLAT,
) -> EnergyStage:  # fmt: skip
    text = CONFIG.format(tz=tz.key, intervals=intervals, energy=energy, tariff=tariff, poll=poll)
    cfg = validate_document(tomllib.loads(text), "test.toml", text)
    return EnergyStage(cfg, now)


def local(tz: ZoneInfo, text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


class Plant:
    """Constant loads: 225 kW on the meter (0.0625 kWh/s), 400 m3/h of gas, 1/128 t/s of iron."""

    def __init__(self, stage: EnergyStage, t0: float, counter0: float = 99_800.0) -> None:
        self.stage, self.t0, self.counter0 = stage, t0, counter0
        self.out: list[tuple[str, dict[str, Any]]] = []
        self.meter_down: tuple[float, float] | None = None

    def run(self, until: float, step: float = 1.0, power: float = 225.0) -> None:
        ids = self.stage.index
        t = self.t0
        while t <= until:
            b = SampleBatch()
            s = t - self.t0
            down = self.meter_down is not None and self.meter_down[0] <= t < self.meter_down[1]
            if not down:
                b.append(ids.id("meter.energy_import"), t, (self.counter0 + s / 16) % 100_000)
                b.append(ids.id("meter.power"), t, power)
            b.append(ids.id("plc.gas_flow"), t, 400.0)
            b.append(ids.id("plc.hot_metal"), t, 5000.0 + s / 128)
            self.stage.agg.ingest(b, t)
            for m in self.stage.close_due(t):
                assert isinstance(m.body, bytes)
                self.out.append((m.topic, json.loads(m.body)))
            t += step
        self.t0 = t

    def groups(self, interval: str) -> list[dict[str, Any]]:
        return [p for topic, p in self.out if f"/group/{interval}/" in topic]

    def devices(self, interval: str, device: str) -> list[dict[str, Any]]:
        return [p for topic, p in self.out if topic.endswith(f"/energy/{interval}/{device}")]


def test_an_hour_of_a_blast_furnace_with_a_rollover_and_a_tariff_boundary() -> None:
    t0 = local(SHANGHAI, "2026-12-02T05:59:50")  # a baseline before the 06:00 edge
    plant = Plant(stage_at(SHANGHAI, t0, intervals='["1h", "2h"]'), t0)
    plant.run(
        local(SHANGHAI, "2026-12-02T08:00:10")
    )  # the PLC closes after 6 s (1 s + its 5 s timeout)
    hour = [g for g in plant.groups("1h") if g["start"] == "2026-12-01T22:00:00.000Z"]
    assert len(hour) == 1
    g = hour[0]
    [device] = [w for w in plant.devices("1h", "meter") if w["start"] == g["start"]]
    meter = device["points"]["energy_import"]
    # 99,800 kWh at 05:59:50 + 225 kWh/h: the counter wraps at 100,000 during the hour.
    assert (meter["delta"], meter["rollovers"]) == (225.0, 1)
    assert g["carriers"] == {
        "electricity": {"unit": "kWh", "amount": 225.0},
        "natural_gas": {"unit": "m3", "amount": 400.0},
    }
    assert g["production"] == {"unit": "t", "amount": 28.125}
    assert g["kgce"] == 225 * 0.1229 + 400 * 1.2143
    assert g["kgco2e"] == 225 * 0.5306 + 400 * 2.165
    assert g["intensity_kgce_per_unit"] == g["kgce"] / 28.125
    assert g["cost"] == {"currency": "CNY", "amount": 225 * 0.25, "by_period": {
        "flat": 0.0, "valley": 225 * 0.25}}  # fmt: skip
    assert g["coverage"] == 1.0
    assert "benchmark" not in g  # 1h is not a benchmark interval
    # 06:00-08:00 crosses valley -> flat at 07:00: the cost splits exactly there.
    [two] = [g for g in plant.groups("2h") if g["start"] == "2026-12-01T22:00:00.000Z"]
    assert two["cost"]["by_period"] == {"flat": 225 * 0.625, "valley": 225 * 0.25}
    assert two["cost"]["amount"] == 225 * 0.625 + 225 * 0.25
    [device_2h] = [w for w in plant.devices("2h", "meter") if w["start"] == two["start"]]
    energy = device_2h["points"]["energy_import"]
    assert energy["by_period"] == {"flat": 225.0, "valley": 225.0}
    assert energy["cost"] == two["cost"]
    assert two["carriers"]["electricity"]["amount"] == energy["delta"] == 450.0


def test_a_member_down_for_half_the_window_then_revised() -> None:
    t0 = local(SHANGHAI, "2026-12-02T05:59:50")
    plant = Plant(stage_at(SHANGHAI, t0, intervals='["1h"]'), t0)
    plant.meter_down = (
        local(SHANGHAI, "2026-12-02T06:30:00"),
        local(SHANGHAI, "2026-12-02T07:10:00"),
    )
    plant.run(local(SHANGHAI, "2026-12-02T07:15:00"))
    windows = [g for g in plant.groups("1h") if g["start"] == "2026-12-01T22:00:00.000Z"]
    assert [(g["revision"], g["estimated"]) for g in windows] == [(1, False), (2, True)]
    first, revised = windows
    assert first["coverage"] == pytest.approx(0.5, abs=1 / 3600)  # 06:00-06:29:59 covered
    assert first["carriers"]["electricity"]["amount"] == pytest.approx(112.5, abs=0.07)
    # The gap's energy (06:29:59 to 07:10) is spread over it by time: the hour gets its 225 kWh.
    assert revised["carriers"]["electricity"]["amount"] == pytest.approx(225.0, rel=1e-12)
    assert revised["kgce"] == pytest.approx(225 * 0.1229 + 400 * 1.2143, rel=1e-12)
    assert revised["members"]["meter.energy_import"]["amount"] == revised["carriers"][
        "electricity"]["amount"]  # fmt: skip


def test_a_fall_back_night_shift_with_tou_in_berlin() -> None:
    # 2026-10-25: 03:00 CEST -> 02:00 CET. The night shift 22:00-06:00 lasts 9 h; the deep
    # valley 02:00-03:00 happens twice (2 h), at 0.125 instead of 0.5.
    t0 = local(BERLIN, "2026-10-24T21:59:00")
    stage = stage_at(
        BERLIN, t0, intervals='["1h"]', poll="10s",
        energy='shifts = [{ name = "night", start = "22:00" }, { name = "day", start = "06:00" },'
               ' { name = "late", start = "14:00" }]',
        tariff='periods = [{ name = "deep", price = 0.125, hours = ["02:00-03:00"] },'
               ' { name = "flat", price = 0.5, hours = ["03:00-02:00"] }]',
    )  # fmt: skip
    plant = Plant(stage, t0)
    plant.run(local(BERLIN, "2026-10-25T06:01:00"), step=10.0, power=100.0)
    [night] = [p for p in plant.devices("shift", "meter") if p["shift"] == "night"]
    assert (night["start"], night["end"]) == (
        "2026-10-24T20:00:00.000Z",
        "2026-10-25T05:00:00.000Z",
    )
    assert night["points"]["power"]["integral"] == 900.0  # 100 kW for 9 h
    energy = night["points"]["energy_import"]
    assert energy["delta"] == 9 * 225.0
    assert energy["by_period"] == {"deep": 2 * 225.0, "flat": 7 * 225.0}
    assert energy["cost"]["amount"] == 2 * 225 * 0.125 + 7 * 225 * 0.5
    [group] = [g for g in plant.groups("shift") if g["shift"] == "night"]
    assert group["cost"] == energy["cost"]
    assert group["carriers"]["electricity"]["amount"] == 9 * 225.0
    # 9 h of iron at 1/128 t/s; the benchmark judges shift windows by default
    assert group["production"]["amount"] == 9 * 3600 / 128
    bench = group["benchmark"]
    assert bench["value"] == group["intensity_kgce_per_unit"]
    assert (bench["process"], bench["standard"]) == ("blast_furnace", "GB 21256-2025")
    assert bench["standing"] == "at_or_better_than_benchmark"  # gas and power only: 2.x kgce/t
    hours = [
        p for p in plant.devices("1h", "meter") if "2026-10-24T20" <= p["start"] < "2026-10-25T05"
    ]
    assert len(hours) == 9  # the repeated hour is two windows
    assert sum(h["points"]["energy_import"]["delta"] for h in hours) == energy["delta"]


def test_a_days_shifts_sum_to_the_day_and_a_months_days_to_the_month() -> None:
    t0 = local(SHANGHAI, "2026-11-01T00:00:00")
    stage = stage_at(
        SHANGHAI, t0, intervals='["1d", "1mo"]', poll="15m",
        energy='shifts = [{ name = "a", start = "00:00" }, { name = "b", start = "08:00" },'
               ' { name = "c", start = "16:00" }]',
    )  # fmt: skip
    plant = Plant(stage, t0, counter0=0.0)
    plant.run(local(SHANGHAI, "2026-12-01T00:30:00"), step=900.0)
    [month] = plant.devices("1mo", "meter")
    assert (month["start"], month["end"]) == (
        "2026-10-31T16:00:00.000Z",
        "2026-11-30T16:00:00.000Z",
    )
    days = plant.devices("1d", "meter")
    assert len(days) == 30
    delta = [d["points"]["energy_import"]["delta"] for d in days]
    assert sum(delta) == month["points"]["energy_import"]["delta"] == 30 * 24 * 225.0
    shifts = plant.devices("shift", "meter")
    assert len(shifts) == 90
    for d, day in enumerate(days):
        of_day = shifts[3 * d : 3 * d + 3]
        assert [s["shift"] for s in of_day] == ["a", "b", "c"]
        assert of_day[0]["start"] == day["start"]
        assert sum(s["points"]["energy_import"]["delta"] for s in of_day) == delta[d]
    [group_month] = plant.groups("1mo")
    assert group_month["carriers"]["electricity"]["amount"] == 30 * 24 * 225.0
    assert group_month["benchmark"]["value"] == group_month["intensity_kgce_per_unit"]


def test_a_restart_between_two_members_closing_loses_nothing() -> None:
    """At 07:00:03 the meter's 06:00 window is out (grace 1.5 s), the PLC's is not (6 s): the
    group's half-collected slot must survive the snapshot."""
    t0 = local(SHANGHAI, "2026-12-02T05:59:50")
    whole = Plant(stage_at(SHANGHAI, t0, intervals='["1h"]'), t0)
    whole.run(local(SHANGHAI, "2026-12-02T07:00:10"))
    before = Plant(stage_at(SHANGHAI, t0, intervals='["1h"]'), t0)
    mid = local(SHANGHAI, "2026-12-02T07:00:03")
    before.run(mid)
    assert before.stage.groups is not None
    assert before.stage.groups.pending() == 1
    blob = b"".join(before.stage.snapshot_parts())
    after = Plant(stage_at(SHANGHAI, before.t0, intervals='["1h"]'), before.t0)
    assert after.stage.restore(blob)
    after.run(local(SHANGHAI, "2026-12-02T07:00:10"))
    assert before.groups("1h") + after.groups("1h") == whole.groups("1h")
    assert len(whole.groups("1h")) == 2


def test_windows_flushed_in_chunks_are_the_same_windows_in_the_same_order() -> None:
    t0 = local(SHANGHAI, "2026-12-02T05:59:50")
    both = []
    for flushed in (False, True):
        stage = stage_at(SHANGHAI, t0, intervals='["1m", "15m"]')
        plant = Plant(stage, t0)
        plant.run(local(SHANGHAI, "2026-12-02T06:14:00"))
        blob = b"".join(stage.snapshot_parts())
        later = stage_at(SHANGHAI, t0, intervals='["1m", "15m"]')
        later.restore(blob)
        back = local(SHANGHAI, "2026-12-02T07:00:00")  # 46 minutes of windows due at once
        batch = SampleBatch()
        batch.append(later.index.id("meter.energy_import"), back, 99_800.0 + (back - t0) / 16)
        later.agg.ingest(batch, back)
        chunks: list[list[Any]] = []

        def take(chunk: list[Any], into: list[list[Any]] = chunks) -> bool:
            into.append(chunk)
            return True

        rest = later.close_due(back + 10, flush=take if flushed else None, chunk=7)
        assert all(len(c) == 7 for c in chunks)
        both.append([(m.topic, m.body) for c in [*chunks, rest] for m in c])
        assert len(chunks) > 5 if flushed else not chunks
    assert both[0] == both[1]


def test_once_flush_declines_the_rest_is_returned_in_order() -> None:
    t0 = local(SHANGHAI, "2026-12-02T05:59:50")
    back = local(SHANGHAI, "2026-12-02T06:30:00")
    runs = []
    for declining in (False, True):
        stage = stage_at(SHANGHAI, t0, intervals='["1m"]')
        Plant(stage, t0).run(local(SHANGHAI, "2026-12-02T06:00:30"))
        batch = SampleBatch()
        batch.append(stage.index.id("meter.energy_import"), back, 99_800.0 + (back - t0) / 16)
        stage.agg.ingest(batch, back)
        taken: list[list[Any]] = []
        offered: list[int] = []

        def busy_after_two(
            chunk: list[Any], offered: list[int] = offered, taken: list[list[Any]] = taken
        ) -> bool:
            offered.append(len(chunk))
            if len(offered) > 2:
                return False  # the writer is full from the third chunk on
            taken.append(chunk)
            return True

        rest = stage.close_due(back + 10, flush=busy_after_two if declining else None, chunk=4)
        if declining:
            # Declined from the third on: kept and offered again, 4 more each time, in order.
            assert offered[:3] == [4, 4, 4]
            assert offered[3:] == list(range(8, 4 * len(offered) - 4, 4))
            assert len(rest) > 4
        runs.append([m.body for c in [*taken, rest] for m in c])
    assert runs[0] == runs[1]
