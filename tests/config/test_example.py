"""The documented example, the config objects drivers read, `check`'s summary and schema, speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from drivers.modbus.config import ModbusDevice
from drivers.opcua.config import OpcuaDevice
from gateway.cli.check import json_schema
from gateway.config.load import ConfigError, load_config, parse_config
from tests.config.support import CASES, REPO, check, stage

EXAMPLE = REPO / "docs" / "config.example.toml"
CONTRACT = REPO / "docs" / "config.md"

MINIMAL = """
[gateway]
id = "gw1"
site = "plant1"
timezone = "UTC"

[mqtt]
url = "mqtt://127.0.0.1:1883"
"""


def test_example_passes_check_with_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    run = check(EXAMPLE, capsys)
    assert run.status == 0, run.err
    assert run.err == ""
    out = run.out
    assert "OK (2 devices, 16 points, 1 group)" in out
    assert "bf2-sub-a at site plant1, time zone Asia/Shanghai" in out
    assert "mqtts://broker.plant.local:8883 as ironwatt-plant1-bf2-sub-a" in out
    assert "ironwatt/plant1/bf2-sub-a/energy/{1m|15m|1h|1d}/{device}" in out
    assert "ironwatt/plant1/bf2-sub-a/group/{1m|15m|1h|1d}/{group}" in out
    assert (
        "  blast-furnace-2: sub-a-main.energy_import (electricity, kWh), bf2-plc.gas_flow "
        "(natural_gas, m3/h)\n    production (intensity denominator): bf2-plc.hot_metal "
        "(product, t)" in out
    )
    assert "tariff   CNY per kWh, weekdays: peak 1.085 08:00-11:00 18:00-23:00;" in out
    assert "ironwatt/plant1/bf2-sub-a/status" in out
    assert "sub-a-main: modbus tcp 10.10.1.21:502 unit 1, poll 1s" in out
    assert "(13 from profile eastron-sdm630)" in out
    assert "bf2-plc: opcua opc.tcp://10.10.1.30:4840, subscribe every 500ms" in out
    assert "Basic256Sha256/SignAndEncrypt" in out
    assert "production (intensity denominator): bf2-plc.hot_metal" in out


def test_check_lists_points_on_request(capsys: pytest.CaptureFixture[str]) -> None:
    run = check(EXAMPLE, capsys, "--points")
    assert run.status == 0
    assert "- energy_export: input 74 float32 ABCD, counter kWh, electricity" in run.out
    assert "- gas_flow: nsu=urn:plant1:bf2;s=Utilities.NG.Flow, rate m3/h, natural_gas" in run.out


def _contract_example() -> str:
    text = CONTRACT.read_text(encoding="utf-8")
    return text.split("```toml\n", 1)[1].split("```", 1)[0]


def test_example_is_the_contract_example_with_test_files() -> None:
    """docs/config.example.toml differs from the contract's example only in the files it names."""
    contract = tomllib.loads(_contract_example())
    example = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    for table in (contract["mqtt"], contract["devices"][1]):
        del table["password_file"]
    contract["mqtt"]["password_env"] = "IRONWATT_MQTT_PASSWORD"
    contract["devices"][1]["password_env"] = "IRONWATT_PLC_PASSWORD"
    contract["mqtt"]["ca_file"] = "example/ca.pem"
    contract["devices"][1]["server_certificate"] = "example/bf2-plc.der"
    assert example == contract


