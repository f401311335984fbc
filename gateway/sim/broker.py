"""A throwaway Mosquitto on a free loopback port, for `ironwatt demo` (the tests have their own).

Never port 1883: a system broker may already listen there.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

from gateway.errors import SimulatorError
from gateway.sim.ports import free_port

__all__ = ["BrokerMissing", "DemoBroker", "end_process"]


class BrokerMissing(SimulatorError):
    """No mosquitto executable on this machine."""


class DemoBroker:
    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if exe is None:
            raise BrokerMissing(
                "the demo needs the Mosquitto broker: install it (Debian/Ubuntu: "
                "sudo apt-get install mosquitto) and run the demo again"
            )
        self.exe = exe
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            # The default (1000) silently drops QoS 1 messages to a slow subscriber.
            "max_queued_messages 0\n"
            f"log_dest file {self.workdir / 'mosquitto.log'}\n"
            # Sessions survive the demo's outage on cue (a restart of this broker): the viewer's
            # subscription and what it has not received yet are on disk while it is down.
            f"persistence true\npersistence_location {self.workdir}/\n"
            # Started as root, mosquitto would switch to user `mosquitto` and could write
            # neither its log nor its persistence file in our temp dir.
            f"user {getpass.getuser()}\n"
        )
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited at start: {err.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{self.port} in {timeout:g}s")

    def stop(self) -> None:
        if self.proc is not None:
            end_process(self.proc)
        self.proc = None


def end_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 5 s; closes the stderr pipe a broker was started with."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc.stderr is not None:
        proc.stderr.close()
