"""OPC UA devices: subscriptions or batched reads, security and pinning, recovery after restarts.

Importing this package imports nothing else: asyncua (~48 MB RSS) comes with the first session,
and the driver's own modules with their first use (`ironwatt run` registers the OPC UA commands
of the CLI, and a Modbus-only gateway must not pay for them).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "PLUGIN",
    "ConnectionLost",
    "ConnectionSettings",
    "NodeIdError",
    "NodeRef",
    "OpcuaConnectError",
    "OpcuaDriver",
    "describe_device",
    "parse_node_id",
]

_WHERE = {
    "ConnectionLost": "driver",
    "OpcuaDriver": "driver",
    "ConnectionSettings": "security",
    "OpcuaConnectError": "security",
    "NodeIdError": "nodes",
    "NodeRef": "nodes",
    "parse_node_id": "nodes",
    "describe_device": "describe",
}


def __getattr__(name: str) -> Any:
    if name == "PLUGIN":
        from drivers.opcua.plugin import OPCUA

        return OPCUA
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
