"""`ironwatt demo` as a user runs it: the plant, the broker, the gateway, the cues, the verdict."""

from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.sim.demo import verdict
from gateway.sim.loads import Steady
from gateway.sim.view import format_message

ROOT = Path(__file__).resolve().parents[2]


def _demo(*flags: str, out: Any, path: str | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    env.update(COLUMNS="140", LINES="80")  # the live view's terminal
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "demo", "--for", "60s", *flags],
        cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip


class _Terminal:
    """A pseudo-terminal for the live view: what the demo draws is read off its other end."""

    def __init__(self) -> None:
        self.main, self.side = pty.openpty()
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.main, 65536)
            except OSError:  # the other end closed
                return
            if not data:
                return
            self.chunks.append(data)

    def text(self) -> str:
        os.close(self.side)
        self.reader.join(10)
        os.close(self.main)
        return b"".join(self.chunks).decode(errors="replace")


def _path_without_mosquitto(tmp: Path) -> str:
    """PATH as it is, less every directory that holds a mosquitto (a user's PATH on Debian,
    where it is in /usr/sbin)."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    kept = [d for d in dirs if not (Path(d) / "mosquitto").exists()]
    return os.pathsep.join(kept or [str(tmp)])


def test_the_demo_keeps_its_promise_with_mosquitto_and_with_the_embedded_broker(
    tmp_path: Path,
) -> None:
    """60 s, three at once: with Mosquitto (--plain); with it hidden from PATH, so the embedded
    amqtt (stdout a file: lines, chosen by the demo itself); and the live view on a terminal.
    Energy, group and event windows arrive; the outage on cue is replayed without a seq hole;
    the dropout is revised; a meter's windows add up to the simulator's integral; exit 0."""
    terminal = _Terminal()
    files = {name: (tmp_path / f"{name}.out").open("wb") for name in ("mosquitto", "amqtt")}
    runs = {"amqtt": _demo(out=files["amqtt"], path=_path_without_mosquitto(tmp_path))}
    if shutil.which("mosquitto") is not None:  # .ci/run installs it; the others need none
        runs["mosquitto"] = _demo("--plain", out=files["mosquitto"])
        runs["live"] = _demo(out=terminal.side)
    try:
        for proc in runs.values():
            proc.wait(timeout=150)
    finally:
        for proc in runs.values():  # SIGTERM first: the demo stops its gateway and broker
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for f in files.values():
            f.close()
    outputs = {
        name: terminal.text() if name == "live" else (tmp_path / f"{name}.out").read_text()
        for name in runs
    }
    for name, proc in runs.items():
        assert proc.returncode == 0, name + ": " + outputs[name][-4000:]
        if name == "live":
            _check_live_view(outputs[name])
        else:
            _check_promise(name, outputs[name])
    if "mosquitto" not in runs:
        pytest.skip("mosquitto is not on PATH: only the embedded broker's demo ran")


def _check_live_view(out: str) -> None:
    """The live view was drawn (rich's tables, redrawn in place) and the verdict follows it."""
    for section in ("latest values (telemetry)", "last closed 10s windows", "process groups (10s)",
                    "outbox and uplink", "last messages received upstream"):  # fmt: skip
        assert section in out, section
    assert "\x1b[" in out  # drawn in place with terminal control sequences
    assert "CUT (outage on cue)" in out  # the header said so during the outage
    assert re.search(r"demo: seq 1\.\.\d+ of stream \w+: no hole", out)
    assert re.search(r"demo: aux-1: \d+ windows .* \(0\.0\d\d % apart\)", out)
    assert "group   10s" not in out  # no plain lines on a terminal
    assert "demo: verdict: every check holds" in out  # replays and revisions included


def _check_promise(broker: str, out: str) -> None:
    said = [line[len("demo: ") :] for line in out.splitlines() if line.startswith("demo: ")]
    assert said[0].startswith("Mosquitto broker" if broker == "mosquitto" else "amqtt"), said
    received = next(line for line in said if line.startswith("received "))
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (\w+)", received)}
    assert counts["energy"] >= 20, (broker, received)
    assert counts["group"] >= 20, (broker, received)
    assert counts["event"] >= 4, (broker, received)
    assert any(re.fullmatch(r"seq 1\.\.\d+ of stream \w+: no hole", line) for line in said), said
    found = re.search(r"(\d+) messages? replayed after the outage, (\d+) windows? revised", out)
    assert found is not None, said
    replayed, revised = map(int, found.groups())
    assert replayed > 0, broker
    assert revised > 0, broker
    check = re.search(r"aux-1: (\d+) windows .* \(([\d.]+) % apart\)", out)
    assert check is not None, (broker, said)
    assert int(check.group(1)) >= 3
    assert float(check.group(2)) < 0.1, (broker, check.group(0))
    assert re.search(r"energy_import +delta .*, rollovers 1", out)  # the blower's counter wrapped
    # the group lines carry the accounting: recovered energy, intensity, cost, the benchmark
    assert "group   10s converter-1" in out
    assert "recovered converter_gas" in out
    standing = "(better_than_benchmark|between_benchmark_and_baseline|worse_than_baseline)"
    assert re.search(r"blast_furnace: EEI [\d.]+, " + standing, out)
    assert "cost " in out
    assert "the network between the gateway and the broker goes down" in out
    assert "demo: verdict: every check holds" in out


def _doc(seq: int, **kw: object) -> dict[str, object]:
    return {"seq": seq, "stream": "s1", **kw}


WINDOW_AT = "2026-12-03T00:00:{:02d}.000Z"


def _aux(
    seq: int, start: int, delta: float, coverage: float, **kw: object
) -> tuple[str, dict[str, object]]:
    return ("energy", _doc(seq, device="aux-1", interval="10s", start=WINDOW_AT.format(start),
                           end=WINDOW_AT.format(start + 10), revision=kw.pop("revision", 1),
                           points={"energy_import": {"delta": delta, "coverage": coverage}},
                           **kw))  # fmt: skip


def test_the_verdict_names_holes_replays_revisions_and_the_integral() -> None:
    aux = SimpleNamespace(load=Steady(360.0))  # 1 kWh per 10 s
    born = datetime(2026, 12, 3, tzinfo=UTC).timestamp()  # the load started at 00:00:00
    docs = [
        ("event", _doc(1)),
        # began before the meter's first reading (at 00:00:06): its `first` is that reading
        _aux(2, 0, 0.35, 0.4),
        _aux(3, 10, 0.9, 0.5),
        _aux(5, 10, 1.0, 1.0, revision=2, replayed=True),  # the revision counts
        _aux(6, 20, 1.0, 1.0, replayed=True),
        # closed before a reading after its end: the energy past its last reading is the next's
        _aux(7, 30, 0.8, 0.8),
        ("status", {"state": "online"}),
    ]
    lines, trusted = verdict(docs, aux, born)
    assert lines[0] == "received 5 energy, 1 event, 1 status"
    assert lines[1] == "seq 1..7 of stream s1: 1 missing: [4]"
    assert lines[2] == "2 messages replayed after the outage, 1 window revised"
    # only the whole windows, 00:00:10 to 00:00:30, are checked
    assert lines[3].startswith("aux-1: 2 windows of 10s add up to 2.0000 kWh")
    assert lines[3].endswith("(0.000 % apart)")
    assert lines[4] == "verdict: FAILED: seq holes in stream s1"
    assert not trusted
    whole = [d for d in docs if d[1].get("seq") != 3]  # the revised window's first edition
    for seq, doc in enumerate(d for _, d in whole if "seq" in d):
        doc["seq"] = seq + 1
    assert verdict(whole, aux, born) == (
        [
            "received 4 energy, 1 event, 1 status",
            "seq 1..5 of stream s1: no hole",
            "2 messages replayed after the outage, 1 window revised",
            "aux-1: 2 windows of 10s add up to 2.0000 kWh; the simulator integrated 2.0000 kWh "
            "over the same span (0.000 % apart)",
            "verdict: every check holds",
        ],
        True,
    )


def test_the_verdict_checks_no_total_across_a_missing_window() -> None:
    aux = SimpleNamespace(load=Steady(360.0))
    born = datetime(2026, 12, 3, tzinfo=UTC).timestamp()
    docs = [_aux(1, 0, 1.0, 1.0), _aux(2, 20, 1.0, 1.0)]  # 00:00:10-20 never arrived
    lines, trusted = verdict(docs, aux, born)
    assert lines[2] == "0 messages replayed after the outage, 0 windows revised"
    assert lines[3] == "aux-1: windows missing before 2026-12-03T00:00:20.000Z: no total to check"
    assert lines[4] == (
        "verdict: FAILED: nothing replayed after the outage; no window revised after the "
        "dropout; aux-1's windows not within 0.1 % of the simulator's integral"
    )
    assert not trusted
    # stopped early (Ctrl-C): no cue happened, so neither a replay nor a revision is owed
    lines, _ = verdict([_aux(1, 0, 0.3, 0.3)], aux, born, complete=False)
    assert lines[3] == "aux-1: not enough whole windows to check against the simulator"
    assert lines[4] == (
        "verdict: FAILED: aux-1's windows not within 0.1 % of the simulator's integral"
    )
    off = [_aux(1, 0, 1.0, 1.0), _aux(2, 10, 1.02, 1.0)]  # 1 % too much
    lines, trusted = verdict(off, aux, born, complete=False)
    assert lines[3].endswith("(1.000 % apart)")
    assert not trusted


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
