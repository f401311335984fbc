"""What `ironwatt check` says about an OPC UA device beyond its header line: offline, no asyncua.

Pinning, identity, how each point's node is addressed, and the problems a technician should fix
before the gateway connects (lines that start with "!").
"""

from __future__ import annotations

from typing import Any

from drivers.opcua.nodes import NodeIdError, parse_node_id
from drivers.opcua.security import fingerprint, load_der
from drivers.wording import error_text

__all__ = ["describe_device"]


def describe_device(device: Any) -> list[str]:
    """Lines for `ironwatt check` under the device's header (which names endpoint and mode)."""
    lines: list[str] = []
    n = len(device.points)
    if device.mode == "poll":
        lines.append(f"poll: one batched Read of {n} node(s) every {device.interval:g} s")
    else:
        queue = getattr(device, "queue_size", 1)
        lines.append(
            f"subscribe: {n} monitored item(s) sampled every {device.interval:g} s, queue {queue}"
        )
    pinned = device.server_certificate
    if pinned is not None:
        try:
            lines.append(
                f"server certificate pinned: {pinned} (SHA-256 {fingerprint(load_der(pinned))})"
            )
        except (OSError, ValueError) as exc:
            lines.append(f"! server_certificate {pinned} cannot be read: {error_text(exc)}")
    elif device.security_policy != "None":
        lines.append(
            f"! no server_certificate pinned: run `ironwatt opcua trust {device.endpoint} "
            "--out <file.der>` and set server_certificate (the gateway will not connect without)"
        )
    if device.security_policy != "None" and device.security_mode == "None":
        lines.append(
            f"! security_policy {device.security_policy} needs security_mode Sign or SignAndEncrypt"
        )
    if getattr(device, "user_certificate", None):
        key = "" if getattr(device, "user_key", None) else " ! user_key is missing"
        lines.append(f"X.509 user identity: {device.user_certificate}{key}")
    by_uri = by_index = 0
    for point in device.points:
        try:
            ref = parse_node_id(point.node)
        except NodeIdError as exc:
            lines.append(f"! {point.name}: {exc}")
            continue
        if ref.ns_uri is not None:
            by_uri += 1
        elif ref.ns_index:
            by_index += 1
            lines.append(
                f"! {point.name}: {point.node} uses a namespace index, which a server may change "
                "on restart: prefer nsu=<namespace URI> (`ironwatt opcua browse` shows it)"
            )
        if getattr(point, "deadband_type", "none") != "none":
            lines.append(
                f"{point.name}: deadband {point.deadband_type} {point.deadband_value:g} "
                "(applied by the server)"
            )
    lines.append(f"nodes: {by_uri} by namespace URI (nsu=), {by_index} by namespace index (ns=)")
    return lines
