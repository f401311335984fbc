"""The demo's MQTT broker on a free loopback port (the tests have their own), and the cut link
between it and the gateway that the outage on cue pulls.

Mosquitto when it is installed; else amqtt from PyPI in a process of its own
(gateway.sim.embedded_broker), so the demo runs on a machine where nothing came from apt. Never
port 1883: a system broker may already listen there.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import importlib.util
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from gateway.errors import SimulatorError
from gateway.sim.ports import free_port

__all__ = [
    "BrokerMissing", "DemoBroker", "EmbeddedBroker", "UplinkCut", "demo_broker", "end_process",
]  # fmt: skip


class BrokerMissing(SimulatorError):
    """Neither mosquitto nor amqtt on this machine."""


def demo_broker(workdir: Path) -> DemoBroker | EmbeddedBroker:
    """Mosquitto when it is on PATH (Debian's is in /usr/sbin: on root's PATH, not on a
    user's), else the embedded amqtt broker."""
    exe = shutil.which("mosquitto")
    if exe is not None:
        return DemoBroker(workdir, exe)
    if importlib.util.find_spec("amqtt") is not None:
        return EmbeddedBroker(workdir)
    raise BrokerMissing(
        "the demo needs an MQTT broker: `make demo` installs amqtt into .venv (or: pip install "
        "amqtt), or install Mosquitto (Debian/Ubuntu: sudo apt-get install mosquitto)"
    )


class DemoBroker:
    """A Mosquitto of the demo's own, its config and log in the demo's directory."""

    name = "Mosquitto"
    protocol = "5"  # the MQTT version the gateway is configured to speak to it

    def __init__(self, workdir: Path, exe: str) -> None:
        self.exe = exe
        self.workdir = workdir
        self.port = free_port()
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            # The default (1000) silently drops QoS 1 messages to a slow subscriber.
            "max_queued_messages 0\n"
            f"log_dest file {self.log}\n"
            # Started as root, mosquitto would switch to user `mosquitto` and could not write
            # its log in our temp dir.
            f"user {getpass.getuser()}\n"
        )
        return [self.exe, "-c", str(conf)]

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                self.proc = None
                raise SimulatorError(f"{self.name} exited at start: {err.strip()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise SimulatorError(
            f"{self.name} did not listen on 127.0.0.1:{self.port} in {timeout:g}s (log: {self.log})"
        )

    def stop(self) -> None:
        if self.proc is not None:
            end_process(self.proc)
        self.proc = None


class EmbeddedBroker(DemoBroker):
    """amqtt in a process of its own (gateway.sim.embedded_broker)."""

    name = "amqtt (embedded: no mosquitto on PATH)"
    protocol = "3.1.1"  # amqtt has no MQTT 5

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, sys.executable)
        self.log = workdir / "amqtt.log"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gateway.sim.embedded_broker", str(self.port), str(self.log)]


class UplinkCut:
    """A TCP relay from the gateway to the broker that the demo cuts, as a plant network goes
    down: the open connections drop, new ones are refused, until it is mended.

    The outage is on the gateway's side of the broker only: the demo's own subscriber keeps its
    session, so what it shows and counts is what a subscriber upstream would get.
    """

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._server is None

    async def mend(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, up_writer}
        pumps = {
            asyncio.create_task(_pump(reader, up_writer)),
            asyncio.create_task(_pump(up_reader, writer)),
        }
        self._pumps |= pumps
        try:
            # Either side closing ends both, as a broken TCP path would.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            self._pumps -= pumps
            for w in (writer, up_writer):
                self._open.discard(w)
                w.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


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
