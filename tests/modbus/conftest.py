"""Fixtures of the Modbus tests: a real pymodbus server from gateway.sim on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from drivers.modbus.config import ModbusDevice, ModbusPoint
from gateway.sim.modbus_meters import ModbusPlant, SimMeter
from tests.support.recording import RecordingSink


def ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def make_device(
    name: str,
    *,
    port: int,
    unit: int = 1,
    poll: float = 0.2,
    timeout: float = 0.2,
    points: list[dict[str, Any]] | None = None,
    **kw: Any,
) -> Any:
    """A validated ModbusDevice as the config loader would produce it."""
    return ModbusDevice(
        name=name,
        driver="modbus",
        host=kw.pop("host", "127.0.0.1"),
        port=port,
        unit=unit,
        poll=ms(poll),
        timeout=ms(timeout),
        points=tuple(ModbusPoint(**p) for p in (points or [])),
        **kw,
    )


@pytest.fixture
def sink() -> RecordingSink:
    """The driver under test takes `sink.index` as its PointIndex: rows carry point keys."""
    return RecordingSink()


@pytest.fixture
def device_factory() -> Callable[..., Any]:
    return make_device


@pytest_asyncio.fixture
async def plant() -> AsyncIterator[ModbusPlant]:
    """Unit 1: an SDM630; unit 2: a blank meter the test fills; unit 3: never answers."""
    p = ModbusPlant(
        [
            SimMeter(1, profile="eastron-sdm630"),
            SimMeter(2),
            SimMeter(3, silent=True),
        ]
    )
    await p.start()
    try:
        yield p
    finally:
        await p.stop()
