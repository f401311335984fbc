"""The reload plan as a pure function of two configs (no loop, no driver), and the status text."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.daemon.reload import RESTART_KEYS, plan_reload
from gateway.daemon.status import health_verdict, status_line
from tests.daemon.test_runtime_units import BASE, _load, _modbus, _opcua

LINK_A = "modbus/tcp:127.0.0.1:5020"
LINK_C = "modbus/tcp:127.0.0.1:5021"


def test_an_unchanged_config_plans_nothing(tmp_path: Path) -> None:
    body = _modbus("a", 5020, 1) + _opcua("plc")
    plan = plan_reload(_load(tmp_path, body), _load(tmp_path, body, "same.toml"))
    assert (plan.added, plan.removed, plan.changed) == ([], [], [])
    assert (plan.stop, plan.start, plan.retune) == ([], [], [])
    assert plan.restart_needed == []
    assert plan.warnings == ()
    assert not plan.groups_changed
    assert plan.note == "added none, removed none, changed none"
    assert set(plan.units) == {LINK_A, "opcua/plc"}


def test_units_stop_start_and_retune(tmp_path: Path) -> None:
    old = _load(tmp_path, _modbus("a", 5020, 1) + _modbus("b", 5020, 2) + _opcua("plc"))
    new = _load(
        tmp_path, _modbus("a", 5020, 1) + _modbus("c", 5021, 1) + _modbus("d", 5020, 3), "n.toml"
    )
    plan = plan_reload(old, new)
    assert (plan.added, plan.removed, plan.changed) == (["c", "d"], ["b", "plc"], [])
    # The shared link keeps running with its new device list; the PLC goes; a new link starts.
    assert plan.retune == [LINK_A]
    assert plan.stop == ["opcua/plc"]
    assert plan.start == [LINK_C]
    assert plan.units[LINK_A].names == ("a", "d")
    body = plan.event(fresh=[], retuned=[])
    assert body == {
        "type": "config_reloaded", "reason": plan.note, "added": ["c", "d"],
        "removed": ["b", "plc"], "changed": [], "groups_changed": False,
    }  # fmt: skip


def test_a_changed_device_retunes_its_unit(tmp_path: Path) -> None:
    old = _load(tmp_path, _modbus("a", 5020, 1) + _modbus("c", 5021, 1))
    new = _load(tmp_path, _modbus("a", 5020, 1) + _modbus("c", 5021, 1, poll="2s"), "n.toml")
    plan = plan_reload(old, new)
    assert plan.changed == ["c"]
    assert plan.retune == [LINK_C]
    assert plan.stop == []
    assert plan.start == []


@pytest.mark.parametrize(
    ("edit", "section"),
    [
        (('timezone = "UTC"', 'timezone = "Asia/Shanghai"'), "gateway"),
        (('url = "mqtt://127.0.0.1:1"', 'url = "mqtt://127.0.0.1:2"'), "mqtt"),
        (('intervals = ["10s"]', 'intervals = ["10s", "1m"]'), "energy"),
    ],
)
def test_sections_that_wait_for_a_restart(
    tmp_path: Path, edit: tuple[str, str], section: str
) -> None:
    assert section in RESTART_KEYS
    old = _load(tmp_path, _modbus("a", 5020, 1))
    path = tmp_path / "n.toml"
    text = (BASE.format(data=tmp_path / "data") + _modbus("a", 5020, 1)).replace(*edit)
    path.write_text(text)
    from gateway.config.load import load_config

    plan = plan_reload(old, load_config(path))
    assert plan.restart_needed == [section]
    assert plan.warnings == (f"changes to [{section}] take effect at the next restart",)
    assert plan.event([], [])["restart_needed"] == [section]


def test_the_event_names_fresh_and_retuned_points(tmp_path: Path) -> None:
    cfg = _load(tmp_path, _modbus("a", 5020, 1))
    body = plan_reload(cfg, cfg).event(fresh=["a.e"], retuned=["a.p"])
    assert body["fresh_points"] == ["a.e"]
    assert body["retuned_points"] == ["a.p"]
    assert "start fresh" in body["note"]


def test_status_line_and_health_verdict() -> None:
    devices = {"a": {"state": "up"}, "b": {"state": "down"}, "c": {"state": "starting"}}
    assert status_line(devices, 12, True, None) == "1/3 devices up, backlog 12, uplink connected"
    assert status_line({}, 0, False, "c.toml:3: bad") == (
        "0/0 devices up, backlog 0, uplink disconnected; last reload refused: c.toml:3: bad"
    )
    assert health_verdict(0.5, True, None) == (True, "ok")
    assert health_verdict(0.5, False, None) == (False, "database not open")
    assert health_verdict(11.0, True, None) == (False, "event loop stalled for 11s")
    assert health_verdict(0.5, True, "disk_full") == (False, "database not writable: disk_full")
    assert health_verdict(0.5, True, "near_cap") == (True, "ok")  # short of a failure: healthy
