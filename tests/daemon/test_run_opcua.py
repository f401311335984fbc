"""`ironwatt run` with an OPC UA device and telemetry on: the PLC comes up, live values go out
report-by-exception on `telemetry/{device}` at QoS 0, without seq, within their deadband."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from gateway.sim.ports import free_port
from tests.daemon.conftest import GatewayProcess, LoopThread
from tests.support.mosquitto import Collector, Mosquitto


def _telemetry(collector: Collector) -> list[dict]:
    return [json.loads(p) for t, p, _ in collector.snapshot() if t == "iw/s/gw-ua/telemetry/plc"]


def _temps(collector: Collector) -> list[float]:
    return [d["points"]["temp"]["value"] for d in _telemetry(collector) if "temp" in d["points"]]


def _samples(http: int) -> int:
    """Samples the PLC device delivered so far (its /status entry)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/status", timeout=5) as r:
        return int(json.loads(r.read())["devices"]["plc"]["samples"])


def test_opcua_device_and_telemetry(shared_broker: Mosquitto, tmp_path: Path) -> None:
    pytest.importorskip("asyncua")
    from gateway.sim.opcua_plc import SimulatedPlc

    loop = LoopThread()
    plc = SimulatedPlc(evolve_interval=None)
    loop.call(plc.start())
    config, http = tmp_path / "ironwatt.toml", free_port()
    config.write_text(f"""
[gateway]
id = "gw-ua"
site = "s"
timezone = "UTC"
data_dir = "{tmp_path / "data"}"

[mqtt]
url = "{shared_broker.url}"
topic_prefix = "iw"
telemetry = true
telemetry_heartbeat = "1h"

[energy]
intervals = ["10s"]

[http]
listen = "127.0.0.1:{http}"

[[devices]]
name = "plc"
driver = "opcua"
endpoint = "{plc.endpoint}"
mode = "subscribe"
interval = "200ms"

  [[devices.points]]
  name = "temp"
  node = "nsu=urn:plant1:bf2;s=Furnace.Temp1"
  kind = "gauge"
  unit = "degC"
  report_deadband = 5.0

  [[devices.points]]
  name = "flow"
  node = "nsu=urn:plant1:bf2;s=Utilities.NG.Flow"
  kind = "rate"
  unit = "m3/h"
  carrier = "natural_gas"
""")
    collector = Collector(shared_broker, "iw/#", client_id="ua-collector")
    gw = GatewayProcess(config, tmp_path)
    try:
        gw.start()
        gw.read_notes(until="READY=1", timeout=20)
        gw.wait_until(lambda: 1450.0 in _temps(collector), 20, "the first telemetry", interval=0.05)
        first = _telemetry(collector)[0]
        assert first["v"] == 1
        assert first["gw"] == "gw-ua"
        assert first["site"] == "s"
        assert "seq" not in first
        assert "sent" in first
        assert first["points"]["temp"]["unit"] == "degC"
        assert first["points"]["temp"]["quality"] == "good"
        events = [json.loads(p) for t, p, _ in collector.snapshot() if t.endswith("/event")]
        assert any(e["type"] == "device_up" and e["device"] == "plc" for e in events)

        seen = _samples(http)
        loop.call(plc.write("Furnace.Temp1", 1453.0))  # inside the 5 degC deadband
        # The gateway has it (a data change, one sample more) before the next value comes.
        gw.wait_until(lambda: _samples(http) > seen, 10, "the sample of 1453", interval=0.05)
        loop.call(plc.write("Furnace.Temp1", 1461.0))  # outside it
        gw.wait_until(
            lambda: 1461.0 in _temps(collector), 10, "the change past the deadband", interval=0.05
        )
        assert 1453.0 not in _temps(collector)
        assert gw.stop() == 0
    finally:
        gw.close()
        collector.close()
        loop.call(plc.stop())
        loop.close()
