"""Soak bench: the whole path (Modbus -> kernel -> outbox -> MQTT) for a long run, from outside.

N meters (default 200), each a Modbus TCP device on a port of its own, x 20 float32 points
polled every second, served by the libmodbus C server of bench/modbus.py (pymodbus plants where
libmodbus is missing). The served values are rewritten 4 times a second (function 16), so every
poll reads new values and report-by-exception telemetry goes out for every meter every second.
`1m` windows, telemetry on, a real Mosquitto
on a free loopback port, and the real `ironwatt run` as a child process with a config written
here and `[http] listen` on loopback. Once with `telemetry_qos = 0` and once with 1.

Measured from outside the gateway: CPU of its process tree (/proc/<pid>/stat), per thread
(/proc/<pid>/task; the bench names the gateway's threads with prctl before it starts), RSS
every second (VmRSS; the peak is VmHWM reset after warm-up), /status for the values read, the
backlog and the lag, and a paho subscriber on `#` (its own thread) counting what the broker
delivers per class and checking `seq` of every QoS-1 message per (gw, stream).

    python bench/soak.py                       # 200 meters, 10 min per QoS, both QoS
    python bench/soak.py --meters 50 --duration 120 --qos 0
    python bench/soak.py --py-spy /tmp/soak    # also a py-spy profile of the measured phase

Each run ends with `RESULT qos=... meters=... cpu_pct=... ...`; the goals are printed beside
the figures (ok/MISS), never asserted. tests/daemon/test_soak.py runs `run_soak` short.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from bench.support.procfs import (  # noqa: E402
    all_cpu,
    descendants,
    proc_io,
    proc_rss_mb,
    reset_peak,
    status_doc,
    thread_stats,
    tree_cpu,
)
from bench.support.servers import (  # noqa: E402
    build_c_server,
    launch_c_server,
    launch_pymodbus_plant,
)
from bench.support.speedscope import load as load_profile  # noqa: E402
from bench.support.speedscope import render as render_profile  # noqa: E402
from bench.support.syscalls import census  # noqa: E402
from gateway.sim.ports import free_port  # noqa: E402
from tests.support.mosquitto import Mosquitto  # noqa: E402

__all__ = ["SoakResult", "SoakSpec", "main", "run_soak"]

POINTS = 20  # float32 each, registers 0..39: one request per meter and poll
POLL_S = 1.0
WRITE_PERIOD_S = 0.25  # the served values change this often: every poll reads new ones
METERS_PER_SERVER = 50  # ports per server process (the C server takes at most 64)
COUNTERS, RATES = 4, 6  # p00-p03 counters (kWh), p04-p09 rates (kW), the rest gauges (V)
GW, SITE, PREFIX = "soak", "lab", "ironwatt"

# ---- goals ----------------------------------------------------------------------------------

GOAL_LAG_S = 5.0
GOAL_BACKLOG_S = 2.0  # backlog never above this many seconds of the traffic stored
GOAL_RSS_PEAK_MB = 60.0
GOAL_RSS_GROWTH_MB = 2.0  # over 10 min
GOAL_CPU_PCT_AT_200 = 5.0


# ---- the meters' values -----------------------------------------------------------------------


def meter_values(t: float) -> list[float]:
    """What every meter serves at t seconds: counters growing, rates and gauges moving."""
    out = []
    for k in range(POINTS):
        if k < COUNTERS:
            out.append(1000.0 * (k + 1) + t * 0.05 * (k + 1))  # 180 kW x (k + 1)
        elif k < COUNTERS + RATES:
            out.append(180.0 * (k - COUNTERS + 1) + 10.0 * math.sin(t / 7.0 + k))
        else:
            out.append(230.0 + 2.0 * math.sin(t / 3.0 + k))
    return out


def registers_of(values: list[float]) -> bytes:
    """float32 values as big-endian registers, high word first (ABCD)."""
    return b"".join(struct.pack(">f", v) for v in values)


class RegisterWriter:
    """Rewrites the served registers every WRITE_PERIOD_S over Modbus TCP (function 16).

    One target (port, unit) per server process: every port of a process serves one map.
    """

    def __init__(self, targets: list[tuple[int, int]]) -> None:
        self.targets = targets
        self.writes = self.errors = 0
        self._stop = threading.Event()
        self._socks: dict[tuple[int, int], socket.socket] = {}
        self._tid = 0
        self._t0 = time.monotonic()
        self.write_all()  # before the gateway's first poll
        self._thread = threading.Thread(target=self._run, name="soak-writer", daemon=True)
        self._thread.start()

    def _frame(self, unit: int, data: bytes) -> bytes:
        self._tid = (self._tid + 1) & 0xFFFF
        count = len(data) // 2
        pdu = struct.pack(">BHHB", 16, 0, count, len(data)) + data
        return struct.pack(">HHHB", self._tid, 0, len(pdu) + 1, unit) + pdu

    def write_all(self) -> None:
        data = registers_of(meter_values(time.monotonic() - self._t0))
        for target in self.targets:
            try:
                sock = self._socks.get(target)
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", target[0]), timeout=2.0)
                    self._socks[target] = sock
                sock.sendall(self._frame(target[1], data))
                reply = b""
                while len(reply) < 12:  # MBAP (7) + function, start, count (5)
                    chunk = sock.recv(12 - len(reply))
                    if not chunk:
                        raise OSError("server closed the connection")
                    reply += chunk
                if reply[7] != 16:
                    raise OSError(f"write refused: function {reply[7]:#x}")
                self.writes += 1
            except OSError:
                self.errors += 1
                with contextlib.suppress(KeyError, OSError):
                    self._socks.pop(target).close()

    def _run(self) -> None:
        while not self._stop.wait(WRITE_PERIOD_S):
            self.write_all()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self._socks.values():
            sock.close()


def free_ports(n: int) -> list[int]:
    """n distinct loopback ports free a moment ago (held open together: no port twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class MeterServers:
    procs: list[subprocess.Popen[str]]
    ports: list[int]  # one per meter
    writer_targets: list[tuple[int, int]]
    what: str

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def start_meter_servers(
    work: Path, meters: int, *, servers: str = "auto", install: bool = True
) -> MeterServers:
    """A port per meter, METERS_PER_SERVER ports per server process."""
    binary = None if servers == "pymodbus" else build_c_server(work, install=install)
    if binary is None and servers == "c":
        raise SystemExit("the libmodbus C server could not be built (gcc and libmodbus-dev?)")
    ports = free_ports(meters)
    chunks = [ports[i : i + METERS_PER_SERVER] for i in range(0, meters, METERS_PER_SERVER)]
    procs: list[subprocess.Popen[str]] = []
    try:
        for chunk in chunks:
            if binary is not None:
                procs.append(launch_c_server(binary, chunk))
            else:
                procs.append(launch_pymodbus_plant(chunk, registers=2 * POINTS))
    except BaseException:
        MeterServers(procs, ports, [], "").stop()
        raise
    kind = "libmodbus C server" if binary is not None else "pymodbus plant (no libmodbus here)"
    what = f"{kind}, {len(procs)} processes x <= {METERS_PER_SERVER} ports, one TCP link per meter"
    return MeterServers(procs, ports, [(chunk[0], 1) for chunk in chunks], what)


# ---- the subscriber ---------------------------------------------------------------------------

CLASSES = ("telemetry", "energy", "group", "event", "status")
# Every one of these must arrive. `group` is counted (and its seq checked) but not required:
# this version validates [[groups]] and does not publish group roll-ups yet (cli_check says so).
REQUIRED = ("telemetry", "energy", "event", "status")


def class_of(topic: str) -> str:
    parts = topic.split("/")
    kind = parts[3] if len(parts) > 3 else ""
    return kind if kind in CLASSES else "other"


@dataclass
class _Stream:
    seen: set[int] = field(default_factory=set)
    last: int = 0
    duplicates: int = 0
    out_of_order: int = 0


def _rfc3339(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class Tally:
    """A paho subscriber on `#` (its own network thread) that counts and checks what arrives."""

    def __init__(self, port: int) -> None:
        self.counts: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.streams: dict[tuple[str, str], _Stream] = {}
        self.replayed = 0
        self.bad_payloads = 0
        self.window_starts: Counter[tuple[str, str]] = Counter()  # (interval, start) -> windows
        self.status: list[tuple[float, dict[str, Any]]] = []  # (monotonic, retained document)
        # Telemetry age: `sent` minus the sample time `ts` of its points (how stale a value is
        # when it leaves), and what arrives per device (against its polls).
        self.telemetry_age: list[float] = []
        self.telemetry_points = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"soak-tally-{os.getpid()}", clean_session=True
        )
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("#", qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the subscriber could not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        cls = class_of(msg.topic)
        payload = msg.payload
        with self._lock:
            self.counts[cls] += 1
            self.bytes[cls] += len(payload)
        try:
            doc = json.loads(payload)
        except ValueError:
            with self._lock:
                self.bad_payloads += 1
            return
        if cls == "telemetry":
            self._telemetry(doc)
            return
        with self._lock:
            if cls == "status":
                self.status.append((time.monotonic(), doc))
                return
            if doc.get("replayed"):
                self.replayed += 1
            if cls == "energy":
                self.window_starts[(str(doc.get("interval")), str(doc.get("start")))] += 1
            seq = doc.get("seq")
            if not isinstance(seq, int):
                self.bad_payloads += 1
                return
            key = (str(doc.get("gw")), str(doc.get("stream")))
            stream = self.streams.setdefault(key, _Stream())
            if seq in stream.seen:
                stream.duplicates += 1
                return
            stream.seen.add(seq)
            if seq < stream.last:
                stream.out_of_order += 1
            stream.last = max(stream.last, seq)

    def _telemetry(self, doc: dict[str, Any]) -> None:
        points = doc.get("points")
        try:
            sent = _rfc3339(str(doc["sent"]))
            ts = [_rfc3339(str(p["ts"])) for p in points.values()] if points else []
        except (KeyError, TypeError, ValueError, AttributeError):
            with self._lock:
                self.bad_payloads += 1
            return
        with self._lock:
            self.telemetry_points += len(ts)
            if ts:
                self.telemetry_age.append(sent - max(ts))

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    def holes(self) -> int:
        """Seqs never delivered below the highest one seen, per stream (a stream starts at 1)."""
        with self._lock:
            return sum(s.last - len(s.seen) for s in self.streams.values())

    def offline_seen(self) -> bool:
        with self._lock:
            return any(doc.get("state") == "offline" for _, doc in self.status)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ---- the gateway ------------------------------------------------------------------------------

# `ironwatt run`, its threads named first (Python 3.11 leaves every thread's comm "python"), so
# /proc/<pid>/task/*/comm tells the event loop from the uplink and the outbox writer.
WRAPPER = """
import ctypes, sys, threading
_prctl = ctypes.CDLL(None).prctl
def _name(name):
    _prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
_run = threading.Thread.run
def _named_run(self):
    _name(self.name)
    _run(self)
threading.Thread.run = _named_run
_name("event-loop")
from gateway.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


GROUPS = 10
ACCOUNTING = [
    "[energy]", 'intervals = ["1m", "15m", "1h", "1d", "1mo"]',
    'shifts = [{ name = "night", start = "00:00" }, { name = "day", start = "08:00" },'
    ' { name = "swing", start = "16:00" }]',
    "[tariff]", "periods = [",
    '  { name = "peak", price = 1.0, hours = ["10:00-12:00", "15:00-21:00"] },',
    '  { name = "flat", price = 0.625, hours = ["07:00-10:00", "12:00-15:00", "21:00-23:00"] },',
    '  { name = "valley", price = 0.25, hours = ["23:00-07:00"] },', "]",
]  # fmt: skip


def write_config(
    work: Path, ports: list[int], *, broker_port: int, http_port: int, qos: int,
    durability: str | None = None, accounting: bool = False,
) -> Path:  # fmt: skip
    lines = [
        "[gateway]", f'id = "{GW}"', f'site = "{SITE}"', f'data_dir = "{work / "data"}"',
        'timezone = "UTC"',
        "[mqtt]", f'url = "mqtt://127.0.0.1:{broker_port}"', "telemetry = true",
        f"telemetry_qos = {qos}",
        "[http]", f'listen = "127.0.0.1:{http_port}"',
    ]  # fmt: skip
    lines += ACCOUNTING if accounting else ["[energy]", 'intervals = ["1m"]']
    if durability:
        lines += ["[buffer]", f'durability = "{durability}"']
    for i, port in enumerate(ports):
        lines += [
            "[[devices]]", f'name = "m{i:03d}"', 'driver = "modbus"', 'host = "127.0.0.1"',
            f"port = {port}", "unit = 1", f'poll = "{POLL_S:g}s"',
        ]  # fmt: skip
        for k in range(POINTS):
            if k < COUNTERS:
                kind = 'kind = "counter"\n  unit = "kWh"\n  carrier = "electricity"'
            elif k < COUNTERS + RATES:
                kind = 'kind = "rate"\n  unit = "kW"\n  carrier = "electricity"'
            else:
                kind = 'kind = "gauge"\n  unit = "V"'
            lines += [
                "  [[devices.points]]", f'  name = "p{k:02d}"', '  function = "holding"',
                f"  address = {2 * k}", '  type = "float32"', f"  {kind}",
            ]  # fmt: skip
    if accounting:  # each group: its share of the meters' first counter (kWh)
        per = max(1, len(ports) // GROUPS)
        for g in range(min(GROUPS, len(ports))):
            members = ", ".join(f'"m{i:03d}.p00"' for i in range(g * per, (g + 1) * per))
            lines += ["[[groups]]", f'name = "g{g}"', f"members = [{members}]"]
    path = work / "soak.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


FAKETIME_LIBS = [
    Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"),
    Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1"),
]


def faketime_env(start: str) -> dict[str, str]:
    """The environment that puts a process's wall clock at `start` (UTC, "YYYY-mm-dd
    HH:MM:SS") now; it then runs at real speed. Monotonic time stays real (timeouts, the loop).
    An offset rather than libfaketime's start-at form, which cost the gateway several times
    its CPU (22 -> 57 % of a core over four minutes, measured at 200 meters)."""
    lib = next((p for p in FAKETIME_LIBS if p.exists()), None)
    if lib is None:
        raise RuntimeError("--fake-start needs libfaketime: apt-get install faketime")
    offset = datetime.fromisoformat(start + "+00:00").timestamp() - time.time()
    return {
        "LD_PRELOAD": str(lib), "FAKETIME": f"{offset:+.3f}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1", "TZ": "UTC",
    }  # fmt: skip


def start_gateway(
    work: Path, config: Path, fake_start: str | None = None
) -> tuple[subprocess.Popen[bytes], Any]:
    log = (work / "gateway.log").open("wb")  # a file: a pipe nobody reads would fill and block
    cmd = [sys.executable, "-c", WRAPPER, "--log-level", "warning", "run", "-c", str(config)]
    env = dict(os.environ, **faketime_env(fake_start)) if fake_start else None
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, env=env)
    return proc, log


def stop_gateway(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> float:
    """SIGTERM and wait; seconds it took (SIGKILL after `timeout`: then inf)."""
    t0 = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return math.inf
    return time.monotonic() - t0


def _commit() -> str:
    """The commit measured, `+dirty` when the gateway's code differs from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "gateway", "drivers", "ext"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


# ---- one run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoakSpec:
    meters: int = 200
    duration_s: float = 600.0  # measured, after the warm-up
    qos: int = 1
    warmup_s: float = 30.0
    # /status read this often: a read costs the gateway ~5-10 ms of CPU at 200 meters (measured
    # and printed each run), so the backlog and lag are sampled every second from the database
    # instead, read-only from this process.
    status_every_s: float = 30.0
    servers: str = "auto"  # "c", "pymodbus" or "auto" (C when it builds)
    install: bool = True  # may apt-get install libmodbus-dev (root only)
    window_wait_s: float = 75.0  # no energy window by the end: wait this much longer for one
    durability: str | None = None  # [buffer] durability; None: the gateway's default
    py_spy: str | None = None  # path prefix: a py-spy speedscope profile of the measured phase
    py_spy_rate: int = 100
    strace_s: float = 0.0  # after measuring: a syscall census of the threads for this long
    # The whole energy office: 1m 15m 1h 1d 1mo, three shifts, ten groups, a tariff.
    accounting: bool = False
    # The gateway's wall clock starts here (libfaketime; monotonic time is left real), e.g.
    # "2026-12-31 23:58:00" (UTC): a midnight that closes every interval inside the run.
    fake_start: str | None = None


@dataclass
class SoakResult:
    spec: SoakSpec
    servers: str = ""
    duration_s: float = 0.0
    cpu_pct: float = math.nan
    us_per_read: float = math.nan
    us_per_msg: float = math.nan
    reads: int = 0
    requests: int = 0
    poll_errors: int = 0
    rss_mb: float = math.nan  # steady: median of the second half
    rss_start_mb: float = math.nan
    rss_peak_mb: float = math.nan  # VmHWM since the warm-up ended
    rss_max_sampled_mb: float = math.nan
    clock_offset_s: float = 0.0  # the gateway's (fake) wall clock minus the bench's
    midnight_in_s: float = math.nan  # when, after the measuring began, the gateway's midnight was
    rss_midnight_mb: float = math.nan  # the largest RSS sampled from midnight to 90 s after
    rss_before_midnight_mb: float = math.nan  # median over the minute before it
    rss_growth_mb: float = math.nan
    growth_span_s: float = 0.0
    status_cost_ms: float = math.nan
    backlog_max: int = 0
    backlog_end: int = 0
    lag_max_s: float = 0.0
    stored_per_s: float = 0.0  # messages stored per second in the measured phase
    seq_holes: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    streams: int = 0
    replayed: int = 0
    bad_payloads: int = 0
    delivered: dict[str, int] = field(default_factory=dict)  # whole run
    delivered_measured: dict[str, int] = field(default_factory=dict)  # measured phase only
    closes: int = 0
    incomplete_closes: int = 0
    telemetry_age_s: tuple[float, float, float] = (math.nan, math.nan, math.nan)  # p50/p95/max
    telemetry_points_per_msg: float = math.nan
    offline_seen: bool = False
    stop_s: float = 0.0
    # per thread: CPU % of a core, voluntary (wake-ups) and involuntary switches per second
    threads: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    io_per_s: dict[str, float] = field(default_factory=dict)  # /proc/<pid>/io rates
    syscalls: dict[str, dict[str, int]] = field(default_factory=dict)  # strace census
    syscalls_s: float = 0.0
    syscall_tool: str = ""
    syscalls_messages: int = 0  # delivered meanwhile
    commit: str = ""
    minutes: list[dict[str, float]] = field(default_factory=list)
    log_lines: dict[str, int] = field(default_factory=dict)
    log_samples: list[str] = field(default_factory=list)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    own_cpu_pct: dict[str, float] = field(default_factory=dict)  # servers, broker, bench
    others: list[tuple[str, float]] = field(default_factory=list)  # other busy processes
    writer_errors: int = 0
    gateway_exit: int | None = None
    failure: str | None = None
    profile: str | None = None

    # -- the goals ----------------------------------------------------------------------------

    @property
    def delivered_windows(self) -> int:
        return self.delivered.get("energy", 0) + self.delivered.get("group", 0)

    def goals(self) -> list[tuple[str, str, bool]]:
        """(goal, measured, met) for every goal of the issue."""
        d = self.delivered
        missing = [c for c in REQUIRED if not d.get(c)]
        backlog_cap = GOAL_BACKLOG_S * self.stored_per_s
        cpu_goal = GOAL_CPU_PCT_AT_200 * self.spec.meters / 200
        growth_note = f"over {self.growth_span_s / 60:.1f} min"
        return [
            (
                "every class delivered (" + "/".join(REQUIRED) + ")",
                "all" if not missing else "missing " + ", ".join(missing),
                not missing,
            ),
            ("seq_holes = 0", f"{self.seq_holes}", self.seq_holes == 0),
            (
                f"backlog <= {GOAL_BACKLOG_S:g} s of traffic",
                f"max {self.backlog_max} vs {backlog_cap:.0f} ({self.stored_per_s:.0f} stored/s)",
                self.backlog_max <= backlog_cap and self.stored_per_s > 0,
            ),
            (f"lag_max_s < {GOAL_LAG_S:g}", f"{self.lag_max_s:.2f}", self.lag_max_s < GOAL_LAG_S),
            (
                f"RSS peak < {GOAL_RSS_PEAK_MB:g} MB",
                f"{self.rss_peak_mb:.1f}",
                self.rss_peak_mb < GOAL_RSS_PEAK_MB,
            ),
            (
                f"RSS growth < {GOAL_RSS_GROWTH_MB:g} MB over 10 min",
                f"{self.rss_growth_mb:+.2f} MB {growth_note}",
                self.rss_growth_mb < GOAL_RSS_GROWTH_MB,
            ),
            (
                f"CPU <= {cpu_goal:.3g} % of a core"
                + ("" if self.spec.meters == 200 else " (5 % at 200 meters, scaled)"),
                f"{self.cpu_pct:.2f} %",
                self.cpu_pct <= cpu_goal,
            ),
        ]

    def _census_lines(self) -> str:
        per_s, msgs = max(1e-9, self.syscalls_s), max(1, self.syscalls_messages)
        lines = [
            f"   syscalls ({self.syscall_tool}, {self.syscalls_s:.0f} s after measuring, "
            f"{self.syscalls_messages / per_s:.0f} messages/s delivered meanwhile): "
            "calls/s (per message)"
        ]
        for name, calls in self.syscalls.items():
            top = sorted(calls.items(), key=lambda kv: -kv[1])[:8]
            lines.append(
                f"     {name:<16} "
                + ", ".join(f"{sc} {n / per_s:.0f} ({n / msgs:.2f})" for sc, n in top)
            )
        return "\n".join(lines)

    def result_line(self) -> str:
        d = self.delivered
        return (
            f"RESULT qos={self.spec.qos} meters={self.spec.meters} "
            f"duration_s={self.duration_s:.0f} cpu_pct={self.cpu_pct:.2f} "
            f"us_per_read={self.us_per_read:.1f} us_per_msg={self.us_per_msg:.0f} "
            f"rss_mb={self.rss_mb:.1f} rss_peak_mb={self.rss_peak_mb:.1f} "
            f"rss_growth_mb={self.rss_growth_mb:.2f} backlog_max={self.backlog_max} "
            f"lag_max_s={self.lag_max_s:.2f} seq_holes={self.seq_holes} "
            f"delivered_telemetry={d.get('telemetry', 0)} "
            f"delivered_windows={self.delivered_windows} "
            f"delivered_events={d.get('event', 0)}"
            + (
                f" midnight_in_s={self.midnight_in_s:.0f} "
                f"rss_before_midnight_mb={self.rss_before_midnight_mb:.1f} "
                f"rss_midnight_mb={self.rss_midnight_mb:.1f} "
                f"delivered_groups={d.get('group', 0)}"
                if self.spec.fake_start
                else ""
            )
        )

    def table(self) -> str:
        s = self.spec
        out = [
            f"== soak qos={s.qos}: {s.meters} meters x {POINTS} float32 points every {POLL_S:g} s, "
            f"1m windows, telemetry qos {s.qos}, buffer durability "
            f"{s.durability or 'default'}",
            f"   commit {self.commit}; servers: {self.servers}",
            f"   measured {self.duration_s:.0f} s after a {s.warmup_s:g} s warm-up; backlog and "
            f"lag every 1 s from the database, /status every {s.status_every_s:g} s (one read "
            f"costs the gateway {self.status_cost_ms:.1f} ms CPU)",
            f"   machine: load {_load(self.load_before)} before, {_load(self.load_after)} after; "
            + ", ".join(f"{k} {v:.1f}%" for k, v in self.own_cpu_pct.items()),
        ]
        if self.others:
            out.append(
                "   other busy processes (% of a core): "
                + "; ".join(f"{' '.join(cmd.split())[:60]} {pct:.0f}%" for cmd, pct in self.others)
            )
        if self.failure:
            out.append(f"   FAILURE: {self.failure}")
        out.append("")
        out.append(
            "   minute  cpu%   rss_mb  backlog_max  lag_max_s  delivered/s  (max of 1 s samples)"
        )
        for m in self.minutes:
            out.append(
                f"   {m['minute']:>6.0f}  {m['cpu_pct']:5.2f}  {m['rss_mb']:6.1f}  "
                f"{m['backlog_max']:>11.0f}  {m['lag_max_s']:>9.2f}  {m['delivered_per_s']:>11.1f}"
            )
        out.append("")
        out.append(
            f"   gateway CPU {self.cpu_pct:.2f} % of a core: {self.us_per_read:.1f} us per value "
            f"read ({self.reads} values, {self.requests} requests, {self.poll_errors} failed "
            f"polls), {self.us_per_msg:.0f} us per message delivered"
        )
        if self.threads:
            out.append(
                "   per thread: % of a core, wake-ups/s (voluntary switches), preempted/s"
                + (" (py-spy's pauses included: ~2 per sample)" if self.profile else "")
            )
            for name, (pct, vol, invol) in self.threads.items():
                out.append(f"     {name:<16} {pct:6.2f} %  {vol:8.1f}/s  {invol:6.1f}/s")
        if self.io_per_s:
            io = self.io_per_s
            out.append(
                f"   io: {io.get('syscr', 0):.0f} read-like and {io.get('syscw', 0):.0f} "
                f"write-like syscalls/s, {io.get('write_bytes', 0) / 1024:.0f} KiB/s to storage "
                f"({io.get('write_bytes', 0) / max(1e-9, self.stored_per_s):.0f} B per "
                "message stored)"
            )
        if self.syscalls:
            out.append(self._census_lines())
        out.append(
            f"   RSS {self.rss_start_mb:.1f} MB after warm-up, {self.rss_mb:.1f} MB steady, "
            f"{self.rss_max_sampled_mb:.1f} MB max sampled, {self.rss_peak_mb:.1f} MB peak "
            f"(VmHWM), growth {self.rss_growth_mb:+.2f} MB over {self.growth_span_s:.0f} s"
        )
        d, dm = self.delivered, self.delivered_measured
        span = self.duration_s or math.inf
        per_s = {c: dm.get(c, 0) / span for c in CLASSES}
        out.append(
            "   delivered (whole run; per s while measured): "
            + ", ".join(f"{c} {d.get(c, 0)} ({per_s.get(c, 0):.1f}/s)" for c in CLASSES)
            + f"; expected telemetry {s.meters / POLL_S:.0f}/s"
        )
        polls = self.requests / max(1e-9, self.duration_s)  # one request per meter and poll
        tel = dm.get("telemetry", 0) / span
        p50, p95, top = self.telemetry_age_s
        out.append(
            f"   telemetry: {tel:.1f} messages/s for {polls:.1f} polls/s that all read new "
            f"values ({100 * tel / max(1e-9, polls):.0f} % of the polls sent), "
            f"{self.telemetry_points_per_msg:.1f} points each; age when sent (sent - ts) "
            f"p50 {p50:.2f} s, p95 {p95:.2f} s, max {top:.2f} s"
        )
        out.append(
            f"   windows: {self.closes} closes of 1m seen, {self.incomplete_closes} with fewer "
            f"than {s.meters} devices; offline status at stop: "
            f"{'yes' if self.offline_seen else 'NO'} (stop took {self.stop_s:.1f} s)"
        )
        out.append(
            f"   seq: {self.streams} stream(s), {self.seq_holes} holes, {self.duplicates} "
            f"duplicates, {self.out_of_order} out of order; {self.replayed} replayed, "
            f"{self.bad_payloads} unreadable payloads; backlog {self.backlog_end} at the end"
        )
        log = ", ".join(f"{k} {v}" for k, v in sorted(self.log_lines.items())) or "nothing"
        out.append(f"   gateway log: {log}")
        out += [f"     | {line}" for line in self.log_samples]
        if self.profile:
            out.append(f"   py-spy profile: {self.profile}")
            with contextlib.suppress(OSError, ValueError, KeyError):
                cpu = {name: t[0] for name, t in self.threads.items()}
                text = render_profile(load_profile(Path(self.profile)), cpu)
                out += ["     " + line for line in text.splitlines()]
        out.append("")
        out.append("   goals:")
        for goal, measured, ok in self.goals():
            out.append(f"     {'ok  ' if ok else 'MISS'}  {goal}: {measured}")
        return "\n".join(out)


def _load(avg: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in avg)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


@dataclass
class _Sample:
    t: float  # monotonic
    cpu: float
    rss: float
    delivered: int
    backlog: int | None = None
    lag: float | None = None


def _wait_up(proc: subprocess.Popen[bytes], http_port: int, meters: int, work: Path) -> None:
    deadline = time.monotonic() + 60 + meters * 0.1
    while True:
        if proc.poll() is not None:
            tail = (work / "gateway.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the gateway exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(OSError, ValueError, KeyError):
            devices = status_doc(http_port, timeout=2)["devices"]
            if len(devices) == meters and all(d.get("state") == "up" for d in devices.values()):
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway did not bring all {meters} meters up in time")
        time.sleep(0.25)


def _counters(doc: dict[str, Any]) -> tuple[int, int, int]:
    devices = doc.get("devices", {}).values()
    requests = sum(int(d.get("requests", 0)) for d in devices)
    errors = sum(int(d.get("errors", 0)) for d in devices)
    return int(doc.get("energy", {}).get("samples", 0)), requests, errors


def _lag_of(doc: dict[str, Any]) -> float:
    lags = [doc.get("buffer", {}).get("oldest_age_s"), doc.get("uplink", {}).get("lag_s")]
    return max((float(x) for x in lags if isinstance(x, int | float)), default=0.0)


_LOCAL_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+[+-]\d\d:\d\d ")


def _scan_log(path: Path) -> tuple[dict[str, int], list[str]]:
    levels: Counter[str] = Counter()
    samples: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        line = _LOCAL_TIME.sub("", line, count=1)  # a log to a file leads with the local time
        level = line.split(" ", 1)[0]
        if level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            levels[level] += 1
            if level != "INFO" and len(samples) < 5:
                samples.append(line[:200])
        elif line.startswith("Traceback"):
            levels["traceback"] += 1
    return dict(levels), samples


@contextlib.contextmanager
def _py_spy(pid: int, spec: SoakSpec, out: str) -> Iterator[subprocess.Popen[bytes] | None]:
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        print(f"py-spy not found beside {sys.executable}: no profile", file=sys.stderr)
        yield None
        return
    cmd = [
        str(exe), "record", "--pid", str(pid), "--duration", "unlimited",
        "--rate", str(spec.py_spy_rate), "--format", "speedscope", "--threads", "-o", out,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        # Recorded to the end of the measured phase (a wait for a window may extend it):
        # py-spy writes its file on SIGINT.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_soak(spec: SoakSpec, work: Path, say: Callable[[str], None] = lambda _: None) -> SoakResult:
    """One run: servers, broker, subscriber, gateway; measure; stop everything; the figures."""
    result = SoakResult(spec, commit=_commit())
    tally: Tally | None = None
    (work / "data").mkdir(parents=True, exist_ok=True)
    result.load_before = os.getloadavg()
    servers = start_meter_servers(work, spec.meters, servers=spec.servers, install=spec.install)
    result.servers = servers.what
    stack = contextlib.ExitStack()
    try:
        stack.callback(servers.stop)
        writer = RegisterWriter(servers.writer_targets)
        stack.callback(writer.close)
        broker = Mosquitto(work / "broker")
        broker.start()
        stack.callback(broker.stop)
        tally = Tally(broker.port)
        stack.callback(tally.close)
        http_port = free_port()
        config = write_config(
            work, servers.ports, broker_port=broker.port, http_port=http_port, qos=spec.qos,
            durability=spec.durability, accounting=spec.accounting,
        )  # fmt: skip
        proc, log = start_gateway(work, config, spec.fake_start)
        if spec.fake_start:  # the gateway's wall clock minus ours, for the lag read from the db
            started = datetime.fromisoformat(spec.fake_start + "+00:00").timestamp()
            result.clock_offset_s = started - time.time()
        stack.callback(log.close)
        stack.callback(_kill, proc)
        say(f"gateway pid {proc.pid}; waiting for {spec.meters} meters to come up")
        _wait_up(proc, http_port, spec.meters, work)
        say(f"all up; warm-up {spec.warmup_s:g} s")
        time.sleep(spec.warmup_s)
        db = work / "data" / "ironwatt.db"  # the gateway's buffer: data_dir/ironwatt.db
        _measure(spec, result, proc, http_port, tally, servers, broker, db)
        result.stop_s = stop_gateway(proc)
        result.gateway_exit = proc.returncode
        deadline = time.monotonic() + 3
        while not tally.offline_seen() and time.monotonic() < deadline:
            time.sleep(0.05)
        result.offline_seen = tally.offline_seen()
        result.writer_errors = writer.errors
    except RuntimeError as exc:
        result.failure = str(exc)
    finally:
        stack.close()
    _finish(result, tally, work)
    result.load_after = os.getloadavg()
    return result


def _measure(
    spec: SoakSpec, r: SoakResult, proc: subprocess.Popen[bytes], http_port: int,
    tally: Tally, servers: MeterServers, broker: Mosquitto, db: Path,
) -> None:  # fmt: skip
    pid = proc.pid
    reset_peak(pid)
    doc = status_doc(http_port)
    reads0, req0, err0 = _counters(doc)
    stored0 = doc.get("buffer", {}).get("backlog", 0)
    threads0 = thread_stats(pid)
    io0 = proc_io(pid)
    machine0 = all_cpu()
    delivered0 = tally.snapshot()
    t0 = time.monotonic()
    wall0 = time.time() + r.clock_offset_s
    samples = [_Sample(t0, tree_cpu(pid), proc_rss_mb(pid), 0, stored0, _lag_of(doc))]
    end = t0 + spec.duration_s
    next_status = t0 + spec.status_every_s
    profile = f"{spec.py_spy}-qos{spec.qos}.speedscope.json" if spec.py_spy else None
    spy = _py_spy(pid, spec, profile) if profile else contextlib.nullcontext()
    peek = OutboxPeek(db, r.clock_offset_s)
    with spy, contextlib.closing(peek):
        tick = t0
        while True:
            tick += 1.0
            time.sleep(max(0.0, tick - time.monotonic()))
            now = time.monotonic()
            if proc.poll() is not None:
                r.failure = f"the gateway exited with {proc.returncode} while measured"
                break
            delivered = sum((tally.snapshot() - delivered0).values())
            sample = _Sample(now, tree_cpu(pid), proc_rss_mb(pid), delivered)
            sample.backlog, sample.lag = peek.peek()
            if now >= next_status:
                with contextlib.suppress(OSError, ValueError):
                    doc = status_doc(http_port)
                    backlog = int(doc.get("buffer", {}).get("backlog", 0))
                    sample.backlog = max(backlog, sample.backlog or 0)
                    sample.lag = max(_lag_of(doc), sample.lag or 0.0)
                next_status += spec.status_every_s
            samples.append(sample)
            windows = tally.snapshot()["energy"]
            if now >= end and (windows or now >= end + spec.window_wait_s):
                break
    r.profile = profile
    rate = (samples[-1].cpu - samples[0].cpu) / max(1e-9, samples[-1].t - t0)
    r.status_cost_ms = _status_cost(pid, http_port, rate)
    doc = status_doc(http_port)
    reads1, req1, err1 = _counters(doc)
    threads1 = thread_stats(pid)
    io1 = proc_io(pid)
    machine1 = all_cpu()
    delivered1 = tally.snapshot()
    last = samples[-1]
    span = last.t - t0
    cpu = last.cpu - samples[0].cpu
    r.duration_s = span
    r.cpu_pct = 100 * cpu / span
    r.reads, r.requests, r.poll_errors = reads1 - reads0, req1 - req0, err1 - err0
    r.us_per_read = 1e6 * cpu / r.reads if r.reads else math.nan
    measured = delivered1 - delivered0
    r.delivered_measured = dict(measured)
    r.us_per_msg = 1e6 * cpu / sum(measured.values()) if measured else math.nan
    backlog1 = int(doc.get("buffer", {}).get("backlog", 0))
    stored = sum(measured[c] for c in ("telemetry", "energy", "group", "event"))
    r.stored_per_s = (stored + backlog1 - int(stored0)) / span
    for name, (_, c1, v1, i1) in sorted(threads1.items(), key=lambda kv: -kv[1][1]):
        _, c0, v0, i0 = threads0.get(name, (0, 0.0, 0, 0))
        if c1 > c0 or v1 > v0:
            r.threads[name] = (100 * (c1 - c0) / span, (v1 - v0) / span, (i1 - i0) / span)
    r.io_per_s = {k: (v - io0.get(k, 0)) / span for k, v in io1.items()}
    if spec.strace_s > 0:
        tids = {name: t[0] for name, t in threads1.items() if name.startswith(("event", "iron"))}
        before = tally.snapshot()
        t_census = time.monotonic()
        r.syscall_tool, r.syscalls = census(pid, tids, spec.strace_s) or ("", {})
        r.syscalls_s = time.monotonic() - t_census
        r.syscalls_messages = sum((tally.snapshot() - before).values())
    rss = [s.rss for s in samples]
    r.rss_start_mb = rss[0]
    r.rss_mb = _median(rss[len(rss) // 2 :])
    r.rss_max_sampled_mb = max(rss)
    r.rss_peak_mb = max(proc_rss_mb(pid, "VmHWM"), r.rss_max_sampled_mb)
    if spec.fake_start:
        _midnight(r, samples, t0, wall0)
    edge = max(5, min(60, len(rss) // 4))  # a minute at each end (a quarter of a short run)
    r.rss_growth_mb = _median(rss[-edge:]) - _median(rss[:edge])
    r.growth_span_s = samples[-1 - edge // 2].t - samples[edge // 2].t
    backlogs = [s.backlog for s in samples if s.backlog is not None]
    lags = [s.lag for s in samples if s.lag is not None]
    r.backlog_max = max(backlogs, default=0)
    r.backlog_end = backlog1
    r.lag_max_s = max(lags, default=0.0)
    r.minutes = _per_minute(samples, t0)
    # Who else used the machine meanwhile: ours (servers, broker, this bench) and the rest.
    gateway = descendants(pid)
    ours = {
        "meter servers": {p.pid for p in servers.procs},
        "broker": {broker.proc.pid} if broker.proc else set(),
        "bench": {os.getpid()},
    }
    mine = gateway | set().union(*ours.values())
    for label, pids in ours.items():
        used = sum(machine1[p][1] - machine0[p][1] for p in pids if p in machine0 and p in machine1)
        r.own_cpu_pct[label] = 100 * used / span
    others = [
        (cmd, 100 * (cpu1 - machine0[p][1]) / span)
        for p, (cmd, cpu1) in machine1.items()
        if p in machine0 and p not in mine
    ]
    r.others = [o for o in sorted(others, key=lambda o: -o[1]) if o[1] >= 2.0][:5]


def _midnight(r: SoakResult, samples: list[_Sample], t0: float, wall0: float) -> None:
    """The RSS around the gateway's first midnight (UTC), when every interval closes at once;
    `wall0` is the gateway's wall clock when the measuring began (monotonic `t0`)."""
    day = 86400.0
    at = t0 + (math.floor(wall0 / day) + 1) * day - wall0  # its midnight, in our monotonic time
    r.midnight_in_s = at - t0
    after = [s.rss for s in samples if at <= s.t <= at + 90.0]
    before = [s.rss for s in samples if at - 60.0 <= s.t < at]
    if after:
        r.rss_midnight_mb = max(after)
    if before:
        r.rss_before_midnight_mb = _median(before)


class OutboxPeek:
    """The outbox seen from outside: rows waiting and the age of the oldest, from the database
    file itself (read-only; WAL readers never block the gateway's writer)."""

    def __init__(self, path: Path, clock_offset_s: float = 0.0) -> None:
        self.path = path
        self.clock_offset_s = clock_offset_s  # the gateway's wall clock minus ours
        self._conn: sqlite3.Connection | None = None

    def peek(self) -> tuple[int | None, float | None]:
        try:
            if self._conn is None:
                uri = f"file:{self.path}?mode=ro"
                self._conn = sqlite3.connect(uri, uri=True, timeout=0.5, isolation_level=None)
            count = self._conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
            row = self._conn.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
        except sqlite3.Error:
            return None, None
        now = time.time() + self.clock_offset_s
        return int(count), 0.0 if row is None else max(0.0, now - float(row[0]))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _status_cost(pid: int, http_port: int, base_rate: float, calls: int = 30) -> float:
    """CPU ms one /status read costs the gateway (beyond its running rate): how much reading
    it often would distort the figures."""
    c0, t0 = tree_cpu(pid), time.monotonic()
    try:
        for _ in range(calls):
            status_doc(http_port)
    except (OSError, ValueError):
        return math.nan
    c1, t1 = tree_cpu(pid), time.monotonic()
    return 1e3 * max(0.0, (c1 - c0) - base_rate * (t1 - t0)) / calls


def _per_minute(samples: list[_Sample], t0: float) -> list[dict[str, float]]:
    rows: list[dict[str, float]] = []
    by_minute: dict[int, list[_Sample]] = {}
    for s in samples:
        by_minute.setdefault(int((s.t - t0) // 60), []).append(s)
    prev = samples[0]
    for minute in sorted(by_minute):
        group = by_minute[minute]
        last = group[-1]
        dt = last.t - prev.t
        if dt <= 0:
            continue
        rows.append({
            "minute": minute + 1,
            "cpu_pct": 100 * (last.cpu - prev.cpu) / dt,
            "rss_mb": max(s.rss for s in group),
            "backlog_max": max((s.backlog for s in group if s.backlog is not None), default=0),
            "lag_max_s": max((s.lag for s in group if s.lag is not None), default=0.0),
            "delivered_per_s": (last.delivered - prev.delivered) / dt,
        })  # fmt: skip
        prev = last
    return rows


def _finish(r: SoakResult, tally: Tally | None, work: Path) -> None:
    if tally is not None:
        r.delivered = dict(tally.snapshot())
        r.seq_holes = tally.holes()
        r.streams = len(tally.streams)
        r.duplicates = sum(s.duplicates for s in tally.streams.values())
        r.out_of_order = sum(s.out_of_order for s in tally.streams.values())
        r.replayed, r.bad_payloads = tally.replayed, tally.bad_payloads
        r.offline_seen = tally.offline_seen()
        ages = sorted(tally.telemetry_age)
        if ages:
            r.telemetry_age_s = (ages[len(ages) // 2], ages[int(len(ages) * 0.95)], ages[-1])
            r.telemetry_points_per_msg = tally.telemetry_points / len(ages)
        starts = tally.window_starts
        r.closes = len(starts)
        r.incomplete_closes = sum(1 for n in starts.values() if n < r.spec.meters)
        for _, doc in tally.status:  # the retained status: backlog and lag_s as published
            with contextlib.suppress(TypeError, ValueError):
                r.backlog_max = max(r.backlog_max, int(doc.get("backlog", 0)))
                r.lag_max_s = max(r.lag_max_s, float(doc.get("lag_s", 0.0)))
    log = work / "gateway.log"
    if log.exists():
        r.log_lines, r.log_samples = _scan_log(log)


# ---- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--meters", type=int, default=200)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds measured per run")
    parser.add_argument("--qos", choices=["0", "1", "both"], default="both")
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--status-every", type=float, default=30.0, help="seconds between /status")
    parser.add_argument("--servers", choices=["auto", "c", "pymodbus"], default="auto")
    parser.add_argument("--durability", choices=["full", "normal"])
    parser.add_argument("--py-spy", metavar="PREFIX", help="record a py-spy profile to PREFIX-*")
    parser.add_argument("--py-spy-rate", type=int, default=100)
    parser.add_argument(
        "--strace", type=float, default=0.0, metavar="S",
        help="after measuring, count each thread's syscalls for S seconds (perf trace/strace)",
    )  # fmt: skip
    parser.add_argument(
        "--accounting", action="store_true",
        help="intervals 1m 15m 1h 1d 1mo, three shifts, ten groups and a tariff",
    )  # fmt: skip
    parser.add_argument(
        "--fake-start", metavar="'YYYY-mm-dd HH:MM:SS'",
        help="start the gateway's wall clock here (UTC, libfaketime), e.g. '2026-12-31 23:58:00'",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    qos_runs = [0, 1] if args.qos == "both" else [int(args.qos)]
    results: list[SoakResult] = []
    for qos in qos_runs:
        spec = SoakSpec(
            meters=args.meters, duration_s=args.duration, qos=qos, warmup_s=args.warmup,
            status_every_s=args.status_every, servers=args.servers, durability=args.durability,
            py_spy=args.py_spy, py_spy_rate=args.py_spy_rate, strace_s=args.strace,
            accounting=args.accounting, fake_start=args.fake_start,
        )  # fmt: skip
        work = Path(tempfile.mkdtemp(prefix=f"ironwatt-soak-qos{qos}-"))
        print(f"-- qos {qos}: {spec.meters} meters, {spec.duration_s:g} s, work dir {work}")
        result = run_soak(spec, work, say=lambda text: print(f"   {text}", flush=True))
        results.append(result)
        print(result.table())
        print(result.result_line(), flush=True)
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    if len(results) > 1:
        print("summary:")
        for r in results:
            print("  " + r.result_line())
    return 0 if all(r.failure is None for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
