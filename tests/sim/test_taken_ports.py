"""A port chosen free can be taken before it is bound (three demos at once on a CI machine):
the simulators and the demo's relay and broker then take another one, never fail."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from gateway.sim.broker import DemoBroker, EmbeddedBroker, UplinkCut
from gateway.sim.modbus_meters import ModbusPlant, SimMeter


def _taken() -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


@pytest.mark.asyncio
async def test_a_plant_whose_port_was_taken_listens_on_another() -> None:
    holder = _taken()
    try:
        plant = ModbusPlant([SimMeter(unit=1, profile="eastron-sdm630")])
        plant.port = holder.getsockname()[1]  # as if taken since it was chosen
        await plant.start()
        try:
            assert plant.port != holder.getsockname()[1]
            with socket.create_connection(("127.0.0.1", plant.port), timeout=2):
                pass
        finally:
            await plant.stop()
        # once bound, a restart comes back on the same port (its clients look there)
        moved = plant.port
        await plant.start()
        try:
            assert plant.port == moved
        finally:
            await plant.stop()
        # a port the caller gave is the caller's: no silent move
        fixed = ModbusPlant([SimMeter(unit=1)], port=holder.getsockname()[1])
        with pytest.raises(RuntimeError):
            await fixed.start()
    finally:
        holder.close()


@pytest.mark.asyncio
async def test_the_relay_whose_port_was_taken_listens_on_another() -> None:
    holder = _taken()
    try:
        cut = UplinkCut(1)
        cut.port = holder.getsockname()[1]
        await cut.start()
        try:
            assert cut.port != holder.getsockname()[1]
            assert cut.url.endswith(f":{cut.port}")
        finally:
            await cut.close()
    finally:
        holder.close()


def test_the_embedded_broker_whose_port_was_taken_listens_on_another(tmp_path: Path) -> None:
    pytest.importorskip("amqtt")
    holder = _taken()
    try:
        broker = EmbeddedBroker(tmp_path)
        broker.port = holder.getsockname()[1]
        broker.start()
        try:
            assert broker.port != holder.getsockname()[1]
            with socket.create_connection(("127.0.0.1", broker.port), timeout=2):
                pass
        finally:
            broker.stop()
    finally:
        holder.close()


def test_mosquitto_whose_port_was_taken_listens_on_another(tmp_path: Path) -> None:
    exe = shutil.which("mosquitto")
    if exe is None:
        pytest.skip("mosquitto is not on PATH (.ci/run installs it)")
    holder = _taken()
    try:
        broker = DemoBroker(tmp_path, exe)
        broker.port = holder.getsockname()[1]
        broker.start()
        try:
            assert broker.port != holder.getsockname()[1]
            assert broker.proc is not None
            assert broker.proc.poll() is None
        finally:
            broker.stop()
    finally:
        holder.close()
