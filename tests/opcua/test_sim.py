"""The simulated PLC in process (as `make demo` uses it): typed writes and evolving values.

Its restart with shifted namespaces is tested in test_recovery, as a subprocess.
"""

from __future__ import annotations

import pytest
from asyncua.client.client import Client

from gateway.sim.opcua_plc import SimulatedPlc
from tests.support.waiting import await_until


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
            pieces = client.get_node("ns=2;s=Production.Pieces")
            first = await pieces.read_value()

            async def counted_on() -> bool:
                return bool(await pieces.read_value() > first)

            # It evolves every 0.1 s: a few ticks, not a fixed half second.
            await await_until(counted_on, 5.0, "the piece counter to count on")
            assert (await flow.read_data_type_as_variant_type()).name == "Float"
        finally:
            await client.disconnect()
    finally:
        await plc.stop()
