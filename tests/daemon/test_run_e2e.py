"""`ironwatt run` end to end: Modbus sim → gateway subprocess → Mosquitto, with 10 s windows.

One gateway lifetime walks through READY/WATCHDOG, /metrics, correct and chained `energy`
windows, SIGHUP (device added and removed; then a broken file), SIGTERM mid-window and a
restart that still gets that window's totals right. ~50 s: the windows are real 10 s windows.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gateway.sim.modbus_meters import SimMeter
from gateway.sim.ports import free_port
from tests.daemon.conftest import GatewayProcess, PlantThread
from tests.daemon.test_health import parse_prometheus
from tests.support.mosquitto import Collector, Mosquitto

WINDOW = 10.0
POWER = {1: 36.0, 2: 18.0, 3: 72.0}  # kW held constant: each window's energy is exact
# Readings are stamped when the gateway receives them; on a loaded machine a reply can wait a
# few hundred ms for the event loop, which shifts an interpolated edge value by power x delay.
# 0.8 s of skew at m1's 36 kW; a lost restart state would be off by 30 % or more.
JITTER_KWH = POWER[1] * 0.8 / 3600
ISO = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


def _config(
    path: Path,
    data: Path,
    broker: Mosquitto,
    port: int,
    http: int,
    units: list[int],
    broken: bool = False,
) -> None:
    text = f"""
[gateway]
id = "gw-e2e"
site = "testsite"
timezone = "Europe/Berlin"
data_dir = "{data}"

[mqtt]
url = "{broker.url}"
topic_prefix = "iw"

[http]
listen = "127.0.0.1:{http}"

[buffer]
durability = "normal"

[energy]
intervals = ["10s"]
demand_interval = "10s"
"""
    for unit in units:
        text += f"""
