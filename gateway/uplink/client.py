"""The MQTT uplink: drains the outbox to the broker at QoS 1, in seq order, deleting on PUBACK.

paho runs in our own thread (never on the asyncio loop): one client per connection, so nothing
unacknowledged is resent by paho behind our back; after a reconnect we resend from the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from gateway.errors import StorageError
from gateway.outbox.messages import Row, compose
from gateway.outbox.store import Outbox, OutboxReader
from gateway.timefmt import utc_iso
from gateway.uplink.inflight import Kind
from gateway.uplink.session import Link
from gateway.uplink.settings import UplinkSettings

__all__ = ["Uplink", "UplinkSettings", "UplinkStatus", "backoff_delay"]

log = logging.getLogger("ironwatt.uplink")

_FETCH = 500  # rows read from the outbox at a time: the only messages held in memory
_ACK_FLUSH_S = 0.05  # acknowledged ids are deleted in batches at most this late
_IDLE_S = 1.0  # longest sleep when idle (new rows and stop() wake the thread at once)


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter in its upper half: never in lockstep with peers."""
    ceiling = min(high, low * float(2 ** min(attempt, 30)))
    return ceiling / 2 + rng.random() * ceiling / 2


@dataclass(frozen=True, slots=True)
class UplinkStatus:
    state: str  # "connecting" | "online" | "offline" | "refused" | "stopped"
    connected: bool
    since: float | None
    last_error: str | None
    inflight: int  # QoS 1 messages waiting for their PUBACK
    published: int
    acknowledged: int  # PUBACKs of outbox rows
    written: int  # QoS 0 rows written to the socket: done without an acknowledgement
    last_ack: float | None  # UTC epoch seconds of the last PUBACK
    connects: int
    refusals: int
    backlog: int
    lag_s: float


