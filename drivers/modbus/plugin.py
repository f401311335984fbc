"""The Modbus plugin: what the daemon, the config loader, the energy stage and `check` ask of it.

Stdlib only at import (the daemon imports every plugin): pymodbus comes with `build`, pydantic
with `config()`, the planner with `describe`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from drivers.base import DeviceSink
from drivers.plugin import ConfigFace, Driver, DriverContext, PointFacts, Timing
from drivers.samples import PointIndex
from drivers.wording import format_duration, plural

if TYPE_CHECKING:
    from drivers.modbus.points import PointSpec

__all__ = ["MODBUS", "ModbusPlugin"]


class ModbusPlugin:
    name = "modbus"
    source_keys: tuple[str, ...] = (
        "transport",
        "host",
        "port",
        "unit",
        "serial_port",
        "ct_ratio",
        "pt_ratio",
    )
    file_keys: tuple[str, ...] = ()
    secret_keys: tuple[str, ...] = ()
    placeholder: Mapping[str, Any] = {"driver": "modbus", "host": "placeholder"}

    @property
    def record_bases(self) -> Mapping[str, type]:
        from drivers.modbus.records import ModbusPointRecord

        return {"ModbusPoint": ModbusPointRecord}

    def config(self) -> ConfigFace:
        from drivers.modbus import config

        return config

    def unit_key(self, device: Any) -> str:
        # Devices behind one TCP endpoint or on one serial line share its client and lock.
        if device.transport == "rtu":
            return f"serial:{device.serial_port}"
        return f"{device.transport}:{device.host}:{device.port}"

    def build(
        self, devices: Sequence[Any], index: PointIndex, sink: DeviceSink, context: DriverContext
    ) -> Driver:
        from drivers.modbus.driver import ModbusDriver

        return ModbusDriver(devices, index, sink)

    def timing(self, device: Any) -> Timing:
        return Timing(float(device.poll), float(device.timeout), polled=True)

    def point_facts(self, device: Any) -> Mapping[str, PointFacts]:
        from drivers.modbus.points import resolve

        return {s.name: _facts(s) for s in resolve(device)}

    def summary(self, device: Any, resolved: Sequence[Any]) -> str:
        if device.transport == "rtu":
            where = (
                f"rtu {device.serial_port} {device.baudrate} {device.bytesize}"
                f"{device.parity}{device.stopbits}"
            )
        else:
            where = f"{device.transport} {device.host}:{device.port}"
        from_profile = len(resolved) - len(device.points)
        profile = f" ({from_profile} from profile {device.profile})" if device.profile else ""
        ratios = (
            f", CT {device.ct_ratio:g} PT {device.pt_ratio:g}"
            if (device.ct_ratio, device.pt_ratio) != (1.0, 1.0)
            else ""
        )
        return (
            f"modbus {where} unit {device.unit}, poll {format_duration(device.poll)}, timeout "
            f"{format_duration(device.timeout)}, {plural(len(resolved), 'point')}{profile}{ratios}"
        )

    def describe(self, device: Any) -> list[str]:
        from drivers.modbus.describe import describe_plan

        return describe_plan(device)

    def point_where(self, point: Any) -> str:
        where: str = f"{point.function} {point.address} {point.type}"
        if point.words > 1:
            where += f" {point.order}"
        if point.bit is not None:
            where += f" bit {point.bit}"
        return where


def _facts(spec: PointSpec) -> PointFacts:
    from drivers.modbus.points import REGISTER_TYPES

    rtype = REGISTER_TYPES[spec.type]
    return PointFacts(
        modulus=float(2**rtype.bits) * abs(spec.scale) if rtype.unsigned else None,
        resolution=abs(spec.scale) if rtype.integer else 0.0,
        source=spec.type,
    )


MODBUS = ModbusPlugin()