[[devices]]
name = "m{unit}"
driver = "modbus"
host = "127.0.0.1"
port = {port}
unit = {unit}
poll = "1s"
timeout = "500ms"
profile = "eastron-sdm630"
"""
    if broken:
        text += '\n[[devices]]\nname = "Bad Name"\ndriver = "modbus"\npoll = "fast"\n'
    path.write_text(text)


def _docs(collector: Collector, kind: str) -> list[dict]:
    out = []
    for topic, payload, _retain in collector.snapshot():
        parts = topic.split("/")
        if parts[3] == kind:
            doc = json.loads(payload)
            doc["_topic"] = topic
            out.append(doc)
    return out


def _windows(collector: Collector, device: str) -> dict[str, dict]:
    """Highest revision per window start."""
    best: dict[str, dict] = {}
    for doc in _docs(collector, "energy"):
        if doc["device"] == device:
            have = best.get(doc["start"])
            if have is None or doc["revision"] >= have["revision"]:
                best[doc["start"]] = doc
    return dict(sorted(best.items()))


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _check_window(doc: dict, device: str) -> None:
    assert doc["_topic"] == f"iw/testsite/gw-e2e/energy/10s/{device}"
    assert doc["v"] == 1
    assert doc["gw"] == "gw-e2e"
    assert doc["site"] == "testsite"
    assert isinstance(doc["stream"], str)
    assert doc["stream"]
    assert isinstance(doc["seq"], int)
    assert isinstance(doc["replayed"], bool)
    assert doc["interval"] == "10s"
    assert doc["device"] == device
    for key in ("sent", "start", "end"):
        assert __import__("re").match(ISO, doc[key]), (key, doc[key])
    start, end = _epoch(doc["start"]), _epoch(doc["end"])
    assert end - start == WINDOW
    assert start % WINDOW == 0
    energy = doc["points"]["energy_import"]
    assert energy["kind"] == "counter"
    assert energy["unit"] == "kWh"
    power = doc["points"]["power_total"]
    assert power["kind"] == "rate"
    assert power["unit"] == "kW"


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read()


def _polls(http: int, device: str) -> int:
    return int(json.loads(_get(http, "/status"))["devices"][device]["polls"])


@pytest.mark.slow
def test_run_end_to_end(shared_broker: Mosquitto, tmp_path: Path) -> None:
    meters = [SimMeter(unit=u, profile="eastron-sdm630", energy_kwh=1000.0 * u) for u in POWER]
    for m in meters:
        m.hold("power_total", POWER[m.unit])
    plant = PlantThread(meters)
    config, data, http = tmp_path / "ironwatt.toml", tmp_path / "data", free_port()
    _config(config, data, shared_broker, plant.plant.port, http, [1, 2])
    collector = Collector(shared_broker, "iw/#", client_id="e2e-collector")
    gw = GatewayProcess(config, tmp_path)
    try:
        gw.start()
        # -- READY after config and database, then WATCHDOG pings from the loop.
        notes = gw.read_notes(until="READY=1", timeout=20)
        gw.read_notes(until="WATCHDOG=1", timeout=5)
        assert any("STATUS=" in n for n in notes)

        # -- /metrics parses as Prometheus text, /healthz is 200.
        assert _get(http, "/healthz").strip() == b"ok"
        families = parse_prometheus(_get(http, "/metrics").decode())
        assert "ironwatt_device_up" in families
        assert "ironwatt_buffer_backlog_messages" in families

        # -- two chained windows of m1 with the energy the meter counted. The first windows
        # are partial (the gateway started inside them): wait for two fully covered ones.
        def full_windows() -> list[dict]:
            return [
                w for w in _windows(collector, "m1").values()
                if w["points"]["energy_import"]["coverage"] > 0.999
            ]  # fmt: skip

        gw.wait_until(lambda: len(full_windows()) >= 2, 35, "two full m1 windows")
        for doc in _windows(collector, "m1").values():
            _check_window(doc, "m1")
        first, second = (w["points"] for w in full_windows()[:2])
        expected = POWER[1] * WINDOW / 3600
        assert second["energy_import"]["delta"] == pytest.approx(expected, abs=JITTER_KWH)
        assert second["energy_import"]["first"] == pytest.approx(first["energy_import"]["last"])
        assert second["power_total"]["mean"] == pytest.approx(POWER[1], rel=1e-4)
        assert second["power_total"]["integral"] == pytest.approx(expected, rel=0.02)
        status = [d for d in _docs(collector, "status")]
        assert status
        assert status[-1]["state"] == "online"
        device_up = [e for e in _docs(collector, "event") if e["type"] == "device_up"]
        assert sorted(e["device"] for e in device_up) == ["m1", "m2"]  # each once, no flapping

        # -- `ironwatt status` renders the same document for a technician.
        table = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "status", "-c", str(config)],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout  # fmt: skip
        assert any(line.split()[:3] == ["m1", "modbus", "up"] for line in table.splitlines())
        assert "uplink: connected" in table

        # -- SIGHUP: m2 removed, m3 added; m1, on the same link, keeps polling untouched.
        polls_before, read_at = _polls(http, "m1"), time.monotonic()
        _config(config, data, shared_broker, plant.plant.port, http, [1, 3])
        reload_at = time.time()
        gw.signal(signal.SIGHUP)
        gw.wait_until(
            lambda: any(e["type"] == "config_reloaded" for e in _docs(collector, "event")),
            10,
            "config_reloaded",
        )
        [reloaded] = [e for e in _docs(collector, "event") if e["type"] == "config_reloaded"]
        assert reloaded["added"] == ["m3"]
        assert reloaded["removed"] == ["m2"]
        assert reloaded["changed"] == []
        devices = json.loads(_get(http, "/status"))["devices"]
        assert sorted(devices) == ["m1", "m3"]
        assert devices["m1"]["crashes"] == 0
        # The same poller: its count goes on from where it was, one a second (a new one would
        # count from 0, and polls_before is about 20 by now: two full windows).
        gw.wait_until(lambda: _polls(http, "m1") > polls_before, 5, "a poll of m1 after it")
        polls_after, elapsed = _polls(http, "m1"), time.monotonic() - read_at
        assert polls_before >= 10, polls_before
        assert polls_before < polls_after <= polls_before + math.ceil(elapsed) + 1, (
            polls_before,
            polls_after,
            elapsed,
        )
        ups = [e for e in _docs(collector, "event") if e["type"] == "device_up"]
        assert [e["device"] for e in ups].count("m1") == 1

        # -- SIGHUP with a broken file: refused, logged, the running config stays.
        _config(config, data, shared_broker, plant.plant.port, http, [1, 3], broken=True)
        gw.signal(signal.SIGHUP)
        gw.wait_until(lambda: "config reload refused" in gw.log(), 10, "the refusal in the log")
        assert len([e for e in _docs(collector, "event") if e["type"] == "config_reloaded"]) == 1
        assert sorted(json.loads(_get(http, "/status"))["devices"]) == ["m1", "m3"]
        _config(config, data, shared_broker, plant.plant.port, http, [1, 3])

        # -- SIGTERM mid-window, restart: that window's totals are still right.
        gw.wait_until(lambda: 3.0 <= time.time() % WINDOW <= 6.0, 11, "mid-window")
        stopped_at = time.time()
        open_start = math.floor(stopped_at / WINDOW) * WINDOW
        t0 = time.monotonic()
        assert gw.stop() == 0
        assert time.monotonic() - t0 < 15
        assert [d for d in _docs(collector, "status")][-1]["state"] == "offline"
        time.sleep(1.0)  # the gateway is away for a while: no readings in this part
        gw.start()
        gw.read_notes(until="READY=1", timeout=20)

        def settled_after_restart() -> bool:
            # The window must be out, and so must the first reading of the new process: when
            # the restart took longer than the window's grace, the window was closed without it
            # and that reading publishes it again (revision 2, the energy of the gap spread in).
            # device_up of m1 is stored in the same pass as that revision, after it (seq order).
            ups = [e for e in _docs(collector, "event") if e["type"] == "device_up"]
            return [e["device"] for e in ups].count("m1") >= 2 and any(
                _epoch(s) == open_start for s in _windows(collector, "m1")
            )

        gw.wait_until(settled_after_restart, 25, "the window open at SIGTERM")
        ups = [e["device"] for e in _docs(collector, "event") if e["type"] == "device_up"]
        assert ups.count("m1") == 2  # one per gateway lifetime
        wins1 = _windows(collector, "m1")
        starts = sorted(wins1)
        idx = next(i for i, s in enumerate(starts) if _epoch(s) == open_start)
        window = wins1[starts[idx]]["points"]["energy_import"]
        before = wins1[starts[idx - 1]]["points"]["energy_import"]
        # The snapshot carried the baseline across the restart: the window starts where the
        # previous one ended and holds the whole 10 s of energy.
        assert window["first"] == pytest.approx(before["last"]), (
            [(s, wins1[s]["points"]["energy_import"]) for s in starts[idx - 2 : idx + 2]],
            stopped_at,
            [line for line in gw.log().splitlines() if "ironwatt.runtime" in line],
        )
        assert window["delta"] == pytest.approx(expected, abs=JITTER_KWH)

        # m2 was removed before this window: it has none for it; m3 publishes.
        assert not [s for s in _windows(collector, "m2") if _epoch(s) >= reload_at + WINDOW]
        assert _windows(collector, "m3")

        # Seq strictly increasing by one across every QoS-1 message of the stream.
        seqs = sorted(
            {(d["stream"], d["seq"]) for k in ("energy", "event") for d in _docs(collector, k)}
        )
        nums = [s for _, s in seqs]
        assert len({st for st, _ in seqs}) == 1
        assert nums == list(range(nums[0], nums[0] + len(nums))), nums
        assert gw.stop() == 0
    finally:
        gw.close()
        collector.close()
        plant.stop()
