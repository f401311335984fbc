"""`ironwatt opcua browse|read|trust` against the simulated PLC, and the `check` description."""

from __future__ import annotations

import argparse
import io
import json
import tomllib
from pathlib import Path

import pytest

from drivers.opcua.security import fingerprint
from gateway.cli.opcua import describe_device, register
from tests.opcua.conftest import NSU, PASSWORD, PlcProcess, make_cert, make_device, point


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="ironwatt")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_browse_shows_tree_types_values_and_toml(
    plc: PlcProcess, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _err = run_cli(["opcua", "browse", plc.endpoint, "--depth", "4"], capsys)
    assert code == 0
    assert "Server  i=2253  (skipped" in out
    assert "BF2  nsu=urn:plant1:bf2;s=BF2  (Object)" in out
    assert "HotMetalTons  nsu=urn:plant1:bf2;s=Production.HotMetalTons  Double = 125000.0" in out
    assert "Flow  nsu=urn:plant1:bf2;s=Utilities.NG.Flow  Float = 850.0" in out
    assert "Name  nsu=urn:plant1:bf2;s=Info.Name  String = 'Blast furnace 2'" in out

    code, out, _err = run_cli(
        ["opcua", "browse", plc.endpoint, "--node", NSU + "Production/", "--toml"],
        capsys,
    )  # the folder's own string id ends with "/"
    assert code == 0
    snippet = tomllib.loads(out)["devices"]["points"]
    assert {p["node"] for p in snippet} == {
        NSU + "Production.HotMetalTons",
        NSU + "Production.Pieces",
        NSU + "Production.ConverterSteelTons",
        NSU + "Production.EafSteelTons",
        NSU + "Production.RolledTons",
    }
    assert {p["name"] for p in snippet} == {
        "hot_metal_tons", "pieces", "converter_steel_tons", "eaf_steel_tons", "rolled_tons"
    }  # fmt: skip
    # The snippet is valid config as is.
    make_device(plc.endpoint, snippet)
    # Names are snake_case, with a unit's capitals kept together (kW -> kw, not k_w).
    code, out, _err = run_cli(
        ["opcua", "browse", plc.endpoint, "--node", NSU + "Utilities/", "--toml"], capsys
    )
    assert code == 0
    assert {p["name"] for p in tomllib.loads(out)["devices"]["points"]} >= {"ng_flow", "power_kw"}


def test_browse_unknown_start_namespace_fails_clearly(
    plc: PlcProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = run_cli(["opcua", "browse", plc.endpoint, "--node", "nsu=urn:x;s=A"], capsys)
    assert code == 1
    assert "urn:x" in err
    assert "NamespaceArray" in err
    code, _out, err = run_cli(["opcua", "browse", plc.endpoint, "--node", NSU + "Nope"], capsys)
    assert code == 1
    assert "BadNodeIdUnknown" in err
    assert "Nope" in err


def test_read_values_and_a_bad_node(plc: PlcProcess, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["opcua", "read", plc.endpoint, NSU + "Types.Int16", f"ns={plc.ns_index};s=Types.Float"]
    code, out, _err = run_cli(argv, capsys)
    assert code == 0
    assert f"{NSU}Types.Int16  Int16 = -1234  Good" in out
    assert "Float = 1.5  Good" in out
    code, out, _err = run_cli(["opcua", "read", plc.endpoint, NSU + "Nope"], capsys)
    assert code == 1
    assert "BadNodeIdUnknown" in out


def test_read_as_json(plc: PlcProcess, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["opcua", "read", plc.endpoint, NSU + "Types.Int16", NSU + "Types.Float", NSU + "Nope",
            "ns=2;Types.Float", "--json"]  # fmt: skip
    code, out, _err = run_cli(argv, capsys)
    assert code == 1  # a node is unknown, one does not parse
    rows = json.loads(out)
    assert [r["node"] for r in rows] == argv[3:-1]
    assert {k: rows[0][k] for k in ("type", "value", "status")} == {
        "type": "Int16", "value": -1234, "status": "Good"
    }  # fmt: skip
    assert rows[0]["source"] is None or rows[0]["source"].startswith("20")
    assert rows[1]["value"] == 1.5
    assert rows[2]["status"] == "BadNodeIdUnknown"
    assert rows[2]["value"] is None
    assert rows[3]["type"] is None
    # a time, read as text and as JSON: repr as ever on the line, ISO 8601 in JSON
    code, out, _err = run_cli(["opcua", "read", plc.endpoint, "i=2258"], capsys)
    assert code == 0
    assert "UtcTime = datetime.datetime(" in out
    code, out, _err = run_cli(["opcua", "read", plc.endpoint, "i=2258", "--json"], capsys)
    assert code == 0
    assert json.loads(out)[0]["value"].startswith("20")
    assert "identifier must start with i=, s=, g= or b=" in rows[3]["error"]


def test_connection_refused_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.sim.ports import free_port

    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    code, _out, err = run_cli(["opcua", "read", endpoint, "i=2258", "--timeout", "2"], capsys)
    assert code == 1
    assert err.startswith("error: ")
    assert endpoint in err
    assert "Traceback" not in err


def test_trust_shows_fingerprint_and_saves_after_confirmation(
    secure_plc: PlcProcess,
    pinned: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plc = secure_plc
    server_der = pinned.read_bytes()
    out = tmp_path / "pki" / "bf2.der"
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    code, text, _err = run_cli(["opcua", "trust", plc.endpoint, "--out", str(out)], capsys)
    assert code == 1
    assert not out.exists()
    assert f"SHA-256 fingerprint: {fingerprint(server_der)}" in text
    assert "application URI:     urn:ironwatt:sim:plc" in text
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    code, text, _err = run_cli(["opcua", "trust", plc.endpoint, "--out", str(out)], capsys)
    assert code == 0
    assert out.read_bytes() == server_der
    code, text, _err = run_cli(["opcua", "trust", plc.endpoint, "--out", str(out), "--yes"], capsys)
    assert code == 0
    assert "already holds this certificate" in text
    # With the pin, a secure read works; the client certificate lands in --data-dir.
    monkeypatch.setenv("PLC_PASSWORD", PASSWORD)
    secure = [
        "--security-policy", "Basic256Sha256", "--username", "gateway",
        "--password-env", "PLC_PASSWORD", "--data-dir", str(tmp_path / "data"),
    ]  # fmt: skip
    code, text, err = run_cli(
        [
            "opcua",
            "read",
            plc.endpoint,
            NSU + "Types.Double",
            "--server-certificate",
            str(out),
            *secure,
        ],
        capsys,
    )
    assert code == 0, err
    assert "Double = 2.25" in text
    assert (tmp_path / "data" / "pki" / "own" / "cert.der").exists()
    # Without it, the tool refuses and says how to fix it.
    code, _text, err = run_cli(["opcua", "read", plc.endpoint, "i=2258", *secure], capsys)
    assert code == 1
    assert "ironwatt opcua trust" in err


def test_describe_device_lists_nodes_mode_and_problems(tmp_path: Path) -> None:
    device = make_device(
        "opc.tcp://10.10.1.30:4840",
        [
            point("hot_metal", NSU + "Production.HotMetalTons", kind="counter", unit="t"),
            point("flow", NSU + "Utilities.NG.Flow", deadband_type="absolute", deadband_value=2),
            point("by_index", "ns=2;s=Furnace.Temp1"),
            point("broken", "ns=2;q=1"),
        ],
        name="bf2-plc",
        mode="poll",
        interval="500ms",
        security_policy="Basic256Sha256",
        security_mode="SignAndEncrypt",
        username="gateway",
        password_env="PLC_PASSWORD",
    )
    lines = describe_device(device)
    text = "\n".join(lines)
    assert lines[0] == "poll: one batched Read of 4 node(s) every 0.5 s"
    assert (
        "! no server_certificate pinned: run `ironwatt opcua trust opc.tcp://10.10.1.30:4840"
        in text
    )
    assert "flow: deadband absolute 2 (applied by the server)" in text
    assert "! by_index: ns=2;s=Furnace.Temp1 uses a namespace index" in text
    assert "! broken: node id 'ns=2;q=1'" in text
    assert lines[-1] == "nodes: 2 by namespace URI (nsu=), 1 by namespace index (ns=)"
    # Pinned and subscribed: the fingerprint of the pinned file is shown, no "!" lines.
    cert = make_cert(tmp_path, "urn:plc")[0]
    pinned = make_device(
        "opc.tcp://10.10.1.30:4840",
        [point("flow", NSU + "Utilities.NG.Flow")],
        security_policy="Basic256Sha256",
        security_mode="Sign",
        server_certificate=str(cert),
    )
    lines = describe_device(pinned)
    assert lines[0] == "subscribe: 1 monitored item(s) sampled every 0.1 s, queue 1"
    assert f"server certificate pinned: {cert} (SHA-256 {fingerprint(cert.read_bytes())})" in lines
    assert not any(line.startswith("!") for line in lines)
    # The package exports it where `ironwatt check` looks (drivers.opcua.describe_device).
    import drivers.opcua

    assert drivers.opcua.describe_device is describe_device


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [
        ("10.10.1.30:4840", "is not an OPC UA endpoint"),
        ("opc.tcp://", "names no host"),
        ("opc.tcp://:4840", "names no host"),
        ("opc.tcp://127.0.0.1:99999", "the port is not a number from 1 to 65535"),
        ("opc.tcp://127.0.0.1:0", "port 0 is not a server's port"),
        ("opc.tcp://::1:4840", "an IPv6 address needs [brackets]"),
        ("opc.tcp://[::1", "a malformed host"),
    ],
)
def test_a_malformed_endpoint_is_a_usage_error(
    endpoint: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 with what is wrong and what is expected, before any connection; never a
    traceback. The config check says the same (drivers/opcua/config.endpoint_problem)."""
    for command in (["browse", endpoint], ["read", endpoint, "i=2258"], ["trust", endpoint]):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(["opcua", *command], capsys)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert why in err
        assert "expected opc.tcp://HOST:PORT" in err
        assert "Traceback" not in err


@pytest.mark.parametrize(
    "endpoint",
    ["opc.tcp://[::1]:4840", "opc.tcp://plc-7.plant.local:4840", "opc.tcp://10.0.0.5",
     "opc.tcp://10.0.0.5:4840/freeopcua/server/"],
)  # fmt: skip
def test_valid_endpoints_pass(endpoint: str) -> None:
    from drivers.opcua.config import endpoint_problem

    assert endpoint_problem(endpoint) is None
