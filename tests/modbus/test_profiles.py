"""Built-in meter profiles: well-formed, canonical names and units, and readable end to end."""

from __future__ import annotations

from typing import Any

import pytest

from drivers.modbus import profiles
from drivers.modbus.device import DeviceRunner
from drivers.modbus.link import Link, settings_of
from drivers.modbus.points import resolve
from drivers.samples import QUALITY_GOOD, PointIndex
from gateway.sim.modbus_meters import ModbusPlant, SimMeter

REQUIRED = {
    "eastron-sdm630",
    "eastron-sdm120",
    "schneider-iem3000",
    "schneider-pm5xxx",
    "siemens-pac3200",
    "siemens-pac2200",
    "janitza-umg96rm",
    "abb-b2x",
    "carlo-gavazzi-em24",
    "chint-dtsu666",
    "acrel-adl400",
    "acrel-dtsd1352",
    "acrel-adw300",
}
CANONICAL_UNITS = {
    "energy_import": "kWh",
    "energy_export": "kWh",
    "power_total": "kW",
    "power_l1": "kW",
    "power_l2": "kW",
    "power_l3": "kW",
    "voltage_l1": "V",
    "voltage_l2": "V",
    "voltage_l3": "V",
    "current_l1": "A",
    "current_l2": "A",
    "current_l3": "A",
    "pf_total": "1",
    "frequency": "Hz",
}


def test_every_required_profile_ships() -> None:
    assert set(profiles.available()) >= REQUIRED


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_profile_is_well_formed(name: str, device_factory: Any) -> None:
    doc = profiles.load(name)
    for key in ("name", "vendor", "model", "confidence", "sources", "notes"):
        assert doc.get(key), f"{name}: {key} missing"
    assert doc["name"] == name
    assert doc["confidence"] in ("high", "medium", "low")
    device = device_factory(
        "m", port=502, profile=name
    )  # validates every point with the config model
    specs = resolve(device)
    names = [s.name for s in specs]
    assert len(names) == len(set(names)), "duplicate point names"
    assert {"energy_import", "power_total", "voltage_l1", "current_l1"} <= set(names)
    for s in specs:
        if s.name in CANONICAL_UNITS:
            assert s.unit == CANONICAL_UNITS[s.name], (name, s.name, s.unit)
        if s.name.startswith("energy_"):
            assert (s.kind, s.carrier) == ("counter", "electricity"), s.name
        if s.name.startswith("power_"):
            assert (s.kind, s.carrier) == ("rate", "electricity"), s.name


def test_own_points_override_profile_points_by_name(device_factory: Any) -> None:
    device = device_factory(
        "m",
        port=502,
        profile="eastron-sdm630",
        points=[
            {
                "name": "energy_import",
                "function": "input",
                "address": 342,
                "type": "float32",
                "unit": "kWh",
                "kind": "counter",
            },
            {"name": "extra", "address": 9},
        ],
    )
    specs = {s.name: s for s in resolve(device)}
    assert specs["energy_import"].address == 342
    assert specs["extra"].function == "holding"
    assert len(specs) == 15


def test_ct_pt_ratios_multiply_secondary_values(device_factory: Any) -> None:
    device = device_factory("m", port=502, profile="acrel-dtsd1352", ct_ratio=40.0, pt_ratio=10.0)
    specs = {s.name: s for s in resolve(device)}
    assert specs["current_l1"].scale == pytest.approx(0.01 * 40)
    assert specs["voltage_l1"].scale == pytest.approx(0.1 * 10)
    assert specs["energy_import"].scale == pytest.approx(0.01 * 400)
    assert specs["frequency"].scale == pytest.approx(0.01)


@pytest.mark.asyncio
async def test_every_profile_reads_back_from_a_simulated_meter(
    sink: Any, device_factory: Any
) -> None:
    names = sorted(REQUIRED)
    meters = [
        SimMeter(u, profile=n, power_kw=30.0, ct_ratio=20.0, pt_ratio=2.0)
        for u, n in enumerate(names, 1)
    ]
    async with ModbusPlant(meters) as plant:
        for unit, name in enumerate(names, 1):
            device = device_factory(
                f"u{unit}", port=plant.port, unit=unit, profile=name, ct_ratio=20.0, pt_ratio=2.0
            )
            index = PointIndex()
            runner = DeviceRunner(device, Link(settings_of(device)), index, sink)
            try:
                batch = await runner.poll_once()
            finally:
                runner.link.close()
            got = {index.key(p).split(".", 1)[1]: v for p, _, v, q in batch if q == QUALITY_GOOD}
            assert 20 < got["power_total"] < 40, (name, got)
            assert 225 < got["voltage_l1"] < 235, (name, got)
            assert got["energy_import"] == pytest.approx(1000.0, abs=1.0), (name, got)
            assert runner.plan.requests <= 6, (name, runner.plan.blocks)
