"""Kernel throughput: 10 M samples over 10,000 points, three intervals, poll-cycle batches.

Prints samples/s of the compiled kernel, of its pure twin and of a floor (a minimal typed loop
compiled here), then the cost of a snapshot at 8,000 points (the daemon takes one at every
window close): its size, median snapshot() and restore() times of both kernels and the peak
of Python memory a compiled snapshot allocates. The last line is `RESULT kernel_msps=..
pure_msps=.. floor_msps=.. snapshot_ms=.. snapshot_bytes=.. ...`.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ.pop("IRONWATT_NO_EXTENSIONS", None)

from zoneinfo import ZoneInfo  # noqa: E402

from ext import _kernel_py  # noqa: E402
from gateway.energy.windows import edges_between  # noqa: E402

POINTS = 10_000
CYCLES = 1_000  # 1 s polls: 10 M samples over 16 min 40 s, crossing 1m, 15m and 1h edges
PURE_POINTS = 1_000  # the twin runs on a tenth of the points (same cycles), scaled per sample
INTERVALS = (60, 900, 3600)
GRACE = 2.0
RUNS = 5
SNAP_POINTS = 8_000  # 200 meters x 40 points, the daemon's sizing
SNAP_CYCLES = 61  # past the first 1m edge: every point has a queued window, all windows open
SNAP_RUNS = 7
TZ = ZoneInfo("Europe/Berlin")
T0 = 1_795_000_000.0 - 1_795_000_000.0 % 3600 + 3000  # HH:50:00 local (whole-hour offset)

# Data generator and the floor loop, in C, so neither Python nor the generation are timed.
HELPER = r"""
# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
from cpython.array cimport array, clone

def make(int points, int cycles, double t0):
    cdef Py_ssize_t n = <Py_ssize_t>points * cycles, i
    cdef array P = clone(array("i"), n, False), T = clone(array("d"), n, False)
    cdef array V = clone(array("d"), n, False), Q = clone(array("B"), n, False)
    cdef double[:] ctr = clone(array("d"), points, True)
    cdef unsigned int seed = 12345
    cdef int j, p, kind
    cdef double noise
    for p in range(points):
        ctr[p] = 1000.0 * (p % 50)
    i = 0
    for j in range(cycles):
        for p in range(points):
            seed = seed * 1103515245 + 12345
            noise = ((seed >> 8) & 0xFFFF) / 65536.0
            kind = p % 5  # 0,1: counter; 2,3: rate; 4: gauge
            P.data.as_ints[i] = p
            T.data.as_doubles[i] = t0 + j + (p % 97) * 0.005
            if kind < 2:
                ctr[p] += 0.01 + 0.02 * noise
                if ctr[p] >= 100000.0:
                    ctr[p] -= 100000.0
                V.data.as_doubles[i] = ctr[p]
            elif kind < 4:
                V.data.as_doubles[i] = 100.0 + 50.0 * noise
            else:
                V.data.as_doubles[i] = 20.0 + noise
            Q.data.as_uchars[i] = 1 if (seed >> 4) % 1000 == 0 else 0
            i += 1
    return P, T, V, Q

def series(Py_ssize_t n, double t0):
    cdef array T = clone(array("d"), n, False), V = clone(array("d"), n, False)
    cdef Py_ssize_t i
    for i in range(n):
        T.data.as_doubles[i] = t0 + i * 0.1
        V.data.as_doubles[i] = 100.0 + (i % 17)
    return T, V

def floor(const double[:] ts, const double[:] value, double width):
    # One series, one window size, trapezoid: the least work per sample that still integrates.
    cdef Py_ssize_t n = ts.shape[0], i, nw = 0
    cdef double t, v, t0 = ts[0], v0 = value[0], acc = 0.0, total = 0.0
    cdef double wend = t0 - (t0 % width) + width
    for i in range(1, n):
        t = ts[i]
        v = value[i]
        if t >= wend:
            total += acc
            acc = 0.0
            nw += 1
            wend += width
        acc += (v0 + v) * (t - t0)
        t0 = t
        v0 = v
    return total + acc, nw
