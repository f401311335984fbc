"""A reload reports its verdict: `ironwatt reload` (the unit's ExecReload=) exits 0 when the file
was applied and 2 when it was refused, the daemon tells systemd RELOADING=1 ... READY=1 with a
STATUS= that says which, and a refusal repeated within a minute is still logged each time."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import run as cli_run
from gateway.cli.main import build_parser
from gateway.daemon import reload_control
from gateway.daemon.logs import TRANSITION, setup_logging
from gateway.daemon.notify import Notifier
from gateway.daemon.reload_control import ReloadOutcome, ReloadRequests, socket_path
from tests.daemon.conftest import ROOT, GatewayProcess
from tests.support.mosquitto import Mosquitto


def _config(path: Path, data: Path, broker: Mosquitto, *, broken: bool = False) -> None:
    text = f"""
[gateway]
id = "gw-reload"
site = "s"
timezone = "UTC"
data_dir = "{data}"

[mqtt]
url = "{broker.url}"
topic_prefix = "iw"

[energy]
intervals = ["1m"]
"""
    if broken:
        text += '\n[[devices]]\nname = "m1"\ndriver = "modbus"\nhost = "127.0.0.1"\npoll = "fast"\n'
    path.write_text(text)


def _reload(
    sock: Path, timeout: float = 30.0, systemd: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "INVOCATION_ID"}
    if systemd:
        env["INVOCATION_ID"] = "0123456789abcdef0123456789abcdef"  # as under ExecReload=
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "reload", "--socket", str(sock)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False, env=env,
    )  # fmt: skip


def test_reload_verdicts(
    shared_broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, data, runtime = tmp_path / "c.toml", tmp_path / "data", tmp_path / "run"
    runtime.mkdir()
    _config(config, data, shared_broker)
    gw = GatewayProcess(config, tmp_path)
    with monkeypatch.context() as env:
        env.setenv("RUNTIME_DIRECTORY", str(runtime))  # as systemd sets it (RuntimeDirectory=)
        gw.start()
    sock = runtime / "control.sock"
    try:
        gw.read_notes(until="READY=1", timeout=20)
        assert sock.is_socket()
        assert (sock.stat().st_mode & 0o077) == 0

        # -- a good file: applied, exit 0, RELOADING=1 (with the monotonic time) then READY=1.
        done = _reload(sock)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("config reloaded: added none, removed none, changed none")
        notes = gw.read_notes(until="STATUS=config reloaded", timeout=10)
        reloading = next(n for n in notes if n.startswith("RELOADING=1"))
        assert "\nMONOTONIC_USEC=" in reloading
        assert notes.index(reloading) < len(notes) - 1
        assert notes[-1].startswith("READY=1\nSTATUS=config reloaded: added none")

        # -- a broken file, twice: exit 2 with the report, READY=1 with "reload refused", the
        # gateway stays; both refusals are in the log (the repeat filter lets them through).
        _config(config, data, shared_broker, broken=True)
        for attempt in (1, 2):
            refused = _reload(sock, systemd=attempt == 2)
            assert refused.returncode == 2, (refused.stdout, refused.stderr)
            assert "reload refused, the running config stays" in refused.stderr
            assert "devices[0].poll" in refused.stderr
            # From a shell the whole report; under systemd one line (the gateway logged it).
            assert refused.stderr.count("\n") == (1 if attempt == 2 else 3), refused.stderr
            notes = gw.read_notes(until="STATUS=reload refused", timeout=10)
            assert f"{config}:" in notes[-1]
            assert "devices[0].poll" in notes[-1]
            assert gw.log().count("config reload refused, the running config stays") == attempt
        assert gw.proc is not None
        assert gw.proc.poll() is None

        # -- SIGHUP takes the same path (what Type=notify-reload sends): refused again, logged.
        gw.signal(signal.SIGHUP)
        gw.read_notes(until="STATUS=reload refused", timeout=10)
        gw.wait_until(
            lambda: gw.log().count("config reload refused, the running config stays") == 3,
            10,
            "the third refusal in the log",
        )

        # -- fixed: applied again, and "config reloaded" logged a second time within the minute.
        _config(config, data, shared_broker)
        done = _reload(sock)
        assert done.returncode == 0, done.stderr
        gw.wait_until(lambda: gw.log().count("config reloaded:") == 2, 10, "second reload line")
        assert gw.stop() == 0
        assert not sock.exists(), "the socket goes with the gateway"
    finally:
        gw.close()

    # -- nobody listening: exit 1 and a hint, never a traceback.
    gone = _reload(sock, timeout=10)
    assert gone.returncode == 1
    assert "no verdict from a gateway" in gone.stderr
    assert "Traceback" not in gone.stderr


def test_reload_finds_the_socket_in_data_dir(tmp_path: Path) -> None:
    """Run by hand (no systemd): `ironwatt reload -c FILE` asks the gateway in the file's
    data_dir (never the one in /run/ironwatt), even when the rest of the file is broken (reading
    it must not need a valid config)."""
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "c.toml"
    config.write_text('[gateway]\ndata_dir = "data"\n[[devices]]\npoll = "fast"\n')
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(data / "control.sock"))
    listener.listen(1)
    listener.settimeout(10)
    env = {k: v for k, v in os.environ.items() if k != "RUNTIME_DIRECTORY"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "reload", "-c", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        conn, _ = listener.accept()
        with conn:
            assert conn.recv(100) == b"reload\n"
            conn.sendall(ReloadOutcome(True, "added ['m9']", warnings=("w",)).encode())
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert out == "config reloaded: added ['m9']\nwarning: w\n"
    finally:
        proc.kill()
        proc.communicate()
        listener.close()


def _socket_for(*argv: str) -> Path:
    args = build_parser("reload").parse_args(["reload", *argv])
    return cli_run._reload_socket(args)


def test_which_socket_reload_asks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--socket; else $RUNTIME_DIRECTORY (ExecReload=); else the data_dir of an explicit -c;
    else /run/ironwatt (here a stand-in, with a live-looking socket in it)."""
    runtime = tmp_path / "run-ironwatt"
    runtime.mkdir()
    (runtime / "control.sock").touch()
    monkeypatch.setattr(reload_control, "DEFAULT_RUNTIME_DIR", runtime)
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    config = tmp_path / "etc" / "c.toml"
    config.parent.mkdir()
    config.write_text('[gateway]\ndata_dir = "/srv/gw-b"\n')

    assert _socket_for() == runtime / "control.sock"
    # -c: that file's gateway, even though a socket exists in /run/ironwatt.
    assert _socket_for("-c", str(config)) == Path("/srv/gw-b/control.sock")
    assert _socket_for("-c", str(config), "--socket", "/x.sock") == Path("/x.sock")
    config.write_text('[gateway]\ndata_dir = "data"\n')
    assert _socket_for("-c", str(config)) == config.parent / "data" / "control.sock"
    config.write_text('[gateway]\nid = "a"\n')  # the model's default data_dir
    assert _socket_for("-c", str(config)) == Path("/var/lib/ironwatt/control.sock")
    # As ExecReload= (systemd sets RUNTIME_DIRECTORY): the unit's socket, -c or not.
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "unit"))
    assert _socket_for("-c", str(config)) == tmp_path / "unit" / "control.sock"
    assert _socket_for() == tmp_path / "unit" / "control.sock"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (None, "cannot read"),
        ("[gateway\n", "is not TOML"),
        ("[gateway]\ndata_dir = 5\n", "gateway.data_dir is not a path"),
        ("gateway = 5\n", "gateway.data_dir is not a path"),
    ],
)
def test_a_config_that_names_no_socket(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    text: str | None,
    said: str,
) -> None:
    """-c FILE that does not say where its gateway listens: exit 1 and why, never a guess (and
    never another gateway's socket)."""
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    config = tmp_path / "c.toml"
    if text is not None:
        config.write_text(text)
    args = build_parser("reload").parse_args(["reload", "-c", str(config)])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "cannot tell where the gateway listens" in err
    assert said in err
    assert "--socket" in err
    assert "Traceback" not in err


