"""`ironwatt demo` as a user runs it: the plant, the broker, the gateway, the cues, the verdict."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from gateway.sim.loads import Steady
from gateway.sim.plant import format_message, verdict

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_keeps_its_promise() -> None:
    """60 s: energy, group and event windows arrive; the outage on cue is replayed without a
    seq hole; the dropout is revised; a meter's windows add up to the simulator's integral."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--for", "60s"],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    said = [line[len("demo: ") :] for line in out.splitlines() if line.startswith("demo: ")]
    received = next(line for line in said if line.startswith("received "))
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (\w+)", received)}
    assert counts["energy"] >= 20
    assert counts["group"] >= 20
    assert counts["event"] >= 4
    assert any(re.fullmatch(r"seq 1\.\.\d+ of stream \w+: no hole", line) for line in said), said
    replayed, revised = map(
        int, re.search(r"(\d+) messages replayed after the outage, (\d+) windows revised",
                       out).groups(),  # type: ignore[union-attr]
    )  # fmt: skip
    assert replayed > 0
    assert revised > 0
    check = re.search(r"aux-1: (\d+) windows .* \(([\d.]+) % apart\)", out)
    assert check is not None, said
    assert int(check.group(1)) >= 3
    assert float(check.group(2)) < 0.1
    assert re.search(r"energy_import +delta .*, rollovers 1", out)  # the blower's counter wrapped
    # the group lines carry the accounting: recovered energy, intensity, cost, the benchmark
    assert "group   10s converter-1" in out
    assert "recovered converter_gas" in out
    standing = "(better_than_benchmark|between_benchmark_and_baseline|worse_than_baseline)"
    assert re.search(r"blast_furnace: EEI [\d.]+, " + standing, out)
    assert "cost " in out


def _doc(seq: int, **kw: object) -> dict[str, object]:
    return {"seq": seq, "stream": "s1", **kw}


def test_the_verdict_names_holes_replays_revisions_and_the_integral() -> None:
    aux = SimpleNamespace(load=Steady(360.0))  # 1 kWh per 10 s
    window = "2026-12-03T00:00:{:02d}.000Z"
    born = datetime(2026, 12, 3, tzinfo=UTC).timestamp()  # the load started at 00:00:00
    docs = [
        ("event", _doc(1)),
        ("energy", _doc(2, device="aux-1", interval="10s", start=window.format(0),
                        end=window.format(10), revision=1,
                        points={"energy_import": {"delta": 0.7}})),
        ("energy", _doc(3, device="aux-1", interval="10s", start=window.format(10),
                        end=window.format(20), revision=1,
                        points={"energy_import": {"delta": 0.9}})),
        ("energy", _doc(5, device="aux-1", interval="10s", start=window.format(10),
                        end=window.format(20), revision=2, replayed=True,
                        points={"energy_import": {"delta": 1.0}})),
        ("energy", _doc(6, device="aux-1", interval="10s", start=window.format(20),
                        end=window.format(30), revision=1, replayed=True,
                        points={"energy_import": {"delta": 1.0}})),
        ("status", {"state": "online"}),
    ]  # fmt: skip
    lines = verdict(docs, aux, born)
    assert lines[0] == "received 4 energy, 1 event, 1 status"
    assert lines[1] == "seq 1..6 of stream s1: 1 missing: [4]"
    assert lines[2] == "2 messages replayed after the outage, 1 windows revised"
    # the first window is left out (it began before any reading); the revision counts
    assert lines[3].startswith("aux-1: 2 windows of 10s add up to 2.0000 kWh")
    assert lines[3].endswith("(0.000 % apart)")


def test_group_lines_show_the_accounting() -> None:
    payload = (
        b'{"seq":9,"group":"converter-1","interval":"10s","revision":1,'
        b'"start":"2026-12-03T00:00:00.000Z","end":"2026-12-03T00:00:10.000Z",'
        b'"carriers":{"oxygen":{"unit":"m3","amount":22.9}},'
        b'"recovered":{"converter_gas":{"unit":"m3","amount":41.7}},'
        b'"production":{"unit":"t","amount":0.4167},"kgce":-6.2,"kgco2e":-58.1,'
        b'"intensity_kgce_per_unit":-14.9,'
        b'"cost":{"currency":"CNY","amount":0.3,"by_period":{"flat":0.3}},'
        b'"demand":{"unit":"kW","peak":420.5,"at":"2026-12-03T00:00:10.000Z"},'
        b'"benchmark":{"process":"bof","standard":"GB 21256-2025","benchmark":-30,'
        b'"baseline":-10,"eei":0.4967,"standing":"between_benchmark_and_baseline"}}'
    )
    text = format_message("ironwatt/s/gw/group/10s/converter-1", payload)
    assert text.splitlines()[0] == ("group   10s converter-1 00:00:00-00:00:10 rev 1 [seq 9]")
    assert "oxygen 22.900 m3; recovered converter_gas 41.700 m3; production 0.417 t" in text
    assert "intensity -14.900 kgce/t, cost 0.30 CNY (flat 0.30), demand 420.5 kW" in text
    assert "bof: EEI 0.497, between_benchmark_and_baseline (benchmark -30.0" in text


def test_sim_runs_the_plant_for_the_tools_and_writes_its_config(tmp_path: Path) -> None:
    """`ironwatt sim --config-out`: the config it writes passes `ironwatt check`, and
    `ironwatt modbus probe` reads a meter of the running plant through it."""
    config = tmp_path / "plant.toml"
    sim = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "sim", "--config-out", str(config), "--for", "40s",
         "--no-opcua"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        lines = []
        for line in sim.stdout:
            lines.append(line)
            if line.startswith("sim: running"):
                break
        assert config.exists(), lines
        # the command it suggests works as printed
        suggested = next(x for x in lines if x.startswith("sim: try: ironwatt modbus read"))
        read = subprocess.run(
            [sys.executable, "-m", "gateway.cli", *suggested.split()[3:]],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert read.returncode == 0, read.stdout + read.stderr
        check = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "check", "-c", str(config)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
        assert "works" in check.stdout  # the groups are listed
        probe = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "modbus", "probe", "-c", str(config),
             "--device", "aux-1"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert probe.returncode == 0, probe.stdout + probe.stderr
        power = re.search(r"power_total .* ([\d.]+)\s+kW\s+good", probe.stdout)
        assert power is not None, probe.stdout
        assert 300.0 < float(power.group(1)) < 540.0  # aux-1: 420 kW +- 60
    finally:
        sim.terminate()
        sim.wait(15)
    assert sim.returncode == 0
