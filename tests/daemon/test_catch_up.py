"""Back after a long outage: each device's downtime closes as it reports, the silent ones' later.

A real energy stage and a real outbox (SQLite) under the daemon's pipeline, restored from a
snapshot taken 3 h ago. m1 answers at once: its downtime's windows go out once each, in time
order, with the energy spread over them (no revision), while the kernel holds no more than m1's
windows. m2 stays silent until the hold ends: its windows then close as gaps, a step at a time,
and its first reading revises them.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import tomllib
from pathlib import Path
from typing import Any

from drivers.base import DeviceEvent
from drivers.samples import QUALITY_BAD, SampleBatch
from gateway.config.load import validate_document
from gateway.daemon.devices import QueueSink
from gateway.daemon.energy_stage import EnergyStage
from gateway.daemon.pipeline import Pipeline
from gateway.outbox import Outbox, OutboxSettings
from tests.support.kernel_watch import WatchedKernel

CONFIG = """
[gateway]
id = "gw1"
site = "plant1"
timezone = "UTC"
data_dir = "{data}"

[mqtt]
url = "mqtt://127.0.0.1:1"

[energy]
intervals = ["1m", "15m"]

[[devices]]
name = "m1"
driver = "modbus"
host = "127.0.0.1"
[[devices.points]]
name = "energy"
address = 0
type = "float32"
kind = "counter"
unit = "kWh"
[[devices.points]]
name = "power"
address = 2
type = "float32"
kind = "rate"
unit = "kW"