def test_no_gateway_at_the_data_dir_of_c(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    config = tmp_path / "c.toml"
    config.write_text(f'[gateway]\ndata_dir = "{tmp_path}"\n')
    args = build_parser("reload").parse_args(["reload", "-c", str(config)])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert f"no verdict from a gateway at {tmp_path / 'control.sock'}" in err
    assert f"is a gateway running with {config}?" in err
    assert "without -c" in err


def test_socket_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    assert socket_path(tmp_path) == tmp_path / "control.sock"
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/ironwatt:/run/other")
    assert socket_path(tmp_path) == Path("/run/ironwatt/control.sock")


@pytest.mark.asyncio
async def test_a_request_is_answered_by_a_reload_that_starts_after_it() -> None:
    requests = ReloadRequests()
    early = requests.request()
    assert requests.pending.is_set()
    taken = requests.take()  # a reload starts: it answers `early` ...
    assert not requests.pending.is_set()
    late = requests.request()  # ... but not one asked for while it runs (the file may be newer)
    requests.answer(taken, ReloadOutcome(True, "first"))
    assert early.result().summary == "first"
    assert not late.done()
    requests.refuse_all("stopping")
    assert late.result() == ReloadOutcome(False, "stopping")
    await asyncio.sleep(0)


def test_reloading_notification(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    try:
        notifier = Notifier(str(path))
        assert notifier.reloading("reloading x\ny")
        fields = sock.recv(4096).decode().split("\n")
        assert fields[0] == "RELOADING=1"
        assert fields[2] == "STATUS=reloading x y"
        usec = int(fields[1].removeprefix("MONOTONIC_USEC="))
        assert abs(usec - int(__import__("time").monotonic() * 1e6)) < 2_000_000
        assert notifier.ready("reload refused: a\nb")
        assert sock.recv(4096) == b"READY=1\nSTATUS=reload refused: a b"
    finally:
        sock.close()


def test_transitions_are_never_held_back() -> None:
    stream = io.StringIO()
    handler = setup_logging("info", "text", stream=stream, repeat_window=60.0)
    try:
        log = logging.getLogger("ironwatt.test")
        for _ in range(3):
            log.error("config reload refused: x", extra=TRANSITION)
            log.warning("device m1 is down: timeout")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines.count("ERROR ironwatt.test: config reload refused: x") == 3
    assert lines.count("WARNING ironwatt.test: device m1 is down: timeout") == 1
