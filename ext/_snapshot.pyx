# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled kernel's snapshot codec: its C structs to the bytes of ext/_layout.py and back.

Mirrors ext/_snapshot_py.py (same bytes, same checks, same messages); the kernel (ext/_kernel.pyx)
decides which points a snapshot resumes.
"""

from zlib import crc32

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy

from ext._state cimport Acc, Blk, Cold, Point, Rec, Tables, rec_from_tuple

from ext._layout import ACC as _ACC
from ext._layout import BLOCK as _BLOCK
from ext._layout import CSTART_AT as _CSTART_AT
from ext._layout import HEAD as _HEAD
from ext._layout import KERNEL_SNAPSHOT_VERSION, MAGIC
from ext._layout import POINT as _POINT
from ext._layout import REC as _REC
from ext._layout import corrupt

# The layout's sizes as C constants (ext._layout's Structs are the reference): the header, a
# point's part after its key without the windows, one window accumulator without its periods,
# a window record without its periods, a demand block.
cdef enum:
    HEAD_SIZE = 16
    POINT_SIZE = 111  # kind 1, state 45, open cell 65
    ACC_SIZE = 89
    REC_SIZE = 112
    BLOCK_SIZE = 32
    CSTART_AT = 26  # cstart, from the kind byte: kind 1, tseen 8, based 1, t0 8, v0 8
if (_HEAD.size, _POINT.size, _ACC.size, _REC.size, _BLOCK.size, _CSTART_AT) != (
        HEAD_SIZE, POINT_SIZE, ACC_SIZE, REC_SIZE, BLOCK_SIZE, CSTART_AT):
    raise ImportError("ext._snapshot: snapshot layout differs from ext._layout's; rebuild")
if MAGIC != b"IWK":
    raise ImportError("ext._snapshot: snapshot magic differs from ext._layout's; rebuild")


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
    """A window accumulator in ext._layout's ACC_FIELDS order, then its periods."""
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


cdef void group(Py_ssize_t* at, Py_ssize_t* order, int npts, const Tables* t,
                int blocks) noexcept:
    """Counting sort of the record queue (or the blocks) by point, keeping their order."""
    cdef Py_ssize_t i, n = t.blen if blocks else t.qlen, c
    cdef int p
    for i in range(n):
        p = t.bq[i].point if blocks else t.q[i].point
        at[p + 1] += 1
    for p in range(npts):
        at[p + 1] += at[p]
    for i in range(n):
        p = t.bq[i].point if blocks else t.q[i].point
        c = at[p]
        order[c] = i
        at[p] = c + 1
    for p in range(npts, 0, -1):  # at[p] now holds where p + 1 starts: shift back
        at[p] = at[p - 1]
    at[0] = 0


