"""`ironwatt demo`: a simulated plant, a broker and the real gateway, with the messages printed.

Two Modbus meters (Eastron SDM630 profile) and, when asyncua is installed, an OPC UA PLC; a
Mosquitto on a free loopback port; `ironwatt run` as a child process with 10 s windows.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from pathlib import Path
from typing import Any

from gateway.sim.ports import free_port

__all__ = ["demo_config", "format_message", "run_demo"]

WINDOW = "10s"


def demo_config(
    workdir: Path, broker_url: str, modbus_port: int, opcua_endpoint: str | None, http_port: int
) -> str:
    """The demo's ironwatt.toml: what a technician would write for this plant."""
    text = f"""\
# Written by `ironwatt demo`: a simulated plant on loopback.
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

[[devices]]
name = "meter-1"
driver = "modbus"
host = "127.0.0.1"
port = {modbus_port}
unit = 1
poll = "1s"
timeout = "500ms"
profile = "eastron-sdm630"

[[devices]]
name = "meter-2"
driver = "modbus"
host = "127.0.0.1"
port = {modbus_port}
unit = 2
poll = "1s"
timeout = "500ms"
profile = "eastron-sdm630"
"""
    if opcua_endpoint is not None:
        text += f"""
[[devices]]
name = "bf2-plc"
driver = "opcua"
endpoint = "{opcua_endpoint}"
mode = "subscribe"
interval = "500ms"

  [[devices.points]]
  name = "hot_metal"
  node = "nsu=urn:plant1:bf2;s=Production.HotMetalTons"
  kind = "counter"
  unit = "t"
  carrier = "product"

  [[devices.points]]
  name = "gas_flow"
  node = "nsu=urn:plant1:bf2;s=Utilities.NG.Flow"
  kind = "rate"
  unit = "m3/h"
  carrier = "natural_gas"

  [[devices.points]]
  name = "furnace_temp"
  node = "nsu=urn:plant1:bf2;s=Furnace.Temp1"
  kind = "gauge"
  unit = "degC"

[[groups]]
name = "blast-furnace-2"
members = ["meter-1.energy_import", "bf2-plc.gas_flow"]
production = "bf2-plc.hot_metal"
"""
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
        return (
            f"group   {doc.get('interval')} {doc.get('group')} {_clock(doc.get('start'))}-"
            f"{_clock(doc.get('end'))} [{head}]\n          {carriers}; kgce {_n(doc.get('kgce'))}, "
            f"kgCO2e {_n(doc.get('kgco2e'))}, intensity {_n(doc.get('intensity_kgce_per_unit'))}"
        )
    return f"{kind:<7} {topic}: {payload[:160].decode(errors='replace')}"


class _Printer:
    """Subscribes to everything the gateway publishes and prints it as it arrives."""

    def __init__(self, port: int, prefix: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.counts: Counter[str] = Counter()
        self._last_status: str | None = None
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ironwatt-demo-viewer")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{prefix}/#", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        parts = msg.topic.split("/")
        kind = parts[3] if len(parts) > 3 else msg.topic
        with self._lock:
            self.counts[kind] += 1
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


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


async def _demo(workdir: Path, duration: float, opcua: bool) -> int:
    from gateway.sim.broker import BrokerMissing, DemoBroker
    from gateway.sim.modbus_meters import ModbusPlant, SimMeter

    try:
        broker = DemoBroker(workdir)
    except BrokerMissing as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    broker.start()
    say(f"Mosquitto broker on {broker.url} (log: {workdir / 'mosquitto.log'})")
    meters = [
        SimMeter(unit=1, profile="eastron-sdm630", power_kw=42.0, energy_kwh=48213.5),
        SimMeter(unit=2, profile="eastron-sdm630", power_kw=17.5, energy_kwh=9071.25),
    ]
    plant = ModbusPlant(meters)
    await plant.start()
    say(f"2 simulated Eastron SDM630 meters (Modbus TCP units 1, 2) on 127.0.0.1:{plant.port}")
    plc = None
    if opcua:
        try:
            from gateway.sim.opcua_plc import SimulatedPlc

            plc = SimulatedPlc()
            await plc.start()
            say(f"a simulated OPC UA PLC (blast furnace 2) on {plc.endpoint}")
        except ImportError as exc:
            say(f"no OPC UA PLC ({exc}); the meters alone")
            plc = None
    http_port = free_port()
    config = workdir / "ironwatt.toml"
    config.write_text(
        demo_config(workdir, broker.url, plant.port, plc.endpoint if plc else None, http_port)
    )
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
        while not stop.is_set() and time.monotonic() < deadline:
            if gateway.returncode is not None:
                say(f"the gateway exited with status {gateway.returncode}; its log:")
                print(log_path.read_text()[-4000:])
                code = 1
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
        if gateway.returncode is None:
            say("stopping the gateway (SIGTERM: open windows go to its snapshot)")
            gateway.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(gateway.wait(), 20)
            except TimeoutError:
                gateway.kill()
                await gateway.wait()
        await asyncio.sleep(0.5)  # the retained `offline` status
    printer.close()
    if plc is not None:
        await plc.stop()
    await plant.stop()
    broker.stop()
    counts = ", ".join(f"{n} {k}" for k, n in sorted(printer.counts.items())) or "nothing"
    print(flush=True)
    say(f"received {counts}")
    if not printer.counts.get("energy") and code == 0:
        say(f"no energy window arrived; the gateway's log is {log_path}")
        code = 1
    return code


def run_demo(duration: float = 60.0, opcua: bool = True, keep: bool = False) -> int:
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
