"""OPC UA devices: subscriptions or batched reads, security and pinning, recovery after restarts.

Importing this package does not import asyncua (~48 MB RSS); that happens on the first session.
"""

from drivers.opcua.describe import describe_device
from drivers.opcua.driver import ConnectionLost, OpcuaDriver
from drivers.opcua.nodes import NodeIdError, NodeRef, parse_node_id
from drivers.opcua.security import ConnectionSettings, OpcuaConnectError

__all__ = [
    "ConnectionLost",
    "ConnectionSettings",
    "NodeIdError",
    "NodeRef",
    "OpcuaConnectError",
    "OpcuaDriver",
    "describe_device",
    "parse_node_id",
]
