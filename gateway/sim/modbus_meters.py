"""A simulated Modbus plant: pymodbus servers (TCP, RTU-over-TCP, RTU) with meters of any profile.

Registers evolve (energy grows with power, voltages carry noise); tests get hooks for exception 2
on a range, a unit that never answers, slow answers, and stop/restart. Runs on its own too:
`python -m gateway.sim.modbus_meters --port 5020 --units 1-10 --profile eastron-sdm630`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import random
import signal
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from drivers.modbus import profiles
from drivers.modbus.decode import encode_value
from drivers.modbus.points import BIT_FUNCTIONS, PointSpec, resolve
from gateway.sim.loads import Load
from gateway.sim.ports import free_port

__all__ = ["ModbusPlant", "SimMeter", "free_port", "main", "parse_units"]

log = logging.getLogger("ironwatt.sim.modbus")

_FC_FUNCTION = {1: "coil", 2: "discrete", 3: "holding", 4: "input", 5: "coil", 6: "holding"}
_FC_FUNCTION.update({15: "coil", 16: "holding", 22: "holding", 23: "holding"})


def parse_units(text: str) -> list[int]:
    """ "1-5,9" -> [1, 2, 3, 4, 5, 9]."""
    units: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            units.extend(range(int(lo), int(hi) + 1))
        elif part:
            units.append(int(part))
    return units


@dataclass(frozen=True, slots=True)
class _ProfileOnly:
    """A device with a profile and no points of its own: what the driver's merge reads."""

    name: str
    profile: str
    ct_ratio: float
    pt_ratio: float
    points: tuple[()] = ()


@dataclass
class SimMeter:
    """One unit id on a plant. With a profile its points evolve like a real three-phase meter."""

    unit: int
    profile: str | None = None
    power_kw: float = 12.0
    ct_ratio: float = 1.0
    pt_ratio: float = 1.0
    silent: bool = False  # never answers (as if absent from the bus)
    delay: float = 0.0  # seconds before each answer
    rejected: list[tuple[str, int, int]] = field(default_factory=list)  # (function, start, count)
    seed: int = 0
    energy_kwh: float = 1000.0
    tick_interval: float = 0.1
    # A steel-plant load (gateway.sim.loads): power follows it and energy_import is its exact
    # integral from when the meter was made (energy_kwh at that moment); else a gentle wave.
    load: Load | None = None
    # When the load starts (time.monotonic()); default: when the meter is made. Meters of one
    # plant share it, so one clock maps a window's edges to every load's time.
    load_origin: float | None = None
    reads: int = 0
    _memory: dict[str, tuple[int, array[int]]] = field(default_factory=dict)
    _points: list[PointSpec] = field(default_factory=list)
    _fixed: dict[str, float] = field(default_factory=dict)
    _last_tick: float = 0.0
    _rng: random.Random = field(default_factory=random.Random)
    _born: float = field(default_factory=time.monotonic)
    _energy_at_birth: float = 0.0

    def __post_init__(self) -> None:
        self._rng.seed(self.seed or self.unit)
        self._energy_at_birth = self.energy_kwh
        if self.load_origin is not None:
            self._born = self.load_origin
        if self.profile:
            # The driver's own merge (profile defaults, CT/PT folded into the scale): the meter
            # serves what a gateway configured with this profile and these ratios reads.
            device = _ProfileOnly(f"unit-{self.unit}", self.profile, self.ct_ratio, self.pt_ratio)
            self._points = resolve(device)
            for p in self._points:
                self.set_registers(p.function, p.address, [0] * p.width)
            self._last_tick = time.monotonic()
            self.tick(force=True)

    # ---- memory ---------------------------------------------------------------------------

    def set_registers(self, function: str, address: int, values: Sequence[int]) -> None:
        """Store values (registers, or 0/1 for coils/discrete), growing the served range."""
        start, regs = self._memory.get(function, (address, array("H")))
        lo = min(start, address)
        hi = max(start + len(regs), address + len(values))
        if lo != start or hi != start + len(regs):
            grown = array("H", bytes(2 * (hi - lo)))
            grown[start - lo : start - lo + len(regs)] = regs
            regs, start = grown, lo
        regs[address - start : address - start + len(values)] = array("H", values)
        self._memory[function] = (start, regs)

    def set_value(
        self, function: str, address: int, value: float, type_: str, order: str = "ABCD"
    ) -> None:
        self.set_registers(function, address, encode_value(value, type_, order))

    def hold(self, point: str, value: float) -> None:
        """Pin a profile point at an engineering value (in the profile's unit)."""
        self._fixed[point] = value
        self.tick(force=True)

    def read(self, function: str, address: int, count: int) -> list[int] | list[bool] | None:
        """The values, or None for "illegal data address"."""
        for fn, start, n in self.rejected:
            if fn == function and address < start + n and start < address + count:
                return None
        mem = self._memory.get(function)
        if mem is None:
            return None
        start, regs = mem
        if address < start or address + count > start + len(regs):
            return None
        self.reads += 1
        self.tick()
        out = regs[address - start : address - start + count].tolist()
        if function in BIT_FUNCTIONS:
            return [bool(v) for v in out]
        return out

    def value_of(self, name: str, t: float) -> float | None:
        """Engineering value of a canonical point at monotonic time t (None: leave as is)."""
        if name in self._fixed:
            return self._fixed[name]
        if self.load is not None:
            p = self.load.power_kw(t - self._born)
        else:
            p = self.power_kw * (1.0 + 0.2 * math.sin(t / 7.0 + self.unit))
        noise = self._rng.gauss
        if name == "power_total":
            return p
        if name.startswith("power_l"):
            return p / 3.0
        if name.startswith("voltage_l"):
            return 230.0 + noise(0.0, 0.8)
        if name.startswith("current_l"):
            return p * 1000.0 / (3 * 230.0)
        if name == "pf_total" or name.startswith("pf_l"):
            return 0.95 + noise(0.0, 0.005)
        if name == "frequency":
            return 50.0 + noise(0.0, 0.01)
        if name == "energy_import":
            if self.load is not None:
                return self.energy_import_at(t)
            return self.energy_kwh
        if name == "energy_export":
            return 12.5
        if name in ("ct_ratio", "pt_ratio"):  # Acrel meters report their own ratios
            return self.ct_ratio if name == "ct_ratio" else self.pt_ratio
        return None

    def energy_import_at(self, t: float) -> float:
        """The import counter at monotonic time t, unwrapped (kWh; with a load: exact)."""
        assert self.load is not None
        return self._energy_at_birth + self.load.energy_kwh(t - self._born)

    def tick(self, *, force: bool = False) -> None:
        if not self._points:
            return
        now = time.monotonic()
        dt = now - self._last_tick
        if not force and dt < self.tick_interval:
            return
        self._last_tick = now
        if "energy_import" not in self._fixed and self.load is None:
            power = self.value_of("power_total", now) or 0.0
            self.energy_kwh += power * dt / 3600.0
        for p in self._points:
            value = self.value_of(p.name, now)
            if value is None:
                continue
            raw = (value - p.offset) / p.scale
            if not p.type.startswith("float"):
                raw = round(raw)
                if p.type.startswith("uint"):  # a register counts round, as the meter's does
                    raw %= 1 << int(p.type[4:])
            self.set_value(p.function, p.address, raw, p.type, p.order)


