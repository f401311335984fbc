"""The Modbus driver the daemon runs: one link (a TCP connection or a serial line) and its devices.

Devices sharing a link share one client and one lock, so they run in one driver and restart
together; different links are different drivers, so one dead link never delays another. A reload
adds and removes devices in place: a meter added to an RS-485 bus leaves the others polling on
the open port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from drivers.base import DeviceSink
from drivers.modbus.device import DeviceRunner
from drivers.modbus.link import Link, LinkSettings, make_client, settings_of
from drivers.samples import PointIndex

__all__ = ["ModbusDriver", "link_settings"]

log = logging.getLogger("ironwatt.modbus")


def link_settings(devices: Sequence[Any]) -> LinkSettings:
    """The link the devices share; its timeout is the longest of theirs (each request runs
    under its own device's timeout, the client's own timer only bounds connects and reads)."""
    return settings_of(devices[0], timeout=max(float(d.timeout) for d in devices))


class ModbusDriver:
    """`ModbusDriver(devices, index, sink)` for the devices of one link; `await run()` until
    cancelled (raises if a poller crashes); `status()` per device, any time.

    Point ids come from `index` (key "device.point", added when new).
    """

    def __init__(
        self,
        devices: Sequence[Any],
        index: PointIndex,
        sink: DeviceSink,
        *,
        client_factory: Callable[[LinkSettings], Any] = make_client,
    ) -> None:
        if not devices:
            raise ValueError("a Modbus driver needs at least one device")
        self.settings = link_settings(devices)
        others = [d.name for d in devices if settings_of(d).key != self.settings.key]
        if others:
            # A device on another link would be polled over this one's client: a config bug.
            raise ValueError(f"devices {', '.join(others)} are not on {self.settings.label}")
        self.link = Link(self.settings, client_factory=client_factory)
        self.index = index
        self.sink = sink
        self.devices: dict[str, Any] = {d.name: d for d in devices}
        self.runners: dict[str, DeviceRunner] = {}
        for device in self.devices.values():
            self._runner(device)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._crash: asyncio.Future[BaseException] | None = None
        self._pending: list[Any] = []

    async def run(self) -> None:
        self._crash = asyncio.get_running_loop().create_future()
        try:
            n = len(self.devices)
            for k, device in enumerate(self.devices.values()):
                # Stagger the devices across their poll period: an even load on a shared line.
                self._start(device, phase=(k / n) * float(device.poll))
            exc = await self._crash
            raise exc
        finally:
            for name in list(self.runners):
                await self._stop(name)
            self.link.close()

    def _runner(self, device: Any) -> DeviceRunner:
        runner = self.runners.get(device.name)
        if runner is None:
            if settings_of(device, timeout=self.settings.timeout) != self.settings:
                log.warning(
                    "device %s is on %s but its serial settings differ from the link's; the "
                    "link's are used", device.name, self.settings.label,
                )  # fmt: skip
            runner = DeviceRunner(device, self.link, self.index, self.sink)
            self.runners[device.name] = runner
        return runner

    def _start(self, device: Any, phase: float = 0.0) -> None:
        runner = self._runner(device)
        task = asyncio.create_task(runner.run(phase), name=f"modbus:{device.name}")
        task.add_done_callback(self._on_done)
        self._tasks[device.name] = task

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._crash is None or self._crash.done():
            return
        exc = task.exception()
        self._crash.set_result(exc or RuntimeError(f"poller {task.get_name()} returned"))

    async def _stop(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        runner = self.runners.pop(name, None)
        if runner is not None:
            runner.detach()  # the link's retry policy follows the devices that stay
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def update(self, devices: Sequence[Any]) -> bool:
        """Take a reloaded device list: pollers of removed or changed devices stop now, new
        ones wait for `activate()` (once their points exist). False: rebuild the link instead."""
        if link_settings(devices) != self.settings:
            return False
        wanted = {d.name: d for d in devices}
        for name in [n for n in self.devices if wanted.get(n) != self.devices[n]]:
            await self._stop(name)
            del self.devices[name]
        self._pending = [d for name, d in wanted.items() if name not in self.devices]
        for device in self._pending:
            self.devices[device.name] = device
        return True

    def activate(self) -> None:
        """Start the pollers `update()` added (run() starts them if it has not begun yet)."""
        pending, self._pending = self._pending, []
        running = self._crash is not None and not self._crash.done()
        for device in pending:
            if running:
                self._start(device)
            else:
                self._runner(device)  # on the link (its retry policy) now, polling with run()

    def status(self) -> dict[str, dict[str, object]]:
        return {name: runner.status() for name, runner in self.runners.items()}
