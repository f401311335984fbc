"""How a reload is asked for and answered: SIGHUP, or `ironwatt reload` over a local socket.

The daemon listens on control.sock in its runtime folder; `ironwatt reload` (the unit's
ExecReload=) asks for a reload there and waits for the verdict, so `systemctl reload` fails when
the new config is refused. It needs no credentials: only the socket, owned by the service user.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "SOCKET_NAME",
    "ControlServer",
    "ReloadOutcome",
    "ReloadRequests",
    "ask_reload",
    "default_socket",
    "socket_path",
]

log = logging.getLogger("ironwatt.reload")

SOCKET_NAME = "control.sock"
# Where the unit's RuntimeDirectory=ironwatt puts it; `ironwatt reload` looks here by default.
DEFAULT_RUNTIME_DIR = Path("/run/ironwatt")
_REQUEST_TIMEOUT_S = 5.0  # a client that connects and says nothing is dropped


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
        doc = json.loads(data)
        return cls(
            bool(doc["applied"]),
            str(doc["summary"]),
            str(doc.get("report", "")),
            tuple(str(w) for w in doc.get("warnings", [])),
        )


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


class ControlServer:
    """The daemon's end: one line in ("reload"), one JSON line out (the ReloadOutcome)."""

    def __init__(self, path: Path, requests: ReloadRequests) -> None:
        self.path = path
        self._requests = requests
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> bool:
        """Listen; False (logged) when the socket cannot be made: SIGHUP still reloads."""
        try:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(self.path.lstat().st_mode):
                    self.path.unlink()  # left by a process that was killed
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
            os.chmod(self.path, 0o600)  # the service user only (root passes anyway)
        except OSError as exc:
            log.warning(
                "reload socket %s not available (%s): `ironwatt reload` and so `systemctl "
                "reload` cannot reach this gateway; SIGHUP still reloads",
                self.path,
                exc,
            )
            return False
        return True

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None
        with contextlib.suppress(OSError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), _REQUEST_TIMEOUT_S)
            command = line.decode(errors="replace").strip()
            if command == "reload":
                outcome = await self._requests.request()
            else:
                outcome = ReloadOutcome(False, f"unknown request {command[:40]!r}")
            writer.write(outcome.encode())
            await asyncio.wait_for(writer.drain(), _REQUEST_TIMEOUT_S)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the asker left; the reload itself goes on regardless
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


def ask_reload(path: Path, timeout: float) -> ReloadOutcome:
    """The client's end (blocking): ask the gateway at `path` to reload and wait for its verdict.

    Raises OSError when no gateway listens there, TimeoutError when no verdict comes in time.
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(b"reload\n")
        data = b""
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer from the gateway within {timeout:g} s")
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise OSError("the gateway closed the connection without an answer (is it stopping?)")
    return ReloadOutcome.decode(data)
