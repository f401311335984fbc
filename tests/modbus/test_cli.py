"""The technician's tools against the simulated plant: read, scan, probe, profiles, plan text."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from drivers.modbus import describe_plan
from gateway.cli.modbus import main


async def run_cli(*argv: str) -> int:
    # The handlers run their own event loop; the plant keeps serving on the test's loop.
    return await asyncio.to_thread(main, list(argv))


@pytest.mark.asyncio
async def test_read_prints_raw_hex_and_value(plant: Any, capsys: Any) -> None:
    plant.meter(2).set_value("holding", 40, 1234.5, "float32", "CDAB")
    target = f"127.0.0.1:{plant.port}"
    code = await run_cli(
        "modbus",
        "read",
        target,
        "--unit",
        "2",
        "--address",
        "40",
        "--type",
        "float32",
        "--order",
        "CDAB",
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "5000 449A" in out
    assert "1234.5" in out
    code = await run_cli(
        "modbus",
        "read",
        target,
        "--unit",
        "1",
        "--function",
        "input",
        "--address",
        "0",
        "--type",
        "float32",
        "--count",
        "3",
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if "float32" in line]
    assert code == 0
    assert len(lines) == 3
    assert all(220 < float(line.split()[-1]) < 240 for line in lines)


@pytest.mark.asyncio
async def test_read_as_json_and_a_register_number_warning(plant: Any, capsys: Any) -> None:
    """--json: each value with its address and registers, NaN as null and not_available; a
    40001-style address gets a warning naming the wire address, and is read all the same."""
    meter = plant.meter(2)
    meter.set_value("holding", 40, 1234.5, "float32", "CDAB")
    meter.set_value("holding", 42, float("nan"), "float32", "CDAB")
    target = f"127.0.0.1:{plant.port}"
    code = await run_cli("modbus", "read", target, "--unit", "2", "--address", "40", "--type",
                         "float32", "--order", "CDAB", "--count", "2", "--json")  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(captured.out)
    assert (doc["unit"], doc["function"], doc["type"], doc["order"]) == (2, "holding", "float32",
                                                                          "CDAB")  # fmt: skip
    assert doc["values"][0] == {
        "address": 40, "registers": [0x5000, 0x449A], "value": 1234.5, "not_available": False
    }  # fmt: skip
    assert doc["values"][1]["value"] is None
    assert doc["values"][1]["not_available"] is True
    meter.set_registers("holding", 40073, [7])
    code = await run_cli("modbus", "read", target, "--unit", "2", "--address", "40073")
    captured = capsys.readouterr()
    assert code == 0
    assert "looks like a register number" in captured.err
    assert "--address 72" in captured.err
    assert captured.out.splitlines()[-1].split()[-1] == "7"


@pytest.mark.asyncio
async def test_read_reports_an_exception_with_the_address(plant: Any, capsys: Any) -> None:
    code = await run_cli(
        "modbus",
        "read",
        f"127.0.0.1:{plant.port}",
        "--unit",
        "1",
        "--function",
        "input",
        "--address",
        "5000",
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "unit 1 input 5000+1" in err
    assert "exception 2 (illegal data address)" in err


@pytest.mark.asyncio
async def test_scan_finds_the_units_that_answer(plant: Any, capsys: Any) -> None:
    code = await run_cli(
        "modbus", "scan", f"127.0.0.1:{plant.port}", "--units", "1-6", "--timeout", "0.2"
    )
    captured = capsys.readouterr()
    assert code == 0
    assert "unit   1: answers" in captured.out
    assert "unit   2: answers (exception 2)" in captured.out  # a blank unit still proves itself
    assert "unit   3" not in captured.out  # silent
    # Not a terminal: no redrawn bar, one summary line.
    assert "\r" not in captured.err
    assert f"127.0.0.1:{plant.port}: 6/6 unit ids, 2 found" in captured.err


@pytest.mark.asyncio
async def test_probe_reads_every_point_of_a_configured_device(
    plant: Any, capsys: Any, tmp_path: Path
) -> None:
    config = tmp_path / "ironwatt.toml"
    config.write_text(
        f"""
[gateway]
id = "gw1"
site = "s1"
data_dir = "{tmp_path}"
[mqtt]
url = "mqtt://127.0.0.1:1"
[[devices]]
name = "m1"
driver = "modbus"
host = "127.0.0.1"
port = {plant.port}
unit = 1
profile = "eastron-sdm630"
  [[devices.points]]
  name = "status_bit"
  function = "input"
  address = 100
  bit = 2
""",
        encoding="utf-8",
    )
    plant.meter(1).set_value("input", 100, 0b100, "uint16")
    code = await run_cli("modbus", "probe", "-c", str(config), "--device", "m1")
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].split() == ["name", "address", "raw", "value", "unit", "quality"]
    rows = {line.split()[0]: line for line in out[1:]}
    assert len(rows) == 15
    assert "input 72 float32 ABCD" in rows["energy_import"]
    assert "kWh" in rows["energy_import"]
    assert rows["status_bit"].split()[-2:] == ["1", "good"]
    assert all(line.rstrip().endswith("good") for line in rows.values())


def test_profiles_list_and_show(capsys: Any) -> None:
    assert main(["profiles", "list"]) == 0
    out = capsys.readouterr().out
    assert "carlo-gavazzi-em24" in out
    assert "Carlo Gavazzi" in out
    assert main(["profiles", "show", "carlo-gavazzi-em24"]) == 0
    out = capsys.readouterr().out
    assert "int32 CDAB" in out
    assert "UNCERTAIN" in out
    assert main(["profiles", "show", "nope"]) == 2


def test_describe_plan_lists_blocks_and_requests(device_factory: Any) -> None:
    device = device_factory("m", port=502, profile="abb-b2x", max_registers_per_request=32)
    lines = describe_plan(device)
    assert lines[0].startswith("read plan: 5 request(s) per poll for 20 point(s)")
    assert "holding 23296..23323 (28 registers" in lines[3]


def test_profiles_as_json(capsys: Any) -> None:
    assert main(["profiles", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    sdm = next(p for p in listed if p["name"] == "eastron-sdm630")
    assert (sdm["vendor"], sdm["model"], sdm["points"]) == ("Eastron", "SDM630", 14)
    assert main(["profiles", "show", "eastron-sdm630", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    energy = next(p for p in doc["points"] if p["name"] == "energy_import")
    # the profile's defaults applied: what the driver reads
    assert (energy["function"], energy["address"], energy["type"], energy["kind"]) == (
        "input", 72, "float32", "counter"
    )  # fmt: skip
    assert doc["sources"]
    assert main(["profiles", "show", "no-such-meter", "--json"]) == 2


def test_profiles_show_json_keeps_the_points_notes(capsys: Any) -> None:
    from drivers.modbus import profiles

    raw = profiles.load("janitza-umg96rm")
    noted = {p["name"]: p["note"] for p in raw["points"] if p.get("note")}
    assert noted  # the profile flags some of its points
    assert main(["profiles", "show", "janitza-umg96rm", "--json"]) == 0
    shown = {p["name"]: p for p in json.loads(capsys.readouterr().out)["points"]}
    for name, note in noted.items():
        assert shown[name]["note"] == note
    assert all("offset" in p for p in shown.values())  # every default filled
