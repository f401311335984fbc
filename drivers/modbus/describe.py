"""The read plan of a configured device as text lines, for `ironwatt check` and `modbus probe`.

Pure: no sockets, no pymodbus; only the planner over the device's resolved points.
"""

from __future__ import annotations

from typing import Any

from drivers.modbus.planner import Plan, Span, plan
from drivers.modbus.points import BIT_FUNCTIONS, PointSpec, resolve

__all__ = ["describe_plan", "plan_device", "register_number_hint"]


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
    lines += _register_number_lines(specs)
    return lines


def _register_number_lines(specs: list[PointSpec]) -> list[str]:
    """One warning for a device whose points look like register numbers, naming a few."""
    hinted = [(s, register_number_hint(s.function, s.address)) for s in specs]
    hits = [(s, h) for s, h in hinted if h is not None]
    if not hits:
        return []
    first, hint = hits[0]
    more = len(hits) - 1
    also = ""
    if more:
        others = ", ".join(f"{s.name} {s.address}" for s, _ in hits[1:4])
        also = f" ({more} more point(s) too: {others}{', ...' if more > 3 else ''})"
    return [f"warning: point {first.name}: {hint}{also}"]


# Manuals often list Modicon register numbers: 30001.. for input registers, 40001.. for holding
# registers (six digits, 300001.. and 400001.., in some). The config takes 0-based wire
# addresses, so such a number is almost always off by the 30001/40001 and reads the wrong thing.
_REGISTER_NUMBERS = {"input": (30001, 300001), "holding": (40001, 400001)}


def register_number_hint(function: str, address: int, where: str = "config") -> str | None:
    """A warning when `address` looks like a register number of `function`'s table, with the
    wire address it would be (as the config writes it, or `where="cli"`: as --address);
    None otherwise. SunSpec devices (40000..) and some inverters (30000..) do use such wire
    addresses: a warning, never a refusal."""
    bases = _REGISTER_NUMBERS.get(function)
    if bases is None:
        return None
    for base in bases:
        if base <= address < base + (9999 if base < 100000 else 65536):
            notation = str(base)[0] + ("xxxx" if base < 100000 else "xxxxx")
            wire = address - base
            said = f"address = {wire}" if where == "config" else f"--address {wire}"
            takes = "the config takes" if where == "config" else "ironwatt takes"
            return (
                f"{function} address {address} looks like a register number ({notation} "
                f"notation): {takes} 0-based wire addresses, so register {address} would be "
                f"{said}; check the meter's manual (SunSpec devices do use 40000 and up)"
            )
    return None
