# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled aggregation kernel: per-point state in C structs, one call folds a whole batch.

Mirrors ext/_kernel_py.py operation for operation so both give bit-identical floats.
"""

from zlib import crc32

from cpython.array cimport array, clone
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset


cdef extern from "stdlib.h":
    int posix_memalign(void** ptr, size_t alignment, size_t size)

from ext._grid import build_grid
from ext._layout import (
    BLOCK_COLUMNS,
    COUNTER,
    GAUGE,
    HOLD,
    KERNEL_SNAPSHOT_VERSION,
    MAX_KEY_BYTES,
    MAX_PERIODS,
    MAX_REVISABLE,
    RATE,
    TRAPEZOID,
    WINDOW_COLUMNS,
)
from ext._layout import BLOCK as _BLOCK
from ext._layout import CSTART_AT as _CSTART_AT
from ext._layout import HEAD as _HEAD
from ext._layout import check_header as _check_header
from ext._layout import corrupt as _corrupt
from ext._layout import snapshot_structs as _snapshot_structs

__all__ = [
    "BLOCK_COLUMNS",
    "COUNTER",
    "GAUGE",
    "HOLD",
    "KERNEL_SNAPSHOT_VERSION",
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
# Snapshot layout (docs/kernel.md; ext._layout's Structs are the reference): byte sizes of the
# header, of a point's part after its key without the windows, of one window accumulator
# without its periods, of a window record without its periods, of a demand block.
cdef enum:
    HEAD_SIZE = 16
    POINT_SIZE = 111  # kind 1, state 45, open cell 65
    ACC_SIZE = 89
    REC_SIZE = 112
    BLOCK_SIZE = 32
    CSTART_AT = 26  # cstart, from the kind byte: kind 1, tseen 8, based 1, t0 8, v0 8
_point_s, _rec_s = _snapshot_structs(2, 3)
if (_HEAD.size, _point_s.size, _rec_s.size, _BLOCK.size, _CSTART_AT) != (
        HEAD_SIZE, POINT_SIZE + 2 * (ACC_SIZE + 3 * 8), REC_SIZE + 3 * 8, BLOCK_SIZE,
        CSTART_AT):
    raise ImportError("ext._kernel: snapshot layout differs from ext._layout's; rebuild")
del _point_s, _rec_s


cdef struct Acc:
    double start
    double delta
    double covered
    double vmin
    double vmax
    double first
    double last
    double peak
    double peak_at
    int samples
    int bad
    int rollovers
    int resets
    int estimated


cdef struct Cell:
    # The open cell of a point: hot on every sample, so kept small and inside Point.
    double delta
    double covered
    double vmin
    double vmax
    double first
    double last
    int samples
    int estimated


cdef struct Point:
    # Hot per-sample state, 128 bytes: 10,000 points stay within a core's L2 cache.
    int pid
    unsigned char active
    unsigned char kind
    unsigned char hold
    unsigned char based
    double tseen
    double t0
    double v0
    double cstart
    double cend
    double max_rate_s
    double max_gap
    double rollover
    Cell cell


cdef struct Cold:
    # Per-point settings and counts only the rare paths (falls, edges, bad samples) touch.
    double resolution
    double max_rate
    double grace
    double pend_t
    long long c
    int pend_bad
    int bad
    int rollovers
    int resets
    int demand
    int tou


cdef struct Rec:
    double due
    int point
    int interval
    int kind
    int revision
    int estimated
    int rollovers
    int resets
    int samples
    int bad
    double start
    double end
    double delta
    double first
    double last
    double mean
    double vmin
    double vmax
    double coverage
    double peak
    double peak_at
    int gap


cdef struct Blk:
    double due
    int point
    double start
    double end
    double demand
    double coverage


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


# Snapshot fields are written and read byte by byte in little-endian order, so the bytes are
# the same on any host (and the twin's); compilers turn each of these into one load or store.

cdef inline unsigned char* put_u8(unsigned char* p, unsigned int x) noexcept nogil:
    p[0] = <unsigned char>x
    return p + 1


cdef inline unsigned char* put_u16(unsigned char* p, unsigned int x) noexcept nogil:
    p[0] = <unsigned char>x
    p[1] = <unsigned char>(x >> 8)
    return p + 2


cdef inline unsigned char* put_u32(unsigned char* p, uint32_t x) noexcept nogil:
    p[0] = <unsigned char>x
    p[1] = <unsigned char>(x >> 8)
    p[2] = <unsigned char>(x >> 16)
    p[3] = <unsigned char>(x >> 24)
    return p + 4


cdef inline unsigned char* put_i32(unsigned char* p, int x) noexcept nogil:
    return put_u32(p, <uint32_t>x)


cdef inline unsigned char* put_f64(unsigned char* p, double x) noexcept nogil:
    cdef uint64_t u
    cdef int i
    memcpy(&u, &x, 8)  # the bits as they are: NaN payloads and signs survive
    for i in range(8):
        p[i] = <unsigned char>(u >> (8 * i))
    return p + 8


cdef inline unsigned int get_u16(const unsigned char* p) noexcept nogil:
    return p[0] | (<unsigned int>p[1] << 8)


cdef inline uint32_t get_u32(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16)
            | (<uint32_t>p[3] << 24))


cdef inline int get_i32(const unsigned char* p) noexcept nogil:
    return <int>get_u32(p)


cdef inline double get_f64(const unsigned char* p) noexcept nogil:
    cdef uint64_t u = 0
    cdef double x
    cdef int i
    for i in range(8):
        u |= (<uint64_t>p[i]) << (8 * i)
    memcpy(&x, &u, 8)
    return x


cdef unsigned char* put_acc(unsigned char* p, const Acc* a, const double* per,
                            int nper) noexcept nogil:
    """A window accumulator in the twin's _ACC_FIELDS order, then its periods."""
    cdef int j
    p = put_f64(p, a.start)
    p = put_f64(p, a.delta)
    p = put_f64(p, a.covered)
    p = put_f64(p, a.vmin)
    p = put_f64(p, a.vmax)
    p = put_f64(p, a.first)
    p = put_f64(p, a.last)
    p = put_i32(p, a.samples)
    p = put_i32(p, a.bad)
    p = put_i32(p, a.rollovers)
    p = put_i32(p, a.resets)
    p = put_u8(p, a.estimated)
    p = put_f64(p, a.peak)
    p = put_f64(p, a.peak_at)
    for j in range(nper):
        p = put_f64(p, per[j])
    return p


