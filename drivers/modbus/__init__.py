"""Modbus driver: TCP, RTU and RTU-over-TCP; coalesced block reads, per-link concurrency.

The daemon runs one `ModbusDriver` per link (built by `PLUGIN`, the registry's entry), over
`Link` and `DeviceRunner`; tools use the planner, decoder and link.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["PLUGIN", "ModbusDriver", "describe_plan"]

if TYPE_CHECKING:
    from drivers.modbus.describe import describe_plan
    from drivers.modbus.driver import ModbusDriver
    from drivers.modbus.plugin import MODBUS as PLUGIN


def __getattr__(name: str) -> Any:
    # Lazy: `drivers.modbus.profiles` is imported by the config validator, which must not pay
    # for asyncio and pymodbus.
    if name == "PLUGIN":
        from drivers.modbus.plugin import MODBUS

        return MODBUS
    if name == "ModbusDriver":
        from drivers.modbus.driver import ModbusDriver

        return ModbusDriver
    if name == "describe_plan":
        from drivers.modbus.describe import describe_plan

        return describe_plan
    raise AttributeError(name)
