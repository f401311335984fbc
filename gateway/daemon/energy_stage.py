"""The daemon's energy stage: config points → accounted points, closed windows → outbox messages.

Wraps gateway.energy.aggregate.Aggregator (which owns the kernel and the point index the drivers
use) and the groups' accountant fed by its device windows; decides the per-point defaults
energy.md leaves to the device: grace, max_gap, integration, which points are split by TOU.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from drivers.base import DeviceEvent
from drivers.registry import plugin_of
from drivers.samples import PointIndex, SampleBatch
from gateway.energy.aggregate import AccountedPoint, Aggregator, WindowPayload
from gateway.energy.groups import GroupAccountant, compile_groups
from gateway.energy.tou import TariffCalendar
from gateway.energy.windows import SHIFT, Cadence, Shift
from gateway.outbox import Message, MessageClass
from gateway.topics import Topics

__all__ = ["EnergyStage", "accounted_points", "cadences_of", "changed_sources"]

log = logging.getLogger("ironwatt.energy")
# After a restart, how long the downtime's windows wait for devices to report (see
# EnergyStage.hold_catch_up): a Modbus device that is down says so within its timeout x retries.
CATCH_UP_HOLD_S = 30.0


def accounted_points(cfg: Any) -> list[AccountedPoint]:
    """What the aggregator accounts of each point of every enabled device."""
    specs: list[AccountedPoint] = []
    priced = getattr(cfg, "tariff", None) is not None
    for device in cfg.devices:
        if not getattr(device, "enabled", True):
            continue
        plugin = plugin_of(device)
        timing = plugin.timing(device)
        period, timeout, polled = timing.period, timing.timeout, timing.polled
        facts = plugin.point_facts(device)
        for p in device.resolved_points():
            fact = facts[p.name]
            rollover = 0.0
            if p.rollover == "auto":
                if fact.modulus is None:
                    raise ValueError(
                        f'device {device.name!r} point {p.name!r}: rollover = "auto" needs an '
                        f"unsigned integer register, not {fact.source}"
                    )
                rollover = fact.modulus
            elif p.rollover is not None:
                rollover = float(p.rollover)
            # Polled points join readings up to 3 polls apart and integrate trapezoids;
            # subscribed ones hold a value until the next (silence = unchanged), no max_gap.
            max_gap = p.max_gap if p.max_gap is not None else (3 * period if polled else 0.0)
            integration = p.integration or ("trapezoid" if polled else "hold")
            specs.append(AccountedPoint(
                device=device.name, name=p.name, kind=p.kind, unit=p.unit or "",
                carrier=p.carrier, rollover=rollover, max_rate=float(p.max_rate or 0.0),
                # An integer register moves in steps of its scale: one step down is jitter.
                resolution=fact.resolution, max_gap=float(max_gap), integration=integration,
                # Electricity counters too: their block energy is a group's simultaneous demand.
                demand=p.carrier == "electricity", tou=priced and p.carrier == "electricity",
                grace=max(1.0, period + timeout),
            ))  # fmt: skip
    return specs


# Point keys that tune how readings are judged, not what they are: changing them keeps state.
_TUNING = frozenset({
    "report_deadband", "report_deadband_percent", "max_gap", "max_rate", "rollover",
    "integration", "deadband_type", "deadband_value", "carrier",
})  # fmt: skip


def _enabled(cfg: Any) -> dict[str, Any]:
    return {d.name: d for d in cfg.devices if getattr(d, "enabled", True)}


def _point_sources(device: Any) -> dict[str, tuple[Any, ...]]:
    """Per point of one device: what its readings come from, for deciding what a reload resets.

    The device keys that change what a reading means (the same register on another meter or
    ratio) are its protocol's `source_keys`."""
    where = tuple(getattr(device, k, None) for k in plugin_of(device).source_keys)
    out: dict[str, tuple[Any, ...]] = {}
    for p in device.resolved_points():
        fields = p.model_dump()
        what = tuple(sorted((k, repr(v)) for k, v in fields.items() if k not in _TUNING))
        out[p.name] = (device.driver, where, what)
    return out