cdef const unsigned char* get_acc(const unsigned char* p, Acc* a, double* per,
                                  int nper) noexcept nogil:
    cdef int j
    a.start = get_f64(p)
    a.delta = get_f64(p + 8)
    a.covered = get_f64(p + 16)
    a.vmin = get_f64(p + 24)
    a.vmax = get_f64(p + 32)
    a.first = get_f64(p + 40)
    a.last = get_f64(p + 48)
    a.samples = get_i32(p + 56)
    a.bad = get_i32(p + 60)
    a.rollovers = get_i32(p + 64)
    a.resets = get_i32(p + 68)
    a.estimated = p[72]
    a.peak = get_f64(p + 73)
    a.peak_at = get_f64(p + 81)
    p += ACC_SIZE
    for j in range(nper):
        per[j] = get_f64(p)
        p += 8
    return p


cdef unsigned char* put_rec(unsigned char* p, const Rec* r, const double* per,
                            int nper) noexcept nogil:
    """A window record without its point id (WINDOW_COLUMNS[1:] in order), then its periods."""
    cdef int j
    p = put_u8(p, r.interval)
    p = put_u8(p, r.kind)
    p = put_i32(p, r.revision)
    p = put_u8(p, r.estimated)
    p = put_f64(p, r.start)
    p = put_f64(p, r.end)
    p = put_f64(p, r.delta)
    p = put_f64(p, r.first)
    p = put_f64(p, r.last)
    p = put_f64(p, r.mean)
    p = put_f64(p, r.vmin)
    p = put_f64(p, r.vmax)
    p = put_i32(p, r.rollovers)
    p = put_i32(p, r.resets)
    p = put_i32(p, r.samples)
    p = put_i32(p, r.bad)
    p = put_f64(p, r.coverage)
    p = put_f64(p, r.peak)
    p = put_f64(p, r.peak_at)
    p = put_u8(p, r.gap)
    for j in range(nper):
        p = put_f64(p, per[j])
    return p


cdef const unsigned char* get_rec(const unsigned char* p, Rec* r, double* per,
                                  int nper) noexcept nogil:
    cdef int j
    r.interval = p[0]
    r.kind = p[1]
    r.revision = get_i32(p + 2)
    r.estimated = p[6]
    r.start = get_f64(p + 7)
    r.end = get_f64(p + 15)
    r.delta = get_f64(p + 23)
    r.first = get_f64(p + 31)
    r.last = get_f64(p + 39)
    r.mean = get_f64(p + 47)
    r.vmin = get_f64(p + 55)
    r.vmax = get_f64(p + 63)
    r.rollovers = get_i32(p + 71)
    r.resets = get_i32(p + 75)
    r.samples = get_i32(p + 79)
    r.bad = get_i32(p + 83)
    r.coverage = get_f64(p + 87)
    r.peak = get_f64(p + 95)
    r.peak_at = get_f64(p + 103)
    r.gap = p[111]
    p += REC_SIZE
    for j in range(nper):
        per[j] = get_f64(p)
        p += 8
    return p


