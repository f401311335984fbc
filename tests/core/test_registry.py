"""The driver registry and what every plugin answers, without a server (pure), and the policy
wrapper every driver runs in (restart after a crash, the per-device status)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from drivers.base import Backoff
from drivers.modbus.config import ModbusDevice, ModbusPoint
from drivers.opcua.config import OpcuaDevice, OpcuaPoint
from drivers.registry import PLUGINS, names, plugin, plugin_of
from drivers.running import RunningDriver
from tests.support.recording import RecordingSink
from tests.support.waiting import await_until


def _meter(**kw: object) -> ModbusDevice:
    return ModbusDevice.model_validate({"name": "m1", "driver": "modbus", "host": "10.0.0.1", **kw})


def test_every_protocol_is_one_registry_entry() -> None:
    assert names() == ("modbus", "opcua")
    for name, entry in PLUGINS.items():
        assert entry.name == name
        assert plugin(name) is entry
        face = entry.config()
        assert face.device_model.model_fields["driver"].is_required()
    with pytest.raises(KeyError, match="known: modbus, opcua"):
        plugin("bacnet")


def test_importing_the_registry_loads_no_protocol_library() -> None:
    """The daemon imports every plugin: none may bring its library (or pydantic) along."""
    script = (
        "import sys, drivers.registry\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pymodbus', 'asyncua', 'pydantic', 'pydantic_core', 'cryptography')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_unit_keys_group_what_shares_a_connection() -> None:
    tcp = _meter()
    serial = _meter(transport="rtu", serial_port="/dev/ttyUSB0", host=None)
    plc = OpcuaDevice(name="plc", driver="opcua", endpoint="opc.tcp://10.0.0.2:4840")
    assert plugin_of(tcp).unit_key(tcp) == "tcp:10.0.0.1:502"
    assert plugin_of(serial).unit_key(serial) == "serial:/dev/ttyUSB0"
    assert plugin_of(plc).unit_key(plc) == "plc"


def test_point_facts_give_the_energy_stage_widths_and_steps() -> None:
    device = _meter(
        ct_ratio=40,
        points=(
            ModbusPoint(name="e", address=0, type="uint32", scale=0.01, kind="counter"),
            ModbusPoint(name="p", address=2, type="float32"),
        ),
    )
    facts = plugin_of(device).point_facts(device)
    assert facts["e"].modulus == pytest.approx(2**32 * 0.01)  # multiply_by unset: no CT
    assert facts["e"].resolution == pytest.approx(0.01)
    assert facts["e"].source == "uint32"
    assert (facts["p"].modulus, facts["p"].resolution) == (None, 0.0)
    plc = OpcuaDevice(
        name="plc",
        driver="opcua",
        endpoint="opc.tcp://10.0.0.2:4840",
        points=(OpcuaPoint(name="t", node="ns=2;s=T"),),
    )
    assert plugin_of(plc).point_facts(plc)["t"].source == "an OPC UA node"


class _Crashing:
    async def run(self) -> None:
        await asyncio.sleep(0)
        raise ValueError("decoder bug")

    def status(self) -> dict[str, dict[str, object]]:
        return {"a": {"state": "down"}}


@pytest.mark.asyncio
async def test_a_crashing_driver_is_rebuilt_and_reported_once_per_streak() -> None:
    sink = RecordingSink()
    runner = RunningDriver(
        _Crashing, lambda: ("a", "b"), sink, kind="modbus", backoff=Backoff(0.01, 0.02)
    )
    task = asyncio.create_task(runner.run())
    await await_until(lambda: runner.crashes >= 3, 2.0, "three crashes", interval=0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runner.crashes >= 3
    assert [(e.type, e.device) for e in sink.events] == [("device_down", "a"), ("device_down", "b")]
    status = runner.status()
    assert status["a"]["state"] == "down"
    assert status["b"]["state"] == "starting"
    assert {s["driver"] for s in status.values()} == {"modbus"}
    assert "ValueError: decoder bug" in str(status["b"]["last_crash"])
