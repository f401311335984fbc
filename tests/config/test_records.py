"""The daemon's config: validated in a child process, kept as records, never pydantic.

Each test runs the real worker (`python -m gateway.config.worker`) and compares what the daemon
gets with what the in-process loader (`ironwatt check`'s) gives for the same file.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from gateway.config.load import ConfigError, load_config
from gateway.config.records import Record, load_config_isolated
from gateway.daemon.reload import diff_devices
from gateway.errors import ConfigWorkerError
from gateway.sim.plant import demo_config
from tests.config.support import CASES, REPO, stage
from tests.config.test_example import MINIMAL

EXAMPLE = REPO / "docs" / "config.example.toml"

TARIFF_AND_PROFILES = """
[gateway]
id = "gw1"
site = "plant1"
timezone = "Asia/Shanghai"

[mqtt]
url = "mqtt://127.0.0.1:1883"
username = "gw1"
password_env = "IRONWATT_TEST_RECORDS_PASSWORD"

[energy]
intervals = ["15m", "1h"]

[tariff]
currency = "CNY"
periods = [
  { name = "peak", price = 1.2, hours = ["08:00-22:00"] },
  { name = "flat", price = 0.7, hours = ["22:00-08:00"] },
]
holidays = ["2026-10-01"]

[[devices]]
name = "m1"
driver = "modbus"
host = "127.0.0.1"
profile = "eastron-sdm630"
ct_ratio = 40

  [[devices.points]]
  name = "energy_import"
  function = "input"
  address = 342
  type = "float32"
  kind = "counter"
  unit = "kWh"
  carrier = "electricity"

