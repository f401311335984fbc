"""How a reload is asked for and answered: SIGHUP, or `ironwatt reload` over a local socket.

The daemon listens on control.sock in its runtime folder; `ironwatt reload` (the unit's
ExecReload=) asks for a reload there and waits for the verdict, so `systemctl reload` fails when
the new config is refused. It needs no credentials: only the socket, owned by the service user.
`ironwatt status` asks it for the /status document when the config has no [http].

The socket appears at its name already 0600 (bound in a private 0700 folder, then renamed into
place: no umask window, no chmod through a path someone could swap), in a folder only we (or
root) can write to; a symlink or any other file in its place is left alone and refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "RELOAD_WAIT_S",
    "RELOAD_WORKER_TIMEOUT_S",
    "SOCKET_NAME",
    "BadAnswer",
    "ControlServer",
    "NoVerdictYet",
    "ReloadOutcome",
    "ReloadRequests",
    "ask_reload",
    "ask_status",
    "default_socket",
    "folder_problem",
    "socket_path",
]

log = logging.getLogger("ironwatt.reload")

SOCKET_NAME = "control.sock"
# Where the unit's RuntimeDirectory=ironwatt puts it; `ironwatt reload` looks here by default.
DEFAULT_RUNTIME_DIR = Path("/run/ironwatt")
_REQUEST_TIMEOUT_S = 5.0  # a client that connects and says nothing is dropped
_REQUEST_LIMIT = 4096  # bytes: the request is one word; a longer line is refused, not buffered
_ANSWER_LIMIT = 16 << 20  # bytes: a refusal's report is long, never this long

# The reload's time budget. systemd gives ExecReload= the unit's TimeoutStartSec= (60 s);
# `ironwatt reload` waits RELOAD_WAIT_S for the verdict (its --timeout default); during a reload
# the gateway gives the config worker RELOAD_WORKER_TIMEOUT_S, after which the reload is refused
# (the running config stays). A request that comes while a reload runs is answered by the next
# one, so the wait covers two validations and two applies: 2 x 20 s leaves 10 s for applying.
RELOAD_WAIT_S = 50.0
RELOAD_WORKER_TIMEOUT_S = 20.0


class NoVerdictYet(TimeoutError):
    """The gateway took the request but gave no verdict in time: it is still reloading."""


class BadAnswer(ValueError):
    """What came back is not a verdict (another program on the socket, another version)."""


@dataclass(frozen=True)
class ReloadOutcome:
    """The verdict on one reload: applied (with what changed) or refused (and why)."""

    applied: bool
    summary: str  # one line: what changed, or the first reason of a refusal
    report: str = ""  # a refusal's whole report (every problem, file:line)
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def encode(self) -> bytes:
        doc = {
            "applied": self.applied,
            "summary": self.summary,
            "report": self.report,
            "warnings": list(self.warnings),
        }
        return json.dumps(doc).encode() + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> ReloadOutcome:
        """The verdict in `data`; BadAnswer when it is not one."""
        try:
            doc = json.loads(data)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise BadAnswer(f"not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise BadAnswer(f"not a JSON object: {data[:60]!r}")
        applied, summary = doc.get("applied"), doc.get("summary")
        report, warnings = doc.get("report", ""), doc.get("warnings", [])
        if not (
            isinstance(applied, bool)
            and isinstance(summary, str)
            and isinstance(report, str)
            and isinstance(warnings, list)
            and all(isinstance(w, str) for w in warnings)
        ):
            raise BadAnswer(f"no applied/summary/report/warnings verdict in {data[:60]!r}")
        return cls(applied, summary, report, tuple(warnings))


class ReloadRequests:
    """Reload requests and their answers. A request is answered by the next reload that starts
    after it, so a caller never gets the verdict on a file older than the one it just wrote."""

    def __init__(self) -> None:
        self.pending = asyncio.Event()
        self._waiting: list[asyncio.Future[ReloadOutcome]] = []

    def request(self) -> asyncio.Future[ReloadOutcome]:
        future: asyncio.Future[ReloadOutcome] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self.pending.set()
        return future

    def take(self) -> list[asyncio.Future[ReloadOutcome]]:
        """The requests the reload that starts now answers (later ones wait for the next)."""
        self.pending.clear()
        taken, self._waiting = self._waiting, []
        return taken

    @staticmethod
    def answer(futures: list[asyncio.Future[ReloadOutcome]], outcome: ReloadOutcome) -> None:
        for future in futures:
            if not future.done():
                future.set_result(outcome)

    def refuse_all(self, reason: str) -> None:
        self.answer(self.take(), ReloadOutcome(False, reason))


def socket_path(data_dir: str | Path) -> Path:
    """Where the daemon listens: the unit's runtime folder ($RUNTIME_DIRECTORY), else data_dir."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return (Path(runtime) if runtime else Path(data_dir)) / SOCKET_NAME


