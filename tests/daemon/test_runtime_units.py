"""Pieces of the runtime without processes: unit planning, config diffs, the supervisor, status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from drivers.base import Backoff, DeviceEvent
from drivers.samples import PointIndex, SampleBatch
from gateway.config.load import load_config
from gateway.daemon.devices import DeviceUnit, QueueSink, Supervisor, plan_units
from gateway.daemon.health import render_metrics
from gateway.daemon.reload import diff_devices, point_keys
from gateway.daemon.status import metrics_of, render_table
from gateway.sim.plant import demo_config
from gateway.sim.view import format_message
from tests.daemon.test_health import parse_prometheus
from tests.support.waiting import await_until

BASE = """
[gateway]
id = "gw"
site = "s"
timezone = "UTC"
data_dir = "{data}"
[mqtt]
url = "mqtt://127.0.0.1:1"
[energy]
intervals = ["10s"]
"""


def _modbus(name: str, port: int, unit: int, poll: str = "1s", enabled: bool = True) -> str:
    return f"""
[[devices]]
name = "{name}"
driver = "modbus"
host = "127.0.0.1"
port = {port}
unit = {unit}
poll = "{poll}"
enabled = {"true" if enabled else "false"}
  [[devices.points]]
  name = "e"
  address = 0
  kind = "counter"
  unit = "kWh"
"""


def _opcua(name: str) -> str:
    return f"""
[[devices]]
name = "{name}"
driver = "opcua"
endpoint = "opc.tcp://127.0.0.1:4841"
  [[devices.points]]
  name = "t"
  node = "ns=2;s=T"
  kind = "gauge"
  unit = "degC"
"""


def _load(tmp_path: Path, body: str, name: str = "c.toml") -> Any:
    path = tmp_path / name
    path.write_text(BASE.format(data=tmp_path / "data") + body)
    return load_config(path)


def test_units_group_modbus_by_link(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path,
        _modbus("a", 5020, 1) + _modbus("b", 5020, 2) + _modbus("c", 5021, 1)
        + _modbus("off", 5022, 1, enabled=False) + _opcua("plc"),
    )  # fmt: skip
    units = plan_units(cfg.devices)
    assert {k: u.names for k, u in units.items()} == {
        "modbus/tcp:127.0.0.1:5020": ("a", "b"),
        "modbus/tcp:127.0.0.1:5021": ("c",),
        "opcua/plc": ("plc",),
    }
    assert point_keys(cfg) == ["a.e", "b.e", "c.e", "plc.t"]


def test_diff_devices_and_untouched_units(tmp_path: Path) -> None:
    old = _load(tmp_path, _modbus("a", 5020, 1) + _modbus("b", 5020, 2) + _modbus("c", 5021, 1))
    new = _load(
        tmp_path, _modbus("a", 5020, 1) + _modbus("c", 5021, 1, poll="2s") + _modbus("d", 5023, 1),
        "d.toml",
    )  # fmt: skip
    assert diff_devices(old, new) == (["d"], ["b"], ["c"])
    before, after = plan_units(old.devices), plan_units(new.devices)
    # Only units whose devices are equal survive a reload untouched.
    assert [k for k, u in after.items() if before.get(k) == u] == []
    same = _load(tmp_path, _modbus("a", 5020, 1) + _modbus("b", 5020, 2), "e.toml")
    assert (
        plan_units(same.devices)["modbus/tcp:127.0.0.1:5020"] == before["modbus/tcp:127.0.0.1:5020"]
    )


class _Crashing:
    """A driver that fails on start, as a bug in a protocol package would; `runs` counts the
    starts of every instance (the supervisor builds a new one per restart)."""

    runs = 0

    def __init__(self, *args: Any) -> None:
        pass

    async def run(self) -> None:
        type(self).runs += 1
        raise RuntimeError("decoder bug")

    def status(self) -> dict[str, Any]:
        return {"state": "starting"}


@pytest.fixture
def crashing() -> type[_Crashing]:
    """A _Crashing of this test's own: its count starts at 0 whatever ran before."""
    return type("Crashing", (_Crashing,), {"runs": 0})


