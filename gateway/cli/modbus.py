"""`ironwatt modbus read|scan|probe` and `ironwatt profiles list|show`: technicians' Modbus tools.

Handlers import pymodbus and asyncio only when run, so `ironwatt --help` stays light.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from drivers.modbus.points import REGISTER_TYPES, REGISTER_WORDS
from drivers.wording import error_text

__all__ = ["describe_plan", "register"]

# The driver's own table of register types (stdlib-only, like this module's top level).
TYPES = list(REGISTER_TYPES)
ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"]
FUNCTIONS = ["holding", "input", "coil", "discrete"]


def describe_plan(device: Any) -> list[str]:
    """Each device's read plan for `ironwatt check` (blocks, registers per request, requests)."""
    from drivers.modbus import describe_plan as describe

    return describe(device)


def _link_args(p: argparse.ArgumentParser, timeout: float = 1.0) -> None:
    p.add_argument("target", nargs="?", metavar="HOST[:PORT]", help="Modbus TCP device or gateway")
    p.add_argument(
        "--rtu-over-tcp", action="store_true", help="RTU framing over TCP (serial servers)"
    )
    p.add_argument("--serial", metavar="PORT", help="serial port for Modbus RTU, e.g. /dev/ttyUSB0")
    p.add_argument("--baudrate", type=int, default=9600)
    p.add_argument("--parity", choices=["N", "E", "O"], default="N")
    p.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    p.add_argument("--bytesize", type=int, choices=[7, 8], default=8)
    p.add_argument(
        "--timeout", type=float, default=timeout, help=f"seconds per request (default {timeout:g})"
    )


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    modbus = subparsers.add_parser("modbus", help="read registers, scan unit ids, probe a device")
    sub = modbus.add_subparsers(dest="modbus_command", metavar="ACTION", required=True)

    read = sub.add_parser("read", help="read registers and show raw hex and decoded values")
    _link_args(read)
    read.add_argument("--unit", type=_unit, default=1, help="unit (slave) id 0..247 (default 1)")
    read.add_argument("--function", choices=FUNCTIONS, default="holding")
    read.add_argument(
        "--address", type=lambda s: int(s, 0), required=True, help="0-based wire address"
    )
    read.add_argument("--type", choices=TYPES, default="uint16")
    read.add_argument("--order", choices=ORDERS, default="ABCD")
    read.add_argument(
        "--json", action="store_true", help="print the values as JSON (a sentinel or NaN: null)"
    )
    read.add_argument(
        "--count", type=_positive, default=1, help="consecutive values to read (default 1)"
    )
    read.set_defaults(func=_usage_errors(_read))

    scan = sub.add_parser("scan", help="find which unit ids answer on a link")
    _link_args(scan, timeout=0.3)
    scan.add_argument("--units", type=_units, default="1-247", help="e.g. 1-247 or 1-10,100")
    scan.add_argument("--function", choices=FUNCTIONS, default="holding")
    scan.add_argument("--address", type=lambda s: int(s, 0), default=0)
    scan.add_argument(
        "--connections",
        type=int,
        default=4,
        help="parallel TCP connections (serial lines always scan one unit at a time)",
    )
    scan.set_defaults(func=_usage_errors(_scan))

    probe = sub.add_parser("probe", help="read every point of a configured device once")
    probe.add_argument("-c", "--config", default="/etc/ironwatt/ironwatt.toml")
    probe.add_argument("--device", required=True)
    probe.set_defaults(func=_probe)

    profiles = subparsers.add_parser("profiles", help="built-in meter register maps")
    psub = profiles.add_subparsers(dest="profiles_command", metavar="ACTION", required=True)
    plist = psub.add_parser("list", help="every built-in profile")
    plist.add_argument("--json", action="store_true", help="print the list as JSON")
    plist.set_defaults(func=_profiles_list)
    pshow = psub.add_parser("show", help="the points of one profile")
    pshow.add_argument("name")
    pshow.add_argument(
        "--json", action="store_true", help="print the profile as JSON (its points as resolved)"
    )
    pshow.set_defaults(func=_profiles_show)


# ---- link from arguments ------------------------------------------------------------------


