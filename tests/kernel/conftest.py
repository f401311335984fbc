"""Fixtures for the kernel tests: every test runs on the compiled kernel and on its pure twin.

The compiled parameter fails (it does not skip) when the extension is missing, unless
IRONWATT_NO_EXTENSIONS=1 asks for the twin alone.
"""

from __future__ import annotations

import functools
import importlib
import os
from array import array
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.windows import edges_between

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
    """gateway.windows edges, computed once per test session (zoneinfo work is slow-ish)."""
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
    """A kernel with a grid covering [start, start + hours) built from gateway.windows."""
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


def pytest_configure(config: pytest.Config) -> None:
    # The Makefile re-runs `-m twin` under IRONWATT_NO_EXTENSIONS=1 (the fallback proof).
    config.addinivalue_line("markers", "twin: runs on both kernel implementations")
