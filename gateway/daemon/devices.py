"""The device side of the daemon: drivers built from the config, each run as a supervised task.

A crashed driver task is restarted with backoff and reported (drivers/running.py); one device
never takes the gateway down. Reload replaces only the units whose configuration changed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.base import DRIVER_RESTART, Backoff, DeviceEvent, DeviceSink
from drivers.plugin import Driver, DriverContext
from drivers.registry import plugin, plugin_of
from drivers.running import RunningDriver
from drivers.samples import PointIndex, SampleBatch

__all__ = ["DeviceUnit", "QueueSink", "Supervisor", "plan_units"]


class QueueSink:
    """What every driver reports into: batches are merged until the pipeline takes them.

    Both calls are synchronous and O(batch): drivers run on the same loop, so no lock is
    needed. `wake` asks the pipeline for a pass now: set by an event, or once `batch_target`
    samples wait; below that the pipeline comes by itself at its pace (pipeline.PASS_S).
    """

    def __init__(self, batch_target: int = 20_000) -> None:
        self.pending = SampleBatch()
        self.events: list[DeviceEvent] = []
        self.wake = asyncio.Event()
        self.samples_total = 0
        self.batch_target = batch_target

    def add_samples(self, batch: SampleBatch) -> None:
        self.pending.extend(batch)
        self.samples_total += len(batch)
        if len(self.pending) >= self.batch_target:
            self.wake.set()

    def add_event(self, event: DeviceEvent) -> None:
        self.events.append(event)
        self.wake.set()

    def take(self) -> tuple[SampleBatch, list[DeviceEvent]]:
        batch, events = self.pending, self.events
        self.pending, self.events = SampleBatch(), []
        self.wake.clear()
        return batch, events


@dataclass(frozen=True)
class DeviceUnit:
    """What runs as one task: the devices its protocol runs in one driver (one OPC UA device,
    or every Modbus device on one link: they share its client and lock, so restart together).

    `devices` are the frozen config models: equality decides what a reload touches.
    """

    key: str
    driver: str
    devices: tuple[Any, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.devices)


def plan_units(devices: Sequence[Any]) -> dict[str, DeviceUnit]:
    """Group the enabled devices of a config into units, keyed stably across reloads
    ("{driver}/{its plugin's unit key}")."""
    members: dict[str, list[Any]] = {}
    drivers: dict[str, str] = {}
    for device in devices:
        if not getattr(device, "enabled", True):
            continue
        plugin = plugin_of(device)
        key = f"{plugin.name}/{plugin.unit_key(device)}"
        members.setdefault(key, []).append(device)
        drivers[key] = plugin.name
    return {key: DeviceUnit(key, drivers[key], tuple(group)) for key, group in members.items()}


def build_driver(
    unit: DeviceUnit, index: PointIndex, sink: DeviceSink, data_dir: Path, gw_id: str, site: str
) -> Driver:
    """The unit's running driver; its plugin imports the protocol's library only now (asyncua,
    ~48 MB, only with an OPC UA device)."""
    context = DriverContext(data_dir=data_dir, gateway_id=gw_id, site=site)
    return plugin(unit.driver).build(unit.devices, index, sink, context)


@dataclass
class _Running:
    unit: DeviceUnit  # a reload may update it in place (Supervisor.update)
    runner: RunningDriver
    task: asyncio.Task[None] | None = None

    @property
    def driver(self) -> Driver | None:
        return self.runner.driver


class Supervisor:
    """Starts, restarts and stops the driver tasks; reports crashes as device_down events."""

    def __init__(
        self,
        index: PointIndex,
        sink: QueueSink,
        data_dir: Path,
        gw_id: str,
        site: str,
        factory: Callable[..., Driver] = build_driver,
        restart_backoff: Callable[[], Backoff] = lambda: Backoff.of(DRIVER_RESTART),
    ) -> None:
        self.index = index
        self.sink = sink
        self.data_dir = data_dir
        self.gw_id = gw_id
        self.site = site
        self._factory = factory
        self._backoff = restart_backoff
        self.running: dict[str, _Running] = {}

    def start(self, unit: DeviceUnit) -> None:
        def build() -> Driver:
            return self._factory(
                entry.unit, self.index, self.sink, self.data_dir, self.gw_id, self.site
            )

        runner = RunningDriver(
            build, lambda: entry.unit.names, self.sink, kind=unit.driver, backoff=self._backoff()
        )
        entry = _Running(unit, runner)
        self.running[unit.key] = entry
        entry.task = asyncio.create_task(runner.run(), name=f"device:{unit.key}")

    async def update(self, unit: DeviceUnit) -> bool:
        """Hand a running unit its reloaded devices; False when it must be restarted instead.

        Devices it adds start at `activate(key)`, once the caller has configured their points.
        """
        entry = self.running.get(unit.key)
        update = getattr(entry.driver, "update", None) if entry is not None else None
        if entry is None or update is None or not await update(unit.devices):
            return False
        entry.unit = unit
        return True

    def activate(self, key: str) -> None:
        entry = self.running.get(key)
        activate = getattr(entry.driver, "activate", None) if entry is not None else None
        if activate is not None:
            activate()

    async def stop(self, key: str) -> None:
        entry = self.running.pop(key, None)
        if entry is None or entry.task is None:
            return
        entry.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(entry.task, timeout=5.0)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(key) for key in list(self.running)))

    def status(self) -> dict[str, dict[str, Any]]:
        """Per device: the driver's own status, plus the supervisor's crash count."""
        out: dict[str, dict[str, Any]] = {}
        for entry in self.running.values():
            out.update(entry.runner.status())
        return out
