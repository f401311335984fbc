"""Hypothesis properties: twins agree bit for bit, batch splits change nothing, energy is conserved.

Random sample streams of counters (with wraps, resets, glitches), rates and gauges.
"""

from __future__ import annotations

import itertools
import math
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kernel.conftest import (
    DAY0,
    NO_EXT,
    batch,
    build,
    kernel,
    load,
    records,
    rows_of,
    streams,
)

pytestmark = pytest.mark.twin

# `km` is a module, not per-example state: sharing it across examples is safe.
PROP = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
KINDS = ("counter", "rate", "gauge")

splits = st.lists(st.integers(0, 200), max_size=6)


def run(mod: ModuleType, rows: list[Any], cuts: list[int], mid_close: bool = False) -> Any:
    k = build(mod)
    bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    out = []
    snaps = []
    for a, b in itertools.pairwise(bounds):
        k.ingest(*batch(rows[a:b]))
        if mid_close:
            out.append(k.close_until(rows[b - 1][1]))
            # mid-stream: open cells, windows waiting for their grace, gap windows
            snaps.append(k.snapshot())
    out.append(k.close_until(DAY0 + 5 * 3600.0 + 10.0))
    flat = []
    for wins, blocks in out:
        flat.append({n: c.tobytes() for n, c in wins.items()})
        flat.append({n: c.tobytes() for n, c in blocks.items()})
    return flat, k.snapshot(), k.stats(), snaps


@pytest.mark.skipif(NO_EXT, reason="IRONWATT_NO_EXTENSIONS=1: no compiled kernel to compare")
@settings(PROP, max_examples=250)
@given(streams, splits)
def test_compiled_equals_pure_bitwise(streams_: Any, cuts: list[int]) -> None:
    rows = rows_of(streams_)
    compiled = load("compiled")
    pure = load("pure")
    # outputs, stats and every snapshot (after each batch and at the end): byte for byte
    assert run(compiled, rows, cuts, mid_close=True) == run(pure, rows, cuts, mid_close=True)


def sliced(mod: ModuleType, rows: list[Any], cuts: list[int], limit: int) -> Any:
    """`run`, the windows taken `limit` at a time (and named first by due_keys)."""
    k = build(mod)
    bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    whole: dict[str, bytearray] = {}
    blocks: dict[str, bytearray] = {}
    keys_seen: dict[str, bytearray] = {}
    ends = [rows[b - 1][1] for a, b in itertools.pairwise(bounds)] + [DAY0 + 5 * 3600.0 + 10.0]
    for at, t in enumerate(ends):
        if at < len(bounds) - 1:
            k.ingest(*batch(rows[bounds[at] : bounds[at + 1]]))
        keys = k.due_keys(t)
        for name, col in keys.items():
            keys_seen.setdefault(name, bytearray()).extend(col.tobytes())
        first = True
        while True:
            wins, blks = k.close_until(t, limit)
            n = len(wins["point"])
            assert n <= limit
            for name, col in wins.items():
                whole.setdefault(name, bytearray()).extend(col.tobytes())
            if not first:
                assert len(blks["point"]) == 0  # every due block came with the first slice
            for name, col in blks.items():
                blocks.setdefault(name, bytearray()).extend(col.tobytes())
            first = False
            if n < limit:
                break
    return whole, blocks, keys_seen, k.snapshot()


@PROP
@given(streams, splits, st.integers(1, 40))
def test_slices_add_up_to_the_whole_close(
    km: ModuleType, streams_: Any, cuts: list[int], limit: int
) -> None:
    """close_until(t, limit) repeated until short returns what one close_until(t) does, in the
    same order, and due_keys named exactly those rows beforehand; the kernel ends the same."""
    rows = rows_of(streams_)
    whole, blocks, keys, snapshot = sliced(km, rows, cuts, limit)
    ref_whole, ref_blocks, ref_keys, ref_snapshot = sliced(km, rows, cuts, 10**9)
    assert whole == ref_whole
    assert blocks == ref_blocks
    assert snapshot == ref_snapshot
    assert keys == ref_keys
    assert keys.keys() == {"point", "interval", "start", "revision"}
    for name in keys:
        assert keys[name] == whole[name]


@pytest.mark.skipif(NO_EXT, reason="IRONWATT_NO_EXTENSIONS=1: no compiled kernel to compare")
@settings(PROP, max_examples=100)
@given(streams, splits, st.integers(1, 40))
def test_compiled_slices_equal_pure_slices(streams_: Any, cuts: list[int], limit: int) -> None:
    rows = rows_of(streams_)
    assert sliced(load("compiled"), rows, cuts, limit) == sliced(load("pure"), rows, cuts, limit)


@PROP
@given(streams, splits, splits)
def test_batch_splits_change_nothing(
    km: ModuleType, streams_: Any, a: list[int], b: list[int]
) -> None:
    rows = rows_of(streams_)
    assert run(km, rows, a)[:2] == run(km, rows, b)[:2]


