"""One driver kept running: built, run, rebuilt after a crash with backoff, reported per device.

Telegraf's running input for us: restart policy and the uniform per-device status live here,
once, so a protocol's driver only connects, reads and subscribes. The daemon's Supervisor
(gateway/daemon/devices.py) holds one per unit and decides which units exist.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from drivers.base import DRIVER_RESTART, Backoff, DeviceEvent, DeviceSink
from drivers.plugin import Driver

__all__ = ["LONG_RUN_S", "RunningDriver"]

# The daemon's logger: a crash is the daemon's business (it restarts), not a device's line.
log = logging.getLogger("ironwatt.runtime")

# A driver that ran this long before it failed is failing afresh, not crash-looping.
LONG_RUN_S = 300.0


class RunningDriver:
    """`await run()` until cancelled: `build()` a driver and run it; when it raises (or returns)
    count the crash, report the first of a streak as device_down for each of `names()`, wait
    the backoff and build it again. `build` and `names` are asked anew each time: a reload may
    have changed the devices in place."""

    def __init__(
        self,
        build: Callable[[], Driver],
        names: Callable[[], Sequence[str]],
        sink: DeviceSink,
        *,
        kind: str,
        backoff: Backoff | None = None,
    ) -> None:
        self._build = build
        self._names = names
        self.sink = sink
        self.kind = kind  # the plugin's name, shown as each device's "driver"
        self.backoff = backoff or Backoff.of(DRIVER_RESTART)
        self.driver: Driver | None = None
        self.crashes = 0
        self.last_crash: str | None = None

    async def run(self) -> None:
        while True:
            names = self._names()
            started = time.monotonic()
            try:
                self.driver = self._build()
                await self.driver.run()
                reason = "driver task returned"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one unit's bug must not take the gateway down
                reason = f"driver crashed: {type(exc).__name__}: {exc}"
                log.error("devices %s: %s; restarting", ", ".join(names), reason, exc_info=True)
            self.crashes += 1
            self.last_crash = reason
            if time.monotonic() - started > LONG_RUN_S:
                self.backoff.reset()  # it ran a long time: a fresh failure, not a crash loop
            if not self.backoff.attempts_pending:
                # The first crash of a streak is an event; a crash loop is one event, not one
                # a minute (the log and /status keep counting).
                now = time.time()
                for name in names:
                    self.sink.add_event(DeviceEvent("device_down", name, reason, now))
            await asyncio.sleep(self.backoff.next_delay())

    def status(self) -> dict[str, dict[str, Any]]:
        """Per device: its driver's own status, the driver's kind and the crash count."""
        names = self._names()
        driver_status: Mapping[str, Mapping[str, object]] = {}
        if self.driver is not None:
            try:
                driver_status = self.driver.status()
            except Exception as exc:  # status must never fail the listener
                driver_status = {name: {"status_error": str(exc)} for name in names}
        out: dict[str, dict[str, Any]] = {}
        for name in names:
            item = dict(driver_status.get(name, {"state": "starting"}))
            item.setdefault("driver", self.kind)
            item["crashes"] = self.crashes
            if self.last_crash:
                item["last_crash"] = self.last_crash
            out[name] = item
        return out
