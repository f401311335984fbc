"""Pure-Python twin of the aggregation kernel (ext/_kernel.pyx): same API, same bits.

The fallback where no compiler was available, and the reference the compiled kernel is tested on.
Constants and the snapshot layout are ext/_layout.py's, the point state ext/_state_py.py's, and
the snapshot bytes are written and read by ext/_snapshot_py.py.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import Any

from ext._grid import build_grid
from ext._layout import (
    BLOCK_COLUMNS,
    COUNTER,
    GAUGE,
    HOLD,
    KERNEL_SNAPSHOT_VERSION,
    KEY_COLUMNS,
    MAX_KEY_BYTES,
    MAX_PERIODS,
    MAX_REVISABLE,
    RATE,
    TRAPEZOID,
    WINDOW_COLUMNS,
    check_header,
)
from ext._snapshot_py import SnapshotCodec, cstart_at
from ext._state_py import Acc as _Acc
from ext._state_py import Point as _Point
from ext._state_py import Queued, QueuedBlock

__all__ = [
    "BLOCK_COLUMNS",
    "COUNTER",
    "GAUGE",
    "HOLD",
    "KERNEL_SNAPSHOT_VERSION",
    "KEY_COLUMNS",
    "MAX_KEY_BYTES",
    "MAX_PERIODS",
    "MAX_REVISABLE",
    "RATE",
    "TRAPEZOID",
    "WINDOW_COLUMNS",
    "Kernel",
    "build_grid",
]

_INF = float("inf")
_NAN = float("nan")


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
        self._codec = SnapshotCodec(n_intervals, n_periods)
        self._grid: array[float] = array("d")
        self._mask: array[int] = array("I")
        self._period: array[int] = array("h")
        self._off = 0
        self._trimmed_start = [_NAN] * n_intervals
        self._points: list[_Point | None] = []
        self._queue: list[Queued] = []
        self._blocks: list[QueuedBlock] = []
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

    # Hot path, line for line with _kernel.pyx: one function, no per-sample calls to split it.
    def ingest(self, point: Any, ts: Any, value: Any, quality: Any) -> None:  # noqa: C901
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

    # Per point and cell on the hot path, line for line with _kernel.pyx: kept whole.
    def _close_cell(self, st: _Point) -> None:  # noqa: C901
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

    def _force_due(self, t: float) -> None:
        if t >= self._next_due:
            nxt = _INF
            for st in self._points:
                if st is not None:
                    due = self._force(st, t)
                    if due < nxt:
                        nxt = due
            self._next_due = nxt

    def force_points(self, pids: Any, t: float) -> None:
        """Close these points' cells whose end + grace <= t, as a forced close would (their
        windows then wait, due, for close_until): a device that reported has every point of
        its downtime closed together, the ones its readings did not close as gaps."""
        for pid in pids:
            if 0 <= pid < len(self._points):
                st = self._points[pid]
                if st is not None:
                    self._force(st, t)

    def earliest_due(self) -> float:
        """No open cell is due before this (inf without points); it may be earlier than the
        first one that is, never later. A caller far behind the clock (a restart after an
        outage) closes up to it a step at a time, so one step's windows exist at once."""
        return self._next_due

    def due_keys(self, t: float, force: bool = True) -> dict[str, Any]:
        """Close the cells due by `t` (as close_until does) and name the windows then due
        without taking them: columns point, interval, start and revision, in queue order.

        A caller taking them in slices (close_until with a limit) learns from these when it
        has seen every row of a window that spans several points.
        """
        if force:
            self._force_due(t)
        at = {name: (i, code) for i, (name, code) in enumerate(WINDOW_COLUMNS)}
        keys: dict[str, Any] = {name: array(at[name][1]) for name in KEY_COLUMNS}
        cols = [(keys[name], at[name][0]) for name in KEY_COLUMNS]
        for item in self._queue:
            if item[0] <= t:
                for col, i in cols:
                    col.append(item[1][i])
        return keys

    def close_until(
        self, t: float, limit: int = 0, force: bool = True
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Close every window (and demand block) whose end + grace <= t, and return them.

        Returns (windows, blocks): dicts of column name -> array (WINDOW_COLUMNS plus `periods`,
        n_periods values per window; BLOCK_COLUMNS), in the order the windows completed.
        With `limit` > 0 at most that many windows are returned (the first ones); the rest stay
        queued, due, for the next call, so a caller can take a midnight's or a long outage's
        windows in slices of bounded size. Every due demand block comes with the first call.
        With `force` false no open cell is closed: only windows readings already closed come
        (a restart after an outage takes each answering device's downtime as it reports,
        before the silent ones are closed as gaps).
        """
        if force:
            self._force_due(t)
        wins: dict[str, Any] = {name: array(code) for name, code in WINDOW_COLUMNS}
        wins["periods"] = array("d")
        keep: list[tuple[float, tuple[Any, ...], tuple[float, ...]]] = []
        cols = [wins[name] for name, _ in WINDOW_COLUMNS]
        periods = wins["periods"]
        taken = 0
        queue = self._queue
        for at, item in enumerate(queue):
            if taken == limit > 0:
                keep.extend(queue[at:])
                break
            if item[0] <= t:
                for col, x in zip(cols, item[1], strict=True):
                    col.append(x)
                periods.extend(item[2])
                taken += 1
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
        return self._codec.encode(self._points, self._queue, self._blocks)

    def restore(self, data: bytes | bytearray | memoryview, ids: Mapping[str, int]) -> list[str]:
        """Resume the state of configured points from a snapshot; returns the keys restored.

        `ids` maps point keys to the ids they have now. A point is restored only when it is
        configured with the same kind and its cell start is still an edge of the grid; with
        other intervals or periods nothing is. A truncated or corrupt snapshot raises
        ValueError and changes nothing.
        """
        nk, nper, count = check_header(data)
        if nk != self._nk or nper != self._nper:
            return []
        with memoryview(data) as view:
            return self._restore(view, count, ids)

    def _restore(self, view: memoryview, count: int, ids: Mapping[str, int]) -> list[str]:
        chosen: list[tuple[str, int, _Point, int]] = []
        for key, at in self._codec.walk(view, count):
            pid = ids.get(key)
            if pid is None or not 0 <= pid < len(self._points):
                continue
            st = self._points[pid]
            if st is None or st.key != key or st.kind != view[at]:
                continue
            cstart = cstart_at(view, at)
            g = bisect_right(self._grid, cstart) - 1
            if g < 0 or self._grid[g] != cstart or g + 1 >= len(self._grid):
                continue
            chosen.append((key, at, st, g))
        # What the snapshot has pending for a point replaces what the kernel has (one pass).
        drop = {st.pid for _, _, st, _ in chosen}
        if drop:
            self._queue = [q for q in self._queue if q[1][0] not in drop]
            self._blocks = [b for b in self._blocks if b[1][0] not in drop]
        restored: list[str] = []
        for key, at, st, g in chosen:
            self._codec.decode_point(view, at, st, self._queue, self._blocks)
            st.c = g + self._off
            st.cend = self._grid[g + 1]
            self._next_due = min(self._next_due, st.cend + st.grace)
            restored.append(key)
        return restored