@PROP
@given(st.lists(st.tuples(st.floats(1.0, 200.0), st.floats(0.0, 30.0)), min_size=2, max_size=120))
def test_conservation_across_window_lengths(
    km: ModuleType, steps: list[tuple[float, float]]
) -> None:
    k = kernel(km, (900, 3600), hours=8.0)
    k.configure_point(0, "m.energy", km.COUNTER, since=DAY0, rollover=1000.0)
    k.configure_point(1, "m.power", km.RATE, since=DAY0)
    rows = []
    t, v, total = DAY0 + 0.5, 990.0, 0.0
    for dt, dv in steps:
        rows += [(0, t, v), (1, t, 100.0 + dv)]
        t += dt
        v = (v + dv) % 1000.0
        total += dv
    total -= steps[-1][1]
    k.ingest(*batch(rows))
    recs = records(k.close_until(DAY0 + 8 * 3600.0 + 1)[0])
    for pid in (0, 1):
        hours = [r for r in recs if r["point"] == pid and r["interval"] == 1]
        quarters = [r for r in recs if r["point"] == pid and r["interval"] == 0]
        for h in hours:
            inside = [q["delta"] for q in quarters if h["start"] <= q["start"] < h["end"]]
            assert len(inside) == 4
            if math.isnan(h["delta"]):
                assert all(math.isnan(x) for x in inside)
            else:
                assert sum(inside) == pytest.approx(h["delta"], rel=1e-9, abs=1e-9)
    ctr = [r for r in recs if r["point"] == 0 and r["interval"] == 1]
    got = sum(r["delta"] for r in ctr if not math.isnan(r["delta"]))
    assert got == pytest.approx(total, rel=1e-9, abs=1e-9)
    for r in recs:  # every window, quarters too: a wrap is the window's where it passes 1000
        if r["point"] == 0 and not math.isnan(r["delta"]):
            expect = r["last"] - r["first"] + r["rollovers"] * 1000.0
            assert r["delta"] == pytest.approx(expect, rel=1e-9, abs=1e-6)


@PROP
@given(streams)
def test_counters_never_negative_nor_implausible(km: ModuleType, streams_: Any) -> None:
    rows = rows_of(streams_)
    k = build(km)
    k.ingest(*batch(rows))
    recs = records(k.close_until(DAY0 + 5 * 3600.0 + 10.0)[0], 2)
    for r in recs:
        if r["point"] != 0 or math.isnan(r["delta"]):
            continue
        assert r["delta"] >= 0.0
        assert r["delta"] <= 36000.0 * (r["end"] - r["start"]) / 3600.0 * (1 + 1e-9)
        assert 0.0 <= r["coverage"] <= 1.0 + 1e-12
        assert 0.0 <= r["first"] < 1000.0
        assert 0.0 <= r["last"] < 1000.0


@PROP
@given(streams)
def test_an_unforced_close_takes_only_what_readings_closed(km: ModuleType, streams_: Any) -> None:
    """close_until(t, force=False) closes no open cell: every window it returns ends at or
    before its point's last reading, then a forced close takes the rest; together they are
    what one forced close returns (and the twins agree: the property runs on both)."""
    rows = rows_of(streams_)
    end = DAY0 + 5 * 3600.0 + 10.0
    k = build(km)
    k.ingest(*batch(rows))
    unforced = records(k.close_until(end, 0, False)[0], 2)
    forced = records(k.close_until(end)[0], 2)
    last = {pid: max(t for p, t, _, _ in rows if p == pid) for pid in {r[0] for r in rows}}
    for r in unforced:
        assert r["end"] <= last[r["point"]]
        assert r["gap"] == 0
    ref = build(km)
    ref.ingest(*batch(rows))
    whole = records(ref.close_until(end)[0], 2)

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["point"], r["interval"], r["start"], r["revision"])

    assert sorted(map(key, unforced + forced)) == sorted(map(key, whole))
    # the same windows, value for value (repr: NaN equals NaN)
    assert sorted(map(repr, unforced + forced)) == sorted(map(repr, whole))


@PROP
@given(streams)
def test_forcing_every_point_then_an_unforced_close_is_a_forced_close(
    km: ModuleType, streams_: Any
) -> None:
    rows = rows_of(streams_)
    end = DAY0 + 5 * 3600.0 + 10.0
    k, ref = build(km), build(km)
    k.ingest(*batch(rows))
    ref.ingest(*batch(rows))
    k.force_points([0, 1, 2, 99, -1], end)  # ids no point has are ignored
    got = records(k.close_until(end, 0, False)[0], 2)
    assert list(map(repr, got)) == list(map(repr, records(ref.close_until(end)[0], 2)))
    assert k.snapshot() == ref.snapshot()