@pytest.mark.asyncio
async def test_supervisor_restarts_a_crashed_unit(
    tmp_path: Path, crashing: type[_Crashing]
) -> None:
    sink = QueueSink()
    sup = Supervisor(
        PointIndex(), sink, tmp_path, "gw", "s", factory=crashing,
        restart_backoff=lambda: Backoff(initial=0.02, maximum=0.05),
    )  # fmt: skip
    cfg = _load(tmp_path, _opcua("plc"))
    sup.start(DeviceUnit("opcua/plc", "opcua", cfg.devices))
    await await_until(lambda: sup.status()["plc"]["crashes"] >= 3, 5.0, "three crashes")
    status = sup.status()["plc"]
    await sup.stop_all()
    assert crashing.runs >= status["crashes"] >= 3  # a crash is a run that ended in one
    assert "decoder bug" in status["last_crash"]
    _, events = sink.take()
    # One event for the crash loop, however many restarts it took.
    assert [(e.type, e.device) for e in events] == [("device_down", "plc")]
    assert sup.running == {}


def test_queue_sink_merges_batches() -> None:
    sink = QueueSink(batch_target=2)
    a, b = SampleBatch(), SampleBatch()
    a.append(0, 1.0, 2.0)
    b.append(1, 1.5, 3.0)
    sink.add_samples(a)
    assert not sink.wake.is_set()  # the pipeline comes by itself for a few samples
    sink.add_samples(b)
    assert sink.wake.is_set()  # ... and sooner for many
    batch, events = sink.take()
    assert list(batch) == [(0, 1.0, 2.0, 0), (1, 1.5, 3.0, 0)]
    assert events == []
    assert not sink.wake.is_set()
    assert len(sink.pending) == 0
    sink.add_event(DeviceEvent("device_down", "m1", "timeout", 1.0))
    assert sink.wake.is_set()  # an event asks for a pass at once


STATUS = {
    "gw": "gw", "site": "s", "version": "0.1.0", "since": "2026-11-29T06:00:00.000Z",
    "config": "/etc/ironwatt/ironwatt.toml", "started": 1000.0,
    "devices": {
        "m1": {"driver": "modbus", "state": "up", "last_success": 995.0, "polls": 10,
               "errors": 0, "overruns": 1, "crashes": 0, "poll_seconds": 0.25,
               "timed_polls": 10, "last_poll_s": 0.02},
        "plc": {"driver": "opcua", "state": "down", "last_success": None, "polls": 3,
                "errors": 3, "last_error": "connection refused by 127.0.0.1:4840"},
    },
    "buffer": {"backlog": 12, "oldest_age_s": 30.2, "used_bytes": 4096,
               "max_size_bytes": 1 << 20, "dropped_total": 0, "stream": "ab12", "next_seq": 40},
    "uplink": {"broker": "mqtt://b:1883", "connected": False, "state": "connecting",
               "since": None, "acked": 27, "lag_s": 30.2, "last_error": "refused"},
    "energy": {"samples": 500, "dropped": {"out_of_order": 2}},
    "clock_steps": 0, "reloads": 1, "reloads_refused": 2, "kernel": "compiled",
    "process": {"pid": 7, "rss_bytes": 41_943_040, "cpu_seconds": 12.5, "python": "3.11.7"},
}  # fmt: skip


def test_status_table() -> None:
    text = render_table(STATUS, now=1000.0)
    lines = text.splitlines()
    assert "version 0.1.0 (kernel: compiled)" in lines[0]
    header = next(i for i, line in enumerate(lines) if line.startswith("DEVICE"))
    assert lines[header + 1].split()[:4] == ["m1", "modbus", "up", "5s"]
    assert lines[header + 2].split()[:4] == ["plc", "opcua", "down", "never"]
    assert lines[header + 2].endswith("connection refused by 127.0.0.1:4840")
    assert "buffer: 12 messages waiting, oldest 30s" in text
    assert "uplink: NOT connected to mqtt://b:1883" in text


