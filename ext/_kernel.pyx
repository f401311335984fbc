# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled aggregation kernel: per-point state in C structs, one call folds a whole batch.

Mirrors ext/_kernel_py.py operation for operation so both give bit-identical floats. Constants
and the snapshot layout are ext/_layout.py's, the structs ext/_state.pxd's, and the snapshot
bytes are written and read by ext/_snapshot.pyx.
"""

from cpython.array cimport array, clone
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memmove, memset

from ext._snapshot cimport cstart_at, encode, get_block, get_count, get_point, get_rec, walk
from ext._state cimport Acc, Blk, Cell, Cold, Point, Rec, Tables, rec_from_tuple, rec_tuple


cdef extern from "stdlib.h":
    int posix_memalign(void** ptr, size_t alignment, size_t size)

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
)
from ext._layout import check_header as _check_header

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

cdef double INF = float("inf")
cdef double NAN = float("nan")


cdef void* grow_aligned(void* old, size_t used, size_t size):
    """realloc for cache-line aligned blocks: a 128-byte Point then spans exactly two lines."""
    cdef void* new = NULL
    if posix_memalign(&new, 64, size) != 0:
        return NULL
    if old != NULL:
        memcpy(new, old, used)
        free(old)
    return new


cdef inline void acc_clear(Acc* a, double start, double* per, int nper) noexcept nogil:
    cdef int i
    a.start = start
    a.delta = 0.0
    a.covered = 0.0
    a.vmin = INF
    a.vmax = -INF
    a.first = NAN
    a.last = NAN
    a.samples = 0
    a.bad = 0
    a.rollovers = 0
    a.resets = 0
    a.estimated = 0
    a.peak = NAN
    a.peak_at = NAN
    for i in range(nper):
        per[i] = 0.0


cdef inline void cell_clear(Cell* a) noexcept nogil:
    a.delta = 0.0
    a.covered = 0.0
    a.vmin = INF
    a.vmax = -INF
    a.first = NAN
    a.last = NAN
    a.samples = 0
    a.estimated = 0


cdef class Kernel:
    # The first line is __init__'s signature for inspect.signature() (a compiled class's slot
    # has none of its own): tests/kernel/test_twin_api.py compares it with the twin's.
    ("Kernel(n_intervals, *, emit=None, demand_interval=-1, n_periods=0, "
     "max_revision_age=86400.0)\n--\n\n"
     "Windowed aggregation of many points over a grid of window edges handed in by the caller.")

    cdef int nk, dk, nper
    cdef double max_age
    cdef list _emit_flags
    cdef int emit_mask
    # base grid (local index i = global index - off)
    cdef double* grid
    cdef unsigned int* mask
    cdef short* period
    cdef long long glen, gcap, off
    cdef list trimmed_start
    # points
    cdef Point* pts
    cdef Cold* cold
    cdef Acc* wins
    cdef double* wper
    cdef int npts, pcap
    cdef list keys
    # output queues
    cdef Rec* q
    cdef double* qper
    cdef Py_ssize_t qlen, qcap
    cdef Blk* bq
    cdef Py_ssize_t blen, bcap
    cdef double next_due
    cdef int forcing
    cdef dict revisable  # pid -> [(record tuple, periods tuple)], windows closed in a gap
    cdef long long n_ooo, n_future, n_unknown

    def __cinit__(self):
        self.grid = NULL
        self.mask = NULL
        self.period = NULL
        self.pts = NULL
        self.cold = NULL
        self.wins = NULL
        self.wper = NULL
        self.q = NULL
        self.qper = NULL
        self.bq = NULL

    def __dealloc__(self):
        free(self.grid)
        free(self.mask)
        free(self.period)
        free(self.pts)
        free(self.cold)
        free(self.wins)
        free(self.wper)
        free(self.q)
        free(self.qper)
        free(self.bq)

    def __init__(self, int n_intervals, *, emit=None, int demand_interval=-1, int n_periods=0,
                 double max_revision_age=86400.0):
        if not 1 <= n_intervals <= 30:
            raise ValueError(f"n_intervals must be 1..30, got {n_intervals}")
        if not -1 <= demand_interval < n_intervals:
            raise ValueError(f"demand_interval {demand_interval} is not one of the intervals")
        if not 0 <= n_periods <= MAX_PERIODS:
            raise ValueError(f"n_periods must be 0..{MAX_PERIODS}, got {n_periods}")
        self.nk = n_intervals
        flags = [bool(x) for x in emit] if emit is not None else [True] * n_intervals
        if len(flags) != n_intervals:
            raise ValueError("emit needs one flag per interval")
        self._emit_flags = flags
        self.emit_mask = 0
        for k in range(n_intervals):
            if flags[k]:
                self.emit_mask |= 1 << k
        self.dk = demand_interval
        self.nper = n_periods
        self.max_age = max_revision_age
        self.glen = 0
        self.gcap = 0
        self.off = 0
        self.trimmed_start = [NAN] * n_intervals
        self.npts = 0
        self.pcap = 0
        self.keys = []
        self.qlen = 0
        self.qcap = 0
        self.blen = 0
        self.bcap = 0
        self.next_due = INF
        self.forcing = 0
        self.revisable = {}
        self.n_ooo = 0
        self.n_future = 0
        self.n_unknown = 0

    # ---- grid -------------------------------------------------------------------------------

    @property
    def horizon(self):
        """The last grid edge: samples at or after it are dropped (counted as `future`)."""
        return self.grid[self.glen - 1] if self.glen else -INF

    cdef double _horizon(self):
        return self.grid[self.glen - 1] if self.glen else -INF

    def extend_grid(self, edges, masks, periods):
        """Append base-grid edges (strictly increasing, after the current horizon)."""
        cdef Py_ssize_t n = len(edges), i
        cdef double last, e
        cdef int p
        if len(masks) != n or len(periods) != n:
            raise ValueError("edges, masks and periods must have the same length")
        last = self._horizon()
        for i in range(n):
            e = edges[i]
            if not e > last:
                raise ValueError(f"grid edges must increase: {e!r} after {last!r}")
            if not 0 <= periods[i] < max(self.nper, 1):
                raise ValueError(
                    f"TOU period {periods[i]} out of range 0..{max(self.nper, 1) - 1}")
            last = e
        self._trim()
        if self.glen + n > self.gcap:
            cap = max(self.glen + n, self.gcap * 2, 1024)
            self.grid = <double*>realloc(self.grid, cap * sizeof(double))
            self.mask = <unsigned int*>realloc(self.mask, cap * sizeof(unsigned int))
            self.period = <short*>realloc(self.period, cap * sizeof(short))
            if self.grid == NULL or self.mask == NULL or self.period == NULL:
                raise MemoryError()
            self.gcap = cap
        for i in range(n):
            self.grid[self.glen + i] = edges[i]
            self.mask[self.glen + i] = masks[i]
            self.period[self.glen + i] = periods[i]
        self.glen += n
        cdef Point* st
        for p in range(self.npts):
            st = &self.pts[p]
            if st.active and st.cend != st.cend:
                st.cend = self.grid[self.cold[p].c + 1 - self.off]
                if st.cend + self.cold[p].grace < self.next_due:
                    self.next_due = st.cend + self.cold[p].grace

    cdef void _trim(self):
        cdef long long low = self.glen + self.off - 2, drop, i, keep
        cdef int p, k
        cdef unsigned int m
        cdef double oldest = INF
        for p in range(self.npts):
            if self.pts[p].active:
                if self.cold[p].c < low:
                    low = self.cold[p].c
                if self.pts[p].cstart < oldest:
                    oldest = self.pts[p].cstart
        # Keep max_revision_age of cells behind every cursor: gap energy is split over them.
        keep = self._bisect(oldest - self.max_age) - 1 + self.off
        if keep < low:
            low = keep
        drop = low - self.off
        if drop < 4096 or drop * 2 < self.glen:
            return
        for i in range(drop):
            m = self.mask[i]
            for k in range(self.nk):
                if (m >> k) & 1:
                    self.trimmed_start[k] = self.grid[i]
        for i in range(self.glen - drop):
            self.grid[i] = self.grid[i + drop]
            self.mask[i] = self.mask[i + drop]
            self.period[i] = self.period[i + drop]
        self.glen -= drop
        self.off += drop

    cdef double _window_start(self, long long g, int k):
        cdef long long i = g
        while i >= 0:
            if (self.mask[i] >> k) & 1:
                return self.grid[i]
            i -= 1
        t = self.trimmed_start[k]
        return t if t == t else self.grid[0]

    # ---- points -----------------------------------------------------------------------------

    def configure_point(self, int pid, str key, int kind, *, double since, double rollover=0.0,
                        double max_rate=0.0, double resolution=0.0, double max_gap=0.0,
                        int integration=TRAPEZOID, demand=False, tou=False, double grace=1.0):
        """Add point `pid` (or change its settings, keeping its state when key and kind match).

        Its windows start with the one that contains `since`, which must lie inside the grid.
        """
        cdef Point* st
        cdef Cold* cd
        cdef long long g
        cdef int k, i
        if kind not in (COUNTER, RATE, GAUGE):
            raise ValueError(f"point {key}: unknown kind {kind}")
        if integration not in (TRAPEZOID, HOLD):
            raise ValueError(f"point {key}: unknown integration {integration}")
        if pid < 0:
            raise ValueError(f"point {key}: negative id {pid}")
        if len(key.encode()) > MAX_KEY_BYTES:  # the snapshot stores its length as a u16
            raise ValueError(f"point {key[:40]}...: key longer than {MAX_KEY_BYTES} bytes")
        for name, x in (("rollover", rollover), ("max_rate", max_rate),
                        ("resolution", resolution), ("max_gap", max_gap), ("grace", grace)):
            if not x >= 0.0:
                raise ValueError(f"point {key}: {name} must be >= 0, got {x!r}")
        if pid >= self.pcap:
            cap = max(pid + 1, self.pcap * 2, 64)
            self.pts = <Point*>grow_aligned(self.pts, self.pcap * sizeof(Point), cap * sizeof(Point))
            self.cold = <Cold*>realloc(self.cold, cap * sizeof(Cold))
            self.wins = <Acc*>realloc(self.wins, cap * self.nk * sizeof(Acc))
            self.wper = <double*>realloc(self.wper, cap * self.nk * max(self.nper, 1) * sizeof(double))
            if self.pts == NULL or self.cold == NULL or self.wins == NULL or self.wper == NULL:
                raise MemoryError()
            memset(&self.pts[self.pcap], 0, (cap - self.pcap) * sizeof(Point))
            memset(&self.cold[self.pcap], 0, (cap - self.pcap) * sizeof(Cold))
            self.pcap = cap
        while len(self.keys) <= pid:
            self.keys.append(None)
        if pid >= self.npts:
            self.npts = pid + 1
        st = &self.pts[pid]
        cd = &self.cold[pid]
        if not (st.active and self.keys[pid] == key and st.kind == kind):
            if not (self.glen >= 2 and self.grid[0] <= since < self.grid[self.glen - 1]):
                raise ValueError(
                    f"point {key}: start {since!r} is outside the window grid; extend it first")
            g = self._bisect(since) - 1
            memset(st, 0, sizeof(Point))
            memset(cd, 0, sizeof(Cold))
            self.revisable.pop(pid, None)
            st.tseen = -INF
            cd.c = g + self.off
            st.cstart = self.grid[g]
            st.cend = self.grid[g + 1]
            cell_clear(&st.cell)
            for k in range(self.nk):
                i = pid * self.nk + k
                acc_clear(&self.wins[i], self._window_start(g, k),
                          &self.wper[i * self.nper], self.nper)
        st.active = 1
        st.pid = pid
        st.kind = kind
        st.rollover = rollover
        cd.max_rate = max_rate
        st.max_rate_s = max_rate / 3600.0  # per second: one multiply per sample, no divide
        cd.resolution = resolution
        st.max_gap = max_gap
        st.hold = 1 if integration == HOLD else 0
        cd.demand = 1 if demand else 0
        cd.tou = 1 if tou else 0
        cd.grace = grace
        self.keys[pid] = key
        if st.cend + cd.grace < self.next_due:
            self.next_due = st.cend + cd.grace

    cdef long long _bisect(self, double x):
        """Number of grid edges <= x (like bisect_right)."""
        cdef long long lo = 0, hi = self.glen, mid
        while lo < hi:
            mid = (lo + hi) // 2
            if x < self.grid[mid]:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def remove_point(self, int pid):
        """Forget a point; windows it already completed are still emitted."""
        if 0 <= pid < self.npts:
            self.pts[pid].active = 0
            self.keys[pid] = None
            self.revisable.pop(pid, None)

    # ---- ingest -----------------------------------------------------------------------------

    def ingest(self, const int[::1] point, const double[::1] ts, const double[::1] value,
               const unsigned char[::1] quality):
        """Fold one columnar batch (point id int32, UTC s float64, value float64, quality uint8)."""
        cdef Py_ssize_t n = point.shape[0], i
        if ts.shape[0] != n or value.shape[0] != n or quality.shape[0] != n:
            raise ValueError("point, ts, value and quality must have the same length")
        cdef double horizon = self._horizon()
        cdef Point* st
        cdef double t, v, t0, v0, dt, d, w, roll
        cdef int p, wrap, reset, covered
        cdef Point* pts = self.pts
        cdef Cold* cold = self.cold
        cdef Cell* cell
        cdef int npts = self.npts
        for i in range(n):
            p = point[i]
            if p < 0 or p >= npts or not pts[p].active:
                self.n_unknown += 1
                continue
            st = &pts[p]
            t = ts[i]
            if t <= st.tseen or t < st.cstart:
                self.n_ooo += 1
                cold[p].bad += 1
                continue
            if not (t < horizon):
                self.n_future += 1
                continue
            st.tseen = t
            v = value[i]
            if quality[i] != 0 or v != v:
                self._bad(st, t)
                continue
            if st.kind == 0 and st.rollover > 0.0 and not (0.0 <= v < st.rollover):
                self._bad(st, t)  # outside the register's range: a sentinel or a glitch
                continue
            if not st.based:
                self._first(st, t, v)
                continue
            t0 = st.t0
            v0 = st.v0
            dt = t - t0
            if st.kind == 0:
                d = v - v0
                wrap = 0
                reset = 0
                if d >= 0.0:
                    if st.max_rate_s > 0.0 and d > st.max_rate_s * dt:
                        self._bad(st, t)
                        continue
                elif -d <= cold[p].resolution:
                    d = 0.0
                    v = v0
                else:
                    roll = st.rollover
                    w = d + roll
                    if roll > 0.0 and w >= 0.0 and (
                            (w <= st.max_rate_s * dt) if st.max_rate_s > 0.0
                            else (w < roll * 0.5)):
                        d = w
                        wrap = 1
                    else:
                        d = 0.0
                        reset = 1
                if t < st.cend and t0 >= st.cstart:
                    cell = &st.cell
                    if cell.first != cell.first:
                        cell.first = v0
                    cell.delta += d - 0.0
                    cell.last = v
                    cell.samples += 1
                    if wrap:
                        cold[p].rollovers += 1
                    if reset:
                        cold[p].resets += 1
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
                    cell = &st.cell
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

    cdef void _bad(self, Point* st, double t):
        if st.based and st.kind != 0 and st.hold and st.max_gap == 0.0:
            # A held value stands until the status goes bad; from there on nothing is known.
            self._span_rate(st, t, st.v0, 1, 0)
            st.based = 0
        cdef Cold* cd = &self.cold[st.pid]
        if t < st.cend:
            cd.bad += 1
        else:
            if cd.pend_bad == 0:
                cd.pend_t = t
            cd.pend_bad += 1

    cdef void _first(self, Point* st, double t, double v):
        while t >= st.cend:
            self._close_cell(st)
        cdef Cell* cell = &st.cell
        if st.kind == 0:
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

    cdef void _span_counter(self, Point* st, double t, double v, double d, int wrap, int reset):
        cdef double t0 = st.t0, v0 = st.v0
        cdef double dt = t - t0
        cdef double roll = st.rollover
        cdef int covered = st.max_gap == 0.0 or dt <= st.max_gap
        cdef double done = 0.0, s = t0, vs = v0, e, cum, ve
        cdef Cell* cell
        cdef int crossed
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
            covered = 0
        while t >= st.cend:
            e = st.cend
            cum = d * (e - t0) / dt
            ve = v0 + cum
            cell = &st.cell
            if roll > 0.0 and ve >= roll:
                ve -= roll
                # The register passed its modulus before this edge: the wrap is this window's,
                # so that delta = last - first + rollovers * rollover holds per window.
                self.cold[st.pid].rollovers += wrap
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
        cell = &st.cell
        if cell.first != cell.first:
            cell.first = vs
        cell.delta += d - done
        cell.last = v
        cell.samples += 1
        self.cold[st.pid].rollovers += wrap
        self.cold[st.pid].resets += reset
        if covered:
            cell.covered += t - s
        else:
            cell.estimated = 1
        st.t0 = t
        st.v0 = v

    cdef double _value_at(self, Point* st, double x, double d, double dt):
        """The counter reading at instant x, interpolated over the gap."""
        cdef double val = st.v0 + d * (x - st.t0) / dt
        if st.rollover > 0.0 and val >= st.rollover:
            val -= st.rollover
        return val

    cdef void _split_periods(self, list out, double a, double b, double t0, double d,
                             double dt):
        """Add the gap energy between instants a and b to `out` by TOU period of the grid."""
        cdef long long g = self._bisect(a) - 1
        cdef double lo, hi
        if g < 0:
            g = 0
        while g + 1 < self.glen and self.grid[g] < b:
            lo = self.grid[g] if self.grid[g] > a else a
            hi = self.grid[g + 1] if self.grid[g + 1] < b else b
            if hi > lo:
                out[self.period[g]] += d * (hi - t0) / dt - d * (lo - t0) / dt
            g += 1

    cdef void _spread_gap(self, Point* st, double t, double d, double done, int crossed):
        """Share a counter's energy over the windows closed since its last reading.

        Windows already emitted (within max_revision_age) are emitted again with revision + 1
        and estimated; what belongs to older ones, or to windows still open, goes to the open
        window of each interval, estimated. `crossed`: a wrap whose modulus crossing lies in
        the gap; it is counted in the window where the interpolated reading passes the modulus.
        """
        cdef double t0 = st.t0
        cdef double dt = t - t0
        cdef double cs = st.cstart
        cdef double roll = st.rollover
        cdef int here
        cdef int rolled[32]
        memset(rolled, 0, sizeof(rolled))
        cdef Cold* cd = &self.cold[st.pid]
        cdef int tou = cd.tou and self.nper > 0
        cdef int k, j, nk = self.nk, nper = self.nper
        cdef double ws, we, a, share, first, last, rest
        cdef list revised = [0.0] * nk
        cdef Acc* w
        cdef double* wp
        items = self.revisable.pop(st.pid, [])
        if d != 0.0:
            for rec, per in items:
                k = rec[1]
                ws = rec[5]
                we = rec[6]
                if we < t - self.max_age:
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
                new = (rec[0], rec[1], rec[2], rec[3] + 1, 1, ws, we, rec[7] + share, first,
                       last) + tuple(rec[10:13]) + (rec[13] + here,) + tuple(rec[14:20]) + (0,)
                self._push_tuple(new, new_per, we + cd.grace)
                if we + cd.grace < self.next_due:
                    self.next_due = we + cd.grace
        cdef long long g = cd.c - self.off
        for k in range(nk):
            w = &self.wins[st.pid * nk + k]
            wp = &self.wper[(st.pid * nk + k) * nper]
            a = w.start if w.start > t0 else t0
            if w.first != w.first and w.start >= t0:
                w.first = self._value_at(st, w.start, d, dt)
            if d == 0.0:
                continue
            w.delta += done - <double>revised[k]
            w.estimated = 1
            if crossed and not rolled[k]:
                w.rollovers += 1
            if tou:
                lst = [wp[j] for j in range(nper)]
                self._split_periods(lst, a, cs, t0, d, dt)
                for j in range(nper):
                    wp[j] = lst[j]
                rest = done - <double>revised[k] - (d * (cs - t0) / dt - d * (a - t0) / dt)
                wp[self.period[g]] += rest

    cdef void _push_tuple(self, tuple rec, tuple per, double due):
        cdef Rec* r = self._new_rec()
        cdef int j
        rec_from_tuple(r, rec)
        r.due = due
        for j in range(self.nper):
            self.qper[(self.qlen - 1) * self.nper + j] = per[j]

    cdef void _span_rate(self, Point* st, double t, double v, int covered, int sample):
        cdef double t0 = st.t0, v0 = st.v0
        cdef double dt = t - t0
        cdef int hold = st.hold
        cdef double s = t0, vs = v0, e, ve
        cdef Cell* cell
        if t0 < st.cstart:
            s = st.cstart
            if not hold:
                vs = v0 + (v - v0) * (s - t0) / dt
        while t >= st.cend:
            e = st.cend
            cell = &st.cell
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
        cell = &st.cell
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

    cdef void _close_cell(self, Point* st):
        """Fold the point's current cell into its windows and move it to the next cell."""
        cdef Cold* cd = &self.cold[st.pid]
        cdef long long g = cd.c - self.off
        cdef Cell* cell = &st.cell
        cdef double end = st.cend
        cdef unsigned int mask = self.mask[g + 1]
        cdef int per = self.period[g]
        cdef int nk = self.nk, nper = self.nper, k
        cdef int tou = cd.tou and nper > 0
        cdef Acc* ws = &self.wins[st.pid * nk]
        cdef double* wp = &self.wper[st.pid * nk * nper]
        cdef Acc* w
        cdef Acc* b
        cdef double length, avg
        for k in range(nk):
            w = &ws[k]
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
            w.bad += cd.bad
            w.rollovers += cd.rollovers
            w.resets += cd.resets
            w.estimated |= cell.estimated
            if tou:
                wp[k * nper + per] += cell.delta
        if mask != 0:
            if cd.demand and self.dk >= 0 and (mask >> self.dk) & 1:
                b = &ws[self.dk]
                length = end - b.start
                avg = NAN
                if b.covered > 0.0:
                    # rate sums are (v0 + v1) * dt, twice unit*s; counters are in the unit
                    avg = b.delta / (2.0 * length) if st.kind else b.delta / (length / 3600.0)
                self._push_block(st.pid, end + cd.grace, b.start, end, avg, b.covered / length)
                if avg == avg:
                    for k in range(nk):
                        w = &ws[k]
                        if b.start >= w.start and not (avg <= w.peak):
                            w.peak = avg
                            w.peak_at = end
            for k in range(nk):
                if (mask >> k) & 1:
                    w = &ws[k]
                    if (self.emit_mask >> k) & 1:
                        self._emit_window(st, k, w, &wp[k * nper], end)
                    acc_clear(w, end, &wp[k * nper], nper)
        cd.c += 1
        st.cstart = end
        st.cend = self.grid[g + 2] if g + 2 < self.glen else NAN
        cell_clear(cell)
        cd.bad = 0
        cd.rollovers = 0
        cd.resets = 0
        if cd.pend_bad and cd.pend_t < st.cend:
            cd.bad += cd.pend_bad
            cd.pend_bad = 0

    cdef int _push_block(self, int pid, double due, double start, double end, double avg,
                         double coverage) except -1:
        cdef Py_ssize_t cap
        cdef Blk* grown
        if self.blen == self.bcap:
            cap = max(self.bcap * 2, 256)
            grown = <Blk*>realloc(self.bq, cap * sizeof(Blk))
            if grown == NULL:
                raise MemoryError("kernel: no memory for demand blocks")
            self.bq = grown
            self.bcap = cap
        cdef Blk* b = &self.bq[self.blen]
        b.due = due
        b.point = pid
        b.start = start
        b.end = end
        b.demand = avg
        b.coverage = coverage
        self.blen += 1
        return 0

    cdef void _shrink_queue(self):
        """After a close that took many windows (midnight: every interval of every point), give
        the queue's room back to the heap: the snapshot written next reuses it rather than
        coming on top, and the daemon's malloc_trim after the close returns what is left."""
        cdef Py_ssize_t cap = max(1024, 2 * self.qlen)
        cdef Rec* smaller
        cdef double* smaller_per
        if self.qcap <= 8192 or self.qlen * 4 > self.qcap:
            return
        smaller = <Rec*>realloc(self.q, cap * sizeof(Rec))
        smaller_per = <double*>realloc(self.qper, cap * max(self.nper, 1) * sizeof(double))
        if smaller != NULL:
            self.q = smaller
        if smaller_per != NULL:
            self.qper = smaller_per
        if smaller != NULL or smaller_per != NULL:  # one that failed keeps its (larger) room
            self.qcap = cap

    cdef Rec* _new_rec(self) except NULL:
        cdef Py_ssize_t cap
        cdef Rec* grown
        cdef double* grown_per
        if self.qlen == self.qcap:
            cap = max(self.qcap * 2, 1024)
            grown = <Rec*>realloc(self.q, cap * sizeof(Rec))
            if grown == NULL:
                raise MemoryError("kernel: no memory for closed windows")
            self.q = grown
            grown_per = <double*>realloc(self.qper, cap * max(self.nper, 1) * sizeof(double))
            if grown_per == NULL:
                raise MemoryError("kernel: no memory for closed windows")
            self.qper = grown_per
            self.qcap = cap
        self.qlen += 1
        return &self.q[self.qlen - 1]

    cdef void _emit_window(self, Point* st, int k, Acc* w, double* wp, double end):
        cdef double length = end - w.start
        cdef int kind = st.kind, i
        cdef double first = NAN, last = NAN, mean = NAN, vmin = NAN, vmax = NAN, delta = NAN
        if kind == 0:
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
            if kind == 1:
                delta = w.delta / 7200.0
            else:
                last = w.last
        cdef Rec* r = self._new_rec()
        r.due = end + self.cold[st.pid].grace
        r.point = st.pid
        r.interval = k
        r.kind = kind
        r.revision = 1
        r.estimated = w.estimated
        r.start = w.start
        r.end = end
        r.delta = delta
        r.first = first
        r.last = last
        r.mean = mean
        r.vmin = vmin
        r.vmax = vmax
        r.rollovers = w.rollovers
        r.resets = w.resets
        r.samples = w.samples
        r.bad = w.bad
        r.coverage = w.covered / length
        r.peak = w.peak
        r.peak_at = w.peak_at
        r.gap = 1 if self.forcing and kind == 0 and st.based else 0
        cdef double* rp = &self.qper[(self.qlen - 1) * self.nper]
        for i in range(self.nper):
            if not self.cold[st.pid].tou:
                rp[i] = NAN
            elif kind == 0:
                rp[i] = wp[i]
            else:
                rp[i] = wp[i] / 7200.0
        if r.gap:
            lst = self.revisable.setdefault(st.pid, [])
            lst.append((rec_tuple(r), tuple([rp[i] for i in range(self.nper)])))
            if len(lst) > MAX_REVISABLE:
                del lst[0]

    cdef double _force(self, Point* st, double t):
        cdef double s, grace = self.cold[st.pid].grace
        self.forcing = 1
        while st.cend + grace <= t:
            if st.based and st.kind != 0 and st.hold and st.max_gap == 0.0:
                # A held value stands through silence (subscribed points): credit it now.
                s = st.t0 if st.t0 > st.cstart else st.cstart
                st.cell.delta += (st.v0 + st.v0) * (st.cend - s)
                st.cell.covered += st.cend - s
            self._close_cell(st)
        self.forcing = 0
        return st.cend + grace

    cdef void _force_due(self, double t):
        cdef int p
        cdef double nxt, due
        if t >= self.next_due:
            nxt = INF
            for p in range(self.npts):
                if self.pts[p].active:
                    due = self._force(&self.pts[p], t)
                    if due < nxt:
                        nxt = due
            self.next_due = nxt

    def force_points(self, pids, double t):
        """Close these points' cells whose end + grace <= t, as a forced close would (their
        windows then wait, due, for close_until): a device that reported has every point of
        its downtime closed together, the ones its readings did not close as gaps."""
        cdef int pid
        for pid in pids:
            if 0 <= pid < self.npts and self.pts[pid].active:
                self._force(&self.pts[pid], t)

    def earliest_due(self):
        """No open cell is due before this (inf without points); it may be earlier than the
        first one that is, never later. A caller far behind the clock (a restart after an
        outage) closes up to it a step at a time, so one step's windows exist at once."""
        return self.next_due

    def due_keys(self, double t, bint force=True):
        """Close the cells due by `t` (as close_until does) and name the windows then due
        without taking them: columns point, interval, start and revision, in queue order.

        A caller taking them in slices (close_until with a limit) learns from these when it
        has seen every row of a window that spans several points.
        """
        cdef Py_ssize_t i, n = 0, o = 0
        if force:
            self._force_due(t)
        for i in range(self.qlen):
            if self.q[i].due <= t:
                n += 1
        cdef array c_point = clone(array("i"), n, False), c_interval = clone(array("b"), n, False)
        cdef array c_start = clone(array("d"), n, False), c_revision = clone(array("i"), n, False)
        for i in range(self.qlen):
            if self.q[i].due <= t:
                c_point.data.as_ints[o] = self.q[i].point
                c_interval.data.as_schars[o] = self.q[i].interval
                c_start.data.as_doubles[o] = self.q[i].start
                c_revision.data.as_ints[o] = self.q[i].revision
                o += 1
        return {"point": c_point, "interval": c_interval, "start": c_start,
                "revision": c_revision}

    def close_until(self, double t, Py_ssize_t limit=0, bint force=True):
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
        cdef int j
        cdef Py_ssize_t i, n = 0, kept = 0
        if force:
            self._force_due(t)
        for i in range(self.qlen):
            if self.q[i].due <= t:
                n += 1
                if n == limit:
                    break
        cdef array ad = array("d"), ai = array("i"), ab = array("b"), aB = array("B")
        cdef array c_point = clone(ai, n, False), c_interval = clone(ab, n, False)
        cdef array c_kind = clone(aB, n, False), c_revision = clone(ai, n, False)
        cdef array c_est = clone(aB, n, False), c_start = clone(ad, n, False)
        cdef array c_end = clone(ad, n, False), c_delta = clone(ad, n, False)
        cdef array c_first = clone(ad, n, False), c_last = clone(ad, n, False)
        cdef array c_mean = clone(ad, n, False), c_min = clone(ad, n, False)
        cdef array c_max = clone(ad, n, False), c_roll = clone(ai, n, False)
        cdef array c_resets = clone(ai, n, False), c_samples = clone(ai, n, False)
        cdef array c_bad = clone(ai, n, False), c_cov = clone(ad, n, False)
        cdef array c_peak = clone(ad, n, False), c_peak_at = clone(ad, n, False)
        cdef array c_per = clone(ad, n * self.nper, False)
        cdef array c_gap = clone(aB, n, False)
        cdef Py_ssize_t o = 0
        cdef Rec* r
        i = 0
        while i < self.qlen and o < n:
            r = &self.q[i]
            if r.due <= t:
                c_point.data.as_ints[o] = r.point
                c_interval.data.as_schars[o] = r.interval
                c_kind.data.as_uchars[o] = r.kind
                c_revision.data.as_ints[o] = r.revision
                c_est.data.as_uchars[o] = r.estimated
                c_start.data.as_doubles[o] = r.start
                c_end.data.as_doubles[o] = r.end
                c_delta.data.as_doubles[o] = r.delta
                c_first.data.as_doubles[o] = r.first
                c_last.data.as_doubles[o] = r.last
                c_mean.data.as_doubles[o] = r.mean
                c_min.data.as_doubles[o] = r.vmin
                c_max.data.as_doubles[o] = r.vmax
                c_roll.data.as_ints[o] = r.rollovers
                c_resets.data.as_ints[o] = r.resets
                c_samples.data.as_ints[o] = r.samples
                c_bad.data.as_ints[o] = r.bad
                c_cov.data.as_doubles[o] = r.coverage
                c_peak.data.as_doubles[o] = r.peak
                c_peak_at.data.as_doubles[o] = r.peak_at
                c_gap.data.as_uchars[o] = r.gap
                for j in range(self.nper):
                    c_per.data.as_doubles[o * self.nper + j] = self.qper[i * self.nper + j]
                o += 1
            else:
                if kept != i:
                    self.q[kept] = self.q[i]
                    for j in range(self.nper):
                        self.qper[kept * self.nper + j] = self.qper[i * self.nper + j]
                kept += 1
            i += 1
        if i < self.qlen and kept != i:  # the limit was reached: the rest moves down as is
            memmove(&self.q[kept], &self.q[i], (self.qlen - i) * sizeof(Rec))
            if self.nper:
                memmove(&self.qper[kept * self.nper], &self.qper[i * self.nper],
                        (self.qlen - i) * self.nper * sizeof(double))
        self.qlen = kept + (self.qlen - i)
        self._shrink_queue()
        wins = {
            "point": c_point, "interval": c_interval, "kind": c_kind, "revision": c_revision,
            "estimated": c_est, "start": c_start, "end": c_end, "delta": c_delta,
            "first": c_first, "last": c_last, "mean": c_mean, "min": c_min, "max": c_max,
            "rollovers": c_roll, "resets": c_resets, "samples": c_samples, "bad": c_bad,
            "coverage": c_cov, "peak": c_peak, "peak_at": c_peak_at, "gap": c_gap,
            "periods": c_per,
        }
        n = 0
        for i in range(self.blen):
            if self.bq[i].due <= t:
                n += 1
        cdef array b_point = clone(ai, n, False), b_start = clone(ad, n, False)
        cdef array b_end = clone(ad, n, False), b_demand = clone(ad, n, False)
        cdef array b_cov = clone(ad, n, False)
        o = 0
        kept = 0
        for i in range(self.blen):
            if self.bq[i].due <= t:
                b_point.data.as_ints[o] = self.bq[i].point
                b_start.data.as_doubles[o] = self.bq[i].start
                b_end.data.as_doubles[o] = self.bq[i].end
                b_demand.data.as_doubles[o] = self.bq[i].demand
                b_cov.data.as_doubles[o] = self.bq[i].coverage
                o += 1
            else:
                self.bq[kept] = self.bq[i]
                kept += 1
        self.blen = kept
        blocks = {"point": b_point, "start": b_start, "end": b_end, "demand": b_demand,
                  "coverage": b_cov}
        return wins, blocks

    def stats(self):
        """Samples dropped before reaching any window, by reason."""
        return {
            "out_of_order": self.n_ooo,
            "future": self.n_future,
            "unknown_point": self.n_unknown,
        }

    # ---- snapshot ---------------------------------------------------------------------------

    def snapshot(self):
        """Versioned bytes of every point's state and pending windows, keyed by point key.

        The layout is in docs/kernel.md; the twin writes the same bytes. The codec
        (ext/_snapshot.pyx) writes them straight from the C structs into one bytes object.
        """
        cdef Tables t = self._tables()
        return encode(&t, self.keys, self.revisable)

    cdef Tables _tables(self):
        cdef Tables t
        t.nk = self.nk
        t.nper = self.nper
        t.npts = self.npts
        t.pts = self.pts
        t.cold = self.cold
        t.wins = self.wins
        t.wper = self.wper
        t.q = self.q
        t.qper = self.qper
        t.qlen = self.qlen
        t.bq = self.bq
        t.blen = self.blen
        return t

    def restore(self, data, ids):
        """Resume the state of configured points from a snapshot; returns the keys restored.

        `ids` maps point keys to the ids they have now. A point is restored only when it is
        configured with the same kind and its cell start is still an edge of the grid; with
        other intervals or periods nothing is. A truncated or corrupt snapshot raises
        ValueError and changes nothing.
        """
        nk, nper, count = _check_header(data)
        if nk != self.nk or nper != self.nper:
            return []
        cdef const unsigned char[::1] view = data
        return self._restore(&view[0], view.shape[0], count, ids)

    cdef list _restore(self, const unsigned char* buf, Py_ssize_t n, Py_ssize_t count, ids):
        cdef int nk = self.nk, nper = self.nper, pid, k
        cdef Py_ssize_t at, i, m, kept
        cdef long long g
        cdef double cstart
        cdef const unsigned char* r
        cdef Point* st
        cdef Cold* cd
        cdef Rec* rec
        cdef Rec rtmp
        cdef Blk btmp
        cdef double* ptmp
        cdef list chosen = []
        for key, at in walk(buf, n, count, nk, nper):
            p = ids.get(key)
            if p is None or not 0 <= p < self.npts:
                continue
            pid = p
            st = &self.pts[pid]
            if not st.active or self.keys[pid] != key or st.kind != buf[at]:
                continue
            cstart = cstart_at(buf, at)
            g = self._bisect(cstart) - 1
            if g < 0 or self.grid[g] != cstart or g + 1 >= self.glen:
                continue
            chosen.append((key, at, pid, g))
        # What the snapshot has pending for a point replaces what the kernel has (one pass).
        cdef unsigned char* drop = <unsigned char*>calloc(self.npts + 1, 1)
        if drop == NULL:
            raise MemoryError("kernel: no memory to restore a snapshot")
        for key, at, pid, g in chosen:
            drop[pid] = 1
        kept = 0
        for i in range(self.qlen):
            if not drop[self.q[i].point]:
                if kept != i:
                    self.q[kept] = self.q[i]
                    memcpy(&self.qper[kept * nper], &self.qper[i * nper], nper * sizeof(double))
                kept += 1
        self.qlen = kept
        kept = 0
        for i in range(self.blen):
            if not drop[self.bq[i].point]:
                self.bq[kept] = self.bq[i]
                kept += 1
        self.blen = kept
        free(drop)
        ptmp = <double*>malloc((nper + 1) * sizeof(double))
        if ptmp == NULL:
            raise MemoryError("kernel: no memory to restore a snapshot")
        restored = []
        try:
            for key, at, pid, g in chosen:
                st = &self.pts[pid]
                cd = &self.cold[pid]
                r = get_point(buf + at, st, cd, &self.wins[pid * nk], &self.wper[pid * nk * nper],
                              nk, nper)
                cd.c = g + self.off
                st.cend = self.grid[g + 1]
                r = get_count(r, &m)  # windows completed, not yet due
                for i in range(m):
                    rec = self._new_rec()
                    r = get_rec(r, rec, &self.qper[(self.qlen - 1) * nper], nper)
                    rec.point = pid
                    rec.due = rec.end + cd.grace
                r = get_count(r, &m)  # demand blocks not yet due
                for i in range(m):
                    r = get_block(r, &btmp)
                    self._push_block(pid, btmp.end + cd.grace, btmp.start, btmp.end, btmp.demand,
                                     btmp.coverage)
                r = get_count(r, &m)  # windows closed in a gap, that a reading may revise
                revisable = []
                for i in range(m):
                    r = get_rec(r, &rtmp, ptmp, nper)
                    rtmp.point = pid
                    revisable.append((rec_tuple(&rtmp),
                                      tuple([ptmp[k] for k in range(nper)])))
                if revisable:
                    self.revisable[pid] = revisable
                else:
                    self.revisable.pop(pid, None)
                if st.cend + cd.grace < self.next_due:
                    self.next_due = st.cend + cd.grace
                restored.append(key)
        finally:
            free(ptmp)
        return restored