[[devices]]
name = "m2"
driver = "modbus"
host = "127.0.0.1"
[[devices.points]]
name = "energy"
address = 0
type = "float32"
kind = "counter"
unit = "kWh"
"""
OFF_S = 3 * 3600.0


def _readings(stage: EnergyStage, t: float, kwh: float, m2: bool = True) -> SampleBatch:
    batch = SampleBatch()
    batch.append(stage.index.id("m1.energy"), t, kwh)
    batch.append(stage.index.id("m1.power"), t, 120.0)
    if m2:
        batch.append(stage.index.id("m2.energy"), t, kwh / 2)
    return batch


def _windows(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT topic, body FROM outbox WHERE cls != 0 ORDER BY id").fetchall()
    return [json.loads(body) for topic, body in rows if "/energy/" in topic]


def _stopped_3h_ago(tmp_path: Path) -> tuple[Any, bytes, float]:
    """The config, and the snapshot of a gateway that polled for two minutes and stopped."""
    text = CONFIG.format(data=tmp_path)
    cfg = validate_document(tomllib.loads(text), "catch-up.toml", text)
    before = time.time() - OFF_S
    old = EnergyStage(cfg, before - 120.0)
    for i in range(120):
        t = before - 120.0 + i
        old.agg.ingest(_readings(old, t, 500.0 + i / 60), t)
        old.close_due(t)
    return cfg, b"".join(old.snapshot_parts()), before


def test_held_windows_go_to_the_writer_a_device_at_a_time(tmp_path: Path) -> None:
    """Each device's downtime is offered as soon as it is closed (shorter than a chunk too);
    a writer that declines gets it again with the next device, in order."""
    cfg, blob, _ = _stopped_3h_ago(tmp_path)
    now = time.time()
    stage = EnergyStage(cfg, now)
    stage.restore(blob)
    stage.hold_catch_up(now)
    offered: list[list[str]] = []
    taken: list[str] = []

    def flush(messages: list[Any]) -> bool:
        offered.append([m.topic for m in messages])
        if len(offered) == 1:
            return False  # busy: the first device's windows wait for the next offer
        taken.extend(m.topic for m in messages)
        return True

    left = stage.take_held(_readings(stage, now, 862.0), [], now, flush=flush, chunk=500)
    assert left == []
    assert {t.rsplit("/", 1)[-1] for t in offered[0]} == {"m1"}  # one device's, < 500
    assert len(offered) == 2
    assert offered[1][: len(offered[0])] == offered[0]  # declined ones first, then m2's
    assert {t.rsplit("/", 1)[-1] for t in taken} == {"m1", "m2"}
    assert not stage.holding()  # both reported


def test_each_device_catches_up_as_it_reports_and_the_silent_ones_after(tmp_path: Path) -> None:
    cfg, blob, _ = _stopped_3h_ago(tmp_path)
    now = time.time()
    stage = EnergyStage(cfg, now)
    assert sorted(stage.restore(blob)) == ["m1.energy", "m1.power", "m2.energy"]
    stage.hold_catch_up(now)
    assert stage.holding()
    watched = WatchedKernel(stage.agg._k)
    stage.agg._k = watched
    sink = QueueSink()
    # 3 h at 120 kW: m1's counter went on, 360 kWh further; m2 does not answer yet
    sink.add_samples(_readings(stage, now, 502.0 + 360.0, m2=False))
    db = tmp_path / "ironwatt.db"
    outbox = Outbox(OutboxSettings(path=db, gw_id="gw1", site="plant1"))
    try:
        pipeline = Pipeline(cfg, sink, stage, outbox, sync=False)
        asyncio.run(pipeline.process())
        windows = _windows(db)
        assert stage.holding()  # m2 not heard from yet
        m1 = [w for w in windows if w["device"] == "m1"]
        assert len(m1) == len(windows)  # m2's downtime is still open
        keys = [(w["interval"], w["start"]) for w in m1]
        assert len(keys) == len(set(keys))  # each window once
        assert {w["revision"] for w in m1} == {1}  # the energy was in at the first publication
        minutes = [w["start"] for w in m1 if w["interval"] == "1m"]
        assert len(minutes) >= OFF_S / 60 - 1  # every minute of the downtime
        assert minutes == sorted(minutes)
        chain = sorted((w for w in m1 if w["interval"] == "1m"), key=lambda w: w["start"])
        deltas = [w["points"]["energy"]["delta"] for w in chain]
        # the windows chain, and each downtime minute holds 120 kW x 1 min = 2 kWh, spread in
        first, last = chain[0]["points"]["energy"]["first"], chain[-1]["points"]["energy"]["last"]
        assert abs(sum(deltas) - (last - first)) < 1e-6
        assert all(abs(d - 2.0) < 0.01 for d in deltas[2:-1]), deltas
        # m1's downtime (2 points x 1m and 15m windows), never m2's with it
        most_m1 = watched.most
        assert 2 * OFF_S / 60 <= most_m1 <= 2 * (OFF_S / 60 + OFF_S / 900 + 4)

        # The hold ends: m2's windows close as gaps, a step at a time; its reading revises them.
        stage._hold_until = 0.0
        watched.most = 0
        asyncio.run(pipeline.process())
        assert not stage.holding()
        assert 0 < watched.most <= 3 * 2  # one 60 s step's windows
        sink.add_samples(_readings(stage, time.time(), 502.0 + 360.0))
        asyncio.run(pipeline.process())
        asyncio.run(pipeline.process())
    finally:
        outbox.close()
    m2 = [w for w in _windows(db) if w["device"] == "m2"]
    firsts = [w for w in m2 if w["revision"] == 1]
    assert len([w for w in firsts if w["interval"] == "1m"]) >= OFF_S / 60 - 1
    dark = [w for w in firsts if w["interval"] == "1m"][3:-1]
    assert {w["points"]["energy"]["delta"] for w in dark} == {0.0}  # gaps: nothing yet
    revised = [w for w in m2 if w["revision"] > 1 and w["interval"] == "1m"]
    assert len(revised) >= OFF_S / 60 - 1
    # m2 went 180 kWh further in 3 h: 1 kWh a minute, spread back over the gap's windows
    assert all(abs(w["points"]["energy"]["delta"] - 1.0) < 0.01 for w in revised[2:-2])


def test_a_device_with_a_bad_reading_still_gets_whole_windows(tmp_path: Path) -> None:
    """m1's power reads bad after the restart: m1's downtime windows still come out once
    each with both points (power's as a gap), never as two halves."""
    cfg, blob, _ = _stopped_3h_ago(tmp_path)
    now = time.time()
    stage = EnergyStage(cfg, now)
    stage.restore(blob)
    stage.hold_catch_up(now)
    batch = SampleBatch()
    batch.append(stage.index.id("m1.energy"), now, 862.0)
    batch.append(stage.index.id("m1.power"), now, float("nan"), QUALITY_BAD)
    out = stage.take_held(batch, [], now)
    stage._hold_until = 0.0  # the hold ends: m2 closes as gaps
    assert not stage.holding()
    out += stage.close_due(time.time())
    m1 = [json.loads(m.body) for m in out if m.topic.endswith("/m1")]
    keys = [(w["interval"], w["start"], w["revision"]) for w in m1]
    assert len(keys) == len(set(keys)) > OFF_S / 60
    assert all(set(w["points"]) == {"energy", "power"} for w in m1)


def test_the_hold_waits_for_readings_not_for_device_up(tmp_path: Path) -> None:
    """device_up (an OPC UA subscription set up) does not end the hold, device_down does; a
    device a reload removes is no longer waited for."""
    cfg, blob, _ = _stopped_3h_ago(tmp_path)
    now = time.time()
    stage = EnergyStage(cfg, now)
    stage.restore(blob)
    stage.hold_catch_up(now)
    up = DeviceEvent("device_up", "m2", "connected", now)
    stage.take_held(_readings(stage, now, 862.0, m2=False), [up], now)
    assert stage.holding()  # m2 connected, but sent nothing yet
    down = DeviceEvent("device_down", "m2", "no response", now)
    gaps = [json.loads(m.body) for m in stage.take_held(SampleBatch(), [down], now)]
    assert not stage.holding()
    # m2 will send nothing: its downtime closes now, as gaps (revised when it answers)
    assert {w["device"] for w in gaps} == {"m2"}
    assert len([w for w in gaps if w["interval"] == "1m"]) >= OFF_S / 60 - 1

    again = EnergyStage(cfg, now)
    again.restore(blob)
    again.hold_catch_up(now)
    text = CONFIG.format(data=tmp_path).split('[[devices]]\nname = "m2"')[0]
    again.reconfigure(validate_document(tomllib.loads(text), "catch-up.toml", text), now)
    again.take_held(_readings(again, now, 862.0, m2=False), [], now)
    assert not again.holding()  # m1 reported; m2 is gone from the config


def test_a_device_heard_over_two_passes_still_gets_whole_windows_once(tmp_path: Path) -> None:
    """m1's energy in one pass, its power in the next (an OPC UA server's first values can
    take several): its downtime windows wait for both and come out once, whole, unrevised."""
    cfg, blob, _ = _stopped_3h_ago(tmp_path)
    now = time.time()
    stage = EnergyStage(cfg, now)
    stage.restore(blob)
    stage.hold_catch_up(now)
    first, second = SampleBatch(), SampleBatch()
    first.append(stage.index.id("m1.energy"), now, 862.0)
    second.append(stage.index.id("m1.power"), now + 0.25, 120.0)
    assert stage.take_held(first, [], now) == []  # m1 is not heard in full yet
    out = stage.take_held(second, [], now + 0.25)
    m1 = [json.loads(m.body) for m in out]
    assert {w["device"] for w in m1} == {"m1"}
    keys = [(w["interval"], w["start"]) for w in m1]
    assert len(keys) == len(set(keys)) > OFF_S / 60
    assert {w["revision"] for w in m1} == {1}
    assert all(set(w["points"]) == {"energy", "power"} for w in m1)
    assert stage.holding()  # m2 still to come