def test_metrics_from_status() -> None:
    families = parse_prometheus(render_metrics(metrics_of(STATUS)))
    assert families["ironwatt_device_up"] == [
        'ironwatt_device_up{device="m1"} 1',
        'ironwatt_device_up{device="plc"} 0',
    ]
    assert families["ironwatt_buffer_backlog_messages"] == ["ironwatt_buffer_backlog_messages 12"]
    assert families["ironwatt_kernel_dropped_samples_total"] == [
        'ironwatt_kernel_dropped_samples_total{reason="out_of_order"} 2'
    ]
    assert families["ironwatt_uplink_connected"] == ["ironwatt_uplink_connected 0"]


def test_metrics_parse_with_prometheus_client_and_follow_its_conventions() -> None:
    """The page as Prometheus reads it (prometheus_client's own parser): units in names,
    `_total` on counters only, one help text per family, no `ironwatt_up` (the scraper's `up`
    is that), build info with the kernel, process memory and CPU, poll time per device, reloads
    by outcome, the outbox's oldest message."""
    from prometheus_client.parser import text_string_to_metric_families

    text = render_metrics(metrics_of(STATUS))
    families = {f.name: f for f in text_string_to_metric_families(text)}
    helps = [f.documentation for f in families.values()]
    assert len(helps) == len(set(helps)), "two families share a help text"
    # the parser strips counters' _total from the family name: every counter had it
    for line in text.splitlines():
        if line.startswith("# TYPE ") and line.endswith(" counter"):
            assert line.split()[2].endswith("_total"), line
        if line.startswith("# TYPE ") and line.endswith(" gauge"):
            assert not line.split()[2].endswith("_total"), line
    assert "ironwatt_up" not in families
    assert "ironwatt_uplink_published" not in families  # it counted acknowledgements
    build = families["ironwatt_build_info"].samples
    assert [(s.labels, s.value) for s in build] == [
        ({"version": "0.1.0", "kernel": "compiled", "python": "3.11.7"}, 1.0)
    ]
    assert families["process_resident_memory_bytes"].samples[0].value == 41_943_040
    assert families["process_cpu_seconds"].type == "counter"
    assert families["process_cpu_seconds"].samples[0].value == 12.5
    assert families["process_start_time_seconds"].samples[0].value == 1000.0
    poll = families["ironwatt_device_poll_duration_seconds"]
    assert poll.type == "summary"
    assert {(s.name, s.labels["device"], s.value) for s in poll.samples} == {
        ("ironwatt_device_poll_duration_seconds_sum", "m1", 0.25),
        ("ironwatt_device_poll_duration_seconds_count", "m1", 10.0),
    }  # the never-timed plc has none
    reloads = families["ironwatt_config_reloads"].samples
    assert {s.labels["result"]: s.value for s in reloads} == {"applied": 1.0, "refused": 2.0}
    assert families["ironwatt_buffer_oldest_age_seconds"].samples[0].value == 30.2
    # an empty outbox: its oldest age is null in /status, 0 here (never a vanishing series)
    empty = {**STATUS, "buffer": {**STATUS["buffer"], "backlog": 0, "oldest_age_s": None}}  # type: ignore[dict-item]
    again = {f.name: f for f in text_string_to_metric_families(render_metrics(metrics_of(empty)))}
    assert again["ironwatt_buffer_oldest_age_seconds"].samples[0].value == 0.0
    assert families["ironwatt_uplink_acknowledged"].samples[0].value == 27


def test_demo_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "demo.toml"
    path.write_text(demo_config(tmp_path, "mqtt://127.0.0.1:1", 5020, "opc.tcp://127.0.0.1:4840",
                                9108))  # fmt: skip
    cfg = load_config(path)
    assert [d.name for d in cfg.devices] == ["eaf-1", "mill-1", "aux-1", "bf-blower", "bf2-plc"]
    assert [g.name for g in cfg.groups] == [
        "blast-furnace-2", "converter-1", "eaf-1", "bar-mill", "works"
    ]  # fmt: skip
    assert [g.process for g in cfg.groups] == ["blast_furnace", "bof", "eaf", None, None]
    assert cfg.tariff is not None
    assert len(cfg.energy.shifts) == 3
    # without the PLC (--no-opcua): the meters' groups only, still a valid config
    path.write_text(demo_config(tmp_path, "mqtt://127.0.0.1:1", 5020, None, 9108))
    bare = load_config(path)
    assert [d.name for d in bare.devices] == ["eaf-1", "mill-1", "aux-1", "bf-blower"]
    assert [g.name for g in bare.groups] == ["eaf-1", "works"]


