"""The data path: what the drivers delivered → the energy stage → telemetry → the outbox.

One pass takes the sink's batch and events, folds the samples into the kernel, closes the
windows that are due, picks the telemetry that changed, stores it all, and writes the kernel
snapshot after a close. Passes never overlap and are never cancelled half-way: windows taken
from the kernel but not yet stored would be lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.base import DeviceEvent
from drivers.wording import error_text
from gateway.daemon.devices import QueueSink
from gateway.daemon.energy_stage import EnergyStage
from gateway.daemon.telemetry import TelemetryEncoder, TelemetryFilter, TelemetryPoint
from gateway.energy.snapshot_file import SNAPSHOT_NAME, read_snapshot, write_snapshot
from gateway.errors import OutboxBusy, StorageError
from gateway.outbox import Message, MessageClass, Outbox
from gateway.timefmt import utc_iso
from gateway.topics import Topics

if TYPE_CHECKING:
    from gateway.config.model import Config

__all__ = ["PASS_S", "Pipeline"]

log = logging.getLogger("ironwatt.runtime")

# A pass of the pipeline at least this often: windows closed, telemetry checked, messages stored.
# Each pass costs a commit (an fsync under durability = "full"), wake-ups of the writer and the
# uplink, and a look at every device's telemetry, so at plant rates (200 meters: ~4,000 values/s)
# passes come this often and no more; a flood of samples asks for one sooner (QueueSink).
PASS_S = 0.25
_STORE_CHUNK = 64  # messages per outbox transaction when a pass has more (one fsync each)


def _trim_heap() -> None:
    """Return the heap pages freed since the last call to the OS (glibc's malloc_trim).

    Called after each window close: the snapshot bytes and the encoded windows (MBs at 8,000
    points) are freed by then, and glibc would otherwise keep the pages for its next malloc.
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        import ctypes

        try:
            _MALLOC_TRIM = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError, ImportError, MemoryError):  # not glibc: nothing to trim
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


