"""The Modbus driver the daemon runs: every configured Modbus device, grouped by link.

Devices sharing a link (host:port, or serial port) share one client and one lock; different
links run concurrently, so one dead link never delays another.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from drivers.base import DeviceSink
from drivers.modbus.device import DeviceRunner
from drivers.modbus.link import Link, LinkSettings, make_client, settings_of
from drivers.samples import PointIndex

__all__ = ["ModbusDriver"]

log = logging.getLogger("ironwatt.modbus")


class ModbusDriver:
    """`ModbusDriver(devices, index, sink)`; `await run()` until cancelled; `status()` any time.

    Point ids come from `index` (key "device.point", added when new). Disabled devices
    (`enabled = false`) are skipped.
    """

    def __init__(
        self,
        devices: Iterable[Any],
        index: PointIndex,
        sink: DeviceSink,
        *,
        client_factory: Callable[[LinkSettings], Any] = make_client,
    ) -> None:
        self.links: dict[tuple[str, str, int], Link] = {}
        self.runners: list[DeviceRunner] = []
        by_link: dict[tuple[str, str, int], list[Any]] = {}
        for device in devices:
            if getattr(device, "driver", "modbus") != "modbus" or not getattr(
                device, "enabled", True
            ):
                continue
            by_link.setdefault(settings_of(device).key, []).append(device)
        for key, members in by_link.items():
            first = members[0]
            # The client's own timeout only bounds connects and reads; each device's request
            # runs under its own timeout, so the link takes the longest.
            settings = settings_of(first, timeout=max(float(d.timeout) for d in members))
            for d in members[1:]:
                if settings_of(d, timeout=settings.timeout) != settings:
                    log.warning(
                        "device %s shares %s with %s but not its serial settings; %s's are used",
                        d.name,
                        settings.label,
                        first.name,
                        first.name,
                    )
            link = Link(settings, client_factory=client_factory)
            self.links[key] = link
            for d in members:
                self.runners.append(DeviceRunner(d, link, index, sink))

    def _phases(self) -> list[float]:
        """Stagger the devices of one link across their poll period, so a shared line carries
        an even load instead of a burst at each tick."""
        per_link: dict[int, list[DeviceRunner]] = {}
        for r in self.runners:
            per_link.setdefault(id(r.link), []).append(r)
        phases: dict[int, float] = {}
        for runners in per_link.values():
            n = len(runners)
            for k, r in enumerate(runners):
                phases[id(r)] = (k / n) * r.settings.poll
        return [phases[id(r)] for r in self.runners]

    async def run(self) -> None:
        """Poll every device until cancelled; connections are closed on the way out."""
        try:
            async with asyncio.TaskGroup() as tg:
                for runner, phase in zip(self.runners, self._phases(), strict=True):
                    tg.create_task(runner.run(phase), name=f"modbus:{runner.settings.name}")
        finally:
            for link in self.links.values():
                link.close()

    def status(self) -> dict[str, dict[str, object]]:
        return {r.settings.name: r.status() for r in self.runners}
