"""The daemon's handle on the MQTT uplink (gateway.uplink): start, stop off the loop, status.

The uplink runs paho in its own thread; stopping joins that thread, so it goes to an executor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gateway.outbox import Outbox
from gateway.uplink import Uplink, UplinkSettings, parse_url

__all__ = ["UplinkStage"]


class UplinkStage:
    def __init__(self, cfg: Any, outbox: Outbox, devices: Callable[[], int]) -> None:
        settings = UplinkSettings.from_config(cfg)
        host, port, tls = parse_url(settings.url)
        # The broker without credentials: the URL of the config never carries a password,
        # and this string goes to /status and the log.
        self.broker = f"{'mqtts' if tls else 'mqtt'}://{host}:{port}"
        # `devices` is read at every status publish: a reload changes it at once.
        self.uplink = Uplink(settings, outbox, devices=devices)

    def start(self) -> None:
        self.uplink.start()

    # The thread's own deadline (its goodbye, its join): an executor job cannot be cancelled.
    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109
        """Publish `offline` (retained), disconnect, join the thread: within `timeout`."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.uplink.stop, timeout)

    def status(self) -> dict[str, Any]:
        s = self.uplink.status()
        return {
            "broker": self.broker,
            "state": s.state,
            "connected": s.connected,
            "since": s.since,
            "last_error": s.last_error,
            "inflight": s.inflight,
            "published": s.published,
            "acked": s.acknowledged,
            "written_qos0": s.written,
            "last_ack": s.last_ack,
            "connects": s.connects,
            "refusals": s.refusals,
            "backlog": s.backlog,
            "lag_s": s.lag_s,
        }