class Uplink(Link):
    """Connects, publishes birth and will, drains the outbox. start()/stop() or `async with`."""

    def __init__(self, settings: UplinkSettings, outbox: Outbox, devices: Any = None) -> None:
        super().__init__(settings, outbox, devices)
        self._rng = random.Random()

    # -- public -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._open_wake()
        self.outbox.add_listener(self._poke)
        self._thread = threading.Thread(target=self._run, name="ironwatt-uplink", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Publish `offline` (retained), disconnect, and wait for the thread."""
        self._stop.set()
        self._poke()
        self.outbox.remove_listener(self._poke)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("uplink to %s did not stop within %.0f s", self._where(), timeout)
                return
            self._thread = None
        self._close_wake()
        self._state = "stopped"

    async def __aenter__(self) -> Uplink:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    def status(self) -> UplinkStatus:
        return UplinkStatus(
            state=self._state,
            connected=self._state == "online",
            since=self._since,
            last_error=self._last_error,
            inflight=self._inflight.slots,
            published=self._published,
            acknowledged=self._acknowledged,
            written=self._written,
            last_ack=self._last_ack,
            connects=self._connects,
            refusals=self._refusals,
            backlog=self.outbox.backlog,
            lag_s=self.outbox.oldest_age_s(),
        )

    # -- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        reader = self.outbox.reader()
        attempt = 0
        try:
            while not self._stop.is_set():
                self._state = "connecting"
                try:
                    if self._attempt(reader):
                        attempt = 0  # a session ran: start the backoff afresh
                except Exception as exc:  # never let the uplink thread die: report, retry
                    log.exception("uplink to %s: unexpected error", self._where())
                    self._last_error = f"unexpected error: {exc!r}"
                    self._state = "offline"
                if self._stop.is_set():
                    break
                self._stop.wait(
                    backoff_delay(
                        attempt,
                        self.settings.reconnect_min_s,
                        self.settings.reconnect_max_s,
                        self._rng,
                    )
                )
                attempt += 1
        finally:
            reader.close()

    def _attempt(self, reader: OutboxReader) -> bool:
        """One connection: set up, connect, run the session until it ends; True if it ran."""
        try:
            client = self._client()
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._state = "offline"
            self._problem(
                f"MQTT TLS setup for {self._where()} failed: {exc}; check that "
                "mqtt.ca_file, cert_file and key_file exist, are PEM and match"
            )
            return False
        if not self._connect(client):
            if self._state != "refused":
                self._state = "offline"
            return False
        try:
            self._session(client, reader)
        finally:
            self._end_session(client)
        # A broker that refuses our messages (ACL, quota) is retried with a growing backoff,
        # like one that refuses the connection: not reconnected flat out forever.
        return not self._publish_refused

    def _session(self, client: mqtt.Client, reader: OutboxReader) -> None:
        s = self.settings
        self._reader = reader
        self._connects += 1
        self.outbox.set_link(True)
        self._state, self._since, self._last_error = "online", time.time(), None
        if not self._publish_refused:
            self._last_logged = ("", 0.0)  # a new failure is news; the same refusal again is not
        self._publish_refused = False
        log.info(
            "MQTT connected to %s as %r", self._where(), s.client_id, extra={"transition": True}
        )
        self._publish_status(client, "online")
        cursor = 0  # the id of the last row handed to paho in this session
        pending: deque[Row] = deque()
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
            sent = b""  # the `sent` time of what this round publishes, formatted once if any
            drained = held_back = False
            while self._room() and (s.drain_rate <= 0 or tokens >= 1):
                if not pending:
                    pending.extend(reader.fetch(cursor, _FETCH))
                    if not pending:
                        drained = True
                        break
                row = pending[0]
                if row.qos == 0 and self._inflight.unwritten >= s.max_inflight:
                    held_back = True  # paho's socket is full: let it write what it holds first
                    break
                pending.popleft()
                if not sent:
                    sent = utc_iso(time.time()).encode()
                body = compose(row, sent, not self.outbox.is_live(row))
                info = client.publish(row.topic, body, qos=row.qos)
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self._lost = True
                    break
                self._hand_over(info, Kind.ROW if row.qos else Kind.ROW_QOS0, row.id)
                self._published += 1
                cursor = row.id
                tokens -= 1
            if self._acked and (len(self._acked) >= _FETCH or now - last_flush >= _ACK_FLUSH_S):
                self.outbox.ack(self._acked)
                self._acked, last_flush = [], now
            # Status when due, and once more when the backlog the last status reported has just
            # been drained (not after every burst of live traffic: that would be a retained
            # message per poll). A status waiting for its own PUBACK is not a row.
            now_caught_up = drained and self._inflight.rows == 0
            told_backlog = now_caught_up and not caught_up and self._told_backlog > 0
            if now >= next_status or told_backlog:
                if now_caught_up:
                    # Let the deletes land first, so the status says `backlog: 0` when it is.
                    if self._acked:
                        self.outbox.ack(self._acked)
                        self._acked, last_flush = [], now
                    with contextlib.suppress(TimeoutError, StorageError):  # report anyway
                        self.outbox.flush(timeout=2.0)
                self._publish_status(client, "online")
                next_status = now + s.status_interval_s
            caught_up = now_caught_up
            oldest = self._inflight.oldest_sent_at()
            if oldest is not None and now - oldest > s.ack_timeout_s:
                self._problem(
                    f"MQTT broker {self._where()} has not acknowledged a message "
                    f"for {s.ack_timeout_s:.0f} s; reconnecting",
                    logging.WARNING,
                )
                break
            wait = min(_IDLE_S, max(0.0, next_status - now))
            if self._acked:
                wait = min(wait, _ACK_FLUSH_S)
            if self._room() and (pending or not drained) and not held_back:
                # More to send right now, or as soon as the rate limit gives a token (held
                # back: the select wakes when the socket takes more).
                rate_wait = 0.0 if s.drain_rate <= 0 else (1 - tokens) / s.drain_rate
                wait = min(wait, max(0.0, rate_wait))
            if not self._pump(client, wait):
                break
        if self._stop.is_set() and not self._lost:
            self._say_goodbye(client)

    def _room(self) -> bool:
        """A free slot in the ack window (QoS 1 rows only), and no mid about to be reused."""
        return self._inflight.slots < self.settings.max_inflight and self._inflight.may_hand_over()

    def _say_goodbye(self, client: mqtt.Client) -> None:
        """Graceful stop: `offline` retained and acknowledged before the DISCONNECT."""
        info = self._publish_status(client, "offline")
        deadline = time.monotonic() + 2.0
        while self._inflight.waiting(info.mid) and time.monotonic() < deadline:
            if not self._pump(client, 0.05):
                break
        client.disconnect()

    def _end_session(self, client: mqtt.Client) -> None:
        self.outbox.set_link(False)
        if self._acked:
            self.outbox.ack(self._acked)
            self._acked = []
            # The deletes land before the next session reads from the oldest row again, so an
            # acknowledged message is not sent twice.
            with contextlib.suppress(TimeoutError, StorageError):  # stalled or closed outbox
                self.outbox.flush(timeout=5.0)
        # Whatever paho still holds is forgotten with this client: the outbox resends it.
        self._inflight.clear()
        self._discard(client)  # a second DISCONNECT after a goodbye is a no-op
        self._state = "offline"
        self._reader = None
        log.info(
            "MQTT session with %s ended; %d messages wait in the outbox",
            self._where(),
            self.outbox.backlog,
        )
