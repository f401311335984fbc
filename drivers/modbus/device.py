"""Polling of one Modbus device: fixed-rate schedule, plan, retries, health, exception-2 splitting.

The policy wrapper of the driver (Telegraf's RunningInput): the link only speaks Modbus, this
decides when to ask, what a failure means, and what the sink hears about it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from drivers.base import Backoff, DeviceEvent, DeviceHealth, DeviceSink, FixedRate
from drivers.modbus.decode import BlockDecoder, emit_bad
from drivers.modbus.link import DeviceError, Link, LinkDown, ModbusError, NoResponse
from drivers.modbus.planner import Block, Plan, Span, plan
from drivers.modbus.points import PointSpec, resolve
from drivers.modbus.recovery import Member, device_steps
from drivers.samples import PointIndex, SampleBatch

__all__ = ["DeviceRunner", "PollSettings"]

log = logging.getLogger("ironwatt.modbus")

# Exception codes that mean "the unit is not there" (a gateway answering for a dead unit).
_ABSENT_CODES = frozenset({10, 11})
# A range rejected with exception 2 is tried again after this long (a meter may have rebooted
# into another mode, or the rejection came from a gateway hiccup).
BAD_RANGE_TTL = 3600.0


@dataclass(frozen=True, slots=True)
class PollSettings:
    """The per-device knobs of the config contract the runner needs."""

    name: str
    unit: int
    poll: float
    timeout: float
    retries: int
    max_gap: int
    max_registers: int
    max_bits: int
    reconnect_max: float | None = None  # None: the default for its link (recovery.py)

    @classmethod
    def of(cls, device: Any) -> PollSettings:
        return cls(
            name=device.name,
            unit=device.unit,
            poll=float(device.poll),
            timeout=float(device.timeout),
            retries=int(getattr(device, "retries", 2)),
            max_gap=int(getattr(device, "max_gap_registers", 10)),
            max_registers=int(getattr(device, "max_registers_per_request", 125)),
            max_bits=int(getattr(device, "max_bits_per_request", 2000)),
            reconnect_max=_seconds_or_none(getattr(device, "reconnect_max", None)),
        )


def _seconds_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


class DeviceRunner:
    """Reads one device at a fixed rate over a shared link and reports into the sink."""

    def __init__(
        self,
        device: Any,
        link: Link,
        index: PointIndex,
        sink: DeviceSink,
        *,
        specs: Sequence[PointSpec] | None = None,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = PollSettings.of(device)
        self.link = link
        self.sink = sink
        self.specs = list(specs) if specs is not None else resolve(device)
        self.pids = [index.add(s.key) for s in self.specs]
        self.fields = [Span(s.function, s.address, s.width) for s in self.specs]
        self.health = DeviceHealth(self.settings.name, sink, clock=wall)
        # A dead unit is retried at a growing interval, at most its reconnect_max apart; how
        # that depends on the link being its own or shared is drivers.modbus.recovery's.
        self.member = Member(self.settings.poll, self.settings.reconnect_max)
        link.attach(self.settings.name, self.member)
        self.backoff = Backoff()
        self.bad_ranges: dict[Span, float] = {}  # range -> monotonic time it was learned
        self._wall = wall
        self._mono = mono
        self._retry_at = 0.0
        self._attempted_at = 0.0  # monotonic start of the last poll that tried the unit
        self._shared = False
        self._retune()
        # Blocks whose failure was logged while the device stayed up: logged once, until they
        # read again (a unit that answers nothing is logged once by its health instead).
        self._failing: set[tuple[str, int, int]] = set()
        self._overrun_logged = False  # logged once per runner: the counter tells the rest
        self._reported_unreadable: set[int] = set()
        self.plan: Plan = Plan(())
        self.decoders: list[BlockDecoder] = []
        self._unreadable = array("i")
        self.replan()

    def detach(self) -> None:
        """The device leaves its link (removed on reload): the link's policy follows the rest."""
        self.link.detach(self.settings.name)

    def _retune(self) -> None:
        """Fit the retry backoff to the link as it is now (its own, or shared)."""
        self._shared = self.link.shared
        steps = device_steps(self.member, self._shared)
        self.backoff.initial = steps.first
        self.backoff.maximum = steps.maximum
        if self._retry_at:
            # A wait promised under the old policy must not outlast the new cap.
            self._retry_at = min(self._retry_at, self._attempted_at + steps.maximum)

    # ---- planning -------------------------------------------------------------------------

    def replan(self) -> None:
        now = self._mono()
        for span, learned in list(self.bad_ranges.items()):
            if now - learned > BAD_RANGE_TTL:
                del self.bad_ranges[span]
        s = self.settings
        self.plan = plan(
            self.fields,
            max_registers=s.max_registers,
            max_bits=s.max_bits,
            max_gap=s.max_gap,
            bad=self.bad_ranges,
        )
        self.decoders = [self._decoder(b) for b in self.plan.blocks]
        # Unreadable points still get a (bad) sample every poll: silence would read as "no data
        # expected" downstream.
        self._unreadable = array("i", [self.pids[i] for i in self.plan.unreadable])
        for i in self.plan.unreadable:
            if i not in self._reported_unreadable:
                self._reported_unreadable.add(i)
                self._point_error(i)

    def _decoder(self, block: Block) -> BlockDecoder:
        return BlockDecoder(
            block.function,
            block.start,
            block.count,
            [self.specs[i] for i in block.members],
            [self.pids[i] for i in block.members],
        )

    def _point_error(self, i: int) -> None:
        spec = self.specs[i]
        s = self.settings
        limit = s.max_bits if spec.function in ("coil", "discrete") else s.max_registers
        if spec.width > limit:
            why = f"needs {spec.width} registers, more than max_registers_per_request = {limit}"
        else:
            why = (
                "the device rejects this address (exception 2, illegal data address): check the "
                "address (0-based wire address), the function code and the profile"
            )
        reason = f"{spec.function} register {spec.address} ({spec.type}): {why}"
        log.warning(
            "device %s point %s unreadable: %s", s.name, spec.name, reason,
            extra={"device": s.name, "point": spec.name, "event": "point_error"},
        )  # fmt: skip
        self.sink.add_event(
            DeviceEvent("point_error", s.name, reason, self._wall(), point=spec.name)
        )

    # ---- one poll -------------------------------------------------------------------------

    async def _read(self, block: Block | Span, retries: int) -> list[int] | list[bool]:
        s = self.settings
        attempt = 0
        while True:
            self.health.requests += 1
            try:
                # poll_once holds the link for all of this device's blocks.
                return await self.link.read(
                    s.unit, block.function, block.start, block.count, s.timeout, held=True
                )
            except NoResponse:
                if attempt >= retries:
                    raise
                attempt += 1

    async def poll_once(self) -> SampleBatch:
        """Read every block once; deliver and return the batch (bad samples for what failed)."""
        batch = SampleBatch()
        now = self._mono()
        if self.bad_ranges and now - min(self.bad_ranges.values()) > BAD_RANGE_TTL:
            self.replan()  # give rejected ranges another chance (found again if still there)
        if self.health.state == "down" and self.link.shared != self._shared:
            self._retune()
        if self.health.state == "down" and now < self._retry_at:
            ts = self._wall()
            for dec in self.decoders:
                dec.bad(ts, batch)
            emit_bad(self._unreadable, ts, batch)
            self.sink.add_samples(batch)
            return batch
        async with self.link.lock:  # one turn on the link for every block (and any bisection)
            # Timed from our turn on the link: a shared bus's queue is not this device's time.
            began = self._mono()
            replan = await self._read_blocks(batch, now)
            self.health.timed(self._mono() - began)
        if replan:
            self.replan()
        self.sink.add_samples(batch)
        return batch

    async def _read_blocks(self, batch: SampleBatch, started: float) -> bool:
        """Read the plan's blocks into `batch`, holding the link; True when the plan must change.

        `started`: the monotonic time the poll began, from which a retry is scheduled.
        """
        probing = self.health.state == "down"
        retries = 0 if probing else self.settings.retries
        failure: ModbusError | None = None
        replan = False
        answered = False
        failed: list[tuple[Block, ModbusError]] = []  # blocks that failed on their own
        for k, (block, dec) in enumerate(zip(self.plan.blocks, self.decoders, strict=True)):
            if failure is not None and not isinstance(failure, DeviceError):
                dec.bad(self._wall(), batch)
                continue
            try:
                data = await self._read(block, retries)
            except DeviceError as exc:
                answered = answered or exc.code not in _ABSENT_CODES
                if exc.code == 2:
                    learned = await self._locate(block)
                    replan |= learned
                    if not learned:
                        failed.append((block, exc))
                else:
                    failure = exc
                    failed.append((block, exc))
                dec.bad(self._wall(), batch)
                if exc.code in _ABSENT_CODES:
                    failure = NoResponse(str(exc))
                continue
            except (NoResponse, LinkDown) as exc:
                failure = exc
                failed.append((block, exc))
                dec.bad(self._wall(), batch)
                continue
            answered = True
            dec.decode(data, self._wall(), batch)
            if self._failing:
                self._readable_again(block)
            if probing and k == 0:
                # The probe answered: the unit is back, read the rest with normal retries.
                retries = self.settings.retries
        emit_bad(self._unreadable, self._wall(), batch)
        # A unit that answered anything in this poll is alive (its failed blocks are bad samples
        # and last_error says why); "down" is for a unit that answers nothing, or a lost link.
        if failure is None or (answered and not isinstance(failure, LinkDown)):
            self.health.success()
            self.backoff.reset()
            if failure is not None:
                self.health.last_error = str(failure)
            for block, error in failed:
                self._block_failed(block, error)
        else:
            self.health.failure(str(failure), fatal=isinstance(failure, LinkDown))
            self._failing.clear()  # the device's fall is logged; its return starts afresh
            if self.link.shared != self._shared:
                self._retune()
            # A link waiting to reconnect gates the attempts by itself (cheaply); a silent unit
            # on a live link is what must be pushed back, so it costs the others little.
            delay = 0.0 if isinstance(failure, LinkDown) else self.backoff.next_delay()
            self._attempted_at = started
            self._retry_at = started + delay
        return replan

    def _block_failed(self, block: Block, exc: ModbusError) -> None:
        """Log a block that fails while its device answers otherwise: once, until it reads."""
        key = (block.function, block.start, block.count)
        if key in self._failing:
            return
        self._failing.add(key)
        names = [self.specs[i].name for i in block.members]
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        log.warning(
            "device %s: point%s %s unreadable: %s",
            self.settings.name,
            "s" if len(names) > 1 else "",
            shown,
            exc,
        )

    def _readable_again(self, block: Block) -> None:
        key = (block.function, block.start, block.count)
        if key in self._failing:
            self._failing.discard(key)
            log.info("device %s: %s %d+%d reads again", self.settings.name, *key)

    async def _locate(self, block: Block) -> bool:
        """Find what in `block` the device rejects (exception 2) by reading halves; remember it.

        Returns whether a bad range or barrier was learned (the plan must change).
        """
        learned = await self._bisect(block.function, list(block.members))
        return learned

    async def _bisect(self, function: str, members: list[int]) -> bool:
        if len(members) == 1:
            f = self.fields[members[0]]
            self.bad_ranges[f] = self._mono()
            return True
        half = len(members) // 2
        left, right = members[:half], members[half:]
        results: list[bool | None] = []
        for part in (left, right):
            span = self._span_of(function, part)
            try:
                await self._read(span, 0)
                results.append(True)
            except DeviceError as exc:
                if exc.code != 2:
                    return False
                results.append(False)
            except ModbusError:
                return False  # the unit went away meanwhile: learn nothing now
        learned = False
        if results[0] is False:
            learned |= await self._bisect(function, left)
        if results[1] is False:
            learned |= await self._bisect(function, right)
        if results[0] and results[1]:
            # Both halves read alone: the rejected registers are in the gap between them (or the
            # device refuses the pair): never bridge it.
            lend = max(self.fields[i].end for i in left)
            rstart = self._span_of(function, right).start
            gap = Span(function, lend, max(0, rstart - lend))
            self.bad_ranges[gap] = self._mono()
            learned = True
        return learned

    def _span_of(self, function: str, members: list[int]) -> Span:
        start = min(self.fields[i].start for i in members)
        end = max(self.fields[i].end for i in members)
        return Span(function, start, end - start)

    # ---- schedule -------------------------------------------------------------------------

    async def run(self, phase: float = 0.0) -> None:
        """Poll at a fixed rate on the monotonic clock until cancelled.

        The next poll is due one period after the previous due time, not after the previous
        poll ended, so there is no drift; polls missed during a stall are skipped (counted as
        overruns), never bunched.
        """
        period = self.settings.poll
        schedule = FixedRate(period, self._mono() + phase)
        try:
            while True:
                delay = schedule.due - self._mono()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self.poll_once()
                _raise_if_cancelled()
                missed = schedule.advance(self._mono())
                if missed:
                    self.health.overruns += missed
                    # A poll of a dead unit overruns by its timeouts: its "down" line says why.
                    if not self._overrun_logged and self.health.state != "down":
                        self._overrun_logged = True
                        log.warning(
                            "device %s: a poll took longer than poll = %gs (%d missed); compare "
                            "timeout x retries x blocks with the poll, or the link's load",
                            self.settings.name,
                            period,
                            missed,
                        )
        finally:
            self.health.stopped()

    def status(self) -> dict[str, object]:
        snap = self.health.snapshot()
        snap["link"] = self.link.label
        snap["unit"] = self.settings.unit
        snap["requests_per_poll"] = self.plan.requests
        snap["unreadable_points"] = [self.specs[i].name for i in self.plan.unreadable]
        return snap


def _raise_if_cancelled() -> None:
    """Honour a cancellation that a library swallowed.

    pymodbus awaits its answers with asyncio.wait_for, which on Python 3.11 can return the
    result and drop a cancel() that arrived at the same moment; the request stays counted in
    `Task.cancelling()`, so the poll loop checks it and stops as it was asked to.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
