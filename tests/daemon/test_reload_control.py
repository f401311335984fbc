"""The control socket and `ironwatt reload` against misbehaving peers and folders: the socket is
0600 from the moment it has its name, in a folder only we (or root) can write to, never through
a symlink; a client sending junk gets a refusal (no traceback in the gateway's log); an answer
that is not a verdict, or none in time, is a clear message with its own exit status; and the
time budget: the gateway's verdict always comes before `ironwatt reload` gives up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.cli.main import build_parser
from gateway.config.records import load_config_isolated
from gateway.daemon.notify import Notifier
from gateway.daemon.reload_control import (
    RELOAD_WAIT_S,
    RELOAD_WORKER_TIMEOUT_S,
    BadAnswer,
    ControlServer,
    NoVerdictYet,
    ReloadOutcome,
    ReloadRequests,
    ask_reload,
    ask_status,
    folder_problem,
)
from gateway.errors import ConfigWorkerError
from tests.daemon.conftest import ROOT

# ---- the socket and its folder ----------------------------------------------------------------


def _private(path: Path) -> Path:
    path.mkdir(mode=0o700)
    path.chmod(0o700)
    return path


def _stat(mode: int, uid: int) -> os.stat_result:
    return os.stat_result((mode, 1, 1, 2, uid, 0, 4096, 0, 0, 0))


@pytest.mark.parametrize(
    ("mode", "uid", "refused"),
    [
        (stat.S_IFDIR | 0o700, 1000, None),  # ours, private: /run/ironwatt, /var/lib/ironwatt
        (stat.S_IFDIR | 0o770, 1000, None),  # ours, shared with our group: our choice
        (stat.S_IFDIR | 0o755, 0, None),  # root's: only root could swap the socket
        (stat.S_IFDIR | 0o700, 1234, "owned by uid 1234"),
        (stat.S_IFDIR | 0o1777, 0, "writable by group or others (mode 1777) and not ours"),
        (stat.S_IFDIR | 0o775, 0, "writable by group or others (mode 0775) and not ours"),
        (stat.S_IFREG | 0o600, 1000, "not a directory"),
    ],
)
def test_which_folders_may_hold_the_socket(mode: int, uid: int, refused: str | None) -> None:
    problem = folder_problem(_stat(mode, uid), euid=1000)
    assert problem == refused if refused is None else refused in str(problem)


@pytest.mark.asyncio
async def test_the_socket_is_0600_from_the_moment_it_has_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _private(tmp_path / "run")
    path = folder / "control.sock"
    appeared: list[tuple[int, int]] = []
    replace = os.replace

    def watched(src: Any, dst: Any) -> None:
        # The moment the socket gets its name: what it is, and the folder it was made in.
        if Path(dst) == path:
            appeared.append((os.lstat(src).st_mode, os.lstat(Path(src).parent).st_mode))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", watched)
    requests = ReloadRequests()
    server = ControlServer(path, requests)
    old = os.umask(0)  # the worst umask: a socket bound at its name would be 0777
    try:
        assert await server.start()
    finally:
        os.umask(old)
    try:
        [(mode, private)] = appeared
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(private) == 0o700
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
        assert sorted(p.name for p in folder.iterdir()) == ["control.sock"]  # no folder left
        # It serves: a request answered by the next reload.
        asked = asyncio.get_running_loop().run_in_executor(None, ask_reload, path, 10.0)
        await asyncio.wait_for(requests.pending.wait(), 10)
        requests.answer(requests.take(), ReloadOutcome(True, "added none"))
        assert (await asked).summary == "added none"
    finally:
        await server.close()
    assert not path.exists()


@pytest.mark.asyncio
async def test_a_stale_socket_is_replaced_anything_else_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _private(tmp_path / "run")
    path = folder / "control.sock"
    # Left by a process that was killed: bound, nobody listening.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))
    server = ControlServer(path, ReloadRequests())
    assert await server.start()
    await server.close()
    assert not path.exists()

    # A symlink (to a file elsewhere) or a plain file in its place: refused, untouched.
    target = tmp_path / "precious"
    target.write_text("x")
    target.chmod(0o644)
    for make, kind in ((lambda: path.symlink_to(target), "a symlink"),
                       (lambda: path.write_text("y"), "not a socket")):  # fmt: skip
        make()
        caplog.clear()
        with caplog.at_level(logging.WARNING, "ironwatt.reload"):
            assert not await ControlServer(path, ReloadRequests()).start()
        assert f"{path} exists and is {kind}: left alone" in caplog.text
        assert "SIGHUP still reloads" in caplog.text
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        assert target.read_text() == "x"
        assert sorted(p.name for p in folder.iterdir()) == ["control.sock"]
        path.unlink()


@pytest.mark.asyncio
async def test_a_folder_another_user_can_write_to_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a folder of another user needs root (folder_problem's table covers it)")
    folder = _private(tmp_path / "theirs")
    os.chown(folder, 65534, 65534)
    with caplog.at_level(logging.WARNING, "ironwatt.reload"):
        assert not await ControlServer(folder / "control.sock", ReloadRequests()).start()
    assert f"the folder {folder} is owned by uid 65534" in caplog.text
    assert list(folder.iterdir()) == []


@pytest.mark.asyncio
async def test_a_symlinked_folder_is_followed(tmp_path: Path) -> None:
    """StateDirectory= with DynamicUser=: /var/lib/ironwatt -> private/ironwatt."""
    real = _private(tmp_path / "private")
    (tmp_path / "data").symlink_to(real)
    server = ControlServer(tmp_path / "data" / "control.sock", ReloadRequests())
    assert await server.start()
    try:
        assert (real / "control.sock").is_socket()
    finally:
        await server.close()
    assert list(real.iterdir()) == []


@pytest.mark.asyncio
async def test_close_leaves_a_newer_socket_alone(tmp_path: Path) -> None:
    """A second gateway that took over the name: the first one's close must not remove it."""
    folder = _private(tmp_path / "run")
    path = folder / "control.sock"
    first = ControlServer(path, ReloadRequests())
    assert await first.start()
    second = ControlServer(path, ReloadRequests())
    assert await second.start()
    await first.close()
    assert path.is_socket()
    await second.close()
    assert not path.exists()


