"""`ironwatt demo`: a simulated steel works, a broker and the real gateway, messages printed.

Four Modbus meters of real profiles under steel-plant loads (an EAF's heats, a bar mill's
bursts, steady auxiliaries, a blower whose counter rolls over), an OPC UA PLC with the works'
tonnages, fuels and recovered gas and steam; process groups with a tariff, shifts and the
national benchmarks; a Mosquitto on a free loopback port; `ironwatt run` as a child process with
10 s windows. On cue a meter drops out and the broker goes away for 20 s; at the end a verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.sim.ports import free_port

__all__ = ["demo_config", "format_message", "run_demo", "run_sim"]

WINDOW = "10s"


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
) -> str:
    """The demo's ironwatt.toml: what a technician would write for this plant (the mill's
    meter behind a serial server of its own at `mill_port`, when given)."""
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


def _n(value: Any, digits: int = 3) -> str:
    return "null" if value is None else f"{value:.{digits}f}"


def _clock(iso: Any) -> str:
    return str(iso)[11:19] if isinstance(iso, str) else "?"


def format_message(topic: str, payload: bytes) -> str:
    """One readable line (or a few) per MQTT message."""
    parts = topic.split("/")
    kind = parts[3] if len(parts) > 3 else topic
    try:
        doc = json.loads(payload)
    except ValueError:
        return f"{topic}: {payload[:200]!r}"
    if kind == "status":
        return (
            f"status  {doc.get('state')}: {doc.get('devices')} devices, "
            f"backlog {doc.get('backlog')}, lag {doc.get('lag_s')} s"
        )
    head = f"seq {doc.get('seq')}" + (" replayed" if doc.get("replayed") else "")
    if kind == "event":
        extra = doc.get("device") or ""
        return f"event   {doc.get('type')} {extra} ({doc.get('reason', '')}) [{head}]"
    if kind == "energy":
        lines = [
            f"energy  {doc.get('interval')} {doc.get('device')} "
            f"{_clock(doc.get('start'))}-{_clock(doc.get('end'))} "
            f"rev {doc.get('revision')} [{head}]"
        ]
        for name, p in sorted(doc.get("points", {}).items()):
            if p.get("kind") == "counter":
                lines.append(
                    f"          {name:<16} delta {_n(p.get('delta'))} {p.get('unit')} "
                    f"(first {_n(p.get('first'), 2)}, last {_n(p.get('last'), 2)}), "
                    f"coverage {_n(p.get('coverage'), 2)}"
                    + "".join(
                        f", {what} {p[what]}" for what in ("rollovers", "resets") if p.get(what)
                    )
                )
            elif p.get("kind") == "rate" and name in ("power_total", "gas_flow"):
                lines.append(
                    f"          {name:<16} mean {_n(p.get('mean'), 2)} {p.get('unit')}, "
                    f"integral {_n(p.get('integral'))} {p.get('integral_unit', '')}"
                )
            elif p.get("kind") == "gauge" and name in ("voltage_l1", "furnace_temp", "frequency"):
                lines.append(
                    f"          {name:<16} mean {_n(p.get('mean'), 2)} {p.get('unit')} "
                    f"[{_n(p.get('min'), 2)} .. {_n(p.get('max'), 2)}]"
                )
        return "\n".join(lines)
    if kind == "group":
        carriers = ", ".join(
            f"{c} {_n(v.get('amount'))} {v.get('unit')}" for c, v in doc.get("carriers", {}).items()
        )
        recovered = doc.get("recovered") or {}
        if recovered:
            carriers += "; recovered " + ", ".join(
                f"{c} {_n(v.get('amount'))} {v.get('unit')}" for c, v in recovered.items()
            )
        production = doc.get("production") or {}
        if production.get("amount") is not None:
            carriers += f"; production {_n(production['amount'])} {production.get('unit')}"
        shift = f" shift {doc['shift']}" if doc.get("shift") else ""
        line = (
            f"group   {doc.get('interval')} {doc.get('group')}{shift} {_clock(doc.get('start'))}-"
            f"{_clock(doc.get('end'))} rev {doc.get('revision')} [{head}]\n          {carriers}"
            f"\n          kgce {_n(doc.get('kgce'))}, kgCO2e {_n(doc.get('kgco2e'))}, intensity "
            f"{_n(doc.get('intensity_kgce_per_unit'))} kgce/t"
        )
        cost = doc.get("cost")
        if isinstance(cost, dict):
            periods = ", ".join(f"{k} {_n(v, 2)}" for k, v in cost.get("by_period", {}).items())
            line += f", cost {_n(cost.get('amount'), 2)} {cost.get('currency', '')} ({periods})"
        demand = doc.get("demand")
        if isinstance(demand, dict) and demand.get("peak") is not None:
            line += f", demand {_n(demand.get('peak'), 1)} kW"
        bench = doc.get("benchmark")
        if isinstance(bench, dict):
            line += (
                f"\n          {bench.get('process')}: EEI {_n(bench.get('eei'), 3)}, "
                f"{bench.get('standing')} (benchmark {_n(bench.get('benchmark'), 1)}, baseline "
                f"{_n(bench.get('baseline'), 1)} kgce/t, {bench.get('standard')})"
            )
        return line
    return f"{kind:<7} {topic}: {payload[:160].decode(errors='replace')}"


class _Printer:
    """Subscribes to everything the gateway publishes and prints it as it arrives."""

    def __init__(self, port: int, prefix: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.counts: Counter[str] = Counter()
        self.docs: list[tuple[str, dict[str, Any]]] = []  # (class, payload) of every message
        self._last_status: str | None = None
        self._lock = threading.Lock()
        # A session the broker keeps (it is restarted on cue, with persistence): nothing the
        # gateway replays while this viewer reconnects is missed.
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="ironwatt-demo-viewer", clean_session=False
        )
        self.client.reconnect_delay_set(1, 2)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{prefix}/#", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        parts = msg.topic.split("/")
        kind = parts[3] if len(parts) > 3 else msg.topic
        with self._lock:
            self.counts[kind] += 1
            with contextlib.suppress(ValueError):
                doc = json.loads(msg.payload)
                if isinstance(doc, dict):
                    self.docs.append((kind, doc))
            if kind == "status":
                # The gateway refreshes its retained status often; show only the changes.
                state = json.loads(msg.payload).get("state")
                if state == self._last_status:
                    return
                self._last_status = state
            print(
                f"{time.strftime('%H:%M:%S')} {format_message(msg.topic, msg.payload)}", flush=True
            )

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def say(text: str, who: str = "demo") -> None:
    print(f"{who}: {text}", flush=True)


class Works:
    """The simulated works, running: the meters of METERS (the mill's behind a server of its
    own: its dropout does not hold up the others' polls on a shared link) and the PLC."""

    def __init__(self) -> None:
        from gateway.sim.modbus_meters import ModbusPlant

        self.meters = plant_meters()
        self.born = time.time()  # the loads start now: their integrals are from here
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
            self.plc = SimulatedPlc()
            await self.plc.start()
            tell(f"PLC bf2-plc: OPC UA {self.plc.endpoint} (tags under nsu=urn:plant1:bf2)")

    def config(self, workdir: Path, broker_url: str, http_port: int) -> str:
        """The gateway config that reads this works (demo_config)."""
        endpoint = self.plc.endpoint if self.plc is not None else None
        return demo_config(
            workdir, broker_url, self.plant.port, endpoint, http_port, mill_port=self.mill.port
        )

    async def stop(self) -> None:
        if self.plc is not None:
            await self.plc.stop()
        await self.plant.stop()
        await self.mill.stop()


async def _demo(workdir: Path, duration: float, opcua: bool) -> int:
    from gateway.sim.broker import BrokerMissing, DemoBroker

    try:
        broker = DemoBroker(workdir)
    except BrokerMissing as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    broker.start()
    say(f"Mosquitto broker on {broker.url} (log: {workdir / 'mosquitto.log'})")
    works = Works()
    await works.start(opcua, say)
    http_port = free_port()
    config = workdir / "ironwatt.toml"
    config.write_text(works.config(workdir, broker.url, http_port))
    say(f"gateway config written to {config}")
    printer = _Printer(broker.port, "ironwatt")
    log_path = workdir / "gateway.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("NOTIFY_SOCKET", None)
    with log_path.open("wb") as log_file:
        gateway = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "run", "-c", str(config),
            stdout=log_file, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        say(
            f"gateway started (pid {gateway.pid}, log {log_path}, status: ironwatt status "
            f"-c {config}); {WINDOW} windows close every {WINDOW}, the first one within ~20 s"
        )
        say(f"running for {duration:g} s (Ctrl-C stops earlier)\n")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        deadline = time.monotonic() + duration
        code = 0
        cue = asyncio.create_task(_on_cue(duration, broker, works.dropout))
        while not stop.is_set() and time.monotonic() < deadline:
            if gateway.returncode is not None:
                say(f"the gateway exited with status {gateway.returncode}; its log:")
                print(log_path.read_text()[-4000:])
                code = 1
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
        await _wind_down(
            gateway, broker, works.dropout, cue, stopped=stop.is_set(), http_port=http_port
        )
        await asyncio.sleep(0.5)  # the retained `offline` status
    printer.close()
    await works.stop()
    broker.stop()
    print(flush=True)
    for line in verdict(printer.docs, works.aux, works.born):
        say(line)
    if not printer.counts.get("energy") and code == 0:
        say(f"no energy window arrived; the gateway's log is {log_path}")
        code = 1
    return code


async def _wind_down(
    gateway: Any, broker: Any, dropout: Any, cue: asyncio.Task[None], *, stopped: bool,
    http_port: int,
) -> None:  # fmt: skip
    """The end: the cue cut short, the broker and the meter back, the outbox drained (unless
    Ctrl-C), the gateway stopped."""
    cue.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cue
    if broker.proc is None or broker.proc.poll() is not None:
        # the cue was cut short, or Ctrl-C reached the broker too (in a thread: it waits)
        await asyncio.to_thread(broker.start)
    dropout.silent = False
    if gateway.returncode is None and not stopped:
        left = await _drained(http_port, 20.0)
        if left:
            say(f"{left} messages still in the outbox at the stop (kept for the next run)")
    if gateway.returncode is None:
        say("stopping the gateway (SIGTERM: open windows go to its snapshot)")
        gateway.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(gateway.wait(), 20)
        except TimeoutError:
            gateway.kill()
            await gateway.wait()


async def _drained(http_port: int, limit: float) -> int | None:
    """Wait (at most `limit` s) until the gateway's outbox is empty; the backlog left (None:
    /status did not answer)."""
    import urllib.request

    def backlog() -> int | None:
        try:
            url = f"http://127.0.0.1:{http_port}/status"
            with urllib.request.urlopen(url, timeout=2) as answer:
                return int(json.loads(answer.read())["buffer"]["backlog"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    deadline = time.monotonic() + limit
    while True:
        left = await asyncio.to_thread(backlog)
        if left == 0 or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.5)


def plant_meters() -> list[Any]:
    """The simulated meters of METERS, each under its steel-plant load."""
    from gateway.sim.loads import Steady, eaf_heat, rolling_mill
    from gateway.sim.modbus_meters import SimMeter

    return [
        SimMeter(unit=1, profile="siemens-pac3200", load=eaf_heat(), energy_kwh=2_481_337.0),
        SimMeter(unit=2, profile="schneider-pm5xxx", load=rolling_mill(), energy_kwh=815_220.0),
        SimMeter(unit=3, profile="eastron-sdm630", load=Steady(420.0, 60.0, 40.0),
                 energy_kwh=4_821.35),
        # 25 kWh short of the register's wrap: at ~2.8 MW it rolls over ~30 s in
        SimMeter(unit=4, profile="acrel-adl400", load=Steady(2_800.0, 150.0, 50.0),
                 energy_kwh=ROLLOVER_KWH - 25.0),
    ]  # fmt: skip


async def _on_cue(duration: float, broker: Any, dropout: Any) -> None:
    """A meter drops out for 10 s a fifth of the way in; the broker goes for 12 s at 35 %, so
    that even a 60 s demo sees the outbox drain (the uplink's backoff after 12 s of refusals
    is a few seconds) and its replayed messages arrive."""
    start = time.monotonic()

    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, start + duration * fraction - time.monotonic()))

    await at(0.2)
    dropout.silent = True
    say("meter mill-1 stops answering for 10 s (its windows are revised once it is back)")
    await asyncio.sleep(10.0)
    dropout.silent = False
    say("meter mill-1 answers again")
    await at(0.35)
    # In a thread: stopping and starting the broker waits on a process, and this loop also
    # serves the simulated meters and PLC.
    await asyncio.to_thread(broker.stop)
    say("the broker is down for 12 s: the gateway keeps every message in its outbox")
    await asyncio.sleep(12.0)
    await asyncio.to_thread(broker.start)
    say("the broker is back: the outbox drains, its messages marked replayed")


