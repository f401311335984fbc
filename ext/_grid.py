"""The kernel's base grid from per-interval window edges: plain Python, one copy for both twins.

The grid is built once per extension of the horizon, not per sample, so it needs no C.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

__all__ = ["build_grid"]


def build_grid(
    edge_lists: Sequence[Sequence[float]],
    tou_bounds: Sequence[float] = (),
    tou_periods: Sequence[int] = (),
    initial_period: int = 0,
) -> tuple[array[float], array[int], array[int]]:
    """Merge per-interval window edges (and TOU boundaries) into the kernel's base grid.

    Returns (edges, masks, periods): the sorted union of all edges; for each, a bit mask of the
    intervals it is a window edge of (bit k = interval k); and the TOU period in force from it
    on (the last boundary at or before it, else `initial_period`).
    """
    masks: dict[float, int] = {}
    for k, edges in enumerate(edge_lists):
        for e in edges:
            masks[e] = masks.get(e, 0) | (1 << k)
    for b in tou_bounds:
        masks.setdefault(b, 0)
    out_e: array[float] = array("d", sorted(masks))
    out_m: array[int] = array("I", [masks[e] for e in out_e])
    out_p: array[int] = array("h")
    j = 0
    period = initial_period
    for e in out_e:
        while j < len(tou_bounds) and tou_bounds[j] <= e:
            period = tou_periods[j]
            j += 1
        out_p.append(period)
    return out_e, out_m, out_p
