# The compiled kernel's per-point state and output records as C structs (ext/_state_py.py holds
# the twin's): the kernel (ext/_kernel.pyx) computes on them, the snapshot codec
# (ext/_snapshot.pyx) writes and reads them. Declarations and inline helpers, no module of its own.

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


cdef struct Tables:
    # The kernel's arrays as the snapshot codec reads them: per point (npts, of which the
    # active ones count) its Point, Cold, nk windows and nk * nper TOU sums; the queues.
    int nk
    int nper
    int npts
    Point* pts
    Cold* cold
    Acc* wins
    double* wper
    Rec* q
    double* qper
    Py_ssize_t qlen
    Blk* bq
    Py_ssize_t blen


cdef inline int rec_from_tuple(Rec* r, tuple rec) except -1:
    """A WINDOW_COLUMNS row (a tuple, as revisable windows are kept) into a record."""
    (r.point, r.interval, r.kind, r.revision, r.estimated, r.start, r.end, r.delta,
     r.first, r.last, r.mean, r.vmin, r.vmax, r.rollovers, r.resets, r.samples,
     r.bad, r.coverage, r.peak, r.peak_at, r.gap) = rec
    return 0


cdef inline tuple rec_tuple(const Rec* r):
    """A record as its WINDOW_COLUMNS row."""
    return (r.point, r.interval, r.kind, r.revision, r.estimated, r.start, r.end, r.delta,
            r.first, r.last, r.mean, r.vmin, r.vmax, r.rollovers, r.resets, r.samples,
            r.bad, r.coverage, r.peak, r.peak_at, r.gap)
