"""The MQTT uplink: drains the outbox to the broker at QoS 1, in seq order, deleting on PUBACK.

paho runs in our own thread (never on the asyncio loop): one session, with a fresh client, per
connection (session.py), so nothing unacknowledged is resent by paho behind our back; after a
reconnect we resend from the outbox. Between connections: the shared backoff of drivers.base.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.uplink.mqtt_client import Wakeup
from gateway.uplink.session import Broker, MqttSession
from gateway.uplink.settings import UplinkSettings, parse_url, reconnect_backoff
from gateway.uplink.status import UplinkHealth, UplinkStatus

if TYPE_CHECKING:
    from gateway.outbox import Outbox

# UplinkSettings and UplinkStatus: their old import path (gateway.uplink.client) keeps working.
__all__ = ["Uplink", "UplinkSettings", "UplinkStatus"]

log = logging.getLogger("ironwatt.uplink")


class Uplink:
    """Connects, publishes birth and will, drains the outbox. start()/stop() or `async with`.

    Owns the thread, the reconnect backoff and the running record (UplinkHealth); each
    connection is an MqttSession.
    """

    def __init__(
        self,
        settings: UplinkSettings,
        outbox: Outbox,
        devices: Callable[[], int] | None = None,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self._devices = devices  # read at every status publish: a reload changes it at once
        self._broker = Broker(*parse_url(settings.url))  # UplinkError: not a broker URL
        self._health = UplinkHealth()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._session: MqttSession | None = None  # the connection being made or drained
        # Made by start(), closed by stop(): see Wakeup.
        self._wake: Wakeup | None = None

    # -- public -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._wake = Wakeup()
        self.outbox.add_listener(self._wake.poke)
        self._thread = threading.Thread(target=self._run, name="ironwatt-uplink", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Publish `offline` (retained), disconnect, and wait for the thread."""
        self._stop.set()
        wake = self._wake
        if wake is not None:
            wake.poke()
            self.outbox.remove_listener(wake.poke)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("uplink to %s did not stop within %.0f s", self._broker.where, timeout)
                return
            self._thread = None
        if wake is not None:
            wake.close()
            self._wake = None
        self._health.state = "stopped"

    async def __aenter__(self) -> Uplink:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    def status(self) -> UplinkStatus:
        session = self._session
        return self._health.snapshot(
            inflight=0 if session is None else session.inflight.slots,
            backlog=self.outbox.backlog,
            lag_s=self.outbox.oldest_age_s(),
        )

    # -- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        reader = self.outbox.reader()
        backoff = reconnect_backoff(self.settings)
        health = self._health
        try:
            while not self._stop.is_set():
                health.state = "connecting"
                self._session = MqttSession(
                    self.settings,
                    self._broker,
                    self.outbox,
                    reader,
                    health,
                    self._stop,
                    self._wake,
                    self._devices,
                )
                try:
                    if self._session.run():
                        backoff.reset()  # a session ran: start the backoff afresh
                except Exception as exc:  # never let the uplink thread die: report, retry
                    log.exception("uplink to %s: unexpected error", self._broker.where)
                    health.last_error = f"unexpected error: {exc!r}"
                    health.state = "offline"
                finally:
                    self._session = None
                if self._stop.is_set():
                    break
                self._stop.wait(backoff.next_delay())
        finally:
            reader.close()
