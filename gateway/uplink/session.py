"""One MQTT connection of the uplink: CONNECT and its refusals, the drain of the outbox to the
broker (QoS 1 in id order, PUBACK -> delete), paho's callbacks, the retained status document.

A session lives as long as its connection; the Uplink (client.py) runs one after the other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import StorageError, UplinkError
from gateway.outbox import Row, compose
from gateway.timefmt import utc_iso
from gateway.uplink.inflight import Done, InFlight, Kind
from gateway.uplink.mqtt_client import Wakeup, discard, new_client, pump
from gateway.uplink.settings import UplinkSettings
from gateway.uplink.status import UplinkHealth

if TYPE_CHECKING:
    from gateway.outbox import Outbox, OutboxReader

__all__ = ["Broker", "MqttSession"]

log = logging.getLogger("ironwatt.uplink")

_FETCH = 500  # rows read from the outbox at a time: the only messages held in memory
_ACK_FLUSH_S = 0.05  # acknowledged ids are deleted in batches at most this late
_IDLE_S = 1.0  # longest sleep when idle (new rows and stop() wake the thread at once)


class Broker:
    """Where the uplink connects, parsed once from mqtt.url."""

    __slots__ = ("host", "port", "tls", "where")

    def __init__(self, host: str, port: int, tls: bool) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.where = f"{host}:{port}"


class MqttSession:
    """One connection: `run()` sets it up, connects, drains the outbox until the connection
    ends (lost, refused, stopped, no PUBACK in time) and says whether it ran."""

    def __init__(
        self,
        settings: UplinkSettings,
        broker: Broker,
        outbox: Outbox,
        reader: OutboxReader,
        health: UplinkHealth,
        stop: threading.Event,
        wake: Wakeup | None,
        devices: Callable[[], int] | None,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.inflight = InFlight()
        self._broker = broker
        self._where = broker.where
        self._reader = reader
        self._health = health
        self._stop = stop
        self._wake = wake
        self._devices = devices  # the number of configured devices, read at every status
        self._acked: list[int] = []
        self._connack: ReasonCode | None = None
        self._lost = False
        # The drain's place in the outbox: the id of the last row handed to paho in this
        # session, and the rows read after it but not handed over yet.
        self._cursor = 0
        self._pending: deque[Row] = deque()

    def run(self) -> bool:
        """Set up, connect, drain until the connection ends; True if a session ran."""
        health = self._health
        try:
            client = new_client(
                self.settings, self._broker.tls, self._where, self._status_doc("offline")
            )
        except UplinkError as exc:
            health.state = "offline"
            health.problem(str(exc))
            return False
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        if not self._connect(client):
            if health.state != "refused":
                health.state = "offline"
            return False
        try:
            self._drain(client)
        finally:
            self._end(client)
        # A broker that refuses our messages (ACL, quota) is retried with a growing backoff,
        # like one that refuses the connection: not reconnected flat out forever.
        return not health.publish_refused

    # -- CONNECT --------------------------------------------------------------------------------

    def _connect(self, client: mqtt.Client) -> bool:
        s, health, broker = self.settings, self._health, self._broker
        try:
            if s.protocol == "5":
                client.connect(
                    broker.host,
                    broker.port,
                    keepalive=max(1, round(s.keepalive_s)),
                    clean_start=True,
                )
            else:
                client.connect(broker.host, broker.port, keepalive=max(1, round(s.keepalive_s)))
        except ssl.SSLError as exc:
            health.problem(
                f"MQTT TLS handshake with {self._where} failed: {exc.reason or exc}; check "
                "mqtt.ca_file (the broker's CA), mqtt.cert_file/key_file (mutual TLS) and that "
                "the broker's certificate names this host"
            )
            return False
        except OSError as exc:
            health.problem(
                f"MQTT broker {self._where} unreachable: {exc}; retrying", logging.WARNING
            )
            return False
        deadline = time.monotonic() + s.connect_timeout_s
        while self._connack is None and not self._lost and time.monotonic() < deadline:
            if not pump(client, 0.1, self._wake):
                break
        if self._connack is None:
            if self._lost:
                hint = (
                    "a broker requiring a client certificate closes TLS connections without "
                    "one: check mqtt.cert_file/key_file"
                    if broker.tls
                    else "check the broker's log and listener settings"
                )
                health.problem(
                    f"MQTT broker {self._where} closed the connection before "
                    f"accepting it ({hint}); retrying"
                )
            else:
                health.problem(
                    f"MQTT broker {self._where} did not answer CONNECT within "
                    f"{s.connect_timeout_s:.0f} s; retrying",
                    logging.WARNING,
                )
            discard(client)
            return False
        if self._connack.is_failure:
            health.refusals += 1
            health.state = "refused"
            user = s.username or "(none)"
            health.problem(
                f"MQTT broker {self._where} refused the connection: {self._connack} "
                f"(client id {s.client_id!r}, user {user!r}); check mqtt.username, the password "
                "file or variable, and the broker's ACL; retrying with backoff"
            )
            discard(client)
            return False
        return True

    # -- the drain --------------------------------------------------------------------------------

    def _drain(self, client: mqtt.Client) -> None:
        s, health, outbox, inflight = self.settings, self._health, self.outbox, self.inflight
        self._online(client)
        tokens, last_refill = 1.0, time.monotonic()
        burst = max(1.0, min(s.drain_rate, float(s.max_inflight)))
        next_status = time.monotonic() + s.status_interval_s
        last_flush = time.monotonic()
        caught_up = True
        while not self._stop.is_set() and not self._lost:
            now = time.monotonic()
            if s.drain_rate > 0:
                tokens = min(burst, tokens + (now - last_refill) * s.drain_rate)
                last_refill = now
            published, drained, held_back = self._publish_rows(client, tokens)
            tokens -= published
            if self._acked and (len(self._acked) >= _FETCH or now - last_flush >= _ACK_FLUSH_S):
                outbox.ack(self._acked)
                self._acked, last_flush = [], now
            # Status when due, and once more when the backlog the last status reported has just
            # been drained (not after every burst of live traffic: that would be a retained
            # message per poll). A status waiting for its own PUBACK is not a row.
            now_caught_up = drained and inflight.rows == 0
            told_backlog = now_caught_up and not caught_up and health.told_backlog > 0
            if now >= next_status or told_backlog:
                if now_caught_up:
                    # Let the deletes land first, so the status says `backlog: 0` when it is.
                    if self._acked:
                        outbox.ack(self._acked)
                        self._acked, last_flush = [], now
                    with contextlib.suppress(TimeoutError, StorageError):  # report anyway
                        outbox.flush(timeout=2.0)
                self._publish_status(client, "online")
                next_status = now + s.status_interval_s
            caught_up = now_caught_up
            oldest = inflight.oldest_sent_at()
            if oldest is not None and now - oldest > s.ack_timeout_s:
                health.problem(
                    f"MQTT broker {self._where} has not acknowledged a message "
                    f"for {s.ack_timeout_s:.0f} s; reconnecting",
                    logging.WARNING,
                )
                break
            wait = min(_IDLE_S, max(0.0, next_status - now))
            if self._acked:
                wait = min(wait, _ACK_FLUSH_S)
            if self._room() and (self._pending or not drained) and not held_back:
                # More to send right now, or as soon as the rate limit gives a token (held
                # back: the select wakes when the socket takes more).
                rate_wait = 0.0 if s.drain_rate <= 0 else (1 - tokens) / s.drain_rate
                wait = min(wait, max(0.0, rate_wait))
            if not pump(client, wait, self._wake):
                break
        if self._stop.is_set() and not self._lost:
            self._say_goodbye(client)

    def _online(self, client: mqtt.Client) -> None:
        """The connection is up: counted, logged once, the retained status says `online`."""
        health = self._health
        health.connects += 1
        self.outbox.set_link(True)
        health.state, health.since, health.last_error = "online", time.time(), None
        if not health.publish_refused:
            health.forget_problem()  # a new failure is news; the same refusal again is not
        health.publish_refused = False
        log.info(
            "MQTT connected to %s as %r",
            self._where,
            self.settings.client_id,
            extra={"transition": True},
        )
        self._publish_status(client, "online")

    def _publish_rows(self, client: mqtt.Client, tokens: float) -> tuple[int, bool, bool]:
        """Hand rows to paho in id order while the ack window has room and the rate limit
        `tokens`: how many went, whether the outbox had no more, whether QoS 0 rows wait for
        paho's socket to take what it holds first."""
        s, inflight, pending, outbox = self.settings, self.inflight, self._pending, self.outbox
        sent = b""  # the `sent` time of what this round publishes, formatted once if any
        published = 0
        while self._room() and (s.drain_rate <= 0 or tokens - published >= 1):
            if not pending:
                pending.extend(self._reader.fetch(self._cursor, _FETCH))
                if not pending:
                    return published, True, False
            row = pending[0]
            if row.qos == 0 and inflight.unwritten >= s.max_inflight:
                return published, False, True  # paho's socket is full: let it write first
            pending.popleft()
            if not sent:
                sent = utc_iso(time.time()).encode()
            body = compose(row, sent, not outbox.is_live(row))
            info = client.publish(row.topic, body, qos=row.qos)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._lost = True
                break
            self._hand_over(info, Kind.ROW if row.qos else Kind.ROW_QOS0, row.id)
            self._health.published += 1
            self._cursor = row.id
            published += 1
        return published, False, False

    def _room(self) -> bool:
        """A free slot in the ack window (QoS 1 rows only), and no mid about to be reused."""
        inflight = self.inflight
        return inflight.slots < self.settings.max_inflight and inflight.may_hand_over()

    def _say_goodbye(self, client: mqtt.Client) -> None:
        """Graceful stop: `offline` retained and acknowledged before the DISCONNECT."""
        info = self._publish_status(client, "offline")
        deadline = time.monotonic() + 2.0
        while self.inflight.waiting(info.mid) and time.monotonic() < deadline:
            if not pump(client, 0.05, self._wake):
                break
        client.disconnect()

    def _end(self, client: mqtt.Client) -> None:
        outbox = self.outbox
        outbox.set_link(False)
        if self._acked:
            outbox.ack(self._acked)
            self._acked = []
            # The deletes land before the next session reads from the oldest row again, so an
            # acknowledged message is not sent twice.
            with contextlib.suppress(TimeoutError, StorageError):  # stalled or closed outbox
                outbox.flush(timeout=5.0)
        # Whatever paho still holds is forgotten with this client: the outbox resends it.
        self.inflight.clear()
        discard(client)  # a second DISCONNECT after a goodbye is a no-op
        self._health.state = "offline"
        log.info(
            "MQTT session with %s ended; %d messages wait in the outbox",
            self._where,
            outbox.backlog,
        )

    # -- paho's callbacks and the booking -----------------------------------------------------

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
        if reason_code.is_failure and self._health.state == "online" and not self._stop.is_set():
            self._health.problem(
                f"MQTT connection to {self._where} lost: {reason_code}; "
                "resending what was not acknowledged after reconnecting",
                logging.WARNING,
            )

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Any
    ) -> None:
        done = self.inflight.finished(mid, not reason_code.is_failure)
        if done is not None:
            self._book(done, reason_code)
        # else: finished inside publish(), before its mid was recorded; _hand_over books it.

    def _hand_over(self, info: mqtt.MQTTMessageInfo, kind: Kind, row_id: int) -> None:
        """Record what paho took; book it at once if paho already finished it."""
        done = self.inflight.handed(info.mid, kind, row_id, time.monotonic())
        if done is not None:
            self._book(done, None)

    def _book(self, done: Done, reason_code: ReasonCode | None) -> None:
        if done.kind is Kind.STATUS:
            return
        health = self._health
        if not done.ok:
            # The broker did not take it (ACL, quota): keep the row; a reconnect resends it.
            health.refusals += 1
            health.publish_refused = True
            health.problem(
                f"MQTT broker {self._where} refused a message: "
                f"{reason_code if reason_code is not None else 'failure'}; "
                "check the broker's ACL for this gateway's topics"
            )
            self._lost = True
            return
        self._acked.append(done.row_id)
        if done.kind is Kind.ROW:
            health.acknowledged += 1
            health.last_ack = time.time()
        else:
            health.written += 1

    # -- the status document ------------------------------------------------------------------

    def _publish_status(self, client: mqtt.Client, state: str) -> mqtt.MQTTMessageInfo:
        health = self._health
        oldest = self._reader.oldest_created()
        health.lag_s = 0.0 if oldest is None else max(0.0, time.time() - oldest)
        health.told_backlog = self.outbox.backlog
        info = client.publish(
            self.settings.status_topic,
            self._status_doc(state, health.told_backlog),
            qos=1,
            retain=True,
        )
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._hand_over(info, Kind.STATUS, 0)
        return info

    def _status_doc(self, state: str, backlog: int | None = None) -> bytes:
        s, health = self.settings, self._health
        doc = {
            "v": 1,
            "state": state,
            "gw": s.gw_id,
            "site": s.site,
            "version": s.version,
            "since": utc_iso(health.since or time.time()),
            "devices": self._devices() if self._devices is not None else 0,
            "backlog": self.outbox.backlog if backlog is None else backlog,
            "lag_s": round(health.lag_s, 3),
        }
        return json.dumps(doc, separators=(",", ":")).encode()
