"""The simulated PLC in process (as `make demo` uses it): typed writes and evolving values.

Its restart with shifted namespaces is tested in test_recovery, as a subprocess.
"""

from __future__ import annotations

import asyncio

import pytest
from asyncua.client.client import Client

from gateway.sim.opcua_plc import SimulatedPlc


@pytest.mark.asyncio
async def test_in_process_plc_writes_and_evolves() -> None:
    plc = SimulatedPlc(evolve_interval=0.1)
    await plc.start()
    try:
        assert plc.ns_index == 2
        # A Python float written to a Float variable stays a Float (no BadTypeMismatch).
        await plc.write("Utilities.NG.Flow", 123.5)
        await plc.write("Status.Running", False)
        client = Client(plc.endpoint, timeout=5)
        await client.connect()
        try:
            flow = client.get_node("ns=2;s=Utilities.NG.Flow")
            running = client.get_node("ns=2;s=Status.Running")
            assert await running.read_value() is False
            first = await client.get_node("ns=2;s=Production.Pieces").read_value()
            await asyncio.sleep(0.5)
            assert await client.get_node("ns=2;s=Production.Pieces").read_value() > first
            assert (await flow.read_data_type_as_variant_type()).name == "Float"
        finally:
            await client.disconnect()
    finally:
        await plc.stop()