cdef bytes encode(const Tables* t, list keys, dict revisable):
    """The snapshot of a kernel's tables: `keys` its point keys by id, `revisable` its gap
    windows by id. Written straight from the C structs into one bytes object, no Python object
    per point; the twin's codec writes the same bytes."""
    cdef int nk = t.nk, nper = t.nper, npts = t.npts, p, k, j
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
    cdef Py_ssize_t* qorder = <Py_ssize_t*>malloc((t.qlen + 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t* border = <Py_ssize_t*>malloc((t.blen + 1) * sizeof(Py_ssize_t))
    cdef bytes out
    try:
        if qat == NULL or bat == NULL or nrev == NULL or qorder == NULL or border == NULL:
            raise MemoryError("kernel: no memory for a snapshot")
        group(qat, qorder, npts, t, 0)
        group(bat, border, npts, t, 1)
        for pid, lst in revisable.items():
            if 0 <= pid < npts:
                nrev[<int>pid] = len(lst)
        for p in range(npts):
            if not t.pts[p].active:
                continue
            PyUnicode_AsUTF8AndSize(keys[p], &klen)
            if klen > 0xFFFF:  # configure_point refuses these (MAX_KEY_BYTES)
                raise ValueError(f"point {keys[p][:40]}...: key too long")
            total += (2 + klen + fixed + 12 + (qat[p + 1] - qat[p]) * rsize
                      + (bat[p + 1] - bat[p]) * BLOCK_SIZE + nrev[p] * rsize)
            count += 1
        ptmp = <double*>malloc((nper + 1) * sizeof(double))
        if ptmp == NULL:
            raise MemoryError("kernel: no memory for a snapshot")
        out = PyBytes_FromStringAndSize(NULL, total)
        buf = <unsigned char*>PyBytes_AS_STRING(out)
        w = buf
        memcpy(w, b"IWK", 3)  # MAGIC (checked at import)
        w = put_u8(w + 3, KERNEL_SNAPSHOT_VERSION)
        w = put_u32(w, 0)  # the checksum, once the rest is written
        w = put_u16(w, nk)
        w = put_u16(w, nper)
        w = put_u32(w, <uint32_t>count)
        for p in range(npts):
            st = &t.pts[p]
            if not st.active:
                continue
            cd = &t.cold[p]
            kb = PyUnicode_AsUTF8AndSize(keys[p], &klen)
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
                w = put_acc(w, &t.wins[p * nk + k], &t.wper[(p * nk + k) * nper],
                            nper)
            w = put_u32(w, <uint32_t>(qat[p + 1] - qat[p]))
            for i in range(qat[p], qat[p + 1]):
                w = put_rec(w, &t.q[qorder[i]], &t.qper[qorder[i] * nper], nper)
            w = put_u32(w, <uint32_t>(bat[p + 1] - bat[p]))
            for i in range(bat[p], bat[p + 1]):
                w = put_f64(w, t.bq[border[i]].start)
                w = put_f64(w, t.bq[border[i]].end)
                w = put_f64(w, t.bq[border[i]].demand)
                w = put_f64(w, t.bq[border[i]].coverage)
            w = put_u32(w, <uint32_t>nrev[p])
            if nrev[p]:  # rare (a counter in a gap): these records are Python tuples
                for rec, per in revisable[p]:
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


cdef list walk(const unsigned char* buf, Py_ssize_t n, Py_ssize_t count, int nk, int nper):
    """Check the structure of every point; returns (key, offset of its kind byte) of each.

    The same checks, in the same order and with the same messages, as the twin's walk:
    nothing is restored from a snapshot that fails any of them, and nothing is read out
    of bounds.
    """
    cdef Py_ssize_t pos = HEAD_SIZE, i, m, r, size, klen
    cdef Py_ssize_t rsize = REC_SIZE + 8 * nper
    cdef Py_ssize_t fixed = POINT_SIZE + nk * (ACC_SIZE + 8 * nper)
    cdef int part
    cdef set seen = set()
    cdef list out = []
    for i in range(count):
        if n - pos < 2:
            raise corrupt(f"point {i + 1} of {count} ends early")
        klen = get_u16(buf + pos)
        pos += 2
        if n - pos < klen + fixed:
            raise corrupt(f"point {i + 1} of {count} ends early")
        try:
            key = PyUnicode_DecodeUTF8(<const char*>buf + pos, klen, NULL)
        except UnicodeDecodeError:
            raise corrupt(f"point {i + 1} of {count}: its key is not UTF-8") from None
        if key in seen:
            raise corrupt(f"point {i + 1} of {count}: key {key!r} appears twice")
        seen.add(key)
        pos += klen
        if buf[pos] > 2:  # COUNTER, RATE, GAUGE
            raise corrupt(f"point {i + 1} of {count} ({key!r}): unknown kind {<int>buf[pos]}")
        out.append((key, pos))
        pos += fixed
        for part in range(3):  # pending windows, demand blocks, revisable windows
            size = BLOCK_SIZE if part == 1 else rsize
            if n - pos < 4:
                raise corrupt(f"point {i + 1} of {count} ({key!r}) ends early")
            m = get_u32(buf + pos)
            pos += 4
            if m > (n - pos) // size:
                raise corrupt(f"point {i + 1} of {count} ({key!r}) ends early")
            if part != 1:
                for r in range(m):
                    # an interval indexes per-interval arrays when the record is revised
                    if buf[pos + r * size] >= nk:
                        raise corrupt(
                            f"point {i + 1} of {count} ({key!r}): a window of interval "
                            f"{<int>buf[pos + r * size]} of {nk}")
            pos += m * size
    if pos != n:
        raise corrupt(f"{n - pos} bytes after the last point")
    return out


cdef double cstart_at(const unsigned char* buf, Py_ssize_t at) noexcept nogil:
    """The open cell's start of the point whose kind byte is at `at`."""
    return get_f64(buf + at + CSTART_AT)


cdef const unsigned char* get_point(const unsigned char* r, Point* st, Cold* cd, Acc* wins,
                                    double* wper, int nk, int nper) noexcept nogil:
    """Read the point whose kind byte `r` points at (walked) into its structs: its state, open
    cell and nk windows. Returns where its lists begin: pending windows, blocks, gap windows."""
    cdef int k
    r += 1
    st.tseen = get_f64(r)
    st.based = r[8]
    st.t0 = get_f64(r + 9)
    st.v0 = get_f64(r + 17)
    st.cstart = get_f64(r + 25)
    cd.pend_bad = get_i32(r + 33)
    cd.pend_t = get_f64(r + 37)
    r += 45
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
        r = get_acc(r, &wins[k], &wper[k * nper], nper)
    return r


cdef const unsigned char* get_count(const unsigned char* r, Py_ssize_t* m) noexcept nogil:
    """The length of the list that follows (checked by walk)."""
    m[0] = get_u32(r)
    return r + 4


cdef const unsigned char* get_block(const unsigned char* r, Blk* b) noexcept nogil:
    """A demand block without its point and due time."""
    b.start = get_f64(r)
    b.end = get_f64(r + 8)
    b.demand = get_f64(r + 16)
    b.coverage = get_f64(r + 24)
    return r + BLOCK_SIZE
