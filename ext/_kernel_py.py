"""Pure-Python twin of the aggregation kernel (ext/_kernel.pyx): same API, same bits.

The fallback where no compiler was available, and the reference the compiled kernel is tested on.
"""

from __future__ import annotations

import zlib
from array import array
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from struct import Struct
from typing import Any

__all__ = [
    "BLOCK_COLUMNS",
    "COUNTER",
    "GAUGE",
    "HOLD",
    "RATE",
    "SNAPSHOT_VERSION",
    "TRAPEZOID",
    "WINDOW_COLUMNS",
    "Kernel",
    "build_grid",
]

COUNTER = 0
RATE = 1
GAUGE = 2
TRAPEZOID = 0
HOLD = 1

SNAPSHOT_VERSION = 2
_MAGIC = b"IWK"

# Column name and array typecode of every closed-window record, in order. `periods` (TOU split,
# n_periods doubles per record) comes as one extra flat column.
WINDOW_COLUMNS: tuple[tuple[str, str], ...] = (
    ("point", "i"),
    ("interval", "b"),
    ("kind", "B"),
    ("revision", "i"),
    ("estimated", "B"),
    ("start", "d"),
    ("end", "d"),
    ("delta", "d"),
    ("first", "d"),
    ("last", "d"),
    ("mean", "d"),
    ("min", "d"),
    ("max", "d"),
    ("rollovers", "i"),
    ("resets", "i"),
    ("samples", "i"),
    ("bad", "i"),
    ("coverage", "d"),
    ("peak", "d"),
    ("peak_at", "d"),
    ("gap", "B"),  # 1: closed during a counter gap, may be published again with revision + 1
)
BLOCK_COLUMNS: tuple[tuple[str, str], ...] = (
    ("point", "i"),
    ("start", "d"),
    ("end", "d"),
    ("demand", "d"),
    ("coverage", "d"),
)

_INF = float("inf")
_NAN = float("nan")
_ACC_FIELDS = (
    "start", "delta", "covered", "vmin", "vmax", "first", "last",
    "samples", "bad", "rollovers", "resets", "estimated", "peak", "peak_at",
)  # fmt: skip
# Windows closed during one point's gap that a later reading may still revise, at most.
MAX_REVISABLE = 4096

# Snapshot layout (docs/kernel.md), shared with the compiled kernel: little-endian, packed.
# Header: magic, version, CRC-32 of every byte after the CRC field, intervals, periods, points.
_HEAD = Struct("<3sBIHHI")
_CRC = Struct("<I")
_CRC_END = 8  # the checksum covers data[_CRC_END:]
_KEY_LEN = Struct("<H")
_COUNT = Struct("<I")
_F64 = Struct("<d")
# Per point after its key: kind, state (tseen, based, t0, v0, cstart, pend_bad, pend_t), the
# open cell (delta, covered, vmin, vmax, first, last, samples, bad, rollovers, resets,
# estimated), then per interval the window accumulator in _ACC_FIELDS order and its periods.
_POINT_FMT = "B" + "dBdddid" + "6d4iB"
_ACC_FMT = "7d4iB2d"
_CSTART_AT = 1 + 8 + 1 + 8 + 8  # offset of cstart from the kind byte
# A closed window without its point id (WINDOW_COLUMNS[1:] in order), then its periods.
_REC_FMT = "BBiB8d4i3dB"
_BLOCK = Struct("<4d")  # start, end, demand, coverage
MAX_KEY_BYTES = 0xFFFF  # a key's length is a u16
MAX_PERIODS = 0x7FFF  # TOU periods are shorts in the grid, their count a u16 in the header


def _corrupt(what: str) -> ValueError:
    return ValueError(
        f"kernel snapshot is truncated or corrupt ({what}); the open windows cannot be resumed: "
        "move the state file aside and restart"
    )


