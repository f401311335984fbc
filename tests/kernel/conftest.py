"""Fixtures for the kernel tests: every test runs on the compiled kernel and on its pure twin.

The compiled parameter fails (it does not skip) when the extension is missing, unless
IRONWATT_NO_EXTENSIONS=1 asks for the twin alone.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
from array import array
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import strategies as st

from gateway.energy.windows import edges_between

NO_EXT = os.environ.get("IRONWATT_NO_EXTENSIONS", "") not in ("", "0")
UTC = ZoneInfo("UTC")
# 2026-11-29 00:00:00 UTC: a Sunday, far from any DST change in Europe.
DAY0 = 1_795_910_400.0


def load(name: str) -> ModuleType:
    if name == "compiled":
        if NO_EXT:
            pytest.skip("IRONWATT_NO_EXTENSIONS=1: the pure twin alone is under test")
        try:
            return importlib.import_module("ext._kernel")
        except ImportError as exc:  # a missing build is a failure, not a reason to skip
            pytest.fail(f"compiled kernel ext._kernel not importable ({exc}); run pip install -e .")
    return importlib.import_module("ext._kernel_py")


@pytest.fixture(params=["compiled", "pure"])
def km(request: pytest.FixtureRequest) -> ModuleType:
    """The kernel module under test."""
    return load(request.param)


@functools.lru_cache(maxsize=64)
def cached_edges(tz: ZoneInfo, interval: int, start: float, end: float) -> tuple[float, ...]:
    """gateway.energy.windows edges, computed once per test session (zoneinfo work is slow-ish)."""
    return tuple(edges_between(tz, interval, start, end))


def kernel(
    mod: ModuleType,
    intervals: Sequence[int] = (60, 900, 3600),
    *,
    start: float = DAY0,
    hours: float = 3.0,
    tz: ZoneInfo = UTC,
    tou: Sequence[tuple[float, int]] = (),
    initial_period: int = 0,
    **kw: Any,
) -> Any:
    """A kernel with a grid covering [start, start + hours) built from gateway.energy.windows."""
    end = start + hours * 3600.0
    edge_lists = [cached_edges(tz, s, start, end + 1) for s in intervals]
    edges, masks, periods = mod.build_grid(
        edge_lists, [b for b, _ in tou], [p for _, p in tou], initial_period
    )
    k = mod.Kernel(len(intervals), **kw)
    k.extend_grid(edges, masks, periods)
    return k


def batch(
    rows: Iterable[tuple[int, float, float, int] | tuple[int, float, float]],
) -> tuple[array[int], array[float], array[float], array[int]]:
    p: array[int] = array("i")
    t: array[float] = array("d")
    v: array[float] = array("d")
    q: array[int] = array("B")
    for row in rows:
        p.append(row[0])
        t.append(row[1])
        v.append(row[2])
        q.append(row[3] if len(row) > 3 else 0)  # type: ignore[misc]
    return p, t, v, q


def feed(k: Any, rows: Iterable[tuple[int, float, float, int] | tuple[int, float, float]]) -> None:
    k.ingest(*batch(rows))


def records(wins: dict[str, Any], n_periods: int = 0) -> list[dict[str, Any]]:
    """Closed-window columns as one dict per window (periods as a list)."""
    out = []
    names = [n for n in wins if n != "periods"]
    for i in range(len(wins["point"])):
        rec = {n: wins[n][i] for n in names}
        rec["periods"] = list(wins["periods"][i * n_periods : (i + 1) * n_periods])
        out.append(rec)
    return out


def close(k: Any, t: float, n_periods: int = 0) -> list[dict[str, Any]]:
    wins, _blocks = k.close_until(t)
    return records(wins, n_periods)


def pick(recs: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in recs if all(r[key] == val for key, val in match.items())]


# Random sample streams of three points (counter, rate, gauge) for the Hypothesis properties.
step = st.tuples(
    st.one_of(
        st.floats(0.5, 120.0, allow_nan=False),
        st.sampled_from([0.0, -5.0, 900.0]),  # duplicate, out of order, a gap
    ),
    st.one_of(
        st.floats(0.0, 50.0, allow_nan=False),  # a rise
        # jitter, a fall read as a wrap, a meter reset, a word-order glitch, NaN
        st.sampled_from([-0.001, -400.0, -2000.0, 5e6, math.nan]),
    ),
    st.sampled_from([0, 0, 0, 0, 0, 1, 2]),
)
streams = st.lists(st.lists(step, min_size=1, max_size=60), min_size=3, max_size=3)


def rows_of(streams_: list[list[tuple[float, float, int]]]) -> list[tuple[int, float, float, int]]:
    """Interleave per-point streams by time, as poll cycles deliver them."""
    rows = []
    for pid, stream in enumerate(streams_):
        t = DAY0 + 1.0 + pid * 0.1
        v = 500.0
        for dt, dv, q in stream:
            t += dt
            if math.isnan(dv):
                value = math.nan
            elif pid == 0 and dv == 5e6:
                value = v + dv  # a glitch: never becomes the baseline
            elif pid == 0:
                v = (v + dv) % 1000.0 if dv > -1000.0 else 0.0
                value = v
            else:
                value = 100.0 + dv
            rows.append((pid, t, value, q))
    rows.sort(key=lambda r: (r[1], r[0]))
    return rows


def build(mod: ModuleType) -> Any:
    """The kernel `streams` feed: 5 h, 1m/15m/1h, demand over 15m, two TOU periods."""
    k = kernel(
        mod,
        (60, 900, 3600),
        hours=5.0,
        demand_interval=1,
        n_periods=2,
        tou=[(DAY0 + 1800.0, 1), (DAY0 + 7200.0, 0)],
    )
    k.configure_point(
        0,
        "m.energy",
        mod.COUNTER,
        since=DAY0,
        rollover=1000.0,
        max_rate=36000.0,
        resolution=0.01,
        max_gap=300.0,
        tou=True,
    )
    k.configure_point(1, "m.power", mod.RATE, since=DAY0, max_gap=150.0, demand=True, tou=True)
    k.configure_point(2, "m.temp", mod.GAUGE, since=DAY0, integration=mod.HOLD)
    return k


def pytest_configure(config: pytest.Config) -> None:
    # The Makefile re-runs `-m twin` under IRONWATT_NO_EXTENSIONS=1 (the fallback proof).
    config.addinivalue_line("markers", "twin: runs on both kernel implementations")
