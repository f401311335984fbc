"""A real Mosquitto for tests: free loopback port, generated config, stop/start for outages.

Optional TLS listener (a test CA, server and client certificates made here), optional password
file, and a tiny subscriber that collects what the broker delivers.
"""

from __future__ import annotations

import base64
import datetime
import functools
import getpass
import hashlib
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.sim.broker import end_process
from gateway.sim.ports import free_port
from tests.support.waiting import wait, wait_until

__all__ = ["Collector", "Mosquitto", "TestCA"]

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def _passwd_hash(password: str) -> str:
    """Mosquitto 2.0's password file format (`$7$`: PBKDF2-SHA512, 101 rounds): no binary needed."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class TestCA:
    """A throwaway CA with a server certificate for 127.0.0.1/localhost and a client certificate."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)

        def name(cn: str) -> x509.Name:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

        def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
            path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            path.chmod(0o600)

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name("ironwatt test CA"))
            .issuer_name(name("ironwatt test CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )

        def leaf(cn: str, server: bool) -> tuple[Any, Any]:
            key = ec.generate_private_key(ec.SECP256R1())
            builder = (
                x509.CertificateBuilder()
                .subject_name(name(cn))
                .issuer_name(ca_cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(
                    x509.ExtendedKeyUsage(
                        [
                            ExtendedKeyUsageOID.SERVER_AUTH
                            if server
                            else ExtendedKeyUsageOID.CLIENT_AUTH
                        ]
                    ),
                    critical=False,
                )
            )
            if server:
                builder = builder.add_extension(
                    x509.SubjectAlternativeName(
                        [
                            x509.DNSName("localhost"),
                            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        ]
                    ),
                    critical=False,
                )
            return key, builder.sign(ca_key, hashes.SHA256())

        pem = serialization.Encoding.PEM
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(ca_cert.public_bytes(pem))
        server_key, server_cert = leaf("localhost", server=True)
        self.server_cert, self.server_key = directory / "server.pem", directory / "server.key"
        self.server_cert.write_bytes(server_cert.public_bytes(pem))
        write_key(server_key, self.server_key)
        client_key, client_cert = leaf("ironwatt-test-client", server=False)
        self.client_cert, self.client_key = directory / "client.pem", directory / "client.key"
        self.client_cert.write_bytes(client_cert.public_bytes(pem))
        write_key(client_key, self.client_key)


@dataclass
class Mosquitto:
    """One broker process in `workdir`; the same ports across stop()/start()."""

    workdir: Path
    tls: bool = False
    require_certificate: bool = False
    users: dict[str, str] | None = None  # username -> password; anonymous is then refused
    acl: str | None = None  # the text of an acl_file (mosquitto syntax), e.g. to deny a topic
    port: int = field(default_factory=free_port)
    tls_port: int = 0
    ca: TestCA | None = None
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.tls:
            self.tls_port = free_port()
            self.ca = TestCA(self.workdir / "pki")
        self.config = self.workdir / "mosquitto.conf"
        self.log_file = self.workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            # Persistence keeps a Collector's session (and what it missed) across stop()/start().
            "persistence true",
            f"persistence_location {self.workdir}/",
            "autosave_interval 0",
            "max_queued_messages 0",  # the default 1000 silently drops to a slow subscriber
            "max_inflight_messages 0",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "per_listener_settings false",
            # Started as root, mosquitto would switch to user `mosquitto` and could no longer
            # write its log and persistence file in our temp dir.
            f"user {getpass.getuser()}",
        ]
        if self.users:
            pw = self.workdir / "passwd"
            pw.write_text("".join(f"{u}:{_passwd_hash(p)}\n" for u, p in self.users.items()))
            pw.chmod(0o644)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if self.acl is not None:
            acl = self.workdir / "acl"
            acl.write_text(self.acl)
            acl.chmod(0o644)
            lines.append(f"acl_file {acl}")
        if self.ca is not None:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.ca.ca_file}",
                f"certfile {self.ca.server_cert}",
                f"keyfile {self.ca.server_key}",
                f"require_certificate {'true' if self.require_certificate else 'false'}",
            ]
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}"

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for port in (self.port, self.tls_port):
            if port and not wait(functools.partial(_listening, port), timeout):
                err = b""
                if self.proc.poll() is not None and self.proc.stderr is not None:
                    err = self.proc.stderr.read()
                self.stop()
                raise RuntimeError(
                    f"mosquitto did not listen on {port}: {err.decode()}{self.log()}"
                )

    def stop(self) -> None:
        if self.proc is not None:
            end_process(self.proc)
        self.proc = None

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Collector:
    """Subscribes to `topic` (QoS 1) and keeps every message: (topic, payload, retain)."""

    def __init__(
        self,
        broker: Mosquitto,
        topic: str = "#",
        *,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool = False,
        client_id: str = "collector",
    ) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        # A persistent session: the broker queues for us while we are away (broker outages).
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self.client.reconnect_delay_set(0.05, 0.5)
        if username:
            self.client.username_pw_set(username, password)
        port = broker.port
        if use_tls and broker.ca is not None:
            self.client.tls_set(
                ca_certs=str(broker.ca.ca_file),
                certfile=str(broker.ca.client_cert),
                keyfile=str(broker.ca.client_key),
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            port = broker.tls_port
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("collector could not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def snapshot(self) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return list(self.messages)

    def wait_for(
        self,
        predicate: Callable[[list[tuple[str, bytes, bool]]], bool],
        timeout: float = 10.0,
        what: str | None = None,
    ) -> list[tuple[str, bytes, bool]]:
        """What came so far, once `predicate` holds or `timeout` passed; with `what`, a timeout
        fails the test naming it (without, the caller asserts on what it got)."""
        got = self.snapshot()

        def came() -> bool:
            nonlocal got
            got = self.snapshot()
            return predicate(got)

        if what is not None:
            wait_until(came, timeout, what, interval=0.02)
        else:
            wait(came, timeout)
        return got

    def close(self) -> None:
        # Disconnect first: the network thread then ends at once instead of at its next tick.
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