class _PlantContext:
    """What the pymodbus server asks for values: our meters, not pymodbus' datastore."""

    def __init__(self, plant: ModbusPlant) -> None:
        self.plant = plant

    def device_ids(self) -> list[int]:
        return list(self.plant.meters)

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> Any:
        from pymodbus.constants import ExcCodes
        from pymodbus.exceptions import NoSuchIdException

        meter = self.plant.meters.get(device_id)
        if meter is None or meter.silent:
            raise NoSuchIdException(f"unit {device_id} is silent")
        if meter.delay:
            await asyncio.sleep(meter.delay)
        values = meter.read(_FC_FUNCTION.get(func_code, "?"), address, count)
        if values is None:
            return ExcCodes.ILLEGAL_ADDRESS
        return values

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int]
    ) -> Any:
        from pymodbus.constants import ExcCodes
        from pymodbus.exceptions import NoSuchIdException

        meter = self.plant.meters.get(device_id)
        if meter is None or meter.silent:
            raise NoSuchIdException(f"unit {device_id} is silent")
        function = _FC_FUNCTION.get(func_code, "?")
        if meter.read(function, address, len(values)) is None:
            return ExcCodes.ILLEGAL_ADDRESS
        meter.set_registers(function, address, [int(v) for v in values])
        return None


