"""The daemon's small parts: sd_notify, logging, clock steps, the systemd unit's hardening."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from gateway.daemon.clock import ClockWatch
from gateway.daemon.logs import log_style, register_secret, setup_logging
from gateway.daemon.notify import Notifier, watchdog_interval

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def notify_socket(tmp_path: Path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield str(path), sock
    sock.close()


def test_notify_sends_datagrams(notify_socket, monkeypatch) -> None:
    path, sock = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    notifier = Notifier()
    assert notifier.enabled
    assert notifier.ready("2 devices")
    assert sock.recv(4096) == b"READY=1\nSTATUS=2 devices"
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.status("line one\nline two")
    assert sock.recv(4096) == b"STATUS=line one line two"
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    notifier.close()


def test_notify_abstract_socket() -> None:
    name = f"ironwatt-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        assert Notifier("@" + name).watchdog()
        assert sock.recv(100) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_notify_without_systemd_is_silent(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier().enabled
    assert Notifier().ready() is False
    # A socket path nobody listens on is not an error either.
    assert Notifier(str(tmp_path / "gone.sock")).ready() is False


def test_watchdog_interval(monkeypatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval() is None


@pytest.fixture
def captured_log():
    stream = io.StringIO()
    handler = setup_logging("debug", "text", stream=stream, repeat_window=60.0)
    yield stream
    logging.getLogger().removeHandler(handler)


def test_repeats_are_rate_limited(captured_log: io.StringIO) -> None:
    log = logging.getLogger("ironwatt.test")
    for _ in range(50):
        log.warning("device %s is down: %s", "m1", "timeout")
    log.warning("device %s is down: %s", "m2", "timeout")
    lines = captured_log.getvalue().splitlines()
    assert lines == [
        "WARNING ironwatt.test: device m1 is down: timeout",
        "WARNING ironwatt.test: device m2 is down: timeout",
    ]


def test_library_errors_are_one_line_and_rate_limited(captured_log: io.StringIO) -> None:
    # pymodbus appends hex dumps of its last frames to each error; ids differ every time.
    lib = logging.getLogger("pymodbus.logging")
    for i in range(20):
        lib.error(f"ERROR: request ask for id={i + 2} but got id={i}, Skipping.\n"
                  ">>>>> send: 0x7 0x67 0x0\n>>>>> recv: 0xa 0xef")  # fmt: skip
        lib.error("Repeating....")
    lines = captured_log.getvalue().splitlines()
    assert lines == ["ERROR pymodbus.logging: ERROR: request ask for id=2 but got id=0, Skipping."]


def test_repeat_summary_after_window() -> None:
    now = [0.0]
    from gateway.daemon.logs import RepeatFilter

    filt = RepeatFilter(10.0, clock=lambda: now[0])
    record = logging.LogRecord("x", logging.INFO, "", 0, "same %s", ("msg",), None)
    assert filt.filter(record)
    for _ in range(3):
        assert not filt.filter(
            logging.LogRecord("x", logging.INFO, "", 0, "same %s", ("msg",), None)
        )
    now[0] = 11.0
    later = logging.LogRecord("x", logging.INFO, "", 0, "same %s", ("msg",), None)
    assert filt.filter(later)
    assert later.getMessage() == "same msg (repeated 3 more times in the last 10s)"


def test_secrets_never_printed(captured_log: io.StringIO) -> None:
    register_secret("s3cr3t-pa55")
    log = logging.getLogger("ironwatt.test")
    log.info("connecting with %s", "s3cr3t-pa55")
    log.info("broker mqtt://user:hunter22@broker:1883 refused")
    try:
        raise RuntimeError("auth failed for s3cr3t-pa55")
    except RuntimeError:
        log.exception("uplink")
    text = captured_log.getvalue()
    assert "s3cr3t-pa55" not in text
    assert "hunter22" not in text
    assert "connecting with ***" in text
    assert "mqtt://user:***@broker" in text


def test_json_log_lines() -> None:
    stream = io.StringIO()
    handler = setup_logging("info", "json", stream=stream)
    try:
        logging.getLogger("ironwatt.test").info("device %s up", "m1", extra={"device": "m1"})
    finally:
        logging.getLogger().removeHandler(handler)
    doc = json.loads(stream.getvalue())
    assert doc["message"] == "device m1 up"
    assert doc["device"] == "m1"
    assert doc["level"] == "info"
    assert doc["time"].endswith("Z")


@pytest.mark.parametrize(
    ("wall_delta", "mono_delta", "expected"),
    [
        (1.0, 1.0, None),  # normal tick
        (1.001, 1.0, None),  # slew
        (-2.0, 1.0, None),  # backward by 3 s: at the threshold, not past it
        (-5.0, 1.0, -6.0),  # backward step
        (40.0, 1.0, None),  # forward by 39 s: less than a 60 s window
        (100.0, 1.0, 99.0),  # forward step longer than a window
    ],
)
def test_clock_steps(wall_delta: float, mono_delta: float, expected: float | None) -> None:
    wall, mono = [1_000_000.0], [50.0]
    watch = ClockWatch(60.0, 3.0, wall=lambda: wall[0], mono=lambda: mono[0])
    wall[0] += wall_delta
    mono[0] += mono_delta
    step = watch.check()
    if expected is None:
        assert step is None
    else:
        assert step is not None
        assert step.offset == pytest.approx(expected)
        assert step.direction == ("backward" if expected < 0 else "forward")
        # The next check measures from the new wall time: one step, one event.
        wall[0] += 1.0
        mono[0] += 1.0
        assert watch.check() is None


def test_systemd_unit_exposure() -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    unit = ROOT / "systemd" / "ironwatt.service"
    out = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for ironwatt\.service: ([0-9.]+)", out.stdout)
    assert match, out.stdout + out.stderr
    score = float(match.group(1))
    print(f"systemd-analyze security exposure of ironwatt.service: {score}")
    assert score <= 2.0
    text = unit.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "StateDirectory=ironwatt",
        "ConfigurationDirectory=ironwatt",
        "LoadCredential=",
        "MemoryDenyWriteExecute=yes",
        "After=network-online.target time-sync.target",
    ):
        assert line in text


def test_notify_never_blocks_on_a_full_socket(notify_socket) -> None:
    path, _sock = notify_socket  # bound but never read: its queue fills up
    notifier = Notifier(path)
    start = time.monotonic()
    results = [notifier.watchdog() for _ in range(2000)]
    assert time.monotonic() - start < 2.0
    assert results[0]
    assert not results[-1]


def test_lines_for_journald_carry_their_priority(tmp_path: Path) -> None:
    """Under journald ($JOURNAL_STREAM names stderr) `<N>` leads each line, so `journalctl -p
    warning` works; a file gets the local time first; an in-memory stream neither."""
    path = tmp_path / "journal"
    with path.open("w") as f:
        st = os.fstat(f.fileno())
        journal = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert log_style(f, journal) == "journal"
        assert log_style(f, {"JOURNAL_STREAM": "1:2"}) == "timestamped"
        assert log_style(f, {}) == "timestamped"
    assert log_style(io.StringIO(), journal) == "plain"
    for style, fmt in (("journal", "text"), ("journal", "json"), ("timestamped", "text"),
                       ("timestamped", "json")):  # fmt: skip
        stream = io.StringIO()
        handler = setup_logging("debug", fmt, stream=stream, style=style)
        try:
            log = logging.getLogger("ironwatt.test")
            log.critical("c")
            log.error("e")
            log.warning("device m1 is down: x", extra={"device": "m1", "event": "device_down"})
            log.info("i")
            log.debug("d")
        finally:
            logging.getLogger().removeHandler(handler)
        lines = stream.getvalue().splitlines()
        assert len(lines) == 5, lines
        if style == "journal":
            assert [line[:3] for line in lines] == ["<2>", "<3>", "<4>", "<6>", "<7>"]
            if fmt == "json":
                doc = json.loads(lines[2][3:])
                assert (doc["device"], doc["event"], doc["level"]) == (
                    "m1",
                    "device_down",
                    "warning",
                )
            else:
                assert lines[2] == "<4>WARNING ironwatt.test: device m1 is down: x"
        elif fmt == "json":  # JSON lines stay JSON: their own `time`, no stamp before them
            assert json.loads(lines[2])["message"] == "device m1 is down: x"
        else:
            stamp, _, rest = lines[2].partition(" WARNING ")
            assert rest == "ironwatt.test: device m1 is down: x"
            when = datetime.fromisoformat(stamp)
            assert when.tzinfo is not None
            assert abs(when.timestamp() - time.time()) < 60


def test_every_line_of_a_long_record_carries_its_priority_for_journald() -> None:
    """journald files each line on its own: a refused reload's report and a traceback must
    not fall to info below their first line."""
    stream = io.StringIO()
    handler = setup_logging("info", "text", stream=stream, style="journal")
    try:
        log = logging.getLogger("ironwatt.test")
        log.error("config reload refused, the running config stays:\n%s", "line 3: bad key")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("driver crashed")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[:2] == [
        "<3>ERROR ironwatt.test: config reload refused, the running config stays:",
        "<3>    line 3: bad key",
    ]
    assert len(lines) > 4  # the traceback
    assert all(line.startswith("<3>") for line in lines)
