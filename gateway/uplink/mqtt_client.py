"""paho's side of the uplink: a client as we configure it (protocol, TLS, credentials, will,
windows) and its external loop, driven by our own select with a wake-up socket pair.

One fresh client per connection: paho's own resend of unacknowledged messages on reconnect would
duplicate ours and break seq order, so the outbox alone decides what is sent again.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from gateway.errors import UplinkError
from gateway.uplink.settings import UplinkSettings

__all__ = ["Wakeup", "discard", "new_client", "pump"]


def new_client(settings: UplinkSettings, tls: bool, where: str, will: bytes) -> mqtt.Client:
    """A paho client for one connection; UplinkError when TLS cannot be set up as configured."""
    s = settings
    v5 = s.protocol == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=s.client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else True,
    )
    client.connect_timeout = s.connect_timeout_s
    # paho's own window one above ours, so a status message never waits behind it.
    client.max_inflight_messages_set(s.max_inflight + 2)
    client.max_queued_messages_set(0)
    if s.username is not None:
        client.username_pw_set(s.username, s.password)
    if tls:
        try:
            client.tls_set(
                ca_certs=str(s.ca_file) if s.ca_file else None,
                certfile=str(s.cert_file) if s.cert_file else None,
                keyfile=str(s.key_file) if s.key_file else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:  # a file missing, not PEM, no match
            raise UplinkError(
                f"MQTT TLS setup for {where} failed: {exc}; check that "
                "mqtt.ca_file, cert_file and key_file exist, are PEM and match"
            ) from exc
    client.will_set(s.status_topic, will, qos=1, retain=True)
    return client


class Wakeup:
    """A socket pair our select watches: the outbox pokes it after each commit and stop() pokes
    it, so an idle session sleeps up to a second yet sends a new message at once."""

    def __init__(self) -> None:
        self.receiver, self._sender = socket.socketpair()
        self.receiver.setblocking(False)
        self._sender.setblocking(False)

    def poke(self) -> None:
        """From any thread (the outbox's writer: a listener)."""
        with contextlib.suppress(OSError):  # full (already poked) or closed (stopped)
            self._sender.send(b"\0")

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            self.receiver.recv(4096)

    def close(self) -> None:
        self.receiver.close()
        self._sender.close()


def pump(client: mqtt.Client, timeout: float, wake: Wakeup | None) -> bool:
    """One round of paho's network work, waiting at most `timeout`; False when it broke.

    paho's external-loop API (socket/loop_read/loop_write/loop_misc) rather than
    client.loop(): loop() sets up a wake-up socket pair that then costs one more send()
    per publish, although we publish from this very thread.
    """
    sock = client.socket()
    if sock is None:
        return False
    pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0
    wlist = [sock] if client.want_write() else []
    rlist = [sock] if wake is None else [sock, wake.receiver]
    try:
        readable, writable, _ = select.select(rlist, wlist, [], 0.0 if pending else timeout)
    except (OSError, ValueError):  # closed under us (ValueError: a file descriptor of -1)
        return False
    if wake is not None and wake.receiver in readable:
        wake.clear()
    ok = MQTTErrorCode.MQTT_ERR_SUCCESS
    if (sock in readable or pending) and client.loop_read() != ok:
        return False
    if sock in writable and client.socket() is not None and client.loop_write() != ok:
        return False
    return client.socket() is not None and client.loop_misc() == ok


def discard(client: mqtt.Client) -> None:
    """DISCONNECT if still possible, and close the socket now rather than at GC."""
    client.disconnect()
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