[[devices]]
name = "m2"
driver = "modbus"
host = "127.0.0.1"
unit = 2
profile = "acrel-adl400"
"""


def _equal(record: Any, model: Any) -> None:
    """Same fields, same values, all the way down (records dump like models)."""
    assert record.model_dump() == model.model_dump()


def _example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IRONWATT_MQTT_PASSWORD", "mqtt-secret")
    monkeypatch.setenv("IRONWATT_PLC_PASSWORD", "plc-secret")
    monkeypatch.chdir(tmp_path)
    return EXAMPLE


def _configs(tmp_path: Path) -> dict[str, Path]:
    demo = tmp_path / "demo.toml"
    demo.write_text(
        demo_config(tmp_path, "mqtt://127.0.0.1:1883", 5020, "opc.tcp://127.0.0.1:4840", 9108),
        encoding="utf-8",
    )
    tariff = tmp_path / "tariff.toml"
    tariff.write_text(TARIFF_AND_PROFILES, encoding="utf-8")
    return {"demo": demo, "tariff": tariff}


@pytest.mark.parametrize("name", ["example", "demo", "tariff"])
def test_records_carry_exactly_what_the_models_do(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IRONWATT_TEST_RECORDS_PASSWORD", "pw")
    path = _example(tmp_path, monkeypatch) if name == "example" else _configs(tmp_path)[name]
    model = load_config(path)
    record = load_config_isolated(path)
    _equal(record, model)
    assert record.mqtt_client_id == model.mqtt_client_id
    assert record.gateway.tz == model.gateway.tz
    assert record.mqtt.password() == model.mqtt.password()
    assert record.path == model.path
    assert record.path.is_absolute()
    assert len(record.devices) == len(model.devices) > 0
    for rec_dev, dev in zip(record.devices, model.devices, strict=True):
        assert record.device(dev.name) is rec_dev
        assert type(rec_dev).__name__ == type(dev).__name__
        # Profile points merged by the worker, in the loader's order, own points last.
        assert [p.model_dump() for p in rec_dev.resolved_points()] == [
            p.model_dump() for p in dev.resolved_points()
        ]
        if dev.driver == "modbus":
            assert [p.words for p in rec_dev.resolved_points()] == [
                p.words for p in dev.resolved_points()
            ]
        else:
            assert rec_dev.password() == dev.password()
    with pytest.raises(KeyError, match="no device named 'nope'"):
        record.device("nope")


def test_a_profile_device_shares_its_own_points_and_interns_strings(tmp_path: Path) -> None:
    cfg = load_config_isolated(_configs(tmp_path)["tariff"])
    m1 = cfg.device("m1")
    merged = m1.resolved_points()
    assert len(merged) > len(m1.points) == 1
    # The own point overrides the profile's by name and is the same object, not a copy.
    assert merged[-1] is m1.points[0]
    assert [p.name for p in merged].count("energy_import") == 1
    # One string object however many points name it: 8,000 points, one "kWh".
    units = [p.unit for d in cfg.devices for p in d.resolved_points() if p.unit == "kWh"]
    assert len(units) > 2
    assert all(u is units[0] for u in units)


def test_equal_point_definitions_are_one_record_exactly_equal_ones_only(tmp_path: Path) -> None:
    """200 meters with the same points hold one record per point definition, not 200; a
    definition that differs in anything, even the sign of a zero, keeps its own."""

    def meter(name: str, offset: str) -> str:
        return textwrap.dedent(f"""
            [[devices]]
            name = "{name}"
            driver = "modbus"
            host = "127.0.0.1"
              [[devices.points]]
              name = "power"
              address = 0
              type = "float32"
              unit = "kW"
              kind = "rate"
              offset = {offset}
            """)

    head = MINIMAL + meter("a", "0.0") + meter("b", "0.0") + meter("c", "-0.0")
    path = tmp_path / "same.toml"
    path.write_text(head, encoding="utf-8")
    cfg = load_config_isolated(path)
    a, b, c = (cfg.device(n).points[0] for n in "abc")
    assert a is b
    assert c is not a
    assert math.copysign(1.0, c.offset) == -1.0
    assert a.model_dump() == load_config(path).device("a").points[0].model_dump()


def test_records_are_read_only_and_equal_by_value(tmp_path: Path) -> None:
    path = _configs(tmp_path)["tariff"]
    a, b = load_config_isolated(path), load_config_isolated(path)
    assert isinstance(a, Record)
    assert a == b
    assert a is not b
    assert a.devices[0] == b.devices[0]
    assert hash(a.devices[0].points[0]) == hash(b.devices[0].points[0])
    assert a.devices[0] != a.devices[1]
    with pytest.raises(AttributeError, match="read-only"):
        a.gateway.id = "other"  # type: ignore[misc]
    # What the reload compares: an unchanged file gives no added/removed/changed device.
    assert diff_devices(a, b) == ([], [], [])
    text = path.read_text(encoding="utf-8").replace("ct_ratio = 40", "ct_ratio = 60")
    path.write_text(text, encoding="utf-8")
    assert diff_devices(a, load_config_isolated(path)) == ([], [], ["m1"])


@pytest.mark.parametrize(
    "case", ["tariff_inline_tables", "duplicate_point", "address_out_of_range", "bad_duration"]
)
def test_a_refused_file_gives_the_same_report(case: str, tmp_path: Path) -> None:
    path = stage(CASES / f"{case}.toml", tmp_path)
    with pytest.raises(ConfigError) as direct:
        load_config(path)
    with pytest.raises(ConfigError) as isolated:
        load_config_isolated(path)
    assert isolated.value.report() == direct.value.report()
    assert isolated.value.file == str(path)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config_isolated(tmp_path / "absent.toml")


def test_a_worker_that_dies_is_reported_not_unpickled(tmp_path: Path) -> None:
    def dying(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        # The real interpreter, killed the way an out-of-memory kill would end the worker.
        return subprocess.run(
            [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
            **kwargs,
        )

    with pytest.raises(ConfigWorkerError, match=r"config worker .* failed with exit status -9"):
        load_config_isolated(_configs(tmp_path)["demo"], run=dying)


def test_the_daemon_never_imports_pydantic(tmp_path: Path) -> None:
    """`ironwatt run`'s imports and config, in a fresh interpreter: no pydantic, no asyncua,
    no sqlite-utils (a database at the current schema needs no migration)."""
    path = _configs(tmp_path)["demo"]
    script = textwrap.dedent(f"""
        import sys
        from gateway.cli.main import _daemon_command, build_parser
        build_parser(_daemon_command(["--log-level", "error", "run", "-c", "x.toml"]))
        import gateway.daemon.lifecycle, drivers.modbus.driver
        from gateway.config.records import load_config_isolated
        cfg = load_config_isolated({str(path)!r})
        assert cfg.devices, cfg
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[0] in ("pydantic", "pydantic_core", "asyncua",
                                               "sqlite_utils")
                        or m in ("gateway.config.load", "gateway.config.model", "gateway.cli.opcua",
                                 "drivers.opcua.security"))
        print(loaded)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "only"),
    [
        (["run", "-c", "x.toml"], "run"),
        (["--log-level", "error", "run"], "run"),
        (["check", "-c", "run"], None),
        (["--log-level", "run"], None),  # "run" is the option's value here: the full parser
        ([], None),
    ],
)
def test_only_the_daemon_gets_the_short_parser(
    argv: list[str], only: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli.main import _daemon_command, build_parser

    assert _daemon_command(argv) == only
    parser = build_parser(only)
    assert parser.parse_args(["run", "-c", "x.toml"]).command == "run"
    if only is None:
        assert parser.parse_args(["check", "-c", "x.toml"]).command == "check"
    else:
        with pytest.raises(SystemExit):
            parser.parse_args(["check", "-c", "x.toml"])
        assert "invalid choice: 'check'" in capsys.readouterr().err
