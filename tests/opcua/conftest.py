"""Fixtures for the OPC UA tests: the simulated PLC in a subprocess, a recording sink, devices.

The PLC runs as its own process so a restart is a real one (killed socket, new server state);
session-scoped where tests only read, so the slow asyncua start is paid once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from drivers.opcua.config import OpcuaDevice
from gateway.sim.opcua_plc import PLC_NAMESPACE
from gateway.sim.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
NSU = f"nsu={PLC_NAMESPACE};s="


class PlcProcess:
    """`python -m gateway.sim.opcua_plc` on a fixed port, restartable with other options."""

    def __init__(self, *args: str, port: int | None = None, control: bool = False) -> None:
        self.port = port or free_port()
        self.args = list(args) + (["--control"] if control else [])
        self.control = control
        self.proc: subprocess.Popen[str] | None = None
        self.ns_index: int | None = None

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}"

    def start(self, *extra: str, timeout: float = 60.0) -> None:
        cmd = [
            sys.executable,
            "-m",
            "gateway.sim.opcua_plc",
            "--port",
            str(self.port),
            *self.args,
            *extra,
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE if self.control else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("READY"):
                self.ns_index = int(line.rsplit("ns=", 1)[1])
                return
            if not line and self.proc.poll() is not None:
                break
        self.kill()
        raise RuntimeError(f"simulated PLC did not start: {' '.join(cmd)}")

    def command(self, op: str, **args: Any) -> dict[str, Any]:
        """One command of the PLC's `--control` channel (see SimulatedPlc.control); its answer."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        assert self.proc.stdout
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        if not answer.get("ok"):
            raise RuntimeError(f"PLC refused {op} {args}: {answer.get('error')}")
        return answer

    async def acommand(self, op: str, **args: Any) -> dict[str, Any]:
        """`command` off the event loop, so the drivers under test keep running meanwhile."""
        return await asyncio.to_thread(self.command, op, **args)

    def kill(self) -> None:
        """SIGKILL: the server vanishes without closing sessions, like a PLC losing power."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close_pipes()
        self.proc = None

    def _close_pipes(self) -> None:
        if self.proc is not None:
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_pipes()
        self.proc = None


PASSWORD = "s3cret-Ofen2"


def make_cert(directory: Path, uri: str) -> tuple[Path, Path]:
    """A self-signed certificate (DER) and key (PEM), as a PLC or a user would bring them."""
    directory.mkdir(parents=True, exist_ok=True)
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        uri,
        {},
        [x509.UniformResourceIdentifier(uri), x509.DNSName(socket.gethostname())],
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    cert_path, key_path = directory / "cert.der", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="session")
def user_cert(pki: Path) -> tuple[Path, Path]:
    return make_cert(pki / "operator", "urn:plant1:operator")


@pytest.fixture(scope="session")
def secure_plc(pki: Path, user_cert: tuple[Path, Path]) -> Iterator[PlcProcess]:
    proc = PlcProcess(
        "--static",
        "--cert-dir", str(pki / "server"),
        "--security", "Basic256Sha256_SignAndEncrypt",
        "--security", "Aes128_Sha256_RsaOaep_SignAndEncrypt",
        "--security", "Aes256_Sha256_RsaPss_Sign",
        "--user", f"gateway:{PASSWORD}",
        "--user-certificate", str(user_cert[0]),
    )  # fmt: skip
    proc.start()
    yield proc
    proc.kill()


@pytest.fixture(scope="session")
def pinned(pki: Path, secure_plc: PlcProcess) -> Path:
    """The secure PLC's certificate, as `ironwatt opcua trust` would have saved it."""
    return pki / "server" / "server-cert.der"


@pytest.fixture(scope="session")
def plc() -> Iterator[PlcProcess]:
    """A static (values change only when written), anonymous, unsecured PLC."""
    proc = PlcProcess("--static", "--max-nodes-per-read", "4")
    proc.start()
    yield proc
    proc.kill()


def point(name: str, node: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "node": node, **extra}


def make_device(
    endpoint: str, points: list[dict[str, Any]], name: str = "bf2", **extra: Any
) -> OpcuaDevice:
    """A validated config object, as gateway.config.load builds it (durations as TOML strings)."""
    data: dict[str, Any] = {
        "name": name,
        "driver": "opcua",
        "endpoint": endpoint,
        "interval": "100ms",
        "timeout": "3s",
        "points": points,
    }
    data.update(extra)
    return OpcuaDevice.model_validate(data)
