"""`ironwatt run` publishes group windows whose numbers are its member windows' numbers.

Modbus sim → gateway subprocess → Mosquitto with 10 s windows: a line of two meters with a
tariff, the second meter declared recovered (a generator: its energy counts negative). Every
group figure is recomputed here from the device windows of the same slot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.energy.carriers import DEFAULT_CARRIERS
from gateway.sim.modbus_meters import SimMeter
from tests.daemon.conftest import GatewayProcess, PlantThread
from tests.support.mosquitto import Collector, Mosquitto

POWER = {1: 36.0, 2: 18.0}


def _config(path: Path, data: Path, broker: Mosquitto, port: int) -> None:
    text = f"""
[gateway]
id = "gw-groups"
site = "testsite"
timezone = "Asia/Shanghai"
data_dir = "{data}"

[mqtt]
url = "{broker.url}"
topic_prefix = "iw"

[buffer]
durability = "normal"

[energy]
intervals = ["10s"]
demand_interval = "10s"
benchmark_intervals = ["10s"]

[tariff]
currency = "CNY"
periods = [{{ name = "flat", price = 0.5, hours = ["00:00-24:00"] }}]

[[groups]]
name = "line"
members = ["m1.energy_import"]
recovered = ["m2.energy_import"]
production = "m1.energy_export"
process = "eaf"
furnace_capacity_t = 80

[[groups]]
name = "plant"
members = ["line"]
"""
    for unit in POWER:
        text += f"""
[[devices]]
name = "m{unit}"
driver = "modbus"
host = "127.0.0.1"
port = {port}
unit = {unit}
poll = "1s"
timeout = "500ms"
profile = "eastron-sdm630"
"""
    path.write_text(text)


def _docs(collector: Collector, kind: str) -> list[dict[str, Any]]:
    out = []
    for topic, payload, _retain in collector.snapshot():
        if topic.split("/")[3] == kind:
            out.append({**json.loads(payload), "_topic": topic})
    return out


def _whole(collector: Collector) -> list[dict[str, Any]]:
    """Line windows whose members were covered throughout (the first ones are partial)."""
    return [g for g in _docs(collector, "group") if g["group"] == "line" and g["coverage"] > 0.999]


@pytest.mark.slow
def test_group_windows_are_the_sum_of_their_members(
    shared_broker: Mosquitto, tmp_path: Path
) -> None:
    meters = [SimMeter(unit=u, profile="eastron-sdm630", energy_kwh=1000.0 * u) for u in POWER]
    for m in meters:
        m.hold("power_total", POWER[m.unit])
    plant = PlantThread(meters)
    config, data = tmp_path / "ironwatt.toml", tmp_path / "data"
    _config(config, data, shared_broker, plant.plant.port)
    collector = Collector(shared_broker, "iw/#", client_id="groups-collector")
    gw = GatewayProcess(config, tmp_path)
    try:
        gw.start()
        gw.read_notes(until="READY=1", timeout=20)
        gw.wait_until(lambda: len(_whole(collector)) >= 2, 40, "two whole line windows")
        energy = {(d["device"], d["start"]): d for d in _docs(collector, "energy")}
        plants = {g["start"]: g for g in _docs(collector, "group") if g["group"] == "plant"}
        electricity = DEFAULT_CARRIERS["electricity"]
        for g in _whole(collector)[:2]:
            assert g["_topic"] == "iw/testsite/gw-groups/group/10s/line"
            m1 = energy[("m1", g["start"])]["points"]
            m2 = energy[("m2", g["start"])]["points"]
            used = m1["energy_import"]["delta"]
            back = m2["energy_import"]["delta"]
            assert used == pytest.approx(POWER[1] * 10 / 3600, rel=0.2)
            assert back == pytest.approx(POWER[2] * 10 / 3600, rel=0.2)
            assert g["carriers"] == {"electricity": {"unit": "kWh", "amount": used}}
            assert g["recovered"] == {"electricity": {"unit": "kWh", "amount": back}}
            assert g["kgce"] == pytest.approx((used - back) * electricity.kgce_per_unit, rel=1e-12)
            assert g["kgco2e"] == pytest.approx(
                (used - back) * electricity.kgco2e_per_unit, rel=1e-12
            )
            member_cost = (
                m1["energy_import"]["cost"]["amount"] - m2["energy_import"]["cost"]["amount"]
            )
            assert g["cost"]["amount"] == pytest.approx(member_cost, rel=1e-12)
            assert g["cost"]["amount"] == pytest.approx((used - back) * 0.5, rel=1e-12)
            # One 10 s block per window: the simultaneous sum is the window's energy / 10 s.
            assert g["demand"]["peak"] == pytest.approx((used - back) * 360, rel=1e-9)
            assert g["demand"]["at"] == g["end"]
            # m1's export counter stands still: production 0, intensity null (never a
            # division by zero), and so no value for the benchmark to judge
            assert g["production"] == {"unit": "kWh", "amount": 0.0}
            assert g["intensity_kgce_per_unit"] is None
            # Judged in the daemon too (its config is records, not models): an 80 t EAF's
            # levels.
            bench = g["benchmark"]
            assert (bench["process"], bench["standard"]) == ("eaf_70t_up", "GB 21256-2025")
            assert (bench["benchmark"], bench["baseline"]) == (61, 72)
            assert (bench["value"], bench["eei"], bench["standing"]) == (None, None, None)
            parent = plants[g["start"]]
            assert parent["carriers"] == g["carriers"]
            assert parent["kgce"] == g["kgce"]
            assert parent["groups"] == ["line"]
        # Group windows are QoS-1 messages of the one stream, in seq order with the rest.
        seqs = sorted(d["seq"] for k in ("energy", "group", "event") for d in _docs(collector, k))
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert gw.stop() == 0
    finally:
        gw.close()
        collector.close()
        plant.stop()
