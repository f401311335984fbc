"""What every driver shares: the sink it reports into, device health with up/down events, the
fixed-rate schedule (one definition of an overrun) and backoff (one algorithm, named situations).

Modelled on Telegraf's accumulator and running input: a driver's only way out is its sink, which
takes sample batches and events alike, so a failing device is reported and the loop goes on; the
policy is here, so each protocol keeps only connect, read and subscribe.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from drivers.samples import SampleBatch

__all__ = [
    "DRIVER_RESTART",
    "SESSION_RECONNECT",
    "Backoff",
    "DeviceEvent",
    "DeviceHealth",
    "DeviceSink",
    "DeviceState",
    "FixedRate",
    "Steps",
]

log = logging.getLogger("ironwatt.device")

DeviceState = Literal["starting", "up", "down", "stopped"]
EventType = Literal["device_up", "device_down", "point_error", "clock_step"]


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """Something a subscriber or a technician must hear about; becomes an `event` message."""

    type: EventType
    device: str
    reason: str
    at: float  # UTC epoch seconds
    point: str | None = None


class DeviceSink(Protocol):
    """Where a driver delivers. Both calls are cheap and never block (the daemon queues)."""

    def add_samples(self, batch: SampleBatch) -> None: ...

    def add_event(self, event: DeviceEvent) -> None: ...


@dataclass(slots=True)
class DeviceHealth:
    """Up/down state of one device, its counters, and the events its transitions produce.

    A device goes down after `failures_to_down` consecutive failed polls (or at once on a lost
    connection) and up on the first success; each transition is reported once, and logged once,
    so a dead meter logs its fall and its return, not every poll.
    """

    device: str
    sink: DeviceSink
    failures_to_down: int = 1
    clock: Callable[[], float] = time.time
    state: DeviceState = "starting"
    last_success: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    errors: int = 0
    polls: int = 0
    overruns: int = 0
    requests: int = 0
    poll_seconds: float = 0.0  # the time the timed polls took, summed
    timed_polls: int = 0
    last_poll_s: float | None = None  # how long the last one took

    def success(self) -> None:
        self.polls += 1
        self.consecutive_failures = 0
        self.last_success = self.clock()
        if self.state != "up":
            previous = self.state
            self.state = "up"
            reason = "connected" if previous == "starting" else "recovered"
            # A transition: never held back by the log's repeat filter (gateway/daemon/logs.py).
            log.info(
                "device %s is up (%s)", self.device, reason,
                extra={"transition": True, "device": self.device, "event": "device_up"},
            )  # fmt: skip
            self.sink.add_event(DeviceEvent("device_up", self.device, reason, self.last_success))

    def failure(self, reason: str, *, fatal: bool = False) -> None:
        """Count a failed poll; `fatal` (connection lost) takes the device down at once."""
        self.polls += 1
        self.errors += 1
        self.consecutive_failures += 1
        self.last_error = reason
        if self.state == "down":
            return
        if fatal or self.consecutive_failures >= self.failures_to_down:
            self.state = "down"
            log.warning(
                "device %s is down: %s", self.device, reason,
                extra={"transition": True, "device": self.device, "event": "device_down"},
            )  # fmt: skip
            self.sink.add_event(DeviceEvent("device_down", self.device, reason, self.clock()))

    def timed(self, seconds: float) -> None:
        """A poll (every block or node read once) took `seconds`, failed or not."""
        self.poll_seconds += seconds
        self.timed_polls += 1
        self.last_poll_s = seconds

    def stopped(self) -> None:
        self.state = "stopped"

    def snapshot(self) -> dict[str, object]:
        """For `/status` and `ironwatt status`."""
        return {
            "state": self.state,
            "last_success": self.last_success,
            "last_error": self.last_error,
            "errors": self.errors,
            "polls": self.polls,
            "overruns": self.overruns,
            "requests": self.requests,
            # None for a device that is never polled (OPC UA subscriptions)
            "poll_seconds": round(self.poll_seconds, 6) if self.timed_polls else None,
            "timed_polls": self.timed_polls,
            "last_poll_s": None if self.last_poll_s is None else round(self.last_poll_s, 6),
        }


@dataclass(slots=True)
class FixedRate:
    """Ticks every `period` s on the monotonic clock: due times never drift (each is one period
    after the previous due time, not after the poll ended), and an NTP step never moves them.

    The one definition of an overrun, for every driver: a tick that a poll ran past. Such ticks
    are skipped, never bunched into a catch-up burst, and counted (`DeviceHealth.overruns`).
    """

    period: float
    due: float  # monotonic time of the next tick

    def advance(self, now: float) -> int:
        """Move past the poll that ended at `now`; the number of ticks it overran."""
        self.due += self.period
        late = now - self.due
        if late <= 0:
            return 0
        missed = int(late // self.period) + 1
        self.due += missed * self.period
        return missed


@dataclass(frozen=True, slots=True)
class Steps:
    """The bounds of one exponential backoff: its first step and the longest delay."""

    first: float
    maximum: float


# The backoffs of situations every protocol shares, by name (a protocol's own, e.g. a Modbus
# unit on a shared line, are its package's: drivers/modbus/recovery.py).
# A driver task that crashed: restarted soon, then at most a minute apart (a crash loop costs
# a log line a minute, not a busy loop).
DRIVER_RESTART = Steps(first=1.0, maximum=60.0)
# A session to a server that went away (OPC UA): its own connection, nobody else waits on it.
SESSION_RECONNECT = Steps(first=1.0, maximum=30.0)

# One generator for every backoff: a random.Random carries 2.5 KB of state, and a gateway has
# a backoff per device and per link.
_JITTER = random.Random()


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with full jitter, so devices that fell together do not retry together."""

    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0
    rng: random.Random = _JITTER
    _current: float = 0.0

    @classmethod
    def of(cls, steps: Steps) -> Backoff:
        return cls(initial=steps.first, maximum=steps.maximum)

    def next_delay(self) -> float:
        self._current = (
            self.initial if self._current == 0 else min(self.maximum, self._current * self.factor)
        )
        # Jitter in [50%, 100%] of the step: spread out, yet never much faster than planned.
        return self._current * (0.5 + 0.5 * self.rng.random())

    def reset(self) -> None:
        self._current = 0.0

    @property
    def attempts_pending(self) -> bool:
        return self._current != 0.0
