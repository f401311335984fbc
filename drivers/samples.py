"""The columnar sample batch that drivers hand to the kernel, and the point-id map behind it.

Stdlib only: drivers import this module, and it must stay light (no asyncio, no SQLite, no MQTT).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = [
    "QUALITY_BAD",
    "QUALITY_GOOD",
    "QUALITY_UNCERTAIN",
    "PointIndex",
    "SampleBatch",
]

# Quality codes carried per sample. Only GOOD is folded into sums; UNCERTAIN (OPC UA) is kept
# apart from BAD so stats can tell "the server was not sure" from "there was no value".
QUALITY_GOOD = 0
QUALITY_BAD = 1
QUALITY_UNCERTAIN = 2


@dataclass(slots=True)
class SampleBatch:
    """Parallel arrays, one entry per sample: point id, UTC epoch seconds, value, quality.

    array.array rather than lists: contiguous, buffer-protocol views for the Cython kernel,
    8 bytes a value instead of a Python float object each.
    """

    point: array[int] = field(default_factory=lambda: array("i"))
    ts: array[float] = field(default_factory=lambda: array("d"))
    value: array[float] = field(default_factory=lambda: array("d"))
    quality: array[int] = field(default_factory=lambda: array("B"))

    def append(self, point: int, ts: float, value: float, quality: int = QUALITY_GOOD) -> None:
        self.point.append(point)
        self.ts.append(ts)
        self.value.append(value)
        self.quality.append(quality)

    def extend(self, other: SampleBatch) -> None:
        self.point.extend(other.point)
        self.ts.extend(other.ts)
        self.value.extend(other.value)
        self.quality.extend(other.quality)

    def __len__(self) -> int:
        return len(self.point)

    def __iter__(self) -> Iterator[tuple[int, float, float, int]]:
        """Row view, for tests and tools; the hot path passes the arrays whole."""
        return zip(self.point, self.ts, self.value, self.quality, strict=True)


class PointIndex:
    """Stable point key (`device.point`) ↔ small integer id used inside batches and the kernel.

    Ids are never reused within a process: a reload that removes a point retires its id, one
    that adds a point gets a fresh id. Anything that outlives the process (kernel snapshots,
    outbox rows) refers to keys, never to ids.
    """

    __slots__ = ("_ids", "_keys")

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._ids: dict[str, int] = {}
        self._keys: list[str | None] = []
        for key in keys:
            self.add(key)

    def add(self, key: str) -> int:
        """The id of `key`, assigning the next free one when it is new."""
        existing = self._ids.get(key)
        if existing is not None:
            return existing
        pid = len(self._keys)
        self._ids[key] = pid
        self._keys.append(key)
        return pid

    def retire(self, key: str) -> None:
        pid = self._ids.pop(key)
        self._keys[pid] = None

    def id(self, key: str) -> int:
        return self._ids[key]

    def key(self, pid: int) -> str:
        key = self._keys[pid]
        if key is None:
            raise KeyError(f"point id {pid} was retired")
        return key

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def capacity(self) -> int:
        """One past the highest id ever given: the size of id-indexed arrays."""
        return len(self._keys)

    def items(self) -> Iterator[tuple[str, int]]:
        return iter(self._ids.items())
