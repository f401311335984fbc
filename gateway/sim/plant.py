"""The demo's simulated steel works (gateway.sim.demo runs it with a broker and the gateway;
`ironwatt sim` runs it alone for the CLI tools) and the gateway config that reads it.

Four Modbus meters of real profiles under steel-plant loads (an EAF's heats, a bar mill's
bursts, steady auxiliaries, a blower whose counter rolls over), an OPC UA PLC with the works'
tonnages, fuels and recovered gas and steam; process groups with a tariff, shifts and the
national benchmarks scaled to demo time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.sim.ports import free_port

__all__ = ["METERS", "WINDOW", "WINDOW_S", "Works", "demo_config", "plant_meters", "run_sim"]

WINDOW = "10s"
WINDOW_S = 10.0  # WINDOW in seconds (windows are aligned to the clock)


def _hhmm(minute: int) -> str:
    minute %= 1440
    return f"{minute // 60:02d}:{minute % 60:02d}"


def demo_calendar(now: float) -> tuple[str, list[str]]:
    """A tariff and shifts that change within the demo's first minutes (UTC wall time): the
    flat period is the current minute, the peak the next, the valley the rest of the day; the
    shifts start on the next three minutes. A plant's are hours long; the demo's are scaled."""
    m = int(now // 60) % 1440
    return (
        f"""
[tariff]
currency = "CNY"
periods = [
  {{ name = "flat", price = 0.65, hours = ["{_hhmm(m)}-{_hhmm(m + 1)}"] }},
  {{ name = "peak", price = 1.05, hours = ["{_hhmm(m + 1)}-{_hhmm(m + 2)}"] }},
  {{ name = "valley", price = 0.32, hours = ["{_hhmm(m + 2)}-{_hhmm(m)}"] }},
]
""",
        [
            f'{{ name = "night", start = "{_hhmm(m + 1)}" }}',
            f'{{ name = "day", start = "{_hhmm(m + 2)}" }}',
            f'{{ name = "swing", start = "{_hhmm(m + 3)}" }}',
        ],
    )


# The simulated Modbus meters: unit, device name, profile, what its load is, energy at start.
METERS = (
    (1, "eaf-1", "siemens-pac3200", "an electric arc furnace's heats (120 s each)"),
    (2, "mill-1", "schneider-pm5xxx", "a bar mill: a burst per billet"),
    (3, "aux-1", "eastron-sdm630", "the converter's auxiliaries, steady"),
    (4, "bf-blower", "acrel-adl400", "the blast furnace's blower; its counter rolls over"),
)
ROLLOVER_KWH = 2**32 * 0.1  # the Acrel ADL400's uint32 counter of 0.1 kWh


def _plc_points() -> str:
    points = [
        ("hot_metal", "Production.HotMetalTons", "counter", "t", "product"),
        ("coke", "Charging.CokeTons", "counter", "t", "coke"),
        ("coal", "Charging.CoalTons", "counter", "t", "coal"),
        ("gas_flow", "Utilities.NG.Flow", "rate", "m3/h", "natural_gas"),
        ("bfg_recovered", "Utilities.BFG.Recovered", "rate", "m3/h", "blast_furnace_gas"),
        ("converter_steel", "Production.ConverterSteelTons", "counter", "t", "product"),
        ("oxygen", "Utilities.Oxygen.Flow", "rate", "m3/h", "oxygen"),
        ("converter_gas", "Recovery.ConverterGas.Flow", "rate", "m3/h", "converter_gas"),
        ("steam", "Recovery.Steam.Flow", "rate", "t/h", "steam"),
        ("eaf_steel", "Production.EafSteelTons", "counter", "t", "product"),
        ("eaf_oxygen", "Utilities.EafOxygen.Flow", "rate", "m3/h", "oxygen"),
        ("rolled", "Production.RolledTons", "counter", "t", "product"),
        ("furnace_temp", "Furnace.Temp1", "gauge", "degC", None),
        ("line_status", "Line.Status", "gauge", "1", None),
    ]
    out = ""
    for name, node, kind, unit, carrier in points:
        out += (
            f'\n  [[devices.points]]\n  name = "{name}"\n'
            f'  node = "nsu=urn:plant1:bf2;s={node}"\n  kind = "{kind}"\n  unit = "{unit}"\n'
        )
        if carrier:
            out += f'  carrier = "{carrier}"\n'
    return out


GROUPS_WITH_PLC = """
[[groups]]
name = "blast-furnace-2"
members = ["bf2-plc.coke", "bf2-plc.coal", "bf2-plc.gas_flow", "bf-blower.energy_import"]
recovered = ["bf2-plc.bfg_recovered"]
production = "bf2-plc.hot_metal"
process = "blast_furnace"

