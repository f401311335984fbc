"""The bridge between sample batches and the kernel: window edges in, energy payloads out.

Owns one kernel, keeps its grid of window edges (and TOU boundaries) ahead of the clock in the
gateway's zone, and turns closed windows into `energy/{interval}/{device}` payload dicts.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from drivers.samples import PointIndex, SampleBatch
from ext import kernel as default_kernel
from gateway.energy import units
from gateway.energy.windows import DAY, edges_between, window_of
from gateway.timefmt import utc_iso

__all__ = [
    "AccountedPoint",
    "Aggregator",
    "Closed",
    "DemandBlock",
    "TouCalendar",
    "WindowPayload",
    "integral_unit",
]

KINDS = {"counter": 0, "rate": 1, "gauge": 2}
# The version of the aggregator snapshot: the envelope (b"IWA", this byte, the kernel part's
# length) around the kernel snapshot, which has a version of its own (ext: KERNEL_SNAPSHOT_VERSION).
AGGREGATOR_SNAPSHOT_VERSION = 1
_MAGIC = b"IWA"
INTEGRATIONS = {"trapezoid": 0, "hold": 1}


class TouCalendar(Protocol):
    """Time-of-use periods as instants: what the tariff config compiles to (accounting owns it)."""

    names: Sequence[str]

    def period_at(self, t: float) -> int:
        """Index (into `names`) of the period in force at instant t."""
        ...

    def boundaries(self, start: float, end: float) -> list[tuple[float, int]]:
        """Every instant b, start <= b < end, where a period starts, with its index; ascending."""
        ...


@dataclass(frozen=True, slots=True)
class AccountedPoint:
    """A point as the aggregator accounts it: kind, unit, carrier and how its readings are
    judged, from the validated config (what a driver reads, e.g. a register, is not here)."""

    device: str
    name: str
    kind: str  # counter | rate | gauge
    unit: str
    carrier: str | None = None
    rollover: float = 0.0  # the modulus (0 = none)
    max_rate: float = 0.0  # unit per hour (0 = none)
    resolution: float = 0.0  # a fall of at most this much is jitter
    max_gap: float = 0.0  # seconds; 0 = no limit
    integration: str = "trapezoid"  # trapezoid | hold
    demand: bool = False  # an electricity rate point: peak demand and demand blocks
    tou: bool = False  # split by time-of-use period
    grace: float = 1.0  # the device's poll interval + timeout (at least 1 s)

    @property
    def key(self) -> str:
        # Interned: the index, the kernel and the stage keep this key for every point, and the
        # driver's own copy (drivers/modbus/points.py) is the same object.
        return sys.intern(f"{self.device}.{self.name}")


@dataclass(slots=True)
class WindowPayload:
    """One closed window of one device: the topic levels and the payload body."""

    interval: str
    device: str
    start: float
    payload: dict[str, Any]


@dataclass(slots=True)
class DemandBlock:
    """One demand block of one point (for group demand: sums of simultaneous blocks)."""

    key: str
    start: float
    end: float
    demand: float | None
    coverage: float


@dataclass(slots=True)
class Closed:
    windows: list[WindowPayload] = field(default_factory=list)
    blocks: list[DemandBlock] = field(default_factory=list)


def integral_unit(unit: str) -> str:
    """The payload's `integral_unit`: the unit table's (gateway.energy.units.integral_unit:
    kW -> kWh, MW -> MWh, m3/h -> m3), or the product `unit*h` where it has no name (A*h)."""
    return units.integral_unit(unit) or f"{unit}*h"


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


class Aggregator:
    """Windows for every configured interval over every point, built on the kernel.

    `intervals` are (name, seconds) pairs, e.g. ("15m", 900). The kernel sees only UTC epoch
    edges; this class computes them with gateway.energy.windows in `tz` and keeps them `lookahead`
    seconds ahead of the clock it is given.
    """

    def __init__(
        self,
        tz: ZoneInfo,
        intervals: Sequence[tuple[str, int]],
        *,
        demand_interval: int | None = 900,
        max_revision_age: float = 86400.0,
        tou: TouCalendar | None = None,
        lookahead: float = 6 * 3600.0,
        kernel_module: Any = None,
        index: PointIndex | None = None,
    ) -> None:
        if not intervals:
            raise ValueError("energy.intervals: at least one interval is needed")
        self._tz = tz
        self._names = [name for name, _ in intervals]
        self._seconds = [int(s) for _, s in intervals]
        emit = [True] * len(intervals)
        self._demand_k = -1
        if demand_interval:
            if demand_interval in self._seconds:
                self._demand_k = self._seconds.index(demand_interval)
            else:  # blocks need their own edges; their windows are not published
                self._demand_k = len(self._seconds)
                self._seconds.append(int(demand_interval))
                self._names.append(f"demand-{demand_interval}s")
                emit.append(False)
        # The first grid reaches back this far, so a snapshot taken before a restart still finds
        # its open cells on the grid (and gap energy can be placed).
        self._lookback = max(float(max_revision_age), 3600.0)
        self._tou = tou
        self._periods = list(tou.names) if tou is not None else []
        self._lookahead = lookahead
        mod = kernel_module if kernel_module is not None else default_kernel
        self._mod = mod
        self._k = mod.Kernel(
            len(self._seconds),
            emit=emit,
            demand_interval=self._demand_k,
            n_periods=len(self._periods),
            max_revision_age=max_revision_age,
        )
        # The id map drivers stamp into batches; share one with them (or use this one).
        self.index = index if index is not None else PointIndex()
        self._specs: dict[int, AccountedPoint] = {}
        self._horizon = -math.inf
        self._max_age = float(max_revision_age)
        # Device windows published while a counter of theirs was in a gap, by (interval,
        # device, start): a revision republishes the whole window, every point of it, since
        # subscribers keep only the highest revision.
        self._revisable: dict[tuple[int, str, float], dict[str, Any]] = {}

    # ---- grid -------------------------------------------------------------------------------

    def ensure_grid(self, now: float) -> None:
        """Keep the kernel's edges at least half the lookahead ahead of `now`."""
        if self._horizon >= now + self._lookahead / 2:
            return
        if self._horizon == -math.inf:
            # Start at a local midnight that is also an edge of any whole-day interval: an
            # edge of every interval (they divide 24 h or are whole days).
            longest = max(*self._seconds, DAY)
            start = window_of(self._tz, longest, now - self._lookback)[0]
        else:
            start = self._horizon
        end = max(now, start) + self._lookahead
        lists = [
            [e for e in edges_between(self._tz, s, start, end) if e > self._horizon]
            for s in self._seconds
        ]
        bounds: list[float] = []
        periods: list[int] = []
        initial = 0
        if self._tou is not None:
            initial = self._tou.period_at(start)
            for b, p in self._tou.boundaries(start, end):
                if b > self._horizon:
                    bounds.append(b)
                    periods.append(p)
        edges, masks, pers = self._mod.build_grid(lists, bounds, periods, initial)
        if len(edges):
            self._k.extend_grid(edges, masks, pers)
            self._horizon = edges[-1]

    # ---- points -----------------------------------------------------------------------------

    def set_points(self, specs: Iterable[AccountedPoint], now: float) -> None:
        """Apply a (re)loaded point list: new points start now, gone ones are retired."""
        self.ensure_grid(now)
        wanted = {spec.key: spec for spec in specs}
        for key, pid in list(self.index.items()):
            if key not in wanted:
                self._k.remove_point(pid)
                self.index.retire(key)
                self._specs.pop(pid, None)
        for key, spec in wanted.items():
            if spec.kind not in KINDS:
                raise ValueError(f"point {key}: kind {spec.kind!r} (expected counter|rate|gauge)")
            if spec.integration not in INTEGRATIONS:
                raise ValueError(
                    f"point {key}: integration {spec.integration!r} (expected trapezoid|hold)"
                )
            pid = self.index.add(key)
            self._k.configure_point(
                pid,
                key,
                KINDS[spec.kind],
                since=now,
                rollover=spec.rollover,
                max_rate=spec.max_rate,
                resolution=spec.resolution,
                max_gap=spec.max_gap,
                integration=INTEGRATIONS[spec.integration],
                demand=spec.demand,
                tou=spec.tou and bool(self._periods),
                grace=max(spec.grace, 1.0),
            )
            self._specs[pid] = spec

    # ---- data -------------------------------------------------------------------------------

    def ingest(self, batch: SampleBatch, now: float) -> None:
        """Fold one batch (ids from `self.index`); samples far ahead of `now` are dropped."""
        self.ensure_grid(now)
        self._k.ingest(batch.point, batch.ts, batch.value, batch.quality)

    def close_until(
        self, now: float, on_window: Callable[[WindowPayload], None] | None = None
    ) -> Closed:
        """Close every window whose end + grace <= now; one payload per device and window.

        With `on_window`, each device window is handed over as soon as its last point is in,
        and not kept in `Closed.windows`: the daemon encodes it there and then, so only a few
        devices' payloads exist at once. (16,000 point bodies at once, one close of two
        intervals at 8,000 points, grew the heap by ~8 MB that CPython then keeps.)
        """
        self.ensure_grid(now)
        wins, blocks = self._k.close_until(now)
        out = Closed()
        grouped: dict[tuple[int, str, float], WindowPayload] = {}
        nper = len(self._periods)
        periods: array[float] = wins["periods"]
        cols = {name: wins[name] for name in wins}
        points, intervals, starts, revisions = (
            cols["point"], cols["interval"], cols["start"], cols["revision"]
        )  # fmt: skip
        left = self._rows_left(points, intervals, starts, revisions)
        revised: dict[tuple[int, str, float], dict[str, Any]] = {}
        for i in range(len(points)):
            spec = self._specs.get(points[i])
            if spec is None:
                continue  # retired by a reload after the window completed
            k = intervals[i]
            start = starts[i]
            gkey = (k, spec.device, start)
            if revisions[i] > 1:
                self._revise(out, revised, gkey, spec, cols, i, periods[i * nper : (i + 1) * nper])
                continue
            wp = grouped.get(gkey)
            if wp is None:
                wp = self._new_window(k, spec.device, start, cols["end"][i])
                grouped[gkey] = wp
                if on_window is None:
                    out.windows.append(wp)
            body = self._point_body(spec, cols, i, periods[i * nper : (i + 1) * nper])
            wp.payload["points"][spec.name] = body
            if cols["estimated"][i]:
                wp.payload["estimated"] = True
            if cols["gap"][i]:
                self._revisable[gkey] = wp.payload
            left[gkey] -= 1
            if not left[gkey]:
                del grouped[gkey]
                if on_window is not None:
                    on_window(wp)
        if on_window is not None:
            # Only revisions are left in out.windows: whole only now that every row is in.
            for wp in out.windows:
                on_window(wp)
            out.windows.clear()
        horizon = now - self._max_age - 2 * max(self._seconds)
        for key in [key for key in self._revisable if key[2] < horizon]:
            del self._revisable[key]
        out.blocks = self._demand_blocks(blocks)
        return out

    def _rows_left(
        self,
        points: Sequence[int],
        intervals: Sequence[int],
        starts: Sequence[float],
        revisions: Sequence[int],
    ) -> dict[tuple[int, str, float], int]:
        """Rows to come per device window of a first publication (a window's rows need not be
        adjacent): the window is whole when its count reaches 0."""
        left: dict[tuple[int, str, float], int] = {}
        for i in range(len(points)):
            spec = self._specs.get(points[i])
            if spec is not None and revisions[i] <= 1:
                gkey = (intervals[i], spec.device, starts[i])
                left[gkey] = left.get(gkey, 0) + 1
        return left

    def _new_window(self, k: int, device: str, start: float, end: float) -> WindowPayload:
        """A device window's first publication, its points still to be filled in."""
        name = self._names[k]
        return WindowPayload(
            name,
            device,
            start,
            {
                "device": device,
                "interval": name,
                "start": utc_iso(start),
                "end": utc_iso(end),
                "revision": 1,
                "estimated": False,
                "points": {},
            },
        )

    def _demand_blocks(self, blocks: dict[str, Any]) -> list[DemandBlock]:
        """The kernel's closed demand blocks, of points still configured."""
        out: list[DemandBlock] = []
        for i in range(len(blocks["point"])):
            spec = self._specs.get(blocks["point"][i])
            if spec is None:
                continue
            out.append(
                DemandBlock(
                    spec.key,
                    blocks["start"][i],
                    blocks["end"][i],
                    _num(blocks["demand"][i]),
                    blocks["coverage"][i],
                )
            )
        return out

    def _revise(
        self,
        out: Closed,
        revised: dict[tuple[int, str, float], dict[str, Any]],
        gkey: tuple[int, str, float],
        spec: AccountedPoint,
        cols: dict[str, Any],
        i: int,
        periods: Sequence[float],
    ) -> None:
        """Fold one point's revised window into its device window, published again whole."""
        payload = revised.get(gkey)
        if payload is None:
            k = gkey[0]
            before = self._revisable.get(gkey)
            if before is not None:
                payload = dict(before)
                payload["points"] = dict(before["points"])
                payload["revision"] = before["revision"] + 1
            else:  # published before a restart: only the revised points can be sent again
                payload = {
                    "device": spec.device,
                    "interval": self._names[k],
                    "start": utc_iso(gkey[2]),
                    "end": utc_iso(cols["end"][i]),
                    "revision": cols["revision"][i],
                    "estimated": True,
                    "points": {},
                }
            payload["estimated"] = True
            revised[gkey] = payload
            self._revisable[gkey] = payload
            out.windows.append(WindowPayload(self._names[k], spec.device, gkey[2], payload))
        payload["points"][spec.name] = self._point_body(spec, cols, i, periods)

    def _point_body(
        self, spec: AccountedPoint, cols: dict[str, Any], i: int, periods: Sequence[float]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": spec.kind, "unit": spec.unit}
        if spec.carrier is not None:
            body["carrier"] = spec.carrier
        if spec.kind == "counter":
            body["delta"] = _num(cols["delta"][i])
            body["first"] = _num(cols["first"][i])
            body["last"] = _num(cols["last"][i])
            body["rollovers"] = cols["rollovers"][i]
            body["resets"] = cols["resets"][i]
        else:
            body["mean"] = _num(cols["mean"][i])
            body["min"] = _num(cols["min"][i])
            body["max"] = _num(cols["max"][i])
            if spec.kind == "rate":
                body["integral"] = _num(cols["delta"][i])
                body["integral_unit"] = integral_unit(spec.unit)
                peak = cols["peak"][i]
                if spec.demand and not math.isnan(peak):
                    body["peak_demand"] = peak
                    body["peak_demand_at"] = utc_iso(cols["peak_at"][i])
            else:
                body["last"] = _num(cols["last"][i])
        if spec.tou and self._periods and periods and not math.isnan(periods[0]):
            body["by_period"] = dict(zip(self._periods, periods, strict=True))
        body["samples"] = cols["samples"][i]
        body["bad"] = cols["bad"][i]
        body["coverage"] = cols["coverage"][i]
        if cols["estimated"][i]:
            body["estimated"] = True
        return body

    # ---- state ------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Versioned bytes: the kernel's state (open windows, counter baselines, keyed by point
        key) and the device windows a gap may still revise."""
        # One join, one copy: chained `+` would copy the (multi-MB) kernel part twice more.
        return b"".join(self.snapshot_parts())

    def snapshot_parts(self) -> tuple[bytes, bytes, bytes]:
        """The snapshot as (head, kernel part, revisable windows), to write without a join."""
        kernel = self._k.snapshot()
        revisable = [
            [self._names[k], device, start, payload]
            for (k, device, start), payload in self._revisable.items()
        ]
        extra = json.dumps(revisable, separators=(",", ":")).encode()
        head = _MAGIC + bytes([AGGREGATOR_SNAPSHOT_VERSION]) + struct.pack("<Q", len(kernel))
        return head, kernel, extra

    def restore(self, data: bytes) -> list[str]:
        """Resume from a snapshot after `set_points`; returns the point keys resumed.

        A snapshot that is not usable raises ValueError and changes nothing.
        """
        if len(data) < 12 or data[:3] != _MAGIC:
            raise ValueError("not an ironwatt aggregator snapshot (bad magic); delete the file")
        if data[3] != AGGREGATOR_SNAPSHOT_VERSION:
            raise ValueError(
                f"aggregator snapshot version {data[3]} is not supported by this build (it "
                f"reads version {AGGREGATOR_SNAPSHOT_VERSION}); move the state file aside and "
                "restart"
            )
        (n,) = struct.unpack("<Q", data[4:12])
        if n > len(data) - 12:
            raise ValueError(
                "aggregator snapshot is truncated (its kernel part ends early); move the state "
                "file aside and restart"
            )
        # The revisable windows first: if they are unreadable, the kernel is left untouched.
        revisable: dict[tuple[int, str, float], dict[str, Any]] = {}
        for name, device, start, payload in json.loads(data[12 + n :]):
            if name in self._names:
                revisable[(self._names.index(name), device, start)] = payload
        # A view, not a slice: the multi-MB kernel part is not copied again.
        with memoryview(data) as view:
            keys = list(self._k.restore(view[12 : 12 + n], dict(self.index.items())))
        self._revisable.update(revisable)
        return keys

    def stats(self) -> dict[str, int]:
        """Samples the kernel dropped (out of order, beyond the grid, unknown point)."""
        return dict(self._k.stats())

    @property
    def implementation(self) -> str:
        return "compiled" if self._mod.__name__.endswith("_kernel") else "pure"