def changed_sources(old: Any, new: Any) -> list[str]:
    """Keys of the points present in both configs whose source differs.

    Computed one device at a time at reload, never kept: for 8,000 points the rendered
    sources are ~11 MB, more than the kernel itself.
    """
    before = _enabled(old)
    out: list[str] = []
    for name, device in _enabled(new).items():
        prior = before.get(name)
        if prior is None or prior == device:
            continue  # new device, or the same model: every point keeps its source
        a, b = _point_sources(prior), _point_sources(device)
        out += [f"{name}.{p}" for p in b.keys() & a.keys() if a[p] != b[p]]
    return sorted(out)


def cadences_of(cfg: Any) -> list[Cadence]:
    """The windows published: `energy.intervals` (fixed lengths and "1mo"), then the shifts."""
    out = [Cadence(i.name, int(i.seconds)) for i in cfg.energy.intervals]
    if cfg.energy.shifts:
        out.append(Cadence(SHIFT, shifts=tuple(Shift(s.name, s.start) for s in cfg.energy.shifts)))
    return out


class EnergyStage:
    """Feeds the aggregator and turns what it closes into `energy/{interval}/{device}` and
    `group/{interval}/{group}` messages."""

    def __init__(self, cfg: Any, now: float) -> None:
        energy = cfg.energy
        tz = cfg.gateway.tz
        self._tou = TariffCalendar(cfg.tariff, tz) if cfg.tariff is not None else None
        self._cadences = cadences_of(cfg)
        self.agg = Aggregator(
            tz,
            self._cadences,
            demand_interval=int(energy.demand_interval) if energy.demand_interval else None,
            max_revision_age=float(energy.max_revision_age),
            tou=self._tou,
        )
        self._topics = Topics.of(cfg)
        self._specs = {s.key: s for s in accounted_points(cfg)}
        self._cfg = cfg  # the reload compares against it (sources are not kept: see above)
        self.agg.set_points(self._specs.values(), now)
        self.groups = self._accountant(cfg)
        self.windows = 0
        self.group_windows = 0
        # After a restart that finds the downtime still to close: per device not heard from
        # in full yet, the ids of its points without a sample so far, and the samples it sent
        # meanwhile (the hold ends when all are heard, or at _hold_until, on the monotonic
        # clock: a clock step must neither stretch nor cut it).
        self._unheard: dict[str, set[int]] = {}
        self._early: dict[str, SampleBatch] = {}
        self._hold_until = 0.0

    def _accountant(self, cfg: Any) -> GroupAccountant | None:
        if not cfg.groups:
            return None
        disabled = [d.name for d in cfg.devices if not getattr(d, "enabled", True)]
        specs = compile_groups(
            cfg.groups, self._specs.values(), cfg.energy.carriers, disabled=disabled
        )
        return GroupAccountant(
            specs,
            cfg.energy.carriers,
            currency=self._tou.currency if self._tou is not None else None,
            demand_interval=float(cfg.energy.demand_interval or 0.0),
            max_revision_age=float(cfg.energy.max_revision_age),
            lengths={c.name: c.nominal for c in self._cadences},
            benchmark_intervals=cfg.energy.benchmark_intervals,
        )

    @property
    def index(self) -> PointIndex:
        """The point ids every driver must use: the aggregator's own index."""
        return self.agg.index

    def restore(self, blob: bytes) -> list[str]:
        """Resume the open windows (and the groups' slots) from a snapshot; ValueError when it
        is not usable (the groups' part alone being unreadable costs only their held slots)."""
        keys = self.agg.restore(blob)
        attached = self.agg.attached
        if self.groups is not None and isinstance(attached, dict):
            try:
                self.groups.restore(attached.get("groups"))
            except ValueError as exc:
                log.error(
                    "kernel snapshot: the groups' held windows not used (%s): group windows "
                    "open at the stop are not published",
                    exc,
                )
        return keys

    def ingest(self, batch: SampleBatch) -> None:
        self.agg.ingest(batch, time.time())

    def hold_catch_up(self, now: float) -> None:
        """After a restore: when the downtime's windows are still to close, hold them until
        each device has reported (a reading, or `device_down`) or CATCH_UP_HOLD_S has passed.

        Closed at once, every point would be in a gap: each window of the downtime would be
        published empty, kept whole in memory to be revised, and published again when the
        first readings spread the energy back (~870 MB for 2 h 50 min at 200 meters x 20
        points, measured). Held, a device's readings close its downtime with the energy in."""
        if self.agg.behind(now):
            self._unheard = {d: set(pids) for d, pids in self.agg.device_points().items()}
            self._early = {}
            self._hold_until = time.monotonic() + CATCH_UP_HOLD_S
            log.info(
                "energy: the downtime's windows close as each of %d devices reports (at most "
                "%g s)", len(self._unheard), CATCH_UP_HOLD_S,
            )  # fmt: skip

    def holding(self) -> bool:
        """Whether the catch-up after a restart still waits for devices to report. At its end
        what partly-heard devices sent is folded in; the next close forces the rest."""
        if not self._unheard:
            return False
        if time.monotonic() < self._hold_until:
            return True
        log.warning(
            "energy: no reading yet from %s; their windows since the stop close as gaps (the "
            "energy is spread back, revision + 1, when they answer)",
            ", ".join(sorted(self._unheard)),
        )
        for part in self._early.values():
            self.agg.ingest(part, time.time())
        self._unheard.clear()
        self._early.clear()
        return False

    def take_held(
        self,
        batch: SampleBatch,
        events: Sequence[DeviceEvent],
        now: float,
        flush: Callable[[list[Message]], bool] | None = None,
        chunk: int = 500,
    ) -> list[Message]:
        """While holding: fold the readings in one device at a time, each device's downtime
        windows out, whole, before the next is folded in; devices not heard from stay open.

        A device is heard once every point of it has a sample (a bad one too: its cells then
        close as gaps), its samples kept until then (an OPC UA server's first values can take
        several passes), or by `device_down` (it will send none); not by `device_up`, which an
        OPC UA driver sends before its subscription's first values."""
        heard: dict[str, SampleBatch] = {}
        for event in events:
            if event.type == "device_down" and event.device in self._unheard:
                del self._unheard[event.device]
                heard[event.device] = self._early.pop(event.device, SampleBatch())
        for device, part in self.agg.split_by_device(batch).items():
            waiting = self._unheard.get(device)
            if waiting is None:
                heard.setdefault(device, SampleBatch()).extend(part)  # heard before
                continue
            early = self._early.setdefault(device, SampleBatch())
            early.extend(part)
            waiting.difference_update(part.point)
            if not waiting:
                del self._unheard[device]
                heard[device] = self._early.pop(device)
        messages: list[Message] = []
        for device, part in heard.items():
            if len(part):
                self.agg.ingest(part, now)
            # Its points the readings did not close (a bad reading, an unchanged value) close
            # now, as gaps: the device's windows come out whole, never in two halves.
            self.agg.force_device(device, now)
            # A device's windows short of a chunk are offered at once (else every device's
            # would wait here till the end); what a busy writer declined goes first: nothing
            # after it is handed over before it.
            messages += self.close_due(
                now, flush=None if messages else flush, chunk=chunk, force=False
            )
            if messages and flush is not None and flush(messages):
                messages = []
        return messages

    def close_due(
        self,
        now: float,
        flush: Callable[[list[Message]], bool] | None = None,
        chunk: int = 500,
        force: bool = True,
    ) -> list[Message]:
        """The device and group windows due by `now`, as messages (with `force` false only
        those readings closed: see take_held).

        With `flush`, they are offered `chunk` at a time as they are encoded; what it takes
        (returns True for) is not returned. After a restart every window of the downtime
        closes in one pass, and holding all of their JSON until its end was most of that
        pass's peak. What it declines is kept, offered again with the next chunk, and what is
        left at the end is returned, in order.
        """
        messages: list[Message] = []
        groups = self.groups

        def add(message: Message) -> None:
            nonlocal messages
            messages.append(message)
            # Offered again at every further chunk while declined (a busy writer frees room);
            # nothing was handed over in between, so the order holds.
            if flush is not None and len(messages) % chunk == 0 and flush(messages):
                messages = []

        def publish(w: WindowPayload) -> None:
            if groups is not None:
                groups.take_window(w.interval, w.start, w.end, w.payload, w.revisable)
            # Encoded as soon as the device window is whole: its dicts go at once, only the
            # JSON waits for the outbox (bytes the outbox stores as they are).
            body = json.dumps(w.payload, separators=(",", ":"), ensure_ascii=False).encode()
            self.windows += 1
            add(Message(self._topics.energy(w.interval, w.device), body, qos=1,
                        cls=MessageClass.WINDOW))  # fmt: skip

        closed = self.agg.close_until(now, publish, force)
        if groups is not None:
            for block in closed.blocks:
                groups.take_block(block.key, block.start, block.end, block.demand)
            for payload in groups.complete(now):
                body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
                topic = self._topics.group(payload["interval"], payload["group"])
                self.group_windows += 1
                add(Message(topic, body, qos=1, cls=MessageClass.WINDOW))
        return messages

    def snapshot_parts(self) -> tuple[bytes, ...]:
        attached = {"groups": self.groups.state()} if self.groups is not None else None
        return self.agg.snapshot_parts(attached)

    def reconfigure(self, cfg: Any, now: float) -> tuple[list[str], list[str]]:
        """Apply a reloaded config's points; returns (fresh, retuned) point keys.

        A point whose source changed (address, type, scale, node, kind, the device's unit id,
        host or CT/PT ratios: anything that changes what its readings mean) starts fresh: its
        open windows and counter baseline are dropped, so a delta never spans two different
        sources. Other changes (max_rate, max_gap, rollover, poll) keep the state and apply
        from now on. Unchanged points keep everything, by key.
        """
        new = {s.key: s for s in accounted_points(cfg)}
        both = new.keys() & self._specs.keys()
        moved = set(changed_sources(self._cfg, cfg))
        fresh = sorted(k for k in both if k in moved or new[k].kind != self._specs[k].kind)
        retuned = sorted(k for k in both if new[k] != self._specs[k] and k not in fresh)
        if fresh:
            # Retire first (the kernel forgets their state), then add them back with new ids.
            self.agg.set_points([s for k, s in new.items() if k not in fresh], now)
        self.agg.set_points(new.values(), now)
        self._specs, self._cfg = new, cfg
        for device in self._unheard.keys() - {s.device for s in new.values()}:
            del self._unheard[device]  # removed: it will never report
            self._early.pop(device, None)
        # Groups may have changed, or their members' devices been switched on or off: the
        # slots held carry over by group name and member key.
        held = self.groups.state() if self.groups is not None else None
        self.groups = self._accountant(cfg)
        if self.groups is not None:
            self.groups.restore(held)
        return fresh, retuned

    def stats(self) -> dict[str, Any]:
        return {
            "kernel": self.agg.implementation,
            "points": len(self._specs),
            "windows": self.windows,
            "group_windows": self.group_windows,
            "groups_pending": self.groups.pending() if self.groups is not None else 0,
            "group_revisions_dropped": self.groups.unrevised if self.groups is not None else 0,
            "dropped": self.agg.stats(),
        }