def test_config_objects_as_drivers_see_them(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.path == EXAMPLE
    assert cfg.gateway.tz.key == "Asia/Shanghai"
    assert cfg.mqtt.client_id == "ironwatt-plant1-bf2-sub-a"
    assert cfg.mqtt.keepalive == 30.0
    assert cfg.mqtt.ca_file == REPO / "docs" / "example" / "ca.pem"  # relative to the file
    assert cfg.buffer.max_size == 512 << 20
    assert [(i.name, i.seconds) for i in cfg.energy.intervals] == [
        ("1m", 60),
        ("15m", 900),
        ("1h", 3600),
        ("1d", 86400),
    ]
    assert cfg.energy.demand_interval == 900.0
    electricity = cfg.energy.carriers["electricity"]
    assert (electricity.unit, electricity.kgce_per_unit, electricity.method) == (
        "kWh",
        0.1229,
        "equivalent",
    )
    assert cfg.energy.carriers["steam"].unit == "t"  # a default, not in the file
    assert cfg.tariff is not None
    assert [p.name for p in cfg.tariff.periods] == [
        "peak",
        "flat",
        "valley",
    ]
    meter, plc = cfg.devices
    assert isinstance(meter, ModbusDevice)
    assert isinstance(plc, OpcuaDevice)
    assert (meter.poll, meter.timeout, meter.unit, meter.retries) == (1.0, 0.5, 1, 2)
    own = meter.points[0]
    assert (own.name, own.address, own.type, own.rollover, own.max_rate) == (
        "energy_export",
        0x4A,
        "float32",
        100000000.0,
        50000.0,
    )
    resolved = meter.resolved_points()
    assert resolved is meter.resolved_points()  # merged once
    names = [p.name for p in resolved]
    assert names.count("energy_export") == 1
    assert "energy_import" in names
    assert resolved[-1] is own  # the device's own point overrides the profile's
    assert plc.interval == 0.5
    assert plc.points[1].max_gap == 10.0
    assert plc.points[1].integration == "hold"
    monkeypatch.setenv("IRONWATT_PLC_PASSWORD", "from-env")
    assert plc.password() == "from-env"
    assert cfg.device("bf2-plc") is plc
    with pytest.raises(KeyError, match="no device named 'nope'"):
        cfg.device("nope")


def test_secret_from_a_private_file(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n", encoding="utf-8")
    secret.chmod(0o600)
    cfg = parse_config(
        MINIMAL + 'username = "gw1"\npassword_file = "mqtt-password"\n', str(tmp_path / "x.toml")
    )
    assert cfg.mqtt.password_file == secret
    assert cfg.mqtt.password() == "s3cret"


def test_carrier_override_keeps_the_other_defaults() -> None:
    cfg = parse_config(
        MINIMAL
        + "[energy.carriers.electricity]\nkgco2e_per_unit = 0.581\n"
        + '[energy.carriers.hydrogen]\nunit = "kg"\nkgce_per_unit = 4.0\nkgco2e_per_unit = 0\n'
    )
    electricity = cfg.energy.carriers["electricity"]
    assert (electricity.kgce_per_unit, electricity.kgco2e_per_unit) == (0.1229, 0.581)
    assert electricity.source.startswith("config (kgco2e_per_unit); default: ")
    assert cfg.energy.carriers["hydrogen"].source == "config"


def test_a_point_key_in_a_typo_table_is_one_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL.replace("[mqtt]", "[mqqt]"), "x.toml")
    assert [(p.line, p.path) for p in caught.value.problems] == [(7, "mqqt")]
    assert "did you mean mqtt?" in caught.value.problems[0].message


def test_schema_command(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli.main import main

    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema == json_schema()
    assert schema["title"] == "ironwatt.toml"
    assert set(schema["required"]) == {"gateway", "mqtt"}
    assert "path" not in schema["properties"]
    defs = schema["$defs"]
    assert defs["MqttConfig"]["properties"]["keepalive"]["default"] == "30s"
    assert defs["MqttConfig"]["properties"]["keepalive"]["type"] == "string"
    assert defs["ModbusPoint"]["properties"]["address"]["maximum"] == 65535
    assert defs["ModbusPoint"]["additionalProperties"] is False
    assert defs["EnergyConfig"]["properties"]["intervals"]["default"] == ["1m", "15m", "1h", "1d"]
    assert "default" not in schema["properties"]["energy"]


def test_schema_names_every_key_of_the_example() -> None:
    """Every key the example writes is in the schema (editors would flag it otherwise)."""
    schema = json_schema()
    defs = schema["$defs"]

    def props(ref: str) -> dict[str, object]:
        return defs[ref]["properties"]  # type: ignore[no-any-return]

    example = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    for section in ("gateway", "mqtt", "http", "buffer", "tariff"):
        model = section.capitalize() + "Config"
        assert set(example[section]) <= set(props(model)), section
    assert set(example["devices"][0]) <= set(props("ModbusDevice"))
    assert set(example["devices"][1]) <= set(props("OpcuaDevice"))
    assert set(example["devices"][0]["points"][0]) <= set(props("ModbusPoint"))
    assert set(example["groups"][0]) <= set(props("GroupConfig"))


def _big_config(devices: int, points: int) -> str:
    lines = [MINIMAL]
    for d in range(devices):
        lines.append(
            f'[[devices]]\nname = "meter-{d}"\ndriver = "modbus"\n'
            f'host = "10.0.{d // 250}.{d % 250}"\n'
            f'poll = "1s"\nprofile = "eastron-sdm630"\n'
        )
        for p in range(points):
            lines.append(
                f'  [[devices.points]]\n  name = "p{p}"\n  function = "holding"\n'
                f'  address = {100 + 2 * p}\n  type = "uint32"\n  kind = "counter"\n'
                f'  unit = "Wh"\n  carrier = "electricity"\n  rollover = "auto"\n'
            )
    lines.append(
        '[[groups]]\nname = "all"\nmembers = ['
        + ", ".join(f'"meter-{d}.p0"' for d in range(devices))
        + "]\n"
    )
    return "".join(lines)


def test_check_of_200_devices_of_40_points(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A plant-sized file is accepted whole (its speed, ~0.4 s, is not a unit test's business).
    path = tmp_path / "big.toml"
    path.write_text(_big_config(200, 40), encoding="utf-8")
    run = check(path, capsys)
    assert run.status == 0, run.err[:2000]
    assert "OK (200 devices, 10800 points, 1 group)" in run.out


def test_installed_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "ironwatt"
    assert script.exists(), "the project is installed with its console script (pip install -e .)"
    config = stage(CASES / "address_out_of_range.toml", tmp_path)
    result = subprocess.run(
        [str(script), "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"{config}:16: devices[0].points[0].address: 70000 is out of range (0..65535)\n"
        "1 problem: the configuration was refused\n"
    )


def test_reference_documents_every_key() -> None:
    """docs/config.md names every key the model accepts."""
    from pydantic import BaseModel

    from gateway.config import model as config_model

    text = CONTRACT.read_text(encoding="utf-8")
    models = [
        m
        for m in vars(config_model).values()
        if isinstance(m, type)
        and issubclass(m, BaseModel)
        and m.__module__ == config_model.__name__
    ]
    undocumented = {
        f"{m.__name__}.{name}"
        for m in models
        if m.__name__ not in ("Interval", "Config")
        for name in m.model_fields
        if f"`{name}`" not in text
    }
    assert undocumented == set()


def test_summary_of_a_serial_device_with_telemetry(capsys: pytest.CaptureFixture[str]) -> None:
    run = check(REPO / "tests" / "config" / "files" / "serial-telemetry.toml", capsys, "--points")
    assert run.status == 0, run.err
    out = run.out
    assert "meter-rtu [disabled]: modbus rtu /dev/ttyUSB0 19200 8E1 unit 7" in out
    assert "CT 200 PT 1" in out
    assert "ironwatt/plant1/gw1/telemetry/{device}" in out
    assert "heartbeat 5m" in out
    assert "drain 200 msg/s" in out
    assert "- energy: holding 0 uint32 ABCD, counter Wh, electricity, x0.001" in out
    assert "http     off" in out
    assert "groups\n  (none)" in out


def _profiles() -> list[str]:
    from drivers.modbus import profiles

    return profiles.available()


@pytest.mark.parametrize("profile", _profiles())
def test_every_built_in_profile_passes_check(profile: str) -> None:
    """Profile points obey the same rules as a device's own (and may be group members)."""
    cfg = parse_config(
        MINIMAL
        + f'[[devices]]\nname = "m"\ndriver = "modbus"\nhost = "h"\nprofile = "{profile}"\n'
        + '[[groups]]\nname = "g"\nmembers = ["m.energy_import"]\n',
        "x.toml",
    )
    points = cfg.devices[0].resolved_points()
    assert len({p.name for p in points}) == len(points)
    assert "energy_import" in {p.name for p in points}


def test_a_broken_profile_is_a_problem_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    from drivers.modbus import profiles

    broken = {
        "defaults": {"function": "input", "type": "float32"},
        "points": [
            {"name": "ok", "address": 0},
            {"name": "past_the_end", "address": 65535},
            {"name": "wrong", "address": "zero"},
        ],
    }
    monkeypatch.setattr(profiles, "available", lambda: ["broken-meter"])
    monkeypatch.setattr(profiles, "load", lambda name: broken)
    text = MINIMAL + '[[devices]]\nname = "m"\ndriver = "modbus"\nhost = "h"\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text + 'profile = "broken-meter"\n', "x.toml")
    (problem,) = caught.value.problems
    assert (problem.line, problem.path) == (13, "devices[0].profile")
    assert problem.message == (
        'profile "broken-meter" cannot be used: point wrong: address: Input should be a valid '
        'integer (got "zero") (a bug in the profile file: report it)'
    )
    broken["points"].pop()
    with pytest.raises(ConfigError) as caught:
        parse_config(text + 'profile = "broken-meter"\n', "x.toml")
    (problem,) = caught.value.problems
    assert problem.message == (
        'profile "broken-meter", point past_the_end: float32 needs 2 registers: 65535..65536 '
        "runs past 65535 (the last register)"
    )
