"""The OPC UA plugin: what the daemon, the config loader, the energy stage and `check` ask of it.

Stdlib only at import (the daemon imports every plugin): asyncua (~48 MB) comes with `build`,
pydantic with `config()`, certificate reading with `describe`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from drivers.base import DeviceSink
from drivers.plugin import ConfigFace, Driver, DriverContext, PointFacts, Timing
from drivers.samples import PointIndex
from drivers.wording import format_duration, plural

__all__ = ["OPCUA", "OpcuaPlugin"]

# A node's value is whatever the server says: no register width, no steps.
_NODE_FACTS = PointFacts(modulus=None, resolution=0.0, source="an OPC UA node")


class OpcuaPlugin:
    name = "opcua"
    source_keys: tuple[str, ...] = ("endpoint", "timestamps")
    file_keys: tuple[str, ...] = (
        "password_file",
        "server_certificate",
        "user_certificate",
        "user_key",
    )
    secret_keys: tuple[str, ...] = ("password_file", "user_key")
    placeholder: Mapping[str, Any] = {"driver": "opcua", "endpoint": "opc.tcp://placeholder"}
    record_bases: Mapping[str, type] = {}

    def config(self) -> ConfigFace:
        from drivers.opcua import config

        return config

    def unit_key(self, device: Any) -> str:
        return str(device.name)  # one session per device

    def build(
        self, devices: Sequence[Any], index: PointIndex, sink: DeviceSink, context: DriverContext
    ) -> Driver:
        from drivers.opcua.driver import OpcuaDriver

        (device,) = devices
        return OpcuaDriver(device, index, sink, context.data_dir, context.gateway_id, context.site)

    def timing(self, device: Any) -> Timing:
        return Timing(float(device.interval), float(device.timeout), polled=device.mode == "poll")

    def point_facts(self, device: Any) -> Mapping[str, PointFacts]:
        return {p.name: _NODE_FACTS for p in device.resolved_points()}

    def summary(self, device: Any, resolved: Sequence[Any]) -> str:
        security = (
            "no security"
            if device.security_policy == "None"
            else f"{device.security_policy}/{device.security_mode}"
        )
        login = f", user {device.username}" if device.username else ""
        return (
            f"opcua {device.endpoint}, {device.mode} every {format_duration(device.interval)}, "
            f"{security}{login}, {plural(len(resolved), 'point')}, timestamps from "
            f"{device.timestamps}"
        )

    def describe(self, device: Any) -> list[str]:
        from drivers.opcua.describe import describe_device

        return describe_device(device)

    def point_where(self, point: Any) -> str:
        return str(point.node)


OPCUA = OpcuaPlugin()
