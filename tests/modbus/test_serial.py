"""RTU framing: over a pseudo-terminal pair (socat) as a serial line, and over TCP."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from drivers.modbus.driver import ModbusDriver
from drivers.samples import QUALITY_GOOD
from gateway.sim.modbus_meters import ModbusPlant, SimMeter
from tests.support.waiting import await_until


@pytest.fixture
def pty_pair() -> Iterator[tuple[str, str]]:
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed: no pseudo-terminal pair for the serial test")
    proc = subprocess.Popen(
        ["socat", "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    ptys: list[str] = []
    try:
        while len(ptys) < 2:
            line = proc.stderr.readline()
            if not line:
                pytest.skip("socat did not create a pty pair on this machine")
            if m := re.search(r"PTY is (\S+)", line):
                ptys.append(m.group(1))
        yield ptys[0], ptys[1]
    finally:
        proc.terminate()
        proc.wait(timeout=5)


@pytest_asyncio.fixture
async def serial_plant(pty_pair: tuple[str, str]) -> AsyncIterator[tuple[ModbusPlant, str]]:
    plant = ModbusPlant(
        [
            SimMeter(1, profile="eastron-sdm630"),
            SimMeter(2, profile="carlo-gavazzi-em24"),
            SimMeter(3, silent=True),
        ],
        transport="rtu",
        serial_port=pty_pair[0],
        baudrate=19200,
    )
    await plant.start()
    try:
        yield plant, pty_pair[1]
    finally:
        await plant.stop()


@pytest.mark.asyncio
async def test_units_sharing_a_serial_line(
    serial_plant: Any, sink: Any, device_factory: Any
) -> None:
    _, port = serial_plant
    common = dict(
        port=502, transport="rtu", serial_port=port, baudrate=19200, poll=0.1, timeout=0.15
    )
    devices = [
        device_factory("sdm", unit=1, profile="eastron-sdm630", **common),
        device_factory("em24", unit=2, profile="carlo-gavazzi-em24", **common),
        device_factory("gone", unit=3, profile="eastron-sdm630", **common),
    ]
    index = sink.index
    driver = ModbusDriver(devices, index, sink)
    assert driver.settings.serial_port == port  # one client, one lock for the line

    def seven_polls_each() -> bool:
        status = driver.status()
        return min(status["sdm"]["polls"], status["em24"]["polls"]) >= 7

    task = asyncio.create_task(driver.run())
    try:
        await await_until(seven_polls_each, 10.0, "seven polls of each live unit")
        status = driver.status()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert status["sdm"]["state"] == "up"
    assert status["em24"]["state"] == "up"
    assert status["gone"]["state"] == "down"
    # Pushed to slower retries: in the time of 7 polls, at most 6 requests (not 7 x 3 tries).
    assert status["gone"]["requests"] <= 6
    good = {index.key(p): v for b in sink.batches for p, _, v, q in b if q == QUALITY_GOOD}
    assert 225 < good["em24.voltage_l1"] < 235  # CDAB int32 decoded right over RTU
    assert 225 < good["sdm.voltage_l1"] < 235


@pytest.mark.asyncio
async def test_rtu_over_tcp(sink: Any, device_factory: Any) -> None:
    async with ModbusPlant(
        [SimMeter(7, profile="chint-dtsu666")], transport="rtu-over-tcp"
    ) as plant:
        device = device_factory(
            "gw", port=plant.port, unit=7, transport="rtu-over-tcp", profile="chint-dtsu666"
        )
        index = sink.index
        driver = ModbusDriver([device], index, sink)
        runner = driver.runners["gw"]
        try:
            batch = await runner.poll_once()
        finally:
            runner.link.close()
    values = {index.key(p): v for p, _, v, q in batch if q == QUALITY_GOOD}
    assert len(values) == len(batch) == 19
    assert values["gw.energy_import"] == pytest.approx(1000.0, abs=0.5)


@pytest.mark.asyncio
async def test_cli_read_over_serial(serial_plant: Any, capsys: Any) -> None:
    from gateway.cli.modbus import main

    _, port = serial_plant
    argv = ["modbus", "read", "--serial", port, "--baudrate", "19200", "--unit", "2"]
    argv += ["--function", "input", "--address", "0", "--type", "int32", "--order", "CDAB"]
    code = await asyncio.to_thread(main, argv)
    out = capsys.readouterr().out
    assert code == 0
    assert "serial" in out
    assert 2250 < int(out.splitlines()[-1].split()[-1]) < 2350  # EM24 voltage in 0.1 V
