"""The daemon's energy stage: config points → accounted points, closed windows → outbox messages.

Wraps gateway.energy.aggregate.Aggregator (which owns the kernel and the point index the drivers
use); decides the per-point defaults energy.md leaves to the device: grace, max_gap, integration.
"""

from __future__ import annotations

import json
import time
from typing import Any

from drivers.registry import plugin_of
from drivers.samples import PointIndex, SampleBatch
from gateway.energy.aggregate import AccountedPoint, Aggregator, WindowPayload
from gateway.outbox import Message, MessageClass
from gateway.topics import Topics

__all__ = ["EnergyStage", "accounted_points", "changed_sources"]


def accounted_points(cfg: Any) -> list[AccountedPoint]:
    """What the aggregator accounts of each point of every enabled device."""
    specs: list[AccountedPoint] = []
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
                demand=p.kind == "rate" and p.carrier == "electricity",
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


class EnergyStage:
    """Feeds the aggregator and turns what it closes into `energy/{interval}/{device}` messages."""

    def __init__(self, cfg: Any, now: float) -> None:
        energy = cfg.energy
        self.agg = Aggregator(
            cfg.gateway.tz,
            [(i.name, int(i.seconds)) for i in energy.intervals],
            demand_interval=int(energy.demand_interval) if energy.demand_interval else None,
            max_revision_age=float(energy.max_revision_age),
        )
        self._topics = Topics.of(cfg)
        self._specs = {s.key: s for s in accounted_points(cfg)}
        self._cfg = cfg  # the reload compares against it (sources are not kept: see above)
        self.agg.set_points(self._specs.values(), now)
        self.windows = 0

    @property
    def index(self) -> PointIndex:
        """The point ids every driver must use: the aggregator's own index."""
        return self.agg.index

    def restore(self, blob: bytes) -> list[str]:
        return self.agg.restore(blob)

    def ingest(self, batch: SampleBatch) -> None:
        self.agg.ingest(batch, time.time())

    def close_due(self, now: float) -> list[Message]:
        messages: list[Message] = []

        def publish(w: WindowPayload) -> None:
            # Encoded as soon as the device window is whole: its dicts go at once, only the
            # JSON waits for the outbox (bytes the outbox stores as they are).
            body = json.dumps(w.payload, separators=(",", ":"), ensure_ascii=False).encode()
            topic = self._topics.energy(w.interval, w.device)
            messages.append(Message(topic, body, qos=1, cls=MessageClass.WINDOW))

        self.agg.close_until(now, publish)
        self.windows += len(messages)
        return messages

    def snapshot_parts(self) -> tuple[bytes, ...]:
        return self.agg.snapshot_parts()

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
        return fresh, retuned

    def stats(self) -> dict[str, Any]:
        return {
            "kernel": self.agg.implementation,
            "points": len(self._specs),
            "windows": self.windows,
            "dropped": self.agg.stats(),
        }
