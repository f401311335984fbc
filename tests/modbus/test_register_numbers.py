"""Modicon register numbers (30001.., 40001..) where the config wants 0-based wire addresses:
a warning that names the wire address, in `ironwatt check` and `ironwatt modbus read`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivers.modbus.describe import register_number_hint
from tests.config.support import check


@pytest.mark.parametrize(
    ("function", "address", "wire"),
    [
        ("holding", 40001, 0),
        ("holding", 40073, 72),
        ("holding", 49999, 9998),
        ("input", 30001, 0),
        ("input", 30053, 52),
        ("holding", 400001, 0),  # six digits
        ("holding", 465536, 65535),
        ("input", 300101, 100),
    ],
)
def test_a_register_number_gets_its_wire_address(function: str, address: int, wire: int) -> None:
    hint = register_number_hint(function, address)
    assert hint is not None
    assert f"address = {wire};" in hint
    assert f"register {address}" in hint


@pytest.mark.parametrize(
    ("function", "address"),
    [
        ("holding", 40000),  # just below the numbers
        ("holding", 3059),  # a Schneider wire address
        ("holding", 23340),  # a PAC3200's
        ("input", 40001),  # a holding register's number is not an input one's
        ("holding", 30001),
        ("coil", 40001),  # coils and discretes have 0xxxx/1xxxx numbers: not guessed
        ("discrete", 10001),
    ],
)
def test_wire_addresses_are_left_alone(function: str, address: int) -> None:
    assert register_number_hint(function, address) is None


def test_the_command_line_says_it_as_an_option() -> None:
    hint = register_number_hint("holding", 40073, where="cli")
    assert hint is not None
    assert "--address 72;" in hint
    assert "(4xxxx notation)" in hint
    six = register_number_hint("holding", 400073, where="cli")
    assert six is not None
    assert "(4xxxxx notation)" in six


def test_check_warns_and_still_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "meters.toml"
    config.write_text(
        '[gateway]\nid = "gw1"\nsite = "plant1"\ntimezone = "UTC"\n'
        '[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n'
        '[[devices]]\nname = "meter1"\ndriver = "modbus"\nhost = "127.0.0.1"\n'
        '  [[devices.points]]\n  name = "energy"\n  address = 40073\n  type = "float32"\n'
        '  unit = "kWh"\n  kind = "counter"\n'
        '  [[devices.points]]\n  name = "power"\n  address = 52\n  type = "float32"\n'
        '  unit = "kW"\n  kind = "rate"\n',
        encoding="utf-8",
    )
    run = check(config, capsys)
    assert run.status == 0, run.out + run.err
    warnings = [line.strip() for line in run.out.splitlines() if "warning:" in line]
    assert len(warnings) == 1, run.out
    assert warnings[0].startswith("warning: point energy: holding address 40073 looks like")
    assert "address = 72;" in warnings[0]
    run = check(config, capsys, "--json")
    assert run.status == 0
    device = json.loads(run.out)["devices"][0]
    assert len(device["warnings"]) == 1
    assert device["warnings"][0].startswith("point energy: holding address 40073")


def test_a_device_full_of_register_numbers_gets_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A SunSpec inverter lives at 40000 and up: one line for the device, not one a point."""
    points = "".join(
        f'  [[devices.points]]\n  name = "p{i}"\n  address = {40070 + 2 * i}\n  type = "float32"\n'
        for i in range(6)
    )
    config = tmp_path / "inverter.toml"
    config.write_text(
        '[gateway]\nid = "gw1"\nsite = "plant1"\ntimezone = "UTC"\n'
        '[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n'
        '[[devices]]\nname = "inverter"\ndriver = "modbus"\nhost = "127.0.0.1"\n' + points,
        encoding="utf-8",
    )
    run = check(config, capsys)
    assert run.status == 0, run.err
    warnings = [line.strip() for line in run.out.splitlines() if "warning:" in line]
    assert len(warnings) == 1, run.out
    assert "(5 more point(s) too: p1 40072, p2 40074, p3 40076, ...)" in warnings[0]