# ---- misbehaving clients: a refusal, never a traceback ----------------------------------------


@pytest.mark.asyncio
async def test_junk_from_a_client_gets_a_refusal_not_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    path = _private(tmp_path / "run") / "control.sock"
    server = ControlServer(path, ReloadRequests())
    assert await server.start()

    async def exchange(data: bytes) -> ReloadOutcome:
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write(data)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            return ReloadOutcome.decode(await asyncio.wait_for(reader.readline(), 10))
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    try:
        with caplog.at_level(logging.DEBUG):
            long = await exchange(b"reload" * 12_000 + b"\n")  # 72 KB: over asyncio's 64 KiB too
            assert long == ReloadOutcome(False, "request longer than 4096 bytes")
            no_newline = await exchange(b"x" * 70_000)
            assert not no_newline.applied
            assert "longer than" in no_newline.summary
            odd = await exchange(b"\xff\xfehello\n")
            assert not odd.applied
            assert odd.summary.startswith("unknown request")
            # One that leaves without a word: dropped quietly.
            _reader, writer = await asyncio.open_unix_connection(str(path))
            writer.close()
            # Nothing to wait on: the server keeps no count, and what is checked is that its
            # handler meets the empty connection (before the close below) without a word.
            await asyncio.sleep(0.1)
    finally:
        await server.close()
        loop.set_exception_handler(None)
    assert unhandled == []
    assert "Traceback" not in caplog.text
    assert "Unhandled exception" not in caplog.text


# ---- misbehaving servers: BadAnswer, NoVerdictYet, OSError --------------------------------------