cdef int rec_from_tuple(Rec* r, tuple rec) except -1:
    (r.point, r.interval, r.kind, r.revision, r.estimated, r.start, r.end, r.delta,
     r.first, r.last, r.mean, r.vmin, r.vmax, r.rollovers, r.resets, r.samples,
     r.bad, r.coverage, r.peak, r.peak_at, r.gap) = rec
    return 0


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

    cdef tuple _rec_tuple(self, Rec* r):
        return (r.point, r.interval, r.kind, r.revision, r.estimated, r.start, r.end, r.delta,
                r.first, r.last, r.mean, r.vmin, r.vmax, r.rollovers, r.resets, r.samples,
                r.bad, r.coverage, r.peak, r.peak_at, r.gap)

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
            lst.append((self._rec_tuple(r), tuple([rp[i] for i in range(self.nper)])))
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

    def close_until(self, double t):
        """Close every window (and demand block) whose end + grace <= t, and return them.

        Returns (windows, blocks): dicts of column name -> array (WINDOW_COLUMNS plus `periods`,
        n_periods values per window; BLOCK_COLUMNS), in the order the windows completed.
        """
        cdef int p, j
        cdef double nxt, due
        cdef Py_ssize_t i, n = 0, kept = 0
        if t >= self.next_due:
            nxt = INF
            for p in range(self.npts):
                if self.pts[p].active:
                    due = self._force(&self.pts[p], t)
                    if due < nxt:
                        nxt = due
            self.next_due = nxt
        for i in range(self.qlen):
            if self.q[i].due <= t:
                n += 1
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
        for i in range(self.qlen):
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
        self.qlen = kept
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

        The layout is in docs/kernel.md; the twin writes the same bytes. Written straight from
        the C structs into one bytes object: no Python object per point.
        """
        cdef int nk = self.nk, nper = self.nper, npts = self.npts, p, k, j
        cdef Py_ssize_t rsize = REC_SIZE + 8 * nper
        cdef Py_ssize_t fixed = POINT_SIZE + nk * (ACC_SIZE + 8 * nper)
        cdef Py_ssize_t i, klen, total = HEAD_SIZE, count = 0
        cdef const char* kb
        cdef Point* st
        cdef Cold* cd
        cdef Rec rtmp
        cdef double* ptmp = NULL
        cdef unsigned char* w
        cdef unsigned char* buf
        # Pending windows and blocks grouped by point (a counting sort): one pass each, so a
        # snapshot is linear in points + pending records. qat[p]..qat[p + 1] index qorder.
        cdef Py_ssize_t* qat = <Py_ssize_t*>calloc(npts + 1, sizeof(Py_ssize_t))
        cdef Py_ssize_t* bat = <Py_ssize_t*>calloc(npts + 1, sizeof(Py_ssize_t))
        cdef Py_ssize_t* nrev = <Py_ssize_t*>calloc(npts + 1, sizeof(Py_ssize_t))
        cdef Py_ssize_t* qorder = <Py_ssize_t*>malloc((self.qlen + 1) * sizeof(Py_ssize_t))
        cdef Py_ssize_t* border = <Py_ssize_t*>malloc((self.blen + 1) * sizeof(Py_ssize_t))
        cdef bytes out
        try:
            if qat == NULL or bat == NULL or nrev == NULL or qorder == NULL or border == NULL:
                raise MemoryError("kernel: no memory for a snapshot")
            self._group(qat, qorder, npts, 0)
            self._group(bat, border, npts, 1)
            for pid, lst in self.revisable.items():
                if 0 <= pid < npts:
                    nrev[<int>pid] = len(lst)
            for p in range(npts):
                if not self.pts[p].active:
                    continue
                PyUnicode_AsUTF8AndSize(self.keys[p], &klen)
                if klen > 0xFFFF:  # configure_point refuses these (MAX_KEY_BYTES)
                    raise ValueError(f"point {self.keys[p][:40]}...: key too long")
                total += (2 + klen + fixed + 12 + (qat[p + 1] - qat[p]) * rsize
                          + (bat[p + 1] - bat[p]) * BLOCK_SIZE + nrev[p] * rsize)
                count += 1
            ptmp = <double*>malloc((nper + 1) * sizeof(double))
            if ptmp == NULL:
                raise MemoryError("kernel: no memory for a snapshot")
            out = PyBytes_FromStringAndSize(NULL, total)
            buf = <unsigned char*>PyBytes_AS_STRING(out)
            w = buf
            memcpy(w, b"IWK", 3)  # the twin's _MAGIC
            w = put_u8(w + 3, KERNEL_SNAPSHOT_VERSION)
            w = put_u32(w, 0)  # the checksum, once the rest is written
            w = put_u16(w, nk)
            w = put_u16(w, nper)
            w = put_u32(w, <uint32_t>count)
            for p in range(npts):
                st = &self.pts[p]
                if not st.active:
                    continue
                cd = &self.cold[p]
                kb = PyUnicode_AsUTF8AndSize(self.keys[p], &klen)
                w = put_u16(w, <unsigned int>klen)
                memcpy(w, kb, klen)
                w += klen
                w = put_u8(w, st.kind)
                w = put_f64(w, st.tseen)
                w = put_u8(w, st.based)
                w = put_f64(w, st.t0)
                w = put_f64(w, st.v0)
                w = put_f64(w, st.cstart)
                w = put_i32(w, cd.pend_bad)
                w = put_f64(w, cd.pend_t)
                w = put_f64(w, st.cell.delta)
                w = put_f64(w, st.cell.covered)
                w = put_f64(w, st.cell.vmin)
                w = put_f64(w, st.cell.vmax)
                w = put_f64(w, st.cell.first)
                w = put_f64(w, st.cell.last)
                w = put_i32(w, st.cell.samples)
                w = put_i32(w, cd.bad)
                w = put_i32(w, cd.rollovers)
                w = put_i32(w, cd.resets)
                w = put_u8(w, st.cell.estimated)
                for k in range(nk):
                    w = put_acc(w, &self.wins[p * nk + k], &self.wper[(p * nk + k) * nper],
                                nper)
                w = put_u32(w, <uint32_t>(qat[p + 1] - qat[p]))
                for i in range(qat[p], qat[p + 1]):
                    w = put_rec(w, &self.q[qorder[i]], &self.qper[qorder[i] * nper], nper)
                w = put_u32(w, <uint32_t>(bat[p + 1] - bat[p]))
                for i in range(bat[p], bat[p + 1]):
                    w = put_f64(w, self.bq[border[i]].start)
                    w = put_f64(w, self.bq[border[i]].end)
                    w = put_f64(w, self.bq[border[i]].demand)
                    w = put_f64(w, self.bq[border[i]].coverage)
                w = put_u32(w, <uint32_t>nrev[p])
                if nrev[p]:  # rare (a counter in a gap): these records are Python tuples
                    for rec, per in self.revisable[p]:
                        rec_from_tuple(&rtmp, rec)
                        for j in range(nper):
                            ptmp[j] = per[j]
                        w = put_rec(w, &rtmp, ptmp, nper)
            if w - buf != total:
                raise SystemError(f"kernel: snapshot wrote {w - buf} of {total} bytes")
        finally:
            free(qat)
            free(bat)
            free(nrev)
            free(qorder)
            free(border)
            free(ptmp)
        put_u32(buf + 4, crc32(memoryview(out)[8:]))
        return out

    cdef void _group(self, Py_ssize_t* at, Py_ssize_t* order, int npts, int blocks) noexcept:
        """Counting sort of the record queue (or the blocks) by point, keeping their order."""
        cdef Py_ssize_t i, n = self.blen if blocks else self.qlen, c
        cdef int p
        for i in range(n):
            p = self.bq[i].point if blocks else self.q[i].point
            at[p + 1] += 1
        for p in range(npts):
            at[p + 1] += at[p]
        for i in range(n):
            p = self.bq[i].point if blocks else self.q[i].point
            c = at[p]
            order[c] = i
            at[p] = c + 1
        for p in range(npts, 0, -1):  # at[p] now holds where p + 1 starts: shift back
            at[p] = at[p - 1]
        at[0] = 0

    cdef list _walk(self, const unsigned char* buf, Py_ssize_t n, Py_ssize_t count):
        """Check the structure of every point; returns (key, offset of its kind byte) of each.

        The same checks, in the same order and with the same messages, as the twin's _walk:
        nothing is restored from a snapshot that fails any of them, and nothing is read out
        of bounds.
        """
        cdef Py_ssize_t pos = HEAD_SIZE, i, m, r, size, klen
        cdef Py_ssize_t rsize = REC_SIZE + 8 * self.nper
        cdef Py_ssize_t fixed = POINT_SIZE + self.nk * (ACC_SIZE + 8 * self.nper)
        cdef int part
        cdef set seen = set()
        cdef list out = []
        for i in range(count):
            if n - pos < 2:
                raise _corrupt(f"point {i + 1} of {count} ends early")
            klen = get_u16(buf + pos)
            pos += 2
            if n - pos < klen + fixed:
                raise _corrupt(f"point {i + 1} of {count} ends early")
            try:
                key = PyUnicode_DecodeUTF8(<const char*>buf + pos, klen, NULL)
            except UnicodeDecodeError:
                raise _corrupt(f"point {i + 1} of {count}: its key is not UTF-8") from None
            if key in seen:
                raise _corrupt(f"point {i + 1} of {count}: key {key!r} appears twice")
            seen.add(key)
            pos += klen
            if buf[pos] > 2:  # COUNTER, RATE, GAUGE
                raise _corrupt(f"point {i + 1} of {count} ({key!r}): unknown kind {<int>buf[pos]}")
            out.append((key, pos))
            pos += fixed
            for part in range(3):  # pending windows, demand blocks, revisable windows
                size = BLOCK_SIZE if part == 1 else rsize
                if n - pos < 4:
                    raise _corrupt(f"point {i + 1} of {count} ({key!r}) ends early")
                m = get_u32(buf + pos)
                pos += 4
                if m > (n - pos) // size:
                    raise _corrupt(f"point {i + 1} of {count} ({key!r}) ends early")
                if part != 1:
                    for r in range(m):
                        # an interval indexes per-interval arrays when the record is revised
                        if buf[pos + r * size] >= self.nk:
                            raise _corrupt(
                                f"point {i + 1} of {count} ({key!r}): a window of interval "
                                f"{<int>buf[pos + r * size]} of {self.nk}")
                pos += m * size
        if pos != n:
            raise _corrupt(f"{n - pos} bytes after the last point")
        return out

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
        cdef double* ptmp
        cdef list chosen = []
        for key, at in self._walk(buf, n, count):
            p = ids.get(key)
            if p is None or not 0 <= p < self.npts:
                continue
            pid = p
            st = &self.pts[pid]
            if not st.active or self.keys[pid] != key or st.kind != buf[at]:
                continue
            cstart = get_f64(buf + at + CSTART_AT)
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
                r = buf + at + 1
                st.tseen = get_f64(r)
                st.based = r[8]
                st.t0 = get_f64(r + 9)
                st.v0 = get_f64(r + 17)
                st.cstart = get_f64(r + 25)
                cd.pend_bad = get_i32(r + 33)
                cd.pend_t = get_f64(r + 37)
                r += 45
                cd.c = g + self.off
                st.cend = self.grid[g + 1]
                st.cell.delta = get_f64(r)
                st.cell.covered = get_f64(r + 8)
                st.cell.vmin = get_f64(r + 16)
                st.cell.vmax = get_f64(r + 24)
                st.cell.first = get_f64(r + 32)
                st.cell.last = get_f64(r + 40)
                st.cell.samples = get_i32(r + 48)
                cd.bad = get_i32(r + 52)
                cd.rollovers = get_i32(r + 56)
                cd.resets = get_i32(r + 60)
                st.cell.estimated = r[64]
                r += 65
                for k in range(nk):
                    r = get_acc(r, &self.wins[pid * nk + k], &self.wper[(pid * nk + k) * nper],
                                nper)
                m = get_u32(r)
                r += 4
                for i in range(m):
                    rec = self._new_rec()
                    r = get_rec(r, rec, &self.qper[(self.qlen - 1) * nper], nper)
                    rec.point = pid
                    rec.due = rec.end + cd.grace
                m = get_u32(r)
                r += 4
                for i in range(m):
                    self._push_block(pid, get_f64(r + 8) + cd.grace, get_f64(r), get_f64(r + 8),
                                     get_f64(r + 16), get_f64(r + 24))
                    r += BLOCK_SIZE
                m = get_u32(r)
                r += 4
                revisable = []
                for i in range(m):
                    r = get_rec(r, &rtmp, ptmp, nper)
                    rtmp.point = pid
                    revisable.append((self._rec_tuple(&rtmp),
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