def verdict(docs: list[tuple[str, dict[str, Any]]], aux: Any, wall_born: float) -> list[str]:
    """What a user can trust at the end: messages per class, seq per stream without holes,
    revisions, replays, and one meter's window deltas against the simulator's own integral."""
    counts = Counter(kind for kind, _ in docs)
    lines = ["received " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing")]
    seqs: dict[str, set[int]] = {}
    for _, doc in docs:
        if isinstance(doc.get("seq"), int):
            seqs.setdefault(str(doc.get("stream")), set()).add(doc["seq"])
    for stream, got in seqs.items():
        missing = set(range(min(got), max(got) + 1)) - got
        lines.append(
            f"seq {min(got)}..{max(got)} of stream {stream}: "
            + ("no hole" if not missing else f"{len(missing)} missing: {sorted(missing)[:10]}")
        )
    replayed = sum(1 for _, d in docs if d.get("replayed"))
    revised = sum(1 for k, d in docs if k in ("energy", "group") and d.get("revision", 1) > 1)
    lines.append(f"{replayed} messages replayed after the outage, {revised} windows revised")
    lines.append(_integral_check(docs, aux, wall_born))
    return lines


def _integral_check(docs: list[tuple[str, dict[str, Any]]], aux: Any, wall_born: float) -> str:
    latest: dict[str, dict[str, Any]] = {}
    for kind, doc in docs:
        mine = kind == "energy" and doc.get("device") == "aux-1" and doc.get("interval") == WINDOW
        if mine and doc.get("revision", 1) >= latest.get(doc["start"], {}).get("revision", 0):
            latest[doc["start"]] = doc
    windows = [latest[k] for k in sorted(latest)][1:]  # the first began before any reading
    deltas = [w.get("points", {}).get("energy_import", {}).get("delta") for w in windows]
    if not windows or any(d is None for d in deltas):
        return "aux-1: not enough whole windows to check against the simulator"
    breaks = [b["start"] for a, b in itertools.pairwise(windows) if a["end"] != b["start"]]
    if breaks:
        return f"aux-1: windows missing before {', '.join(breaks)}: no total to check"
    t0 = _epoch(windows[0]["start"]) - wall_born
    t1 = _epoch(windows[-1]["end"]) - wall_born
    truth = aux.load.energy_kwh(t1) - aux.load.energy_kwh(t0)
    total = sum(deltas)
    off = abs(total - truth) / truth * 100 if truth else float("nan")
    return (
        f"aux-1: {len(windows)} windows of {WINDOW} add up to {total:.4f} kWh; the simulator "
        f"integrated {truth:.4f} kWh over the same span ({off:.3f} % apart)"
    )


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def run_demo(duration: float = 90.0, opcua: bool = True, keep: bool = False) -> int:
    # The simulators run in this process: their servers' per-request chatter is not the demo.
    for noisy in ("asyncua", "pymodbus", "ironwatt.sim"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="ironwatt-demo-"))
    try:
        return asyncio.run(_demo(workdir, duration, opcua))
    except KeyboardInterrupt:
        return 130
    finally:
        if keep:
            print(f"demo: files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


async def _sim(config_out: Path | None, duration: float | None, opcua: bool, broker: str) -> int:
    """The demo's plant alone, for a technician's tools: the meters, the PLC, the config."""

    def tell(text: str) -> None:
        say(text, "sim")

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
