"""Snapshots written by earlier builds still load, and the same state still writes the same bytes.

The files in tests/kernel/data were written before the snapshot code left the kernel classes
(kernel format 2, aggregator envelope 1; envelope 2 since groups attach their state); they are
the format as it is on disks in the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.kernel.conftest import DAY0, feed, kernel
from tests.kernel.test_aggregate import SPECS, gap_state, make
from tests.kernel.test_snapshot import KEYS, impls, outputs, rich, rich_kernel, rich_rows

pytestmark = pytest.mark.twin

DATA = Path(__file__).parent / "data"
SMALL_KEYS = {"m0.p": 0, "m1.p": 1, "m2.p": 2}


def old(name: str) -> bytes:
    return (DATA / name).read_bytes()


def small_kernel(mod: ModuleType) -> Any:
    """Two intervals, no TOU periods, demand: the other shape of snapshot."""
    k = kernel(mod, (60, 900), hours=2.0, demand_interval=1)
    for pid in SMALL_KEYS.values():
        kind = mod.RATE if pid else mod.COUNTER
        k.configure_point(pid, f"m{pid}.p", kind, since=DAY0, demand=pid == 1)
    return k


def small_rows(lo: int, hi: int) -> list[tuple[int, float, float, int]]:
    return [
        (pid, DAY0 + 10.0 * s + 0.01 * pid, float(pid * 100 + s % 13), 0)
        for s in range(lo, hi)
        for pid in SMALL_KEYS.values()
    ]


def small(mod: ModuleType) -> Any:
    k = small_kernel(mod)
    feed(k, small_rows(0, 91))
    k.close_until(DAY0 + 900.5)
    return k


def test_the_same_state_writes_the_bytes_earlier_builds_wrote(km: ModuleType) -> None:
    assert rich(km).snapshot() == old("kernel_snapshot_v2_rich.bin")
    assert small(km).snapshot() == old("kernel_snapshot_v2_small.bin")


def test_an_old_rich_kernel_snapshot_resumes_exactly(km: ModuleType) -> None:
    data = old("kernel_snapshot_v2_rich.bin")
    later = rich_rows(DAY0 + 906.0, DAY0 + 1400.0)
    expected = outputs(rich(km), later, DAY0 + 5 * 3600.0)
    for mod in impls(km):
        k = rich_kernel(mod)
        assert k.restore(data, KEYS) == list(KEYS)
        assert k.snapshot() == data
        assert outputs(k, later, DAY0 + 5 * 3600.0) == expected


def test_an_old_small_kernel_snapshot_resumes_exactly(km: ModuleType) -> None:
    data = old("kernel_snapshot_v2_small.bin")
    later = small_rows(91, 400)
    expected = outputs(small(km), later, DAY0 + 7200.0)
    assert expected[0]  # windows and demand blocks to compare
    assert expected[1]
    for mod in impls(km):
        k = small_kernel(mod)
        assert k.restore(data, SMALL_KEYS) == list(SMALL_KEYS)
        assert k.snapshot() == data
        assert outputs(k, later, DAY0 + 7200.0) == expected


def test_an_old_aggregator_snapshot_resumes(km: ModuleType) -> None:
    """Envelope 1 (before groups attached their state) resumes and is written as envelope 2."""
    data = old("aggregator_snapshot_v1.bin")
    agg, now = gap_state(km)
    later = make(km, now)
    assert sorted(later.restore(data)) == sorted(s.key for s in SPECS)
    assert later.attached is None
    n = int.from_bytes(data[4:12], "little")
    again = later.snapshot()
    assert again[:3] + again[4 : 12 + n] == data[:3] + data[4 : 12 + n]  # the same kernel state
    assert again[3] == 2
    # The revisable windows as the old build wrote them (before windows carried their cost).
    old_windows = json.loads(data[12 + n :])
    assert json.loads(again[12 + n :]) == {"revisable": old_windows, "attached": None}
    assert agg.snapshot() == old("aggregator_snapshot_v2.bin")


def test_an_aggregator_snapshot_hands_back_what_was_attached(km: ModuleType) -> None:
    agg, now = gap_state(km)
    data = agg.snapshot({"groups": [1, 2.5, "x"]})
    later = make(km, now)
    later.restore(data)
    assert later.attached == {"groups": [1, 2.5, "x"]}
    assert later.snapshot({"groups": [1, 2.5, "x"]}) == data