def test_demo_formats_messages() -> None:
    energy = (
        b'{"v":1,"seq":7,"replayed":false,"device":"meter-1","interval":"10s",'
        b'"start":"2026-11-29T06:15:00.000Z","end":"2026-11-29T06:15:10.000Z","revision":1,'
        b'"points":{"energy_import":{"kind":"counter","unit":"kWh","delta":0.1,"first":1000.0,'
        b'"last":1000.1,"coverage":1.0},"power_total":{"kind":"rate","unit":"kW","mean":36.0,'
        b'"integral":0.1,"integral_unit":"kWh"}}}'
    )
    text = format_message("ironwatt/s/gw/energy/10s/meter-1", energy)
    assert text.splitlines()[0] == "energy  10s meter-1 06:15:00-06:15:10 rev 1 [seq 7]"
    assert "energy_import    delta 0.100 kWh (first 1000.00, last 1000.10)" in text
    assert "power_total      mean 36.00 kW, integral 0.100 kWh" in text
    status = format_message("ironwatt/s/gw/status", b'{"state":"online","devices":2,"backlog":0}')
    assert status.startswith("status  online: 2 devices")
    event = format_message(
        "ironwatt/s/gw/event", b'{"seq":3,"type":"device_up","device":"m1","reason":"connected"}'
    )
    assert event == "event   device_up m1 (connected) [seq 3]"


def _modbus_at(name: str, address: int, max_rate: str = "") -> str:
    return f"""
[[devices]]
name = "{name}"
driver = "modbus"
host = "127.0.0.1"
port = 5020
unit = 1
  [[devices.points]]
  name = "e"
  address = {address}
  kind = "counter"
  unit = "kWh"
  {max_rate}
"""


def test_reload_keeps_unchanged_state_and_resets_changed_sources(tmp_path: Path) -> None:
    import time

    from gateway.daemon.energy_stage import EnergyStage

    old = _load(tmp_path, _modbus_at("a", 0) + _modbus_at("b", 0) + _modbus_at("c", 0))
    now = (time.time() // 10) * 10 + 1.0  # every sample below lies in one 10 s window
    stage = EnergyStage(old, now)
    batch = SampleBatch()
    for key in ("a.e", "b.e", "c.e"):
        batch.append(stage.index.id(key), now + 0.1, 100.0)
        batch.append(stage.index.id(key), now + 0.2, 101.0)
    stage.ingest(batch)
    ids = {k: stage.index.id(k) for k in ("a.e", "b.e", "c.e")}
    new = _load(
        tmp_path, _modbus_at("a", 0) + _modbus_at("b", 2) + _modbus_at("c", 0, "max_rate = 5.0"),
        "new.toml",
    )  # fmt: skip
    fresh, retuned = stage.reconfigure(new, now + 0.3)
    assert fresh == ["b.e"]
    assert retuned == ["c.e"]
    # A fresh point gets a new id (a late batch for the old source cannot land on it).
    assert stage.index.id("a.e") == ids["a.e"]
    assert stage.index.id("c.e") == ids["c.e"]
    assert stage.index.id("b.e") != ids["b.e"]
    # Kept points resume from their baseline: the window's counter starts at the first reading.
    later = SampleBatch()
    for key in ("a.e", "b.e", "c.e"):
        later.append(stage.index.id(key), now + 0.4, 102.0)
    stage.ingest(later)
    closed = stage.close_due(now + 60)
    firsts: dict[str, float] = {}
    for m in closed:  # in order: the window with the samples comes first
        assert isinstance(m.body, bytes)  # encoded as soon as the device window was whole
        body = json.loads(m.body)
        firsts.setdefault(body["device"], body["points"]["e"]["first"])
    assert firsts["a"] == firsts["c"] == 100.0  # the baseline from before the reload
    assert firsts["b"] == 102.0