[[groups]]
name = "converter-1"
members = ["aux-1.energy_import", "bf2-plc.oxygen"]
recovered = ["bf2-plc.converter_gas", "bf2-plc.steam"]
production = "bf2-plc.converter_steel"
process = "bof"

[[groups]]
name = "eaf-1"
members = ["eaf-1.energy_import", "bf2-plc.eaf_oxygen"]
production = "bf2-plc.eaf_steel"
process = "eaf"
furnace_capacity_t = 100

[[groups]]
name = "bar-mill"
members = ["mill-1.energy_import"]
production = "bf2-plc.rolled"

[[groups]]
name = "works"
members = ["blast-furnace-2", "converter-1", "eaf-1", "bar-mill"]
"""
GROUPS_METERS_ONLY = """
[[groups]]
name = "eaf-1"
members = ["eaf-1.energy_import"]

[[groups]]
name = "works"
members = ["eaf-1", "mill-1.energy_import", "aux-1.energy_import", "bf-blower.energy_import"]
"""


def demo_config(
    workdir: Path,
    broker_url: str,
    modbus_port: int,
    opcua_endpoint: str | None,
    http_port: int,
    now: float | None = None,
    mill_port: int | None = None,
    mqtt_protocol: str = "5",
) -> str:
    """The demo's ironwatt.toml: what a technician would write for this plant (the mill's
    meter behind a serial server of its own at `mill_port`, when given; `mqtt_protocol` "3.1.1"
    for a broker without MQTT 5, such as the embedded amqtt)."""
    tariff, shifts = demo_calendar(time.time() if now is None else now)
    text = f"""\
# Written by `ironwatt demo`: a simulated steel works on loopback.
[gateway]
id = "demo-gw"
site = "demo-plant"
timezone = "UTC"
data_dir = "{workdir / "data"}"

[mqtt]
url = "{broker_url}"
topic_prefix = "ironwatt"
protocol = "{mqtt_protocol}"
telemetry = true  # the live view's latest values

[http]
listen = "127.0.0.1:{http_port}"

[buffer]
durability = "normal"

[energy]
intervals = ["{WINDOW}", "1m"]
demand_interval = "{WINDOW}"
shifts = [{", ".join(shifts)}]
benchmark_intervals = ["{WINDOW}", "1m", "shift"]
"""
    text += tariff
    for unit, name, profile, what in METERS:
        port = mill_port if name == "mill-1" and mill_port is not None else modbus_port
        text += f"""
# {what}
[[devices]]
name = "{name}"
driver = "modbus"
host = "127.0.0.1"
port = {port}
unit = {unit}
poll = "1s"
timeout = "500ms"
profile = "{profile}"
"""
    if opcua_endpoint is not None:
        text += f"""
