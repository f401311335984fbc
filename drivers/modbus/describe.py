"""The read plan of a configured device as text lines, for `ironwatt check` and `modbus probe`.

Pure: no sockets, no pymodbus; only the planner over the device's resolved points.
"""

from __future__ import annotations

from typing import Any

from drivers.modbus.planner import Plan, Span, plan
from drivers.modbus.points import BIT_FUNCTIONS, PointSpec, resolve

__all__ = ["describe_plan", "plan_device"]


def plan_device(device: Any) -> tuple[list[PointSpec], Plan]:
    specs = resolve(device)
    p = plan(
        [Span(s.function, s.address, s.width) for s in specs],
        max_registers=int(getattr(device, "max_registers_per_request", 125)),
        max_bits=int(getattr(device, "max_bits_per_request", 2000)),
        max_gap=int(getattr(device, "max_gap_registers", 10)),
    )
    return specs, p


def describe_plan(device: Any) -> list[str]:
    """Blocks, registers per request and requests per poll of one Modbus device."""
    specs, p = plan_device(device)
    poll = float(device.poll)
    per_s = p.requests / poll if poll > 0 else 0.0
    lines = [
        f"read plan: {p.requests} request(s) per poll for {len(specs)} point(s) "
        f"(one per point would be {len(specs)}), {per_s:.3g} requests/s"
    ]
    for b in p.blocks:
        what = "bits" if b.function in BIT_FUNCTIONS else "registers"
        names = [specs[i].name for i in b.members]
        shown = ", ".join(names[:4]) + (f", +{len(names) - 4} more" if len(names) > 4 else "")
        span = f"{b.function} {b.start}..{b.end - 1} ({b.count} {what}"
        lines.append(f"  {span}, {len(names)} points: {shown})")
    for i in p.unreadable:
        s = specs[i]
        lines.append(
            f"  UNREADABLE {s.name}: {s.function} {s.address} needs {s.width} registers, more than "
            f"max_registers_per_request"
        )
    return lines