class Pipeline:
    """The data path of one gateway, from the drivers' sink to the outbox."""

    def __init__(
        self, cfg: Config, sink: QueueSink, energy: EnergyStage, outbox: Outbox, *, sync: bool
    ) -> None:
        self.sink = sink
        self.energy = energy
        self.outbox = outbox
        # Under durability = "normal" a commit is not on disk yet: sync before a snapshot.
        self._sync_before_snapshot = sync
        self.snapshot_path = Path(cfg.gateway.data_dir) / SNAPSHOT_NAME
        self.snapshot_status: dict[str, Any] = {"at": None, "bytes": 0, "error": None}
        self._topics = Topics.of(cfg)
        self.telemetry: TelemetryFilter | None = None
        self._telemetry_json = TelemetryEncoder()
        self._telemetry_qos = 0
        self.configure(cfg)
        self.draining = False
        self._pass = asyncio.Lock()

    # -- configuration --------------------------------------------------------------------------

    def configure(self, cfg: Config) -> None:
        """Telemetry for this config (at the start and after a reload): its points, its rules."""
        self._telemetry_qos = int(cfg.mqtt.telemetry_qos)
        self.telemetry = self._build_telemetry(cfg) if cfg.mqtt.telemetry else None

    def _build_telemetry(self, cfg: Config) -> TelemetryFilter:
        index = self.energy.index
        points: list[TelemetryPoint] = []
        periods: dict[str, float] = {}
        for device in cfg.devices:
            periods[device.name] = float(getattr(device, "poll", getattr(device, "interval", 1.0)))
            for p in device.resolved_points():
                points.append(TelemetryPoint(
                    index.add(f"{device.name}.{p.name}"), device.name, p.name, p.unit or "",
                    p.report_deadband, p.report_deadband_percent,
                ))  # fmt: skip
        # A fresh encoder with the filter: its caches hold the points of this config only.
        self._telemetry_json = TelemetryEncoder()
        return TelemetryFilter(
            points, periods, heartbeat=cfg.mqtt.telemetry_heartbeat, slack=PASS_S
        )

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Passes PASS_S apart (start to start) until `drain()`; the sink may ask for one sooner."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not self.draining:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.sink.wake.wait(), timeout=max(0.0, last + PASS_S - loop.time())
                )
            if self.draining:
                break
            last = loop.time()
            await self.process()
            # Events and floods wake the pipeline early: still one kernel call per ~50 ms at
            # most (at 470,000 values/s, 100 ms of them in flight cost ~1 MB more resident).
            await asyncio.sleep(0.05)

    def drain(self) -> None:
        """Ask the loop to stop once the pass in progress (if any) has stored what it took."""
        self.draining = True
        self.sink.wake.set()

    async def process(self, final: bool = False) -> None:
        """One pass (a reload or the stop runs one beside the loop's: never two at once, or
        both would write the snapshot file together)."""
        async with self._pass:
            await self._one_pass(final)

    async def _one_pass(self, final: bool) -> None:
        batch, events = self.sink.take()
        now = time.time()
        messages: list[Message] = []
        # Windows are handed to the outbox as they are encoded, a chunk at a time: a pass that
        # closes many (every window of a long downtime after a restart) never holds them all.
        stored: list[concurrent.futures.Future[list[int | None]]] = []
        flush = self._flusher(stored)
        if self.energy.holding():
            # Back after an outage: each device's downtime closes as its readings come in (the
            # energy spread over it at the first publication), never all devices' at once;
            # those still silent when the hold ends close as gaps.
            windows = self.energy.take_held(batch, events, now, flush=flush, chunk=_STORE_CHUNK)
            if len(batch) and self.telemetry is not None:
                self.telemetry.offer(batch)
        else:
            if len(batch):
                self.energy.ingest(batch)
                if self.telemetry is not None:
                    self.telemetry.offer(batch)
            windows = self.energy.close_due(now, flush=flush, chunk=_STORE_CHUNK)
        closed = bool(windows) or bool(stored)
        for future in stored:
            await asyncio.wrap_future(future)
        stored.clear()
        messages.extend(windows)
        if self.telemetry is not None and not final:
            messages.extend(self._telemetry_messages(time.monotonic()))
        messages.extend(self._event_message(e) for e in events)
        del windows, batch
        # Stored a chunk at a time, each let go of once committed: where several intervals end
        # together (at midnight all of them: 800 device windows at 200 meters, ~9 MB of JSON),
        # the outbox's copies of one chunk, not of the whole close, are what adds to them.
        while messages:
            chunk = messages[:_STORE_CHUNK]
            del messages[:_STORE_CHUNK]
            await self.outbox.aenqueue(chunk)
            del chunk
        if closed:
            await self._save_snapshot()

    def _flusher(
        self, stored: list[concurrent.futures.Future[list[int | None]]]
    ) -> Callable[[list[Message]], bool]:
        """A close's hand-over to the outbox that never waits on the event loop: while the
        writer has room a chunk goes at once; while it has none the close keeps the messages
        and offers them again; once it refuses (closed, failing) the close keeps the rest and
        the pass stores it the usual way (aenqueue), which reports the error, in order."""
        open_ = True

        def flush(chunk: list[Message]) -> bool:
            nonlocal open_
            if open_:
                try:
                    stored.append(self.outbox.submit(chunk, block=False))
                    return True
                except OutboxBusy:
                    return False  # the writer is behind: offered again with the next chunk
                except StorageError:  # closed, failing: the pass's own store reports it
                    open_ = False
            return False

        return flush

    async def finish(self) -> None:
        """At the stop: the windows that are due go out; open ones stay in the snapshot, to be
        finished after the restart rather than closed early with half their data."""
        await self.process(final=True)
        async with self._pass:
            await self._save_snapshot()

    # -- messages -------------------------------------------------------------------------------

    def _telemetry_messages(self, mono_now: float) -> list[Message]:
        assert self.telemetry is not None
        topic, qos, encode = (
            self._topics.telemetry,
            self._telemetry_qos,
            self._telemetry_json.encode,
        )
        return [
            Message(topic(report.device), encode(report), qos, MessageClass.TELEMETRY)
            for report in self.telemetry.due(mono_now)
        ]

    def _event_message(self, event: DeviceEvent) -> Message:
        body: dict[str, Any] = {"type": event.type, "device": event.device,
                                "reason": event.reason, "at": utc_iso(event.at)}  # fmt: skip
        if event.point is not None:
            body["point"] = event.point
        return self.event(body)

    def event(self, body: dict[str, Any]) -> Message:
        return Message(self._topics.event, body, qos=1, cls=MessageClass.EVENT)

    async def publish_event(self, body: dict[str, Any]) -> None:
        await self.outbox.aenqueue([self.event(body)])

    # -- the kernel snapshot --------------------------------------------------------------------

    def read_snapshot(self) -> bytes | None:
        """The last snapshot, or None (none yet, or unreadable: the open windows start empty)."""
        try:
            return read_snapshot(self.snapshot_path)
        except OSError as exc:
            # Disposable state: a gateway that cannot read it starts without it (the next
            # close replaces the file) rather than not at all.
            log.error(
                "kernel snapshot %s unreadable (%s): the open windows start empty",
                self.snapshot_path, error_text(exc),
            )  # fmt: skip
            return None

    async def _save_snapshot(self) -> None:
        """Write the kernel's state after the windows it no longer holds were stored.

        A snapshot that cannot be written (disk full, read-only) is reported and tried again at
        the next close; the previous file stays whole, and polling and publishing go on.
        """
        loop = asyncio.get_running_loop()
        if self._sync_before_snapshot:
            # The snapshot says these windows are closed: under `normal` their commit is not
            # fsynced yet, and a power cut must not keep the snapshot and lose the windows.
            try:
                await loop.run_in_executor(None, self.outbox.sync)
            except (sqlite3.Error, TimeoutError, StorageError) as exc:
                # Not durable, so no snapshot that says so: the next close tries again.
                log.error("kernel snapshot not written: the buffer could not sync (%s)", exc)
                self.snapshot_status["error"] = f"buffer sync: {exc}"
                return
        parts = self.energy.snapshot_parts()
        size = sum(len(part) for part in parts)
        try:
            await loop.run_in_executor(None, write_snapshot, self.snapshot_path, parts)
        except OSError as exc:
            error = f"{error_text(exc)} ({self.snapshot_path})"
            if error != self.snapshot_status.get("error"):
                log.error(
                    "kernel snapshot not written: %s; a restart now would begin the open "
                    "windows empty: check free space and permissions of data_dir", error,
                )  # fmt: skip
            self.snapshot_status["error"] = error
            return
        finally:
            del parts
            _trim_heap()
        if self.snapshot_status.get("error"):
            log.info("kernel snapshot written again to %s", self.snapshot_path)
        self.snapshot_status = {"at": utc_iso(time.time()), "bytes": size, "error": None}