@contextlib.contextmanager
def _fake_gateway(path: Path, answer: Callable[[socket.socket], None]) -> Iterator[None]:
    """A listener at `path` that reads the request and then does `answer` to the connection."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)
    listener.settimeout(10)
    done = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.recv(100)
                answer(conn)
                done.wait(15)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(10)
        listener.close()
        path.unlink()


def _says(data: bytes) -> Callable[[socket.socket], None]:
    def answer(conn: socket.socket) -> None:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)

    return answer


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (b"not json\n", BadAnswer, "^not JSON: "),
        (b"\xff\xfe\n", BadAnswer, "^not JSON: "),
        (b"[1, 2]\n", BadAnswer, "^not a JSON object: "),
        # no summary: the KeyError this used to be
        (b'{"applied": true}\n', BadAnswer, "^no applied/summary/report/warnings verdict in "),
        (b'{"applied": "yes", "summary": "x"}\n', BadAnswer, "^no applied/summary/report/"),
        (b'{"applied": true, "summary": "x", "warnings": 5}\n', BadAnswer, "^no applied/"),
        # cut off before its newline
        (b'{"applied": true, "summary": "x"', OSError, "in the middle of its answer$"),
        (b"", OSError, "without an answer"),
    ],
)
def test_an_answer_that_is_not_a_verdict(
    tmp_path: Path, data: bytes, error: type[Exception], match: str
) -> None:
    path = tmp_path / "control.sock"
    with _fake_gateway(path, _says(data)), pytest.raises(error, match=match) as caught:
        ask_reload(path, 10.0)
    # Exactly that type: NoVerdictYet is a TimeoutError and so an OSError too, and a gateway
    # still reloading is not one that closed the connection.
    assert type(caught.value) is error


def _cli(*argv: str) -> Callable[[], int]:
    args = build_parser("reload").parse_args(["reload", *argv])
    return lambda: int(args.func(args))


def test_ironwatt_reload_on_a_bad_answer_says_so_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "control.sock"
    with _fake_gateway(path, _says(b'{"ok": 1}\n')):
        assert _cli("--socket", str(path))() == 1
    err = capsys.readouterr().err
    assert f"the answer from {path} is not a verdict" in err
    assert "Traceback" not in err


def test_no_verdict_in_time_is_still_reloading_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The gateway took the request and is still validating (an overloaded machine): not "is it
    running?" but "still reloading", exit 3, and where to see how it ends."""
    path = tmp_path / "control.sock"
    with _fake_gateway(path, lambda conn: None), pytest.raises(NoVerdictYet):
        ask_reload(path, 0.3)
    with _fake_gateway(path, lambda conn: None):
        assert _cli("--socket", str(path), "--timeout", "0.3")() == 3
    err = capsys.readouterr().err
    assert "the gateway is still reloading (no verdict within 0.3 s)" in err
    assert "systemctl status ironwatt" in err
    assert "journal" in err
    assert "is it running" not in err
    assert "Traceback" not in err


# ---- the time budget ----------------------------------------------------------------------------


def _unit_seconds(key: str) -> float:
    text = (ROOT / "systemd" / "ironwatt.service").read_text()
    match = re.search(rf"^{key}=(\d+)s$", text, re.MULTILINE)
    assert match, key
    return float(match.group(1))


def test_a_verdict_comes_before_ironwatt_reload_gives_up() -> None:
    """systemd gives ExecReload= TimeoutStartSec=; `ironwatt reload` waits less than that; the
    gateway's validations during a reload fit in that wait twice (a request that comes while
    a reload runs is answered by the next one), with time left for applying."""
    default = build_parser("reload").parse_args(["reload"]).timeout
    assert default == RELOAD_WAIT_S
    assert _unit_seconds("TimeoutStartSec") - 5 >= RELOAD_WAIT_S
    assert RELOAD_WAIT_S >= 2 * RELOAD_WORKER_TIMEOUT_S + 10


