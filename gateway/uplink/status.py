"""What the uplink tells about itself: the `UplinkStatus` snapshot, and `UplinkHealth`, the running
record that the uplink thread and each MQTT session write into (state, counters, last problem).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

__all__ = ["UplinkHealth", "UplinkState", "UplinkStatus"]

log = logging.getLogger("ironwatt.uplink")

UplinkState = Literal["connecting", "online", "offline", "refused", "stopped"]
_REPEAT_S = 300.0  # the same problem is logged again at most this often while it lasts


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


@dataclass(slots=True)
class UplinkHealth:
    """Lives as long as the Uplink, across its connections; read by `status()` from any thread."""

    state: UplinkState = "offline"
    since: float | None = None  # wall clock of the last CONNACK
    last_error: str | None = None
    published: int = 0
    acknowledged: int = 0
    written: int = 0  # QoS 0 rows written to the socket (no PUBACK to wait for)
    last_ack: float | None = None  # wall clock of the last PUBACK, for /status
    connects: int = 0
    refusals: int = 0
    # The broker refused a message (PUBACK reason code): set until a session sends cleanly.
    publish_refused: bool = False
    lag_s: float = 0.0  # what the last status document said
    told_backlog: int = 0  # the backlog the last status document said
    _last_logged: tuple[str, float] = ("", 0.0)

    def problem(self, text: str, level: int = logging.ERROR) -> None:
        """Log a failure once, then again at most every 5 minutes while it lasts."""
        self.last_error = text
        last, when = self._last_logged
        if text != last or time.monotonic() - when > _REPEAT_S:
            log.log(level, "%s", text)
            self._last_logged = (text, time.monotonic())

    def forget_problem(self) -> None:
        """A new failure is news again (the same refusal at every reconnect is not)."""
        self._last_logged = ("", 0.0)

    def snapshot(self, inflight: int, backlog: int, lag_s: float) -> UplinkStatus:
        return UplinkStatus(
            state=self.state,
            connected=self.state == "online",
            since=self.since,
            last_error=self.last_error,
            inflight=inflight,
            published=self.published,
            acknowledged=self.acknowledged,
            written=self.written,
            last_ack=self.last_ack,
            connects=self.connects,
            refusals=self.refusals,
            backlog=backlog,
            lag_s=lag_s,
        )