def _units(text: str) -> list[int]:
    """ "1-247" or "1-10,100" -> unit ids, each 0..247."""
    units: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            units.extend(range(int(first), int(last or first) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write unit ids like 1-247 or 1-10,100"
        ) from None
    if not units or min(units) < 0 or max(units) > 247:
        raise argparse.ArgumentTypeError(f"{text!r}: unit ids are 0..247")
    return units


def _unit(text: str) -> int:
    try:
        unit = int(text, 0)
    except ValueError:
        unit = -1
    if not 0 <= unit <= 247:
        raise argparse.ArgumentTypeError(f"{text!r}: a unit id is 0..247")
    return unit


def _positive(text: str) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of at least 1")
    return n


def _quiet_pymodbus() -> None:
    """pymodbus logs its own connect failures as warnings; our error line already says it all."""
    import logging

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("pymodbus").setLevel(logging.ERROR)


def _settings(args: argparse.Namespace) -> Any:
    from drivers.modbus.link import LinkSettings

    _quiet_pymodbus()
    if args.serial:
        return LinkSettings(
            "rtu",
            serial_port=args.serial,
            baudrate=args.baudrate,
            parity=args.parity,
            stopbits=args.stopbits,
            bytesize=args.bytesize,
            timeout=args.timeout,
        )
    if not args.target:
        raise _Usage("give HOST[:PORT] for Modbus TCP, or --serial PORT for RTU")
    host, _, port = args.target.rpartition(":") if ":" in args.target else (args.target, "", "")
    host = host.strip("[]")  # [::1]:502
    if not host or not (port or "502").isdigit() or not 0 < int(port or 502) < 65536:
        raise _Usage(f"{args.target!r}: write the device as HOST or HOST:PORT, e.g. 10.0.0.5:502")
    transport = "rtu-over-tcp" if args.rtu_over_tcp else "tcp"
    return LinkSettings(transport, host=host, port=int(port or 502), timeout=args.timeout)


class _Usage(Exception):
    """A command line that cannot work; printed as one line, exit status 2."""


def _usage_errors(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(handler(args))
        except _Usage as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return run


def _read(args: argparse.Namespace) -> int:
    import asyncio

    from drivers.modbus.decode import decode_value, is_sentinel
    from drivers.modbus.describe import register_number_hint
    from drivers.modbus.link import Link, ModbusError

    settings = _settings(args)
    hint = register_number_hint(args.function, args.address, where="cli")
    if hint is not None:  # read it anyway: some devices do use such wire addresses
        print(f"warning: {hint}", file=sys.stderr)
    bits = args.function in ("coil", "discrete")
    words = 1 if bits else REGISTER_WORDS[args.type]
    total = args.count * words

    async def go() -> list[int] | list[bool]:
        link = Link(settings)
        try:
            return await link.read(args.unit, args.function, args.address, total, args.timeout)
        finally:
            link.close()

    try:
        data = asyncio.run(go())
    except ModbusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if getattr(exc, "code", None) == 2:
            print(
                "  the unit is there but has nothing at this address: check --function "
                "(input = FC04, holding = FC03) and that --address is the 0-based wire address "
                "(manual register 30001/40001 = wire 0)",
                file=sys.stderr,
            )
        return 1
    if args.json:
        doc = _read_document(args, settings.label, data, words)
        print(json.dumps(doc, indent=2, allow_nan=False))
        return 0
    print(f"{settings.label} unit {args.unit} {args.function} {args.address}+{total}")
    for k in range(args.count):
        address = args.address + k * words
        if bits:
            print(f"  {address:>5}  {int(bool(data[k]))}")
            continue
        regs = [int(r) for r in data[k * words : (k + 1) * words]]
        raw = " ".join(f"{r:04X}" for r in regs)
        if args.type == "bool":
            value: str = str(int(regs[0] != 0))
        else:
            decoded = decode_value(regs, args.type, args.order)
            value = f"{decoded:.7g}" if isinstance(decoded, float) else str(decoded)
            if is_sentinel(args.type, decoded):
                value += "  (not available: sentinel/NaN)"
        print(f"  {address:>5}  {raw:<20} {args.type} {args.order}  {value}")
    return 0


def _read_document(args: argparse.Namespace, label: str, data: Any, words: int) -> dict[str, Any]:
    """`ironwatt modbus read --json`: each value with its address and raw registers."""
    import math

    from drivers.modbus.decode import decode_value, is_sentinel

    values: list[dict[str, Any]] = []
    for k in range(args.count):
        address = args.address + k * words
        if args.function in ("coil", "discrete"):
            values.append({"address": address, "value": bool(data[k])})
            continue
        regs = [int(r) for r in data[k * words : (k + 1) * words]]
        value: Any = (
            regs[0] != 0 if args.type == "bool" else decode_value(regs, args.type, args.order)
        )
        sentinel = args.type != "bool" and is_sentinel(args.type, value)
        if sentinel or (isinstance(value, float) and not math.isfinite(value)):
            value = None  # JSON has no NaN; "not available" is what the meter meant
        values.append(
            {"address": address, "registers": regs, "value": value, "not_available": sentinel}
        )
    return {
        "target": label, "unit": args.unit, "function": args.function, "address": args.address,
        "count": args.count, "type": args.type, "order": args.order, "values": values,
    }  # fmt: skip


def _scan(args: argparse.Namespace) -> int:
    import asyncio

    from drivers.modbus.link import DeviceError, Link, LinkDown, NoResponse

    settings = _settings(args)
    units: list[int] = args.units
    found: dict[int, str] = {}
    done = 0
    fatal: list[str] = []

    # A redrawn bar only makes sense on a terminal; in a pipe or a log it would be noise.
    show_bar = sys.stderr.isatty()

    def progress() -> None:
        if not show_bar:
            return
        filled = 30 * done // max(1, len(units))
        bar = "#" * filled + "." * (30 - filled)
        print(
            f"\r{settings.label} [{bar}] {done}/{len(units)} unit ids, {len(found)} found",
            end="",
            file=sys.stderr,
            flush=True,
        )

    async def worker(queue: asyncio.Queue[int]) -> None:
        nonlocal done
        link = Link(settings)
        try:
            while not queue.empty():
                unit = queue.get_nowait()
                try:
                    await link.read(unit, args.function, args.address, 1, args.timeout)
                    found[unit] = "answers"
                except DeviceError as exc:
                    # Any exception response proves a unit is there, except a gateway's own
                    # "target did not respond" (10, 11).
                    if exc.code not in (10, 11):
                        found[unit] = f"answers (exception {exc.code})"
                except NoResponse:
                    pass
                except LinkDown as exc:
                    fatal.append(str(exc))
                    return
                done += 1
                progress()
        finally:
            link.close()

    async def go() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for u in units:
            queue.put_nowait(u)
        n = 1 if settings.transport == "rtu" else max(1, min(args.connections, len(units)))
        await asyncio.gather(*(worker(queue) for _ in range(n)))

    progress()
    asyncio.run(go())
    if show_bar:
        print(file=sys.stderr)
    else:
        print(
            f"{settings.label}: {done}/{len(units)} unit ids, {len(found)} found", file=sys.stderr
        )
    if fatal and not found:
        print(f"error: {fatal[0]}", file=sys.stderr)
        return 1
    for unit in sorted(found):
        print(f"unit {unit:>3}: {found[unit]}")
    if not found:
        print(
            "no unit answered: check wiring, baud rate/parity, and the unit id range",
            file=sys.stderr,
        )
    return 0 if found else 1


def _probe(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from drivers.modbus.decode import BlockDecoder
    from drivers.modbus.describe import plan_device
    from drivers.modbus.link import Link, ModbusError, settings_of
    from drivers.samples import QUALITY_GOOD, SampleBatch
    from gateway.config.load import load_config

    cfg = load_config(args.config)
    device: Any = next((d for d in cfg.devices if d.name == args.device), None)
    if device is None or getattr(device, "driver", "") != "modbus":
        names = ", ".join(d.name for d in cfg.devices if getattr(d, "driver", "") == "modbus")
        print(
            f"error: no Modbus device {args.device!r} in {args.config} (Modbus devices: "
            f"{names or 'none'})",
            file=sys.stderr,
        )
        return 2
    specs, plan = plan_device(device)
    rows: list[tuple[str, str, str, str, str, str]] = []
    failures: list[str] = []

    async def go() -> None:
        link = Link(settings_of(device))
        try:
            for block in plan.blocks:
                members = [specs[i] for i in block.members]
                dec = BlockDecoder(
                    block.function, block.start, block.count, members, list(range(len(members)))
                )
                try:
                    data = await link.read(
                        device.unit, block.function, block.start, block.count, float(device.timeout)
                    )
                except ModbusError as exc:
                    # The full reason once below the table; each row points at it.
                    failures.append(str(exc))
                    for s in members:
                        rows.append(
                            (s.name, _where(s), "-", "-", s.unit, f"bad (error {len(failures)})")
                        )
                    continue
                batch = SampleBatch()
                dec.decode(data, time.time(), batch)
                for s, (_, _, value, quality) in zip(members, batch, strict=True):
                    off = s.address - block.start
                    raw_part = data[off : off + s.width]
                    raw = " ".join(
                        str(int(bool(r))) if s.function in ("coil", "discrete") else f"{r:04X}"
                        for r in raw_part
                    )
                    q = "good" if quality == QUALITY_GOOD else "bad (not available)"
                    rows.append((s.name, _where(s), raw, f"{value:.6g}", s.unit, q))
        finally:
            link.close()

    asyncio.run(go())
    for i in plan.unreadable:
        s = specs[i]
        rows.append((s.name, _where(s), "-", "-", s.unit, "unreadable: wider than request limit"))
    header = ("name", "address", "raw", "value", "unit", "quality")
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(6)]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    for k, reason in enumerate(failures, 1):
        print(f"error {k}: {reason}", file=sys.stderr)
    print(f"{len(plan.blocks)} request(s), {len(failures)} failed", file=sys.stderr)
    return 1 if failures else 0


def _where(s: Any) -> str:
    text = f"{s.function} {s.address} {s.type}"
    if REGISTER_WORDS[s.type] > 1 and s.function in ("holding", "input"):
        text += f" {s.order}"
    if s.bit is not None:
        text += f" bit {s.bit}"
    return text


def _profiles_list(args: argparse.Namespace) -> int:
    from drivers.modbus import profiles

    if args.json:
        listed = []
        for name in profiles.available():
            doc = profiles.load(name)
            listed.append({
                "name": name, "vendor": doc.get("vendor", ""), "model": doc.get("model", ""),
                "confidence": doc.get("confidence", ""), "points": len(doc.get("points", ())),
            })  # fmt: skip
        print(json.dumps(listed, indent=2, ensure_ascii=False, allow_nan=False))
        return 0
    rows = []
    for name in profiles.available():
        doc = profiles.load(name)
        rows.append(
            (
                name,
                doc.get("vendor", ""),
                doc.get("model", ""),
                doc.get("confidence", ""),
                str(len(doc.get("points", ()))),
            )
        )
    header = ("name", "vendor", "model", "confidence", "points")
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(5)]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _profiles_show(args: argparse.Namespace) -> int:
    from drivers.modbus import profiles

    try:
        doc = profiles.load(args.name)
    except KeyError as exc:
        print(f"error: {error_text(exc)}", file=sys.stderr)
        return 2
    if args.json:
        from drivers.modbus.points import _DEFAULTS as POINT_DEFAULTS

        # the one profile merge (what a device with this profile reads), every default filled
        noted = {raw["name"]: raw["note"] for raw in doc.get("points", ()) if raw.get("note")}
        points = [
            {**POINT_DEFAULTS, **p, **({"note": noted[p["name"]]} if p["name"] in noted else {})}
            for p in profiles.points_of(args.name)
        ]
        shown = {k: v for k, v in doc.items() if k not in ("points", "defaults")}
        print(
            json.dumps({**shown, "points": points}, indent=2, ensure_ascii=False, allow_nan=False)
        )
        return 0
    print(
        f"{doc['name']}: {doc.get('vendor', '')} {doc.get('model', '')} "
        f"(confidence {doc.get('confidence', '?')})"
    )
    for source in doc.get("sources", ()):
        print(f"  source: {source}")
    for note in doc.get("notes", ()):
        print(f"  note: {note}")
    defaults = doc.get("defaults", {})
    rows = []
    notes: list[str] = []
    for raw in doc.get("points", ()):
        p = {
            "function": "holding",
            "type": "uint16",
            "order": "ABCD",
            "scale": 1.0,
            **defaults,
            **raw,
        }
        extra = f" * {p['multiply_by']}" if p.get("multiply_by") else ""
        mark = ""
        if p.get("note"):
            notes.append(f"  [{len(notes) + 1}] {p['name']}: {p['note']}")
            mark = f" [{len(notes)}]"
        rows.append(
            (
                p["name"] + mark,
                p["function"],
                f"{p['address']} (0x{p['address']:04X})",
                f"{p['type']} {p['order']}",
                f"{p['scale']:g}{extra}",
                p.get("unit", ""),
                p.get("kind", "gauge"),
            )
        )
    header = ("point", "function", "address", "type", "scale", "unit", "kind")
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(7)]
    print()
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if notes:
        print()
        print("\n".join(notes))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run these commands alone (tests, or before the main CLI registers them)."""
    parser = argparse.ArgumentParser(prog="ironwatt")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