class ModbusPlant:
    """Several meters behind one server (a TCP port, an RTU-over-TCP port or a serial port)."""

    def __init__(
        self,
        meters: Sequence[SimMeter],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        transport: str = "tcp",
        serial_port: str | None = None,
        baudrate: int = 19200,
    ) -> None:
        self.meters: dict[int, SimMeter] = {m.unit: m for m in meters}
        self.host = host
        self.port = port if port is not None else (free_port() if transport != "rtu" else 0)
        self._own_port = port is None and transport != "rtu"  # ours to change if it is taken
        self.transport = transport
        self.serial_port = serial_port
        self.baudrate = baudrate
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    def meter(self, unit: int) -> SimMeter:
        return self.meters[unit]

    async def start(self) -> None:
        from pymodbus.framer import FramerType
        from pymodbus.server import ModbusSerialServer, ModbusTcpServer
        from pymodbus.simulator import SimData, SimDevice

        # pymodbus wants a datastore to build; ours replaces it right after (see _PlantContext).
        placeholder = SimDevice(id=1, simdata=SimData(0))
        if self.transport == "rtu":
            server: Any = ModbusSerialServer(
                placeholder,
                framer=FramerType.RTU,
                port=str(self.serial_port),
                baudrate=self.baudrate,
                ignore_missing_devices=True,
            )
        else:
            framer = FramerType.RTU if self.transport == "rtu-over-tcp" else FramerType.SOCKET
            for attempt in range(5):
                server = ModbusTcpServer(
                    placeholder,
                    framer=framer,
                    address=(self.host, self.port),
                    ignore_missing_devices=True,
                )
                server.context = _PlantContext(self)
                try:
                    await server.serve_forever(background=True)
                except RuntimeError:  # pymodbus: "Could not start listen"
                    # A port free a moment ago can be taken meanwhile (an outgoing connection's
                    # ephemeral port, another test's server): take another one of ours.
                    if not self._own_port or attempt == 4:
                        raise
                    self.port = free_port()
                    continue
                self._server = server
                self._own_port = False  # bound: a restart comes back where clients look
                return
        server.context = _PlantContext(self)  # the serial server (a tcp one has returned)
        await server.serve_forever(background=True)
        self._server = server

    async def stop(self) -> None:
        """Close the listener and every client connection (a power cut, seen from the gateway)."""
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
            await asyncio.sleep(0)

    async def restart(self, downtime: float = 0.0) -> None:
        await self.stop()
        if downtime:
            await asyncio.sleep(downtime)
        await self.start()

    async def __aenter__(self) -> ModbusPlant:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _serve(args: argparse.Namespace) -> None:
    profile = None if args.profile == "none" else args.profile
    meters = [SimMeter(unit=u, profile=profile, power_kw=5.0 + (u % 17)) for u in args.units]
    for spec in args.fill:
        # "holding:0-999": serve float32 values (ABCD) over that range on every unit (benches).
        function, _, span = spec.partition(":")
        first, _, last = span.partition("-")
        start, end = int(first), int(last)
        values = [
            w for a in range(start, end + 1, 2) for w in encode_value(200.0 + a % 50, "float32")
        ]
        for m in meters:
            m.set_registers(function, start, values[: end - start + 1])
    for u in args.silent:
        meters.append(SimMeter(unit=u, silent=True))
    plant = ModbusPlant(
        meters,
        host=args.host,
        port=args.port,
        transport=args.transport,
        serial_port=args.serial,
        baudrate=args.baudrate,
    )
    await plant.start()
    where = args.serial if args.transport == "rtu" else f"{args.host}:{plant.port}"
    print(f"serving {len(meters)} {args.profile} meters on {where} ({args.transport})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await plant.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.sim.modbus_meters")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5020)
    parser.add_argument("--transport", choices=["tcp", "rtu-over-tcp", "rtu"], default="tcp")
    parser.add_argument("--serial", help="serial port for --transport rtu")
    parser.add_argument("--baudrate", type=int, default=19200)
    parser.add_argument("--units", type=parse_units, default=[1])
    parser.add_argument("--silent", type=parse_units, default=[], help="unit ids that never answer")
    parser.add_argument("--profile", default="eastron-sdm630", help='a profile name, or "none"')
    parser.add_argument(
        "--fill",
        action="append",
        default=[],
        metavar="FUNCTION:LO-HI",
        help="also serve float32 values on a range, e.g. holding:0-999 (repeatable)",
    )
    args = parser.parse_args(argv)
    known = profiles.available()
    if args.profile != "none" and args.profile not in known:
        parser.error(f"--profile {args.profile!r}: known are none, {', '.join(known)}")
    if args.transport == "rtu" and not args.serial:
        parser.error("--transport rtu needs --serial PORT (a pty from socat works)")
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(_serve(args))
    except (OSError, RuntimeError) as exc:  # pymodbus says RuntimeError for a port in use
        where = args.serial if args.transport == "rtu" else f"{args.host}:{args.port}"
        print(f"error: cannot serve on {where}: {exc} (port in use?)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
