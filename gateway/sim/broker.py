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
import re
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
        self.said = workdir / "mosquitto.stdout"  # what it prints (amqtt: that it listens)
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
            # stderr too: unbuffered (older versions flush the file late), and its "running"
            # line comes once the listeners are bound (the "Opening ..." one comes before)
            "log_dest stderr\n"
            # Started as root, mosquitto would switch to user `mosquitto` and could not write
            # its log in our temp dir.
            f"user {getpass.getuser()}\n"
        )
        return [self.exe, "-c", str(conf)]

    def start(self, timeout: float = 10.0) -> None:
        """Start it and wait until it listens; SimulatorError (with its own words) if not.
        A port taken since it was chosen is chosen again (a few times)."""
        for attempt in range(3):
            try:
                self._start(timeout)
                return
            except SimulatorError as exc:
                if "in use" not in str(exc) or attempt == 2:
                    raise
                self.port = free_port()

    def listening(self) -> bool:
        """It says its listeners are up (a connect alone could reach whoever took the port):
        Mosquitto 2 logs "mosquitto version 2.x running" once they are bound; 1.x has no such
        line, only "Opening ... listen socket on port N." (before the bind: the caller also
        checks the process is still alive a moment later)."""
        with contextlib.suppress(OSError):
            said = (self.workdir / f"{self.log.stem}.stderr").read_text(errors="replace")
            if re.search(r"^\d+: mosquitto version \S+ running$", said, re.MULTILINE):
                return True
            return "mosquitto version 1." in said and f"socket on port {self.port}." in said
        return False

    def _start(self, timeout: float) -> None:
        errors = self.workdir / f"{self.log.stem}.stderr"
        self.said = self.workdir / f"{self.log.stem}.stdout"
        with errors.open("wb") as err, self.said.open("wb") as out:
            # Its own session: a Ctrl-C at the terminal reaches the demo, which stops the
            # broker last, not the broker first.
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=err, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                said = errors.read_text(errors="replace").strip()[-2000:]
                raise SimulatorError(f"{self.name} exited at start: {said or 'no message'}")
            if self.listening():
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        pass
                except OSError:
                    pass
                else:
                    time.sleep(0.2)  # a bind that failed after the line: the process exits
                    if self.proc.poll() is None:  # still there
                        return
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

    def listening(self) -> bool:
        with contextlib.suppress(OSError):
            said = self.said.read_text(errors="replace")
            return f"amqtt listening on 127.0.0.1:{self.port}" in said
        return False


class UplinkCut:
    """A TCP relay from the gateway to the broker that the demo cuts, as a plant network goes
    down: the open connections drop, and new ones are dropped as soon as they are made, until
    it is mended.

    The listener stays open while cut (its port is never given up, so nothing else can take
    it). The outage is on the gateway's side of the broker only: the demo's own subscriber
    keeps its session, so what it shows and counts is what a subscriber upstream would get.
    """

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.port = free_port()
        self.is_cut = False
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        for attempt in range(5):
            try:
                self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
                return
            except OSError:  # taken since free_port() chose it: another one
                if attempt == 4:
                    raise
                self.port = free_port()

    def mend(self) -> None:
        self.is_cut = False

    async def cut(self) -> None:
        """Drop every connection now; new ones are dropped until mend()."""
        self.is_cut = True
        for relay in list(self._relays):
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def close(self) -> None:
        await self.cut()
        if self._server is not None:
            self._server.close()
            self._server = None

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            writer.transport.abort()
            return
        relay = asyncio.get_running_loop().create_task(self._relay(reader, writer))
        self._relays.add(relay)
        relay.add_done_callback(self._relays.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
            pumps = [
                asyncio.create_task(_pump(reader, up_writer)),
                asyncio.create_task(_pump(up_reader, writer)),
            ]
            try:
                # Either side closing ends both, as a broken TCP path would.
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except OSError:
            pass  # the broker refused: the gateway sees its connection dropped
        finally:
            for w in (writer, up_writer):
                if w is not None:
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
