"""Closes of many windows at once: the queue grows past its shrink threshold and gives the room
back, with nothing lost or changed; the twins still agree byte for byte afterwards."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from tests.kernel.conftest import DAY0, NO_EXT, batch, kernel, load

pytestmark = pytest.mark.twin

POINTS = 150


def scenario(mod: ModuleType) -> list[Any]:
    """150 counters polled for 2 min, silent 80 min (12,000 windows due at once: past the
    8,192 rows where the compiled queue shrinks afterwards), then polled again."""
    k = kernel(mod, (60, 900), hours=3.0, n_periods=2, tou=[(DAY0 + 1800.0, 1)])
    for pid in range(POINTS):
        k.configure_point(pid, f"m{pid}.e", mod.COUNTER, since=DAY0, max_gap=90.0, tou=True)
    out: list[Any] = []

    def poll(t: float, v: float) -> None:
        k.ingest(*batch([(pid, t, v + pid) for pid in range(POINTS)]))

    for s in range(0, 120, 10):
        poll(DAY0 + 1 + s, 100.0 + s / 10)
        out.append(k.close_until(DAY0 + 1 + s))
    out.append(k.close_until(DAY0 + 82 * 60.0, 5000))  # a slice of the 12,000, then the rest
    out.append(k.close_until(DAY0 + 82 * 60.0))
    for s in range(0, 600, 10):  # back: the first reading revises the gap windows
        poll(DAY0 + 82 * 60.0 + s, 300.0 + s / 10)
        out.append(k.close_until(DAY0 + 82 * 60.0 + s))
    out.append(k.close_until(DAY0 + 3 * 3600.0))
    return [w for w, _ in out] + [k.snapshot()]


def as_bytes(out: list[Any]) -> list[Any]:
    return [{n: c.tobytes() for n, c in w.items()} for w in out[:-1]] + [out[-1]]


@pytest.mark.skipif(NO_EXT, reason="IRONWATT_NO_EXTENSIONS=1: no compiled kernel to compare")
def test_a_queue_that_shrank_after_a_big_close_keeps_every_window() -> None:
    compiled, pure = scenario(load("compiled")), scenario(load("pure"))
    assert as_bytes(compiled) == as_bytes(pure)
    counts = [len(w["point"]) for w in compiled[:-1]]
    assert counts[12] == 5000  # the slice
    assert counts[12] + counts[13] >= POINTS * 78  # 80 min of 1m windows (and their 15m ones)
    assert sum(counts[14:]) >= POINTS * 78  # every one of them revised after


def test_every_window_of_a_big_close_comes_out_once(km: ModuleType) -> None:
    keys = [
        (w["point"][i], w["interval"][i], w["start"][i], w["revision"][i])
        for w in scenario(km)[:-1]
        for i in range(len(w["point"]))
    ]
    assert len(keys) == len(set(keys)) > 2 * 12_000
    firsts = {(p, k, s) for p, k, s, r in keys if r == 1}
    assert len(firsts) >= POINTS * (80 + 5)  # every 1m window of the 3 h so far, and the 15m
