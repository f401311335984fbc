"""Daemon test fixtures: a Modbus plant on its own loop thread, a gateway process.

The broker is tests/conftest.py's `shared_broker`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gateway.sim.modbus_meters import ModbusPlant, SimMeter
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


class LoopThread:
    """An event loop in a background thread: simulators served while sync tests drive a child."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Any, timeout: float = 20.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class PlantThread(LoopThread):
    """A ModbusPlant on its own loop thread."""

    def __init__(self, meters: list[SimMeter]) -> None:
        super().__init__()
        self.plant = ModbusPlant(meters)
        self.call(self.plant.start())

    def stop(self) -> None:
        self.call(self.plant.stop())
        self.close()


class GatewayProcess:
    """`ironwatt run -c CONFIG` as a child, its stderr in a file, sd_notify on a test socket."""

    def __init__(self, config: Path, workdir: Path, watchdog_usec: int = 1_000_000) -> None:
        self.config = config
        self.log_path = workdir / "gateway.log"
        self.notify_path = workdir / "notify.sock"
        self.watchdog_usec = watchdog_usec
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with __import__("contextlib").suppress(FileNotFoundError):
            self.notify_path.unlink()
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(0.2)
        self.proc: subprocess.Popen[bytes] | None = None
        self.notes: list[str] = []

    def start(self) -> None:
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(self.notify_path),
            "WATCHDOG_USEC": str(self.watchdog_usec),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("WATCHDOG_PID", None)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "-c", str(self.config)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )  # fmt: skip
        log.close()

    def read_notes(self, until: str | None = None, timeout: float = 10.0) -> list[str]:
        """Collect sd_notify datagrams (until one contains `until`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                note = self.notify.recv(4096).decode()
            except TimeoutError:
                if until is None:
                    break
                assert self.proc is not None
                assert self.proc.poll() is None, self.log()
                continue
            self.notes.append(note)
            if until is not None and until in note:
                return self.notes
        if until is not None:
            raise AssertionError(
                f"no {until!r} from the gateway in {timeout}s: {self.notes}\n" + self.log()
            )
        return self.notes

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                "the gateway did not stop within its budget\n" + self.log()
            ) from exc

    def wait_until(self, predicate: Any, timeout: float, what: str, interval: float = 0.1) -> None:
        """Poll `predicate` while the gateway lives; fail with its log tail on timeout or death."""

        def came() -> bool:
            if predicate():
                return True
            assert self.proc is not None
            assert self.proc.poll() is None, "gateway died\n" + self.log()
            return False

        wait_until(came, timeout, lambda: f"{what}\n{self.log()[-3000:]}", interval)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()