def default_socket() -> Path:
    """Where `ironwatt reload` looks without --socket: as ExecReload= the unit's runtime folder
    ($RUNTIME_DIRECTORY), from a shell the folder the unit creates."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return (Path(runtime) if runtime else DEFAULT_RUNTIME_DIR) / SOCKET_NAME


def folder_problem(st: os.stat_result, euid: int) -> str | None:
    """Why a folder with this stat cannot hold the socket (None: it can). Whoever may write to
    the folder may replace the socket with their own and hear (and answer) every reload."""
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if st.st_uid not in (euid, 0):
        return f"owned by uid {st.st_uid}, who could replace the socket"
    if st.st_mode & 0o022 and st.st_uid != euid:
        return (
            f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}) and not ours: "
            "anyone could replace the socket"
        )
    return None


class ControlServer:
    """The daemon's end: one line in, one JSON line out. "reload": the ReloadOutcome;
    "status": the /status document (`ironwatt status` on a gateway without [http])."""

    def __init__(
        self,
        path: Path,
        requests: ReloadRequests,
        status: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.path = path
        self._requests = requests
        self._status = status
        self._server: asyncio.AbstractServer | None = None
        self._bound: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket we made

    async def start(self) -> bool:
        """Listen; False (logged) when the socket cannot be made: SIGHUP still reloads."""
        try:
            sock = self._bind()
        except OSError as exc:
            self._unavailable(exc)
            return False
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, sock=sock, limit=_REQUEST_LIMIT
            )
        except OSError as exc:
            sock.close()
            self._unlink()
            self._unavailable(exc)
            return False
        return True

    def _unavailable(self, exc: OSError) -> None:
        log.warning(
            "reload socket %s not available (%s): `ironwatt reload` and so `systemctl "
            "reload` cannot reach this gateway; SIGHUP still reloads",
            self.path,
            exc,
        )

    def _bind(self) -> socket.socket:
        """A listening socket at self.path, 0600 from the moment it has that name.

        A socket's mode comes from the umask at bind() (process-wide, shared with the threads
        that run), and a chmod afterwards is too late and follows symlinks. So: bind in a fresh
        0700 folder of ours next to it (nobody else can reach, or swap, what is in there), set
        0600, and rename it into place; a stale socket there is replaced by that rename, and
        anything else (a file, a symlink, a folder) is refused and left alone.
        """
        folder = self.path.parent
        # stat, not lstat: data_dir is a symlink under DynamicUser= (/var/lib/private/...); it
        # is the folder it leads to that must be ours.
        problem = folder_problem(os.stat(folder), os.geteuid())
        if problem is not None:
            raise OSError(f"the folder {folder} is {problem}")
        try:
            there = os.lstat(self.path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(there.st_mode):
                kind = "a symlink" if stat.S_ISLNK(there.st_mode) else "not a socket"
                raise OSError(f"{self.path} exists and is {kind}: left alone")
        private = tempfile.mkdtemp(prefix=".c", dir=folder)  # 0700 whatever the umask
        inner = os.path.join(private, "s")  # no longer than .../control.sock (108-byte limit)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(inner)
            os.chmod(inner, 0o600)  # the service user only (root passes anyway)
            sock.listen(100)
            os.replace(inner, self.path)  # a stale socket, left by a killed process, goes
            done = os.lstat(self.path)
            self._bound = (done.st_dev, done.st_ino)
        except BaseException:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(inner)
            raise
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(private)
        return sock

    def _unlink(self) -> None:
        """Remove our socket: only if the name still leads to the very socket we made."""
        with contextlib.suppress(OSError):
            st = os.lstat(self.path)
            if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self._bound:
                os.unlink(self.path)
        self._bound = None

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None
        self._unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), _REQUEST_TIMEOUT_S)
            except ValueError:  # a line over the limit (asyncio's LimitOverrunError, re-raised)
                outcome = ReloadOutcome(False, f"request longer than {_REQUEST_LIMIT} bytes")
            else:
                command = line.decode(errors="replace").strip()
                if command == "status" and self._status is not None:
                    try:
                        answer = json.dumps(self._status(), default=str).encode() + b"\n"
                    except Exception as exc:  # a part that cannot say (the database, say)
                        log.warning("status request: %s", exc)
                        answer = ReloadOutcome(False, f"status failed: {exc}").encode()
                    writer.write(answer)
                    await asyncio.wait_for(writer.drain(), _REQUEST_TIMEOUT_S)
                    return
                if command == "reload":
                    outcome = await self._requests.request()
                else:
                    outcome = ReloadOutcome(False, f"unknown request {command[:40]!r}")
            writer.write(outcome.encode())
            await asyncio.wait_for(writer.drain(), _REQUEST_TIMEOUT_S)
        except (OSError, TimeoutError):
            pass  # the asker left; the reload itself goes on regardless
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


def ask_status(path: Path, timeout: float = 5.0) -> dict[str, Any]:
    """The /status document from the gateway at `path` (blocking). Raises OSError when no
    gateway answers there, BadAnswer when what came back is not a JSON object."""
    data = _exchange(path, b"status\n", timeout)
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise BadAnswer(f"not a status document: {data[:80]!r}") from exc
    if not isinstance(doc, dict):
        raise BadAnswer(f"not a status document: {data[:80]!r}")
    if "devices" not in doc:  # a refusal (a gateway from before status requests), or junk
        said = doc.get("summary") if isinstance(doc.get("summary"), str) else repr(data[:80])
        raise BadAnswer(f"the gateway did not send its status: {said}")
    return doc


def _exchange(path: Path, request: bytes, timeout: float) -> bytes:
    """One request line, one answer line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(request)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > _ANSWER_LIMIT:
                raise BadAnswer(f"an answer longer than {_ANSWER_LIMIT >> 20} MiB")
    if not data.endswith(b"\n"):
        raise OSError("the gateway closed the connection without a whole answer (is it stopping?)")
    return data


def ask_reload(path: Path, timeout: float) -> ReloadOutcome:
    """The client's end (blocking): ask the gateway at `path` to reload and wait for its verdict.

    Raises OSError when no gateway listens there (or takes the connection), NoVerdictYet when
    it took the request but gave no verdict within `timeout` (it is still reloading), BadAnswer
    when what came back is not a verdict.
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except TimeoutError:
            raise OSError(f"the connection was not taken within {timeout:g} s") from None
        sock.sendall(b"reload\n")
        data = b""
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                chunk = sock.recv(65536)
            except TimeoutError:
                raise NoVerdictYet(f"no verdict within {timeout:g} s") from None
            if not chunk:
                break
            data += chunk
            if len(data) > _ANSWER_LIMIT:
                raise BadAnswer(f"an answer longer than {_ANSWER_LIMIT >> 20} MiB")
    if not data:
        raise OSError("the gateway closed the connection without an answer (is it stopping?)")
    if not data.endswith(b"\n"):
        raise OSError("the gateway closed the connection in the middle of its answer")
    return ReloadOutcome.decode(data)
