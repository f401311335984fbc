"""Per-point state of the pure-Python kernel (ext/_kernel_py.py), mirrored by ext/_state.pxd.

Both the arithmetic (the kernel) and the snapshot codec (ext/_snapshot_py.py) work on these.
"""

from __future__ import annotations

from typing import Any

from ext._layout import ACC_FIELDS

__all__ = ["Acc", "Point", "Queued", "QueuedBlock"]

_INF = float("inf")
_NAN = float("nan")

# A window record waiting for its due time: (due, WINDOW_COLUMNS row, its periods).
Queued = tuple[float, tuple[Any, ...], tuple[float, ...]]
# A demand block waiting for its due time: (due, BLOCK_COLUMNS row).
QueuedBlock = tuple[float, tuple[Any, ...]]


class Acc:
    """Accumulator of one cell or one window of one point."""

    __slots__ = (*ACC_FIELDS, "periods")

    start: float
    delta: float
    covered: float
    vmin: float
    vmax: float
    first: float
    last: float
    samples: int
    bad: int
    rollovers: int
    resets: int
    estimated: int
    peak: float
    peak_at: float
    periods: list[float]

    def __init__(self, start: float, n_periods: int) -> None:
        self.periods = [0.0] * n_periods
        self.clear(start)

    def clear(self, start: float) -> None:
        self.start = start
        self.delta = 0.0  # counter delta, rate integral (unit*h), gauge area (value*h)
        self.covered = 0.0  # seconds covered by good data
        self.vmin = _INF
        self.vmax = -_INF
        self.first = _NAN
        self.last = _NAN
        self.samples = 0
        self.bad = 0
        self.rollovers = 0
        self.resets = 0
        self.estimated = 0
        self.peak = _NAN
        self.peak_at = _NAN
        p = self.periods
        for i in range(len(p)):
            p[i] = 0.0


class Point:
    __slots__ = (
        "based",
        "c",
        "cell",
        "cend",
        "cstart",
        "demand",
        "grace",
        "hold",
        "key",
        "kind",
        "max_gap",
        "max_rate",
        "max_rate_s",
        "pend_bad",
        "pend_t",
        "pid",
        "resolution",
        "revisable",
        "rollover",
        "t0",
        "tou",
        "tseen",
        "v0",
        "wins",
    )  # fmt: skip

    pid: int
    key: str
    kind: int
    rollover: float
    max_rate: float
    max_rate_s: float
    resolution: float
    max_gap: float
    hold: int
    demand: int
    tou: int
    grace: float
    tseen: float
    based: int
    t0: float
    v0: float
    c: int
    cstart: float
    cend: float
    cell: Acc
    wins: list[Acc]
    pend_bad: int
    pend_t: float
    revisable: list[tuple[tuple[Any, ...], tuple[float, ...]]]

    def __init__(self) -> None:
        self.tseen = -_INF
        self.based = 0
        self.t0 = 0.0
        self.v0 = 0.0
        self.pend_bad = 0
        self.pend_t = 0.0
        self.revisable = []