def _check_header(data: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """Check magic, version, length and checksum; returns (intervals, periods, points)."""
    if len(data) < 4 or data[:3] != _MAGIC:
        raise ValueError("not an ironwatt kernel snapshot (bad magic); delete the state file")
    version = data[3]
    if version != SNAPSHOT_VERSION:
        raise ValueError(
            f"kernel snapshot version {version} is not supported by this build (it reads "
            f"version {SNAPSHOT_VERSION}); the open windows cannot be resumed: move the "
            "state file aside and restart"
        )
    if len(data) < _HEAD.size:
        raise _corrupt("shorter than its header")
    _, _, crc, nk, nper, count = _HEAD.unpack_from(data)
    # A binary snapshot has no syntax to break: without the checksum a flipped bit would
    # resume as a wrong energy figure instead of being refused.
    with memoryview(data) as view:
        if zlib.crc32(view[_CRC_END:]) != crc:
            raise _corrupt("checksum mismatch")
    return nk, nper, count


def _snapshot_structs(nk: int, nper: int) -> tuple[Struct, Struct]:
    """(point part after the key, window record) of a kernel with nk intervals, nper periods."""
    point = Struct("<" + _POINT_FMT + (_ACC_FMT + f"{nper}d") * nk)
    rec = Struct(f"<{_REC_FMT}{nper}d")
    return point, rec


def build_grid(
    edge_lists: Sequence[Sequence[float]],
    tou_bounds: Sequence[float] = (),
    tou_periods: Sequence[int] = (),
    initial_period: int = 0,
) -> tuple[array[float], array[int], array[int]]:
    """Merge per-interval window edges (and TOU boundaries) into the kernel's base grid.

    Returns (edges, masks, periods): the sorted union of all edges; for each, a bit mask of the
    intervals it is a window edge of (bit k = interval k); and the TOU period in force from it
    on (the last boundary at or before it, else `initial_period`).
    """
    masks: dict[float, int] = {}
    for k, edges in enumerate(edge_lists):
        for e in edges:
            masks[e] = masks.get(e, 0) | (1 << k)
    for b in tou_bounds:
        masks.setdefault(b, 0)
    out_e: array[float] = array("d", sorted(masks))
    out_m: array[int] = array("I", [masks[e] for e in out_e])
    out_p: array[int] = array("h")
    j = 0
    period = initial_period
    for e in out_e:
        while j < len(tou_bounds) and tou_bounds[j] <= e:
            period = tou_periods[j]
            j += 1
        out_p.append(period)
    return out_e, out_m, out_p


class _Acc:
    """Accumulator of one cell or one window of one point."""

    __slots__ = (*_ACC_FIELDS, "periods")

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


class _Point:
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
    cell: _Acc
    wins: list[_Acc]
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


class Kernel:
    """Windowed aggregation of many points over a grid of window edges handed in by the caller."""

    def __init__(
        self,
        n_intervals: int,
        *,
        emit: Sequence[bool] | None = None,
        demand_interval: int = -1,
        n_periods: int = 0,
        max_revision_age: float = 86400.0,
    ) -> None:
        if not 1 <= n_intervals <= 30:
            raise ValueError(f"n_intervals must be 1..30, got {n_intervals}")
        if not -1 <= demand_interval < n_intervals:
            raise ValueError(f"demand_interval {demand_interval} is not one of the intervals")
        if not 0 <= n_periods <= MAX_PERIODS:
            raise ValueError(f"n_periods must be 0..{MAX_PERIODS}, got {n_periods}")
        self._nk = n_intervals
        self._emit = [bool(x) for x in emit] if emit is not None else [True] * n_intervals
        if len(self._emit) != n_intervals:
            raise ValueError("emit needs one flag per interval")
        self._dk = demand_interval
        self._nper = n_periods
        self._max_age = float(max_revision_age)
        self._snap_point, self._snap_rec = _snapshot_structs(n_intervals, n_periods)
        self._grid: array[float] = array("d")
        self._mask: array[int] = array("I")
        self._period: array[int] = array("h")
        self._off = 0
        self._trimmed_start = [_NAN] * n_intervals
        self._points: list[_Point | None] = []
        self._queue: list[tuple[float, tuple[Any, ...], tuple[float, ...]]] = []
        self._blocks: list[tuple[float, tuple[Any, ...]]] = []
        self._next_due = _INF
        self._forcing = False
        self._out_of_order = 0
        self._future = 0
        self._unknown = 0

    # ---- grid -------------------------------------------------------------------------------

    @property
    def horizon(self) -> float:
        """The last grid edge: samples at or after it are dropped (counted as `future`)."""
        return self._grid[-1] if len(self._grid) else -_INF

    def extend_grid(self, edges: Any, masks: Any, periods: Any) -> None:
        """Append base-grid edges (strictly increasing, after the current horizon)."""
        e_in = edges
        m_in = masks
        p_in = periods
        n = len(e_in)
        if len(m_in) != n or len(p_in) != n:
            raise ValueError("edges, masks and periods must have the same length")
        last = self.horizon
        for i in range(n):
            e = e_in[i]
            if not e > last:
                raise ValueError(f"grid edges must increase: {e!r} after {last!r}")
            if not 0 <= p_in[i] < max(self._nper, 1):
                raise ValueError(f"TOU period {p_in[i]} out of range 0..{max(self._nper, 1) - 1}")
            last = e
        self._trim()
        self._grid.extend(e_in[i] for i in range(n))
        self._mask.extend(int(m_in[i]) for i in range(n))
        self._period.extend(int(p_in[i]) for i in range(n))
        for st in self._points:
            if st is not None and st.cend != st.cend:
                st.cend = self._grid[st.c + 1 - self._off]
                self._next_due = min(self._next_due, st.cend + st.grace)

    def _trim(self) -> None:
        """Drop grid cells no point will visit again (every live cursor is past them)."""
        low = len(self._grid) + self._off - 2
        oldest = _INF
        for st in self._points:
            if st is not None:
                if st.c < low:
                    low = st.c
                if st.cstart < oldest:
                    oldest = st.cstart
        # Keep max_revision_age of cells behind every cursor: gap energy is split over them.
        keep = bisect_right(self._grid, oldest - self._max_age) - 1 + self._off
        if keep < low:
            low = keep
        drop = low - self._off
        if drop < 4096 or drop * 2 < len(self._grid):
            return
        for i in range(drop):
            m = self._mask[i]
            for k in range(self._nk):
                if (m >> k) & 1:
                    self._trimmed_start[k] = self._grid[i]
        del self._grid[:drop]
        del self._mask[:drop]
        del self._period[:drop]
        self._off += drop

    def _window_start(self, g: int, k: int) -> float:
        """The start of interval k's window that contains grid cell g (local index)."""
        i = g
        while i >= 0:
            if (self._mask[i] >> k) & 1:
                return self._grid[i]
            i -= 1
        t = self._trimmed_start[k]
        return t if t == t else self._grid[0]

    # ---- points -----------------------------------------------------------------------------

    def configure_point(
        self,
        pid: int,
        key: str,
        kind: int,
        *,
        since: float,
        rollover: float = 0.0,
        max_rate: float = 0.0,
        resolution: float = 0.0,
        max_gap: float = 0.0,
        integration: int = TRAPEZOID,
        demand: bool = False,
        tou: bool = False,
        grace: float = 1.0,
    ) -> None:
        """Add point `pid` (or change its settings, keeping its state when key and kind match).

        Its windows start with the one that contains `since`, which must lie inside the grid.
        """
        if kind not in (COUNTER, RATE, GAUGE):
            raise ValueError(f"point {key}: unknown kind {kind}")
        if integration not in (TRAPEZOID, HOLD):
            raise ValueError(f"point {key}: unknown integration {integration}")
        if pid < 0:
            raise ValueError(f"point {key}: negative id {pid}")
        if len(key.encode()) > MAX_KEY_BYTES:  # the snapshot stores its length as a u16
            raise ValueError(f"point {key[:40]}...: key longer than {MAX_KEY_BYTES} bytes")
        for name, x in (
            ("rollover", rollover),
            ("max_rate", max_rate),
            ("resolution", resolution),
            ("max_gap", max_gap),
            ("grace", grace),
        ):
            if not x >= 0.0:
                raise ValueError(f"point {key}: {name} must be >= 0, got {x!r}")
        while len(self._points) <= pid:
            self._points.append(None)
        old = self._points[pid]
        if old is not None and old.key == key and old.kind == kind:
            st = old
        else:
            grid = self._grid
            if not (len(grid) >= 2 and grid[0] <= since < grid[-1]):
                raise ValueError(
                    f"point {key}: start {since!r} is outside the window grid; extend it first"
                )
            g = bisect_right(grid, since) - 1
            st = _Point()
            st.c = g + self._off
            st.cstart = grid[g]
            st.cend = grid[g + 1]
            st.cell = _Acc(grid[g], 0)
            st.wins = [_Acc(self._window_start(g, k), self._nper) for k in range(self._nk)]
        st.pid = pid
        st.key = key
        st.kind = kind
        st.rollover = float(rollover)
        st.max_rate = float(max_rate)
        st.max_rate_s = st.max_rate / 3600.0  # per second: one multiply per sample, no divide
        st.resolution = float(resolution)
        st.max_gap = float(max_gap)
        st.hold = 1 if integration == HOLD else 0
        st.demand = 1 if demand else 0
        st.tou = 1 if tou else 0
        st.grace = float(grace)
        self._points[pid] = st
        self._next_due = min(self._next_due, st.cend + st.grace)

    def remove_point(self, pid: int) -> None:
        """Forget a point; windows it already completed are still emitted."""
        if 0 <= pid < len(self._points):
            self._points[pid] = None

    # ---- ingest -----------------------------------------------------------------------------

    def ingest(self, point: Any, ts: Any, value: Any, quality: Any) -> None:
        """Fold one columnar batch (point id int32, UTC s float64, value float64, quality uint8)."""
        n = len(point)
        if len(ts) != n or len(value) != n or len(quality) != n:
            raise ValueError("point, ts, value and quality must have the same length")
        pts = self._points
        npts = len(pts)
        horizon = self.horizon
        for p, t, v, q in zip(point, ts, value, quality, strict=True):
            st = pts[p] if 0 <= p < npts else None
            if st is None:
                self._unknown += 1
                continue
            if t <= st.tseen or t < st.cstart:
                self._out_of_order += 1
                st.cell.bad += 1
                continue
            if not t < horizon:
                self._future += 1
                continue
            st.tseen = t
            if q != 0 or v != v:
                self._bad(st, t)
                continue
            if st.kind == COUNTER and st.rollover > 0.0 and not 0.0 <= v < st.rollover:
                self._bad(st, t)  # outside the register's range: a sentinel or a glitch
                continue
            if not st.based:
                self._first(st, t, v)
                continue
            t0 = st.t0
            v0 = st.v0
            dt = t - t0
            if st.kind == COUNTER:
                d = v - v0
                wrap = 0
                reset = 0
                if d >= 0.0:
                    if st.max_rate_s > 0.0 and d > st.max_rate_s * dt:
                        self._bad(st, t)
                        continue
                elif -d <= st.resolution:
                    d = 0.0
                    v = v0
                else:
                    roll = st.rollover
                    w = d + roll
                    if (
                        roll > 0.0
                        and w >= 0.0
                        and (w <= st.max_rate_s * dt if st.max_rate_s > 0.0 else w < roll * 0.5)
                    ):
                        d = w
                        wrap = 1
                    else:
                        d = 0.0
                        reset = 1
                if t < st.cend and t0 >= st.cstart:
                    cell = st.cell
                    if cell.first != cell.first:
                        cell.first = v0
                    cell.delta += d - 0.0
                    cell.last = v
                    cell.samples += 1
                    cell.rollovers += wrap
                    cell.resets += reset
                    if st.max_gap == 0.0 or dt <= st.max_gap:
                        cell.covered += t - t0
                    else:
                        cell.estimated = 1
                    st.t0 = t
                    st.v0 = v
                else:
                    self._span_counter(st, t, v, d, wrap, reset)
            else:
                covered = st.max_gap == 0.0 or dt <= st.max_gap
                if t < st.cend and t0 >= st.cstart:
                    cell = st.cell
                    if covered:
                        if st.hold:
                            cell.delta += (v0 + v0) * (t - t0)
                        else:
                            cell.delta += (v0 + v) * (t - t0)
                        cell.covered += t - t0
                    if v < cell.vmin:
                        cell.vmin = v
                    if v > cell.vmax:
                        cell.vmax = v
                    cell.last = v
                    cell.samples += 1
                    st.t0 = t
                    st.v0 = v
                else:
                    self._span_rate(st, t, v, covered, 1)

    def _bad(self, st: _Point, t: float) -> None:
        if st.based and st.kind != COUNTER and st.hold and st.max_gap == 0.0:
            # A held value stands until the status goes bad; from there on nothing is known.
            self._span_rate(st, t, st.v0, True, 0)
            st.based = 0
        if t < st.cend:
            st.cell.bad += 1
        else:
            if st.pend_bad == 0:
                st.pend_t = t
            st.pend_bad += 1

    def _first(self, st: _Point, t: float, v: float) -> None:
        while t >= st.cend:
            self._close_cell(st)
        cell = st.cell
        if st.kind == COUNTER:
            if cell.first != cell.first:
                cell.first = v
        else:
            if v < cell.vmin:
                cell.vmin = v
            if v > cell.vmax:
                cell.vmax = v
        cell.last = v
        cell.samples += 1
        st.based = 1
        st.t0 = t
        st.v0 = v

    def _span_counter(
        self, st: _Point, t: float, v: float, d: float, wrap: int, reset: int
    ) -> None:
        t0 = st.t0
        v0 = st.v0
        dt = t - t0
        roll = st.rollover
        covered = st.max_gap == 0.0 or dt <= st.max_gap
        done = 0.0
        s = t0
        vs = v0
        if t0 < st.cstart:
            # Windows between the last reading and this one were closed without it.
            s = st.cstart
            done = d * (s - t0) / dt
            vs = v0 + done
            crossed = 0
            if roll > 0.0 and vs >= roll:
                vs -= roll
                crossed = wrap  # the register passed its modulus during the gap
            self._spread_gap(st, t, d, done, crossed)
            wrap -= crossed
            covered = False
        while t >= st.cend:
            e = st.cend
            cum = d * (e - t0) / dt
            ve = v0 + cum
            cell = st.cell
            if roll > 0.0 and ve >= roll:
                ve -= roll
                # The register passed its modulus before this edge: the wrap is this window's,
                # so that delta = last - first + rollovers * rollover holds per window.
                cell.rollovers += wrap
                wrap = 0
            if cell.first != cell.first:
                cell.first = vs
            cell.delta += cum - done
            cell.last = ve
            if covered:
                cell.covered += e - s
            else:
                cell.estimated = 1
            done = cum
            self._close_cell(st)
            s = e
            vs = ve
        cell = st.cell
        if cell.first != cell.first:
            cell.first = vs
        cell.delta += d - done
        cell.last = v
        cell.samples += 1
        cell.rollovers += wrap
        cell.resets += reset
        if covered:
            cell.covered += t - s
        else:
            cell.estimated = 1
        st.t0 = t
        st.v0 = v

    def _value_at(self, st: _Point, x: float, d: float, dt: float) -> float:
        """The counter reading at instant x, interpolated over the gap."""
        val = st.v0 + d * (x - st.t0) / dt
        if st.rollover > 0.0 and val >= st.rollover:
            val -= st.rollover
        return val

    def _split_periods(
        self, out: list[float], a: float, b: float, t0: float, d: float, dt: float
    ) -> None:
        """Add the gap energy between instants a and b to `out` by TOU period of the grid."""
        grid = self._grid
        g = bisect_right(grid, a) - 1
        if g < 0:
            g = 0
        while g + 1 < len(grid) and grid[g] < b:
            lo = grid[g] if grid[g] > a else a
            hi = grid[g + 1] if grid[g + 1] < b else b
            if hi > lo:
                out[self._period[g]] += d * (hi - t0) / dt - d * (lo - t0) / dt
            g += 1

    def _spread_gap(self, st: _Point, t: float, d: float, done: float, crossed: int) -> None:
        """Share a counter's energy over the windows closed since its last reading.

        Windows already emitted (within max_revision_age) are emitted again with revision + 1
        and estimated; what belongs to older ones, or to windows still open, goes to the open
        window of each interval, estimated. `crossed`: a wrap whose modulus crossing lies in
        the gap; it is counted in the window where the interpolated reading passes the modulus.
        """
        t0 = st.t0
        dt = t - t0
        cs = st.cstart
        roll = st.rollover
        tou = st.tou and self._nper > 0
        revised = [0.0] * self._nk
        rolled = [0] * self._nk
        if d != 0.0:
            for rec, per in st.revisable:
                k = rec[1]
                ws = rec[5]
                we = rec[6]
                if we < t - self._max_age:
                    continue
                a = ws if ws > t0 else t0
                share = d * (we - t0) / dt - d * (a - t0) / dt
                revised[k] += share
                first = self._value_at(st, ws, d, dt) if ws >= t0 else rec[8]
                last = self._value_at(st, we, d, dt)
                here = 0
                if crossed and st.v0 + d * (a - t0) / dt < roll <= st.v0 + d * (we - t0) / dt:
                    here = 1
                    rolled[k] = 1
                new_per = per
                if tou:
                    lst = list(per)
                    self._split_periods(lst, a, we, t0, d, dt)
                    new_per = tuple(lst)
                new = (
                    *rec[:3], rec[3] + 1, 1, ws, we, rec[7] + share, first, last, *rec[10:13],
                    rec[13] + here, *rec[14:20], 0,
                )  # fmt: skip
                self._queue.append((we + st.grace, new, new_per))
                if we + st.grace < self._next_due:
                    self._next_due = we + st.grace
        st.revisable = []
        g = st.c - self._off
        for k in range(self._nk):
            w = st.wins[k]
            a = w.start if w.start > t0 else t0
            if w.first != w.first and w.start >= t0:
                w.first = self._value_at(st, w.start, d, dt)
            if d == 0.0:
                continue
            w.delta += done - revised[k]
            w.estimated = 1
            if crossed and not rolled[k]:
                w.rollovers += 1
            if tou:
                self._split_periods(w.periods, a, cs, t0, d, dt)
                rest = done - revised[k] - (d * (cs - t0) / dt - d * (a - t0) / dt)
                w.periods[self._period[g]] += rest

    def _span_rate(self, st: _Point, t: float, v: float, covered: bool, sample: int) -> None:
        t0 = st.t0
        v0 = st.v0
        dt = t - t0
        hold = st.hold
        s = t0
        vs = v0
        if t0 < st.cstart:
            s = st.cstart
            if not hold:
                vs = v0 + (v - v0) * (s - t0) / dt
        while t >= st.cend:
            e = st.cend
            cell = st.cell
            if covered:
                if hold:
                    cell.delta += (v0 + v0) * (e - s)
                else:
                    ve = v0 + (v - v0) * (e - t0) / dt
                    cell.delta += (vs + ve) * (e - s)
                    vs = ve
                cell.covered += e - s
            self._close_cell(st)
            s = e
        cell = st.cell
        if covered:
            if hold:
                cell.delta += (v0 + v0) * (t - s)
            else:
                cell.delta += (vs + v) * (t - s)
            cell.covered += t - s
        if sample:
            if v < cell.vmin:
                cell.vmin = v
            if v > cell.vmax:
                cell.vmax = v
            cell.last = v
            cell.samples += 1
        st.t0 = t
        st.v0 = v

    # ---- closing ----------------------------------------------------------------------------

    def _close_cell(self, st: _Point) -> None:
        """Fold the point's current cell into its windows and move it to the next cell."""
        g = st.c - self._off
        cell = st.cell
        end = st.cend
        mask = self._mask[g + 1]
        per = self._period[g]
        tou = st.tou and self._nper > 0
        for w in st.wins:
            w.delta += cell.delta
            w.covered += cell.covered
            if cell.vmin < w.vmin:
                w.vmin = cell.vmin
            if cell.vmax > w.vmax:
                w.vmax = cell.vmax
            if w.first != w.first:
                w.first = cell.first
            if cell.last == cell.last:
                w.last = cell.last
            w.samples += cell.samples
            w.bad += cell.bad
            w.rollovers += cell.rollovers
            w.resets += cell.resets
            w.estimated |= cell.estimated
            if tou:
                w.periods[per] += cell.delta
        dk = self._dk
        if st.demand and dk >= 0 and (mask >> dk) & 1:
            b = st.wins[dk]
            length = end - b.start
            avg = _NAN
            if b.covered > 0.0:
                # rate sums are (v0 + v1) * dt, twice unit*s; counters are in the unit
                avg = b.delta / (2.0 * length) if st.kind else b.delta / (length / 3600.0)
            self._blocks.append((end + st.grace, (st.pid, b.start, end, avg, b.covered / length)))
            if avg == avg:
                for w in st.wins:
                    if b.start >= w.start and not avg <= w.peak:
                        w.peak = avg
                        w.peak_at = end
        for k in range(self._nk):
            if (mask >> k) & 1:
                w = st.wins[k]
                if self._emit[k]:
                    self._emit_window(st, k, w, end)
                w.clear(end)
        st.c += 1
        st.cstart = end
        st.cend = self._grid[g + 2] if g + 2 < len(self._grid) else _NAN
        cell.clear(end)
        if st.pend_bad and st.pend_t < st.cend:
            cell.bad += st.pend_bad
            st.pend_bad = 0

    def _emit_window(self, st: _Point, k: int, w: _Acc, end: float) -> None:
        length = end - w.start
        kind = st.kind
        first = _NAN
        last = _NAN
        mean = _NAN
        vmin = _NAN
        vmax = _NAN
        delta = _NAN
        if kind == COUNTER:
            first = w.first
            last = w.last
            if first != first and st.based:
                first = st.v0
                last = st.v0
            if first == first:
                delta = w.delta
        else:
            if w.covered > 0.0:
                mean = w.delta / (2.0 * w.covered)
            if w.samples > 0:
                vmin = w.vmin
                vmax = w.vmax
            if kind == RATE:
                delta = w.delta / 7200.0
            else:
                last = w.last
        gap = 1 if self._forcing and kind == COUNTER and st.based else 0
        rec = (
            st.pid, k, kind, 1, w.estimated, w.start, end, delta, first, last, mean, vmin, vmax,
            w.rollovers, w.resets, w.samples, w.bad, w.covered / length, w.peak, w.peak_at, gap,
        )  # fmt: skip
        if not st.tou:
            per: tuple[float, ...] = (_NAN,) * self._nper
        elif kind == COUNTER:
            per = tuple(w.periods)
        else:
            per = tuple(x / 7200.0 for x in w.periods)
        self._queue.append((end + st.grace, rec, per))
        if gap:
            st.revisable.append((rec, per))
            if len(st.revisable) > MAX_REVISABLE:
                del st.revisable[0]

    def _force(self, st: _Point, t: float) -> float:
        """Close the point's cells whose end + grace <= t; returns its next due time."""
        self._forcing = True
        while st.cend + st.grace <= t:
            if st.based and st.kind != COUNTER and st.hold and st.max_gap == 0.0:
                # A held value stands through silence (subscribed points): credit it now.
                s = st.t0 if st.t0 > st.cstart else st.cstart
                st.cell.delta += (st.v0 + st.v0) * (st.cend - s)
                st.cell.covered += st.cend - s
            self._close_cell(st)
        self._forcing = False
        return st.cend + st.grace

    def close_until(self, t: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """Close every window (and demand block) whose end + grace <= t, and return them.

        Returns (windows, blocks): dicts of column name -> array (WINDOW_COLUMNS plus `periods`,
        n_periods values per window; BLOCK_COLUMNS), in the order the windows completed.
        """
        if t >= self._next_due:
            nxt = _INF
            for st in self._points:
                if st is not None:
                    due = self._force(st, t)
                    if due < nxt:
                        nxt = due
            self._next_due = nxt
        wins: dict[str, Any] = {name: array(code) for name, code in WINDOW_COLUMNS}
        wins["periods"] = array("d")
        keep: list[tuple[float, tuple[Any, ...], tuple[float, ...]]] = []
        cols = [wins[name] for name, _ in WINDOW_COLUMNS]
        periods = wins["periods"]
        for item in self._queue:
            if item[0] <= t:
                for col, x in zip(cols, item[1], strict=True):
                    col.append(x)
                periods.extend(item[2])
            else:
                keep.append(item)
        self._queue = keep
        blocks: dict[str, Any] = {name: array(code) for name, code in BLOCK_COLUMNS}
        bcols = [blocks[name] for name, _ in BLOCK_COLUMNS]
        bkeep: list[tuple[float, tuple[Any, ...]]] = []
        for due, brec in self._blocks:
            if due <= t:
                for col, x in zip(bcols, brec, strict=True):
                    col.append(x)
            else:
                bkeep.append((due, brec))
        self._blocks = bkeep
        return wins, blocks

    def stats(self) -> dict[str, int]:
        """Samples dropped before reaching any window, by reason."""
        return {
            "out_of_order": self._out_of_order,
            "future": self._future,
            "unknown_point": self._unknown,
        }

    # ---- snapshot ---------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Versioned bytes of every point's state and pending windows, keyed by point key.

        The layout is in docs/kernel.md; the compiled kernel writes the same bytes.
        """
        point_s, rec_s = self._snap_point, self._snap_rec
        # One pass groups the pending windows and blocks by point: a snapshot stays linear.
        queued: dict[int, list[tuple[float, tuple[Any, ...], tuple[float, ...]]]] = {}
        for item in self._queue:
            queued.setdefault(item[1][0], []).append(item)
        blocks: dict[int, list[tuple[Any, ...]]] = {}
        for _, brec in self._blocks:
            blocks.setdefault(brec[0], []).append(brec)
        out = bytearray(_HEAD.size)
        count = 0
        for st in self._points:
            if st is None:
                continue
            count += 1
            key = st.key.encode()
            out += _KEY_LEN.pack(len(key))
            out += key
            c = st.cell
            vals: list[Any] = [
                st.kind, st.tseen, st.based, st.t0, st.v0, st.cstart, st.pend_bad, st.pend_t,
                c.delta, c.covered, c.vmin, c.vmax, c.first, c.last,
                c.samples, c.bad, c.rollovers, c.resets, c.estimated,
            ]  # fmt: skip
            for w in st.wins:
                vals += (
                    w.start, w.delta, w.covered, w.vmin, w.vmax, w.first, w.last,
                    w.samples, w.bad, w.rollovers, w.resets, w.estimated, w.peak, w.peak_at,
                )  # fmt: skip
                vals += w.periods
            out += point_s.pack(*vals)
            mine = queued.get(st.pid, ())
            out += _COUNT.pack(len(mine))
            for _, rec, per in mine:
                out += rec_s.pack(*rec[1:], *per)
            bmine = blocks.get(st.pid, ())
            out += _COUNT.pack(len(bmine))
            for brec in bmine:
                out += _BLOCK.pack(*brec[1:])
            out += _COUNT.pack(len(st.revisable))
            for rec, per in st.revisable:
                out += rec_s.pack(*rec[1:], *per)
        _HEAD.pack_into(out, 0, _MAGIC, SNAPSHOT_VERSION, 0, self._nk, self._nper, count)
        with memoryview(out) as view:
            crc = zlib.crc32(view[_CRC_END:])
        _CRC.pack_into(out, 4, crc)
        return bytes(out)

    def _walk(self, view: memoryview, count: int) -> list[tuple[str, int]]:
        """Check the structure of every point; returns (key, offset of its kind byte) of each.

        Bounds, counts, keys and kinds are checked before anything is restored, so a bad
        snapshot changes nothing. The compiled kernel checks the same things in the same
        order, with the same messages.
        """
        n = len(view)
        pos = _HEAD.size
        fixed = self._snap_point.size
        rsize = self._snap_rec.size
        nk = self._nk
        seen: set[str] = set()
        out: list[tuple[str, int]] = []
        for i in range(count):
            if n - pos < _KEY_LEN.size:
                raise _corrupt(f"point {i + 1} of {count} ends early")
            (klen,) = _KEY_LEN.unpack_from(view, pos)
            pos += _KEY_LEN.size
            if n - pos < klen + fixed:
                raise _corrupt(f"point {i + 1} of {count} ends early")
            try:
                key = str(view[pos : pos + klen], "utf-8")
            except UnicodeDecodeError:
                raise _corrupt(f"point {i + 1} of {count}: its key is not UTF-8") from None
            if key in seen:
                raise _corrupt(f"point {i + 1} of {count}: key {key!r} appears twice")
            seen.add(key)
            pos += klen
            kind = view[pos]
            if kind > GAUGE:
                raise _corrupt(f"point {i + 1} of {count} ({key!r}): unknown kind {kind}")
            out.append((key, pos))
            pos += fixed
            # pending windows, demand blocks, revisable windows
            for size, records in ((rsize, True), (_BLOCK.size, False), (rsize, True)):
                if n - pos < _COUNT.size:
                    raise _corrupt(f"point {i + 1} of {count} ({key!r}) ends early")
                (m,) = _COUNT.unpack_from(view, pos)
                pos += _COUNT.size
                if m > (n - pos) // size:
                    raise _corrupt(f"point {i + 1} of {count} ({key!r}) ends early")
                if records:
                    for r in range(pos, pos + m * size, size):
                        # an interval indexes per-interval lists when the record is revised
                        if view[r] >= nk:
                            raise _corrupt(
                                f"point {i + 1} of {count} ({key!r}): a window of interval "
                                f"{view[r]} of {nk}"
                            )
                pos += m * size
        if pos != n:
            raise _corrupt(f"{n - pos} bytes after the last point")
        return out

    def restore(self, data: bytes | bytearray | memoryview, ids: Mapping[str, int]) -> list[str]:
        """Resume the state of configured points from a snapshot; returns the keys restored.

        `ids` maps point keys to the ids they have now. A point is restored only when it is
        configured with the same kind and its cell start is still an edge of the grid; with
        other intervals or periods nothing is. A truncated or corrupt snapshot raises
        ValueError and changes nothing.
        """
        nk, nper, count = _check_header(data)
        if nk != self._nk or nper != self._nper:
            return []
        with memoryview(data) as view:
            return self._restore(view, count, ids)

    def _restore(self, view: memoryview, count: int, ids: Mapping[str, int]) -> list[str]:
        chosen: list[tuple[str, int, _Point, int]] = []
        for key, at in self._walk(view, count):
            pid = ids.get(key)
            if pid is None or not 0 <= pid < len(self._points):
                continue
            st = self._points[pid]
            if st is None or st.key != key or st.kind != view[at]:
                continue
            (cstart,) = _F64.unpack_from(view, at + _CSTART_AT)
            g = bisect_right(self._grid, cstart) - 1
            if g < 0 or self._grid[g] != cstart or g + 1 >= len(self._grid):
                continue
            chosen.append((key, at, st, g))
        # What the snapshot has pending for a point replaces what the kernel has (one pass).
        drop = {st.pid for _, _, st, _ in chosen}
        if drop:
            self._queue = [q for q in self._queue if q[1][0] not in drop]
            self._blocks = [b for b in self._blocks if b[1][0] not in drop]
        point_s, rec_s = self._snap_point, self._snap_rec
        step = len(_ACC_FIELDS) + self._nper
        restored: list[str] = []
        for key, at, st, g in chosen:
            pid = st.pid
            vals = point_s.unpack_from(view, at)
            st.tseen, st.based, st.t0, st.v0, st.cstart, st.pend_bad, st.pend_t = vals[1:8]
            st.c = g + self._off
            st.cend = self._grid[g + 1]
            c = st.cell
            (
                c.delta, c.covered, c.vmin, c.vmax, c.first, c.last,
                c.samples, c.bad, c.rollovers, c.resets, c.estimated,
            ) = vals[8:19]  # fmt: skip
            c.start = st.cstart  # a cell's start is its point's cstart and it has no peak
            c.peak = _NAN
            c.peak_at = _NAN
            i = 19
            for w in st.wins:
                (
                    w.start, w.delta, w.covered, w.vmin, w.vmax, w.first, w.last,
                    w.samples, w.bad, w.rollovers, w.resets, w.estimated, w.peak, w.peak_at,
                ) = vals[i : i + 14]  # fmt: skip
                w.periods = list(vals[i + 14 : i + step])
                i += step
            pos = at + point_s.size
            (m,) = _COUNT.unpack_from(view, pos)
            pos += _COUNT.size
            for _ in range(m):
                r = rec_s.unpack_from(view, pos)
                pos += rec_s.size
                self._queue.append((r[5] + st.grace, (pid, *r[:20]), r[20:]))
            (m,) = _COUNT.unpack_from(view, pos)
            pos += _COUNT.size
            for _ in range(m):
                b = _BLOCK.unpack_from(view, pos)
                pos += _BLOCK.size
                self._blocks.append((b[1] + st.grace, (pid, *b)))
            (m,) = _COUNT.unpack_from(view, pos)
            pos += _COUNT.size
            revisable = []
            for _ in range(m):
                r = rec_s.unpack_from(view, pos)
                pos += rec_s.size
                revisable.append(((pid, *r[:20]), r[20:]))
            st.revisable = revisable
            self._next_due = min(self._next_due, st.cend + st.grace)
            restored.append(key)
        return restored