# the works' PLC: tonnages, fuels, recovered gas and steam
[[devices]]
name = "bf2-plc"
driver = "opcua"
endpoint = "{opcua_endpoint}"
mode = "subscribe"
interval = "500ms"
{_plc_points()}"""
        text += GROUPS_WITH_PLC
    else:
        text += GROUPS_METERS_ONLY
    return text


class Works:
    """The simulated works, running: the meters of METERS (the mill's behind a server of its
    own: its dropout does not hold up the others' polls on a shared link) and the PLC."""

    def __init__(self) -> None:
        from gateway.sim.modbus_meters import ModbusPlant

        # The loads start now, on both clocks read together: the meters run on the monotonic
        # one, the windows' edges are wall-clock times (the verdict maps them by this pair).
        self.born_mono, self.born = time.monotonic(), time.time()
        self.meters = plant_meters(self.born_mono)
        self.plant = ModbusPlant([m for m in self.meters if m.unit != 2])
        self.mill = ModbusPlant([self.meters[1]])
        self.plc: Any = None

    @property
    def dropout(self) -> Any:
        return self.meters[1]  # mill-1

    @property
    def aux(self) -> Any:
        return self.meters[2]  # aux-1, whose totals the verdict checks

    def port_of(self, name: str) -> int:
        return int(self.mill.port if name == "mill-1" else self.plant.port)

    async def start(self, opcua: bool, tell: Callable[[str], None]) -> None:
        await self.plant.start()
        await self.mill.start()
        for unit, name, profile, what in METERS:
            tell(f"meter {name}: {profile}, Modbus TCP 127.0.0.1:{self.port_of(name)} unit "
                 f"{unit}; {what}")  # fmt: skip
        if opcua:
            try:
                from gateway.sim.opcua_plc import SimulatedPlc
            except ImportError as exc:
                tell(f"no OPC UA PLC ({exc}); the meters alone")
                return
            quiet = logging.getLogger("asyncua.server.server")
            for attempt in range(3):
                self.plc = SimulatedPlc()  # a port free a moment ago
                # asyncua logs a traceback for a taken port before it raises: not news here
                level = quiet.level
                if attempt < 2:
                    quiet.setLevel(logging.CRITICAL)
                try:
                    await self.plc.start()
                    break
                except OSError:  # taken before the server bound it: another one
                    with contextlib.suppress(Exception):
                        await self.plc.stop()
                    self.plc = None
                    if attempt == 2:
                        raise
                finally:
                    quiet.setLevel(level)
            tell(f"PLC bf2-plc: OPC UA {self.plc.endpoint} (tags under nsu=urn:plant1:bf2)")

    def config(
        self, workdir: Path, broker_url: str, http_port: int, mqtt_protocol: str = "5"
    ) -> str:
        """The gateway config that reads this works (demo_config)."""
        endpoint = self.plc.endpoint if self.plc is not None else None
        return demo_config(
            workdir, broker_url, self.plant.port, endpoint, http_port, mill_port=self.mill.port,
            mqtt_protocol=mqtt_protocol,
        )  # fmt: skip

    async def stop(self) -> None:
        if self.plc is not None:
            await self.plc.stop()
        await self.plant.stop()
        await self.mill.stop()


def plant_meters(origin: float) -> list[Any]:
    """The simulated meters of METERS, each under its steel-plant load from `origin`
    (time.monotonic())."""
    from gateway.sim.loads import Steady, eaf_heat, rolling_mill
    from gateway.sim.modbus_meters import SimMeter

    return [
        SimMeter(unit=1, profile="siemens-pac3200", load=eaf_heat(), energy_kwh=2_481_337.0,
                 load_origin=origin),
        SimMeter(unit=2, profile="schneider-pm5xxx", load=rolling_mill(), energy_kwh=815_220.0,
                 load_origin=origin),
        SimMeter(unit=3, profile="eastron-sdm630", load=Steady(420.0, 60.0, 40.0),
                 energy_kwh=4_821.35, load_origin=origin),
        # 25 kWh short of the register's wrap: at ~2.8 MW it rolls over ~30 s in
        SimMeter(unit=4, profile="acrel-adl400", load=Steady(2_800.0, 150.0, 50.0),
                 energy_kwh=ROLLOVER_KWH - 25.0, load_origin=origin),
    ]  # fmt: skip


async def _sim(config_out: Path | None, duration: float | None, opcua: bool, broker: str) -> int:
    """The demo's plant alone, for a technician's tools: the meters, the PLC, the config."""

    def tell(text: str) -> None:
        print(f"sim: {text}", flush=True)

    works = Works()
    try:
        await works.start(opcua, tell)
        if config_out is not None:
            # data_dir: <the file's folder>/ironwatt-sim/data (config_out is absolute here)
            text = works.config(config_out.parent / "ironwatt-sim", broker, free_port())
            await asyncio.to_thread(config_out.write_text, text, encoding="utf-8")
            tell(f"the matching gateway config: {config_out} (MQTT {broker})")
        tell(
            f"try: ironwatt modbus read 127.0.0.1:{works.plant.port} --unit 3 --function input "
            "--address 52 --type float32"
        )
        if works.plc is not None:
            tell(f"     ironwatt opcua browse {works.plc.endpoint}")
        if config_out is not None:
            tell(
                f"     ironwatt check -c {config_out}; ironwatt modbus probe -c {config_out} "
                "--device aux-1; ironwatt run -c " + str(config_out)
            )
        tell("running" + (f" for {duration:g} s" if duration else "") + " (Ctrl-C stops it)")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=duration)
    finally:
        await works.stop()
    return 0


def run_sim(
    config_out: Path | None = None,
    duration: float | None = None,
    opcua: bool = True,
    broker: str = "mqtt://127.0.0.1:1883",
) -> int:
    """`ironwatt sim`: the simulated steel works until Ctrl-C (or `duration` seconds)."""
    for noisy in ("asyncua", "pymodbus", "ironwatt.sim"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    config_out = config_out.resolve() if config_out is not None else None
    try:
        return asyncio.run(_sim(config_out, duration, opcua, broker))
    except KeyboardInterrupt:
        return 130