"""


def build_helper() -> Any:
    """Compile HELPER into a temp dir (Cython + the C compiler) and import it."""
    try:
        from Cython.Build import cythonize
    except ImportError:
        sys.exit("bench/kernel.py needs Cython in this environment: pip install 'cython>=3,<4'")
    from setuptools import Distribution, Extension

    tmp = tempfile.mkdtemp(prefix="iw_bench_")
    src = Path(tmp) / "iw_bench_helper.pyx"
    src.write_text(HELPER)
    ext = Extension("iw_bench_helper", [str(src)], extra_compile_args=["-O2", "-ffp-contract=off"])
    dist = Distribution({"ext_modules": cythonize([ext], quiet=True), "script_name": "bench"})
    cmd: Any = dist.get_command_obj("build_ext")
    cmd.build_lib = tmp
    cmd.build_temp = tmp
    cmd.ensure_finalized()
    cmd.run()
    sys.path.insert(0, tmp)
    import iw_bench_helper  # type: ignore[import-not-found]

    return iw_bench_helper


def point_keys(points: int) -> list[str]:
    """Point keys in id order: ids % 5 are counters (0, 1), rates (2, 3), gauges (4)."""
    names = ("e", "e", "p", "p", "g")
    return [f"d{p // 20}.{names[p % 5]}{p}" for p in range(points)]


def make_kernel(mod: Any, points: int) -> Any:
    start = T0 - 3600
    end = T0 + CYCLES + 3600
    edges, masks, periods = mod.build_grid([edges_between(TZ, s, start, end) for s in INTERVALS])
    k = mod.Kernel(len(INTERVALS), demand_interval=1)
    k.extend_grid(edges, masks, periods)
    for p, key in enumerate(point_keys(points)):
        kind = p % 5
        if kind < 2:
            k.configure_point(
                p,
                key,
                mod.COUNTER,
                since=T0,
                rollover=100000.0,
                max_rate=3600.0,
                resolution=0.001,
                max_gap=3.0,
                grace=GRACE,
            )
        elif kind < 4:
            k.configure_point(
                p,
                key,
                mod.RATE,
                since=T0,
                max_gap=3.0,
                demand=kind == 2,
                grace=GRACE,
            )
        else:
            k.configure_point(p, key, mod.GAUGE, since=T0, max_gap=3.0, grace=GRACE)
    return k


def run(mod: Any, data: tuple[Any, ...], points: int) -> tuple[float, int]:
    """CPU seconds to ingest every cycle and close windows after each; windows emitted.

    CPU time of this (single-threaded) process rather than wall time: on a machine shared with
    other jobs it is what the kernel cost, not how long it waited for a core.
    """
    P, T, V, Q = (memoryview(a) for a in data)
    k = make_kernel(mod, points)
    emitted = 0
    t_start = time.process_time()
    for j in range(CYCLES):
        a = j * points
        b = a + points
        k.ingest(P[a:b], T[a:b], V[a:b], Q[a:b])
        wins, _blocks = k.close_until(T0 + j + 1.0)
        emitted += len(wins["point"])
    wins, _blocks = k.close_until(T0 + CYCLES + 60.0)
    emitted += len(wins["point"])
    return time.process_time() - t_start, emitted


def snapshot_kernel(mod: Any, data: tuple[Any, ...]) -> Any:
    """8,000 points after SNAP_CYCLES polls, closed just before the 1m windows are due."""
    k = make_kernel(mod, SNAP_POINTS)
    k.ingest(*data)
    k.close_until(T0 + SNAP_CYCLES - 1.0 + 0.5)  # the edge's windows wait for their grace
    return k


def measure_snapshot(mod: Any, data: tuple[Any, ...]) -> tuple[int, float, float, float]:
    """Bytes, median snapshot() ms, median restore() ms, peak traced MB of one snapshot()."""
    k = snapshot_kernel(mod, data)
    snap_ms = []
    blob = b""
    # Wall time here: the daemon's event loop waits for the whole call, whatever the load.
    for _ in range(SNAP_RUNS):
        t_start = time.perf_counter()
        blob = k.snapshot()
        snap_ms.append((time.perf_counter() - t_start) * 1000.0)
    target = make_kernel(mod, SNAP_POINTS)
    ids = {key: p for p, key in enumerate(point_keys(SNAP_POINTS))}
    rest_ms = []
    for _ in range(SNAP_RUNS):
        t_start = time.perf_counter()
        restored = target.restore(blob, ids)
        rest_ms.append((time.perf_counter() - t_start) * 1000.0)
    if len(restored) != SNAP_POINTS:
        sys.exit(f"restore resumed {len(restored)} of {SNAP_POINTS} points")
    tracemalloc.start()
    k.snapshot()
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return len(blob), statistics.median(snap_ms), statistics.median(rest_ms), peak


def main() -> None:
    helper = build_helper()
    from ext import _kernel

    data = helper.make(POINTS, CYCLES, T0)
    n = POINTS * CYCLES
    runs = [run(_kernel, data, POINTS) for _ in range(RUNS)]
    kernel_s = statistics.median(r[0] for r in runs)
    print(f"compiled: {n:,} samples, {runs[0][1]:,} windows, median {kernel_s:.3f} s")

    pdata = helper.make(PURE_POINTS, CYCLES, T0)
    pn = PURE_POINTS * CYCLES
    pruns = [run(_kernel_py, pdata, PURE_POINTS) for _ in range(RUNS)]
    pure_s = statistics.median(r[0] for r in pruns)
    print(
        f"pure: {pn:,} samples ({PURE_POINTS} points, scaled per sample), "
        f"{pruns[0][1]:,} windows, median {pure_s:.3f} s"
    )

    ts, vs = helper.series(n, T0)
    fl = []
    for _ in range(RUNS):
        t_start = time.process_time()
        helper.floor(ts, vs, 60.0)
        fl.append(time.process_time() - t_start)
    floor_s = statistics.median(fl)
    print(f"floor: {n:,} samples of one series into 1m windows, median {floor_s:.3f} s")

    sdata = helper.make(SNAP_POINTS, SNAP_CYCLES, T0)
    snap = measure_snapshot(_kernel, sdata)
    psnap = measure_snapshot(_kernel_py, sdata)
    for name, (size, s_ms, r_ms, peak) in (("compiled", snap), ("pure", psnap)):
        print(
            f"snapshot {name}: {SNAP_POINTS:,} points, {size:,} bytes, snapshot median "
            f"{s_ms:.1f} ms, restore median {r_ms:.1f} ms, peak Python memory {peak:.1f} MB"
        )

    kernel_msps = n / kernel_s / 1e6
    pure_msps = pn / pure_s / 1e6
    floor_msps = n / floor_s / 1e6
    print(
        f"compiled/pure {kernel_msps / pure_msps:.1f}x, floor/compiled "
        f"{floor_msps / kernel_msps:.1f}x, snapshot pure/compiled {psnap[1] / snap[1]:.0f}x, "
        f"restore pure/compiled {psnap[2] / snap[2]:.0f}x"
    )
    print(
        f"RESULT kernel_msps={kernel_msps:.1f} pure_msps={pure_msps:.2f} "
        f"floor_msps={floor_msps:.1f} snapshot_ms={snap[1]:.2f} snapshot_bytes={snap[0]} "
        f"restore_ms={snap[2]:.2f} snapshot_peak_mb={snap[3]:.1f} "
        f"pure_snapshot_ms={psnap[1]:.1f} pure_restore_ms={psnap[2]:.1f}"
    )


if __name__ == "__main__":
    main()