def test_a_worker_over_its_timeout_is_a_clear_error(tmp_path: Path) -> None:
    seen: list[float] = []

    def hanging(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        seen.append(kwargs["timeout"])
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    with pytest.raises(ConfigWorkerError, match=r"took more than 20 s and was given up"):
        load_config_isolated(tmp_path / "c.toml", timeout=RELOAD_WORKER_TIMEOUT_S, run=hanging)
    with pytest.raises(ConfigWorkerError, match=r"took more than 300 s"):
        load_config_isolated(tmp_path / "c.toml", run=hanging)  # the start keeps its 300 s
    assert seen == [RELOAD_WORKER_TIMEOUT_S, 300.0]


@pytest.mark.asyncio
async def test_a_reload_gives_the_worker_the_reload_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker over its time is a refused reload that says why (the running config stays)."""
    from gateway.daemon import lifecycle, reload

    seen: list[float] = []

    def hanging(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        seen.append(kwargs["timeout"])
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    def isolated(path: Path, **kwargs: Any) -> Any:
        return load_config_isolated(path, run=hanging, **kwargs)

    monkeypatch.setattr(reload, "load_config_isolated", isolated)
    gw = SimpleNamespace(
        cfg=SimpleNamespace(path=tmp_path / "c.toml"),
        notifier=Notifier(""),
        _reload_refused=None,
        reloads_refused=0,
    )
    outcome = await lifecycle.Gateway._apply_reload(gw)  # type: ignore[arg-type]
    assert seen == [RELOAD_WORKER_TIMEOUT_S]
    assert not outcome.applied
    assert "took more than 20 s and was given up" in outcome.summary
    assert gw._reload_refused == outcome.summary


def test_the_default_data_dir_is_the_models() -> None:
    from gateway.cli import run as cli_run
    from gateway.config.model import GatewayConfig

    assert GatewayConfig.model_fields["data_dir"].default == cli_run._DEFAULT_DATA_DIR


# ---- `ironwatt status` without [http]: the same socket answers "status" ------------------------


@pytest.mark.asyncio
async def test_status_over_the_control_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _private(tmp_path / "run") / "control.sock"
    doc = {
        "gw": "gw1", "site": "s", "version": "0.1.0", "kernel": "compiled",
        "devices": {"m1": {"driver": "modbus", "state": "up", "last_success": None, "polls": 3}},
        "buffer": {"backlog": 2}, "uplink": {"connected": True, "broker": "mqtt://b:1"},
    }  # fmt: skip
    server = ControlServer(path, ReloadRequests(), lambda: doc)
    assert await server.start()
    try:
        assert await asyncio.to_thread(ask_status, path) == doc
        parser = build_parser()
        args = parser.parse_args(["status", "--socket", str(path), "--json"])
        assert await asyncio.to_thread(args.func, args) == 0
        assert json.loads(capsys.readouterr().out) == doc
        args = parser.parse_args(["status", "--socket", str(path)])
        assert await asyncio.to_thread(args.func, args) == 0
        table = capsys.readouterr().out
        assert "version 0.1.0 (kernel: compiled)" in table
        assert "m1" in table
        # a server without a status source (and any other word) still refuses, in words
        reload_only = ControlServer(tmp_path / "run" / "other.sock", ReloadRequests())
        assert await reload_only.start()
        try:
            with pytest.raises(BadAnswer, match="unknown request 'status'"):
                await asyncio.to_thread(ask_status, tmp_path / "run" / "other.sock")
        finally:
            await reload_only.close()
    finally:
        await server.close()
    args = build_parser().parse_args(["status", "--socket", str(path)])
    assert await asyncio.to_thread(args.func, args) == 1  # nobody listens now
    assert "no status from the gateway's control socket" in capsys.readouterr().err


@pytest.mark.asyncio
async def test_a_status_that_cannot_be_made_is_said_not_a_traceback(tmp_path: Path) -> None:
    def broken() -> dict[str, Any]:
        raise OSError("database is locked")

    path = _private(tmp_path / "run") / "control.sock"
    server = ControlServer(path, ReloadRequests(), broken)
    assert await server.start()
    try:
        with pytest.raises(BadAnswer, match="status failed: database is locked"):
            await asyncio.to_thread(ask_status, path)
    finally:
        await server.close()


@pytest.mark.asyncio
async def test_status_is_asked_of_this_configs_gateway_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without [http]: data_dir's socket first, and an answer from another gateway (the unit's,
    when root asks about a config of its own) is passed over, never shown as this one's."""
    data = _private(tmp_path / "data")
    config = tmp_path / "gw.toml"
    config.write_text(
        f'[gateway]\nid = "gw1"\nsite = "s"\ndata_dir = "{data}"\n'
        '[mqtt]\nurl = "mqtt://127.0.0.1:1"\n',
        encoding="utf-8",
    )
    other = {"gw": "someone-else", "devices": {}, "buffer": {}, "uplink": {}}
    server = ControlServer(data / "control.sock", ReloadRequests(), lambda: other)
    assert await server.start()
    try:
        args = build_parser().parse_args(["status", "-c", str(config), "--json"])
        assert await asyncio.to_thread(args.func, args) == 1
        err = capsys.readouterr().err
        assert "gateway 'someone-else' answered, not 'gw1'" in err
        other["gw"] = "gw1"
        assert await asyncio.to_thread(args.func, args) == 0
        assert json.loads(capsys.readouterr().out)["gw"] == "gw1"
    finally:
        await server.close()
