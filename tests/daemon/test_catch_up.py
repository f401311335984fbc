"""Back after a long outage: the first pass closes the downtime's windows a step at a time.

A real energy stage and a real outbox (SQLite) under the daemon's pipeline: the stage is
restored from a snapshot taken 3 h ago, and the first pass already has the meter's readings
(the polls beat it). The downtime's windows go out once each, in time order, before the
revisions the readings make of them, and the kernel never queues more than a step's windows.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import tomllib
from pathlib import Path
from typing import Any

from drivers.samples import SampleBatch
from gateway.config.load import validate_document
from gateway.daemon.devices import QueueSink
from gateway.daemon.energy_stage import EnergyStage
from gateway.daemon.pipeline import Pipeline
from gateway.outbox import Outbox, OutboxSettings

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
"""
OFF_S = 3 * 3600.0


class Watched:
    """The stage's kernel seen through: the most windows due at once before the readings."""

    def __init__(self, kernel: Any) -> None:
        self._kernel = kernel
        self.most = 0
        self.before_readings: int | None = None

    def ingest(self, *columns: Any) -> None:
        if self.before_readings is None:
            self.before_readings = self.most
        self._kernel.ingest(*columns)

    def due_keys(self, t: float) -> Any:
        keys = self._kernel.due_keys(t)
        self.most = max(self.most, len(keys["point"]))
        return keys

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kernel, name)


def _readings(stage: EnergyStage, t: float, kwh: float) -> SampleBatch:
    batch = SampleBatch()
    batch.append(stage.index.id("m1.energy"), t, kwh)
    batch.append(stage.index.id("m1.power"), t, 120.0)
    return batch


def test_the_first_pass_after_a_long_outage_catches_up_in_steps(tmp_path: Path) -> None:
    text = CONFIG.format(data=tmp_path)
    cfg = validate_document(tomllib.loads(text), "catch-up.toml", text)
    now = time.time()
    before = now - OFF_S
    old = EnergyStage(cfg, before - 120.0)
    for i in range(120):  # two minutes of readings, then the gateway stops
        t = before - 120.0 + i
        old.agg.ingest(_readings(old, t, 500.0 + i / 60), t)
        old.close_due(t)
    blob = b"".join(old.snapshot_parts())

    stage = EnergyStage(cfg, now)
    assert stage.restore(blob) == ["m1.energy", "m1.power"]
    watched = Watched(stage.agg._k)
    stage.agg._k = watched
    assert stage.behind(now)
    sink = QueueSink()
    # 3 h at 120 kW: the meter's counter went on, 360 kWh further
    sink.add_samples(_readings(stage, now, 502.0 + 360.0))
    outbox = Outbox(OutboxSettings(path=tmp_path / "ironwatt.db", gw_id="gw1", site="plant1"))
    try:
        pipeline = Pipeline(cfg, sink, stage, outbox, sync=False)
        asyncio.run(pipeline.process())
        assert not stage.behind(time.time())
    finally:
        outbox.close()
    with sqlite3.connect(tmp_path / "ironwatt.db") as db:
        rows = db.execute("SELECT topic, body FROM outbox WHERE cls != 0 ORDER BY id").fetchall()
    windows = [json.loads(body) for topic, body in rows if "/energy/" in topic]
    firsts = [w for w in windows if w["revision"] == 1]
    keys = [(w["interval"], w["start"]) for w in firsts]
    assert len(keys) == len(set(keys))  # each window once
    minutes = [w["start"] for w in firsts if w["interval"] == "1m"]
    assert len(minutes) >= OFF_S / 60 - 1  # every minute of the downtime
    assert minutes == sorted(minutes)  # in time order
    # the readings revised the downtime's windows afterwards: every revision after its window
    seen: set[tuple[str, str]] = set()
    revised = 0
    for w in windows:
        key = (w["interval"], w["start"])
        if w["revision"] == 1:
            seen.add(key)
        else:
            assert key in seen, key
            revised += 1
    assert revised >= OFF_S / 60 - 1
    spread = sum(
        w["points"]["energy"]["delta"]
        for w in windows
        if w["interval"] == "1m" and w["revision"] > 1 and "energy" in w["points"]
    )
    assert abs(spread - 360.0) < 2.0  # the gap's energy, spread back over its windows
    # 2 points x (1m and 15m) in one 60 s step, and the minute waiting out its grace: not 3 h's
    # (the readings' revisions of them come after, all at once: ~190 rows here)
    assert watched.before_readings is not None
    assert 0 < watched.before_readings <= 2 * 3
