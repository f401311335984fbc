"""One DeviceSink for driver tests: keeps every batch and event, in order, for assertions.

The driver under test takes the sink's `index` as its PointIndex, so rows carry point keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drivers.base import DeviceEvent
from drivers.samples import PointIndex, SampleBatch

__all__ = ["RecordingSink"]


@dataclass
class RecordingSink:
    """Everything a driver delivered; `rows()` are (point key, ts, value, quality)."""

    index: PointIndex = field(default_factory=PointIndex)
    batches: list[SampleBatch] = field(default_factory=list)
    events: list[DeviceEvent] = field(default_factory=list)

    def add_samples(self, batch: SampleBatch) -> None:
        self.batches.append(batch)

    def add_event(self, event: DeviceEvent) -> None:
        self.events.append(event)

    def rows(self, key: str | None = None) -> list[tuple[str, float, float, int]]:
        """Every sample delivered (of point `key` only, when given), oldest batch first."""
        out = []
        for batch in self.batches:
            for pid, ts, value, quality in batch:
                k = self.index.key(pid)
                if key is None or k == key:
                    out.append((k, ts, value, quality))
        return out

    def device_rows(self, device: str) -> list[tuple[str, float, float, int]]:
        """Every sample of `device`'s points (keys `device.*`), oldest batch first."""
        return [r for r in self.rows() if r[0].startswith(device + ".")]

    def poll_times(self, device: str) -> list[float]:
        """The time of each batch of `device` (a driver delivers one batch per poll)."""
        return [
            b.ts[0]
            for b in self.batches
            if len(b) and self.index.key(b.point[0]).startswith(device + ".")
        ]

    def events_of(self, type_: str, device: str | None = None) -> list[DeviceEvent]:
        return [e for e in self.events if e.type == type_ and device in (None, e.device)]
