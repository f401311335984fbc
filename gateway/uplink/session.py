"""One MQTT connection of the uplink: the paho client (TLS, credentials, will), CONNECT and
its refusals, paho's callbacks, the retained status document. The draining is in uplink.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import ssl
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from gateway.outbox.store import Outbox, OutboxReader
from gateway.timefmt import utc_iso
from gateway.uplink.inflight import Done, InFlight, Kind
from gateway.uplink.settings import UplinkSettings, parse_url

__all__ = ["Link"]

log = logging.getLogger("ironwatt.uplink")


class Link:
    """The connection-level state and callbacks; Uplink adds the thread and the session."""

    def __init__(self, settings: UplinkSettings, outbox: Outbox, devices: Any = None) -> None:
        self.settings = settings
        self.outbox = outbox
        self._devices = devices  # callable -> int, the number of configured devices
        self._host, self._port, self._tls = parse_url(settings.url)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = "offline"
        self._since: float | None = None
        self._last_error: str | None = None
        self._last_logged: tuple[str, float] = ("", 0.0)
        self._inflight = InFlight()
        self._acked: list[int] = []
        self._published = self._acknowledged = self._connects = self._refusals = 0
        self._written = 0  # QoS 0 rows written to the socket (no PUBACK to wait for)
        self._last_ack: float | None = None  # wall clock of the last PUBACK, for /status
        self._connack: ReasonCode | None = None
        self._lost = False
        # The broker refused a message (PUBACK reason code): set until a session sends cleanly.
        self._publish_refused = False
        self._lag_s = 0.0
        self._told_backlog = 0  # the backlog the last published status said
        self._reader: OutboxReader | None = None
        # The outbox pokes this after each commit: an idle session wakes at once, not at a tick.
        # Made by Uplink.start(), closed by stop().
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    def _where(self) -> str:
        return f"{self._host}:{self._port}"

    def _client(self) -> mqtt.Client:
        s = self.settings
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
        if self._tls:
            client.tls_set(
                ca_certs=str(s.ca_file) if s.ca_file else None,
                certfile=str(s.cert_file) if s.cert_file else None,
                keyfile=str(s.key_file) if s.key_file else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        client.will_set(s.status_topic, self._status_doc("offline"), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _status_doc(self, state: str, backlog: int | None = None) -> bytes:
        s = self.settings
        devices = self._devices() if callable(self._devices) else 0
        doc = {
            "v": 1,
            "state": state,
            "gw": s.gw_id,
            "site": s.site,
            "version": s.version,
            "since": utc_iso(self._since or time.time()),
            "devices": devices,
            "backlog": self.outbox.backlog if backlog is None else backlog,
            "lag_s": round(self._lag_s, 3),
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    def _problem(self, text: str, level: int = logging.ERROR) -> None:
        """Log a failure once, then again at most every 5 minutes while it lasts."""
        self._last_error = text
        last, when = self._last_logged
        if text != last or time.monotonic() - when > 300:
            log.log(level, "%s", text)
            self._last_logged = (text, time.monotonic())

    def _connect(self, client: mqtt.Client) -> bool:
        s = self.settings
        self._connack, self._lost = None, False
        try:
            if s.protocol == "5":
                client.connect(
                    self._host, self._port, keepalive=max(1, round(s.keepalive_s)), clean_start=True
                )
            else:
                client.connect(self._host, self._port, keepalive=max(1, round(s.keepalive_s)))
        except ssl.SSLError as exc:
            self._problem(
                f"MQTT TLS handshake with {self._where()} failed: {exc.reason or exc}; check "
                "mqtt.ca_file (the broker's CA), mqtt.cert_file/key_file (mutual TLS) and that "
                "the broker's certificate names this host"
            )
            return False
        except OSError as exc:
            self._problem(
                f"MQTT broker {self._where()} unreachable: {exc}; retrying", logging.WARNING
            )
            return False
        deadline = time.monotonic() + s.connect_timeout_s
        while self._connack is None and not self._lost and time.monotonic() < deadline:
            if not self._pump(client, 0.1):
                break
        if self._connack is None:
            if self._lost:
                hint = (
                    "a broker requiring a client certificate closes TLS connections without "
                    "one: check mqtt.cert_file/key_file"
                    if self._tls
                    else "check the broker's log and listener settings"
                )
                self._problem(
                    f"MQTT broker {self._where()} closed the connection before "
                    f"accepting it ({hint}); retrying"
                )
            else:
                self._problem(
                    f"MQTT broker {self._where()} did not answer CONNECT within "
                    f"{s.connect_timeout_s:.0f} s; retrying",
                    logging.WARNING,
                )
            self._discard(client)
            return False
        if self._connack.is_failure:
            self._refusals += 1
            self._state = "refused"
            user = s.username or "(none)"
            self._problem(
                f"MQTT broker {self._where()} refused the connection: {self._connack} "
                f"(client id {s.client_id!r}, user {user!r}); check mqtt.username, the password "
                "file or variable, and the broker's ACL; retrying with backoff"
            )
            self._discard(client)
            return False
        return True

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        self._connack = reason_code

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        self._lost = True
        if reason_code.is_failure and self._state == "online" and not self._stop.is_set():
            self._problem(
                f"MQTT connection to {self._where()} lost: {reason_code}; "
                "resending what was not acknowledged after reconnecting",
                logging.WARNING,
            )

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Any
    ) -> None:
        done = self._inflight.finished(mid, not reason_code.is_failure)
        if done is not None:
            self._book(done, reason_code)
        # else: finished inside publish(), before its mid was recorded; _hand_over books it.

    def _hand_over(self, info: mqtt.MQTTMessageInfo, kind: Kind, row_id: int) -> None:
        """Record what paho took; book it at once if paho already finished it."""
        done = self._inflight.handed(info.mid, kind, row_id, time.monotonic())
        if done is not None:
            self._book(done, None)

    def _book(self, done: Done, reason_code: ReasonCode | None) -> None:
        if done.kind is Kind.STATUS:
            return
        if not done.ok:
            # The broker did not take it (ACL, quota): keep the row; a reconnect resends it.
            self._refusals += 1
            self._publish_refused = True
            self._problem(
                f"MQTT broker {self._where()} refused a message: "
                f"{reason_code if reason_code is not None else 'failure'}; "
                "check the broker's ACL for this gateway's topics"
            )
            self._lost = True
            return
        self._acked.append(done.row_id)
        if done.kind is Kind.ROW:
            self._acknowledged += 1
            self._last_ack = time.time()
        else:
            self._written += 1

    def _publish_status(self, client: mqtt.Client, state: str) -> mqtt.MQTTMessageInfo:
        self._lag_s = self._lag()
        self._told_backlog = self.outbox.backlog
        info = client.publish(
            self.settings.status_topic,
            self._status_doc(state, self._told_backlog),
            qos=1,
            retain=True,
        )
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._hand_over(info, Kind.STATUS, 0)
        return info

    def _lag(self) -> float:
        oldest = self._reader.oldest_created() if self._reader else None
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    def _poke(self) -> None:
        """Outbox listener (writer thread): new rows are there."""
        wake = self._wake_w
        if wake is not None:
            with contextlib.suppress(OSError):  # full (already poked) or closed (stopped)
                wake.send(b"\0")

    def _pump(self, client: mqtt.Client, timeout: float) -> bool:
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
        wake = self._wake_r
        rlist = [sock] if wake is None else [sock, wake]
        try:
            readable, writable, _ = select.select(rlist, wlist, [], 0.0 if pending else timeout)
        except (OSError, ValueError):
            return False
        if wake is not None and wake in readable:
            with contextlib.suppress(OSError):
                wake.recv(4096)
        ok = MQTTErrorCode.MQTT_ERR_SUCCESS
        if (sock in readable or pending) and client.loop_read() != ok:
            return False
        if sock in writable and client.socket() is not None and client.loop_write() != ok:
            return False
        return client.socket() is not None and client.loop_misc() == ok

    @staticmethod
    def _discard(client: mqtt.Client) -> None:
        """DISCONNECT if still possible, and close the socket now rather than at GC."""
        client.disconnect()
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _open_wake(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def _close_wake(self) -> None:
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._wake_r = self._wake_w = None
