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
from gateway.energy.windows import DAY, Cadence, window_of
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
# length) around the kernel snapshot, which has a version of its own (ext: KERNEL_SNAPSHOT_VERSION),
# then JSON. Version 1's JSON is the list of revisable windows; version 2's an object of them and
# the state a caller attaches (the groups' inputs). Both are read.
AGGREGATOR_SNAPSHOT_VERSION = 2
_READS = (1, 2)
_MAGIC = b"IWA"
INTEGRATIONS = {"trapezoid": 0, "hold": 1}
# Closed rows taken from the kernel at once (~0.7 MB of columns): at midnight every interval of
# every point closes together, and after a long outage every window of the downtime does.
SLICE_ROWS = 4096
# A close far behind the clock (the first after a restart that followed a long outage) goes up to
# `now` this much at a time: one step's windows, not the whole downtime's, are queued at once.
CATCH_UP_STEP_S = 60.0


class TouCalendar(Protocol):
    """Time-of-use periods as instants: what the tariff config compiles to (accounting owns it)."""

    @property
    def names(self) -> Sequence[str]:
        """Per kernel period; a name may repeat (one per price)."""
        ...

    @property
    def prices(self) -> Sequence[float]:
        """Per kernel period, per kWh in `currency`."""
        ...

    @property
    def currency(self) -> str: ...

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
    demand: bool = False  # electricity: demand blocks (and a rate's peak demand)
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
    end: float = 0.0
    revisable: bool = False  # a gap may still revise it (or this is a revision)


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

    `intervals` are cadences (gateway.energy.windows.Cadence: fixed lengths, calendar months,
    shifts) or (name, seconds) pairs, e.g. ("15m", 900). The kernel sees only UTC epoch edges;
    this class computes them in `tz` and keeps them `lookahead` seconds ahead of the clock it is
    given.
    """

    def __init__(
        self,
        tz: ZoneInfo,
        intervals: Sequence[Cadence | tuple[str, int]],
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
        self._cadences = [
            c if isinstance(c, Cadence) else Cadence(c[0], int(c[1])) for c in intervals
        ]
        emit = [True] * len(intervals)
        self._demand_k = -1
        if demand_interval:
            fixed = [c.seconds if not (c.monthly or c.shifts) else 0 for c in self._cadences]
            if demand_interval in fixed:
                self._demand_k = fixed.index(demand_interval)
            else:  # blocks need their own edges; their windows are not published
                self._demand_k = len(self._cadences)
                self._cadences.append(Cadence(f"demand-{demand_interval}s", int(demand_interval)))
                emit.append(False)
        self._names = [c.name for c in self._cadences]
        # The first grid reaches back this far, so a snapshot taken before a restart still finds
        # its open cells on the grid (and gap energy can be placed).
        self._lookback = max(float(max_revision_age), 3600.0)
        self._tou = tou
        self._periods = list(tou.names) if tou is not None else []
        self._lookahead = lookahead
        mod = kernel_module if kernel_module is not None else default_kernel
        self._mod = mod
        self._device_pids: dict[str, list[int]] = {}
        self._k = mod.Kernel(
            len(self._cadences),
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
        self.attached: Any = None  # what the last restore handed back (see snapshot)

    # ---- grid -------------------------------------------------------------------------------

    def ensure_grid(self, now: float) -> None:
        """Keep the kernel's edges at least half the lookahead ahead of `now`."""
        if self._horizon >= now + self._lookahead / 2:
            return
        first = self._horizon == -math.inf
        if first:
            # Start at a local midnight that is also an edge of any whole-day interval: an
            # edge of every fixed interval (they divide 24 h or are whole days).
            fixed = [c.seconds for c in self._cadences if not (c.monthly or c.shifts)]
            longest = max(*fixed, DAY)
            start = window_of(self._tz, longest, now - self._lookback)[0]
        else:
            start = self._horizon
        end = max(now, start) + self._lookahead
        lists = [
            [e for e in c.edges(self._tz, start, end) if e > self._horizon] for c in self._cadences
        ]
        if first:
            # Months and shifts start where they start: their window around the first edge
            # begins before it (one long grid cell that no point has data in).
            for c, edges in zip(self._cadences, lists, strict=True):
                if (c.monthly or c.shifts) and (not edges or edges[0] > start):
                    edges.insert(0, c.window_of(self._tz, start)[0])
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
        self._device_pids = {}
        for pid, spec in self._specs.items():
            self._device_pids.setdefault(spec.device, []).append(pid)

    def device_points(self) -> dict[str, list[int]]:
        """The point ids of each device (configured, accounted)."""
        return self._device_pids

    # ---- data -------------------------------------------------------------------------------

    def ingest(self, batch: SampleBatch, now: float) -> None:
        """Fold one batch (ids from `self.index`); samples far ahead of `now` are dropped."""
        self.ensure_grid(now)
        self._k.ingest(batch.point, batch.ts, batch.value, batch.quality)

    def split_by_device(self, batch: SampleBatch) -> dict[str, SampleBatch]:
        """The batch's samples per device, in their order ("" for ids no point has)."""
        parts: dict[str, SampleBatch] = {}
        specs = self._specs
        for pid, ts, value, quality in batch:
            spec = specs.get(pid)
            device = spec.device if spec is not None else ""
            part = parts.get(device)
            if part is None:
                part = parts[device] = SampleBatch()
            part.append(pid, ts, value, quality)
        return parts

    def force_device(self, device: str, now: float) -> None:
        """Close every cell of the device's points due by `now`, as a forced close would: its
        windows then come out whole (see EnergyStage.take_held), the points its readings did
        not close (a bad reading, an unchanged subscribed value) as gaps."""
        self._k.force_points(self._device_pids.get(device, ()), now)

    def behind(self, now: float) -> bool:
        """Whether a close at `now` would catch up (after an outage: more than a step due)."""
        due: float = self._k.earliest_due()
        return due + CATCH_UP_STEP_S < now

    def close_until(
        self,
        now: float,
        on_window: Callable[[WindowPayload], None] | None = None,
        force: bool = True,
    ) -> Closed:
        """Close every window whose end + grace <= now; one payload per device and window.

        With `on_window`, each device window is handed over as soon as its last point is in,
        and not kept in `Closed.windows`: the daemon encodes it there and then, so only a few
        devices' payloads exist at once. (16,000 point bodies at once, one close of two
        intervals at 8,000 points, grew the heap by ~8 MB that CPython then keeps.) The kernel's
        rows come SLICE_ROWS at a time, so at midnight (every interval of every point) only
        one slice of columns exists; a close far behind the clock (after a long outage) goes
        CATCH_UP_STEP_S at a time, so only one step's windows are queued in the kernel. With
        `force` false only windows that readings closed come out (no open cell is closed).
        """
        self.ensure_grid(now)
        out = Closed()
        revised: dict[tuple[int, str, float], dict[str, Any]] = {}
        due = self._k.earliest_due()
        while force and due + CATCH_UP_STEP_S < now:  # catching up: a step at a time
            self._close_to(due + CATCH_UP_STEP_S, out, revised, on_window)
            due = self._k.earliest_due()
        self._close_to(now, out, revised, on_window, force)
        if on_window is not None:
            # Only revisions are left in out.windows: whole only now that every row is in.
            for wp in out.windows:
                on_window(wp)
            out.windows.clear()
        horizon = now - self._max_age
        for key in [
            key for key in self._revisable if key[2] < horizon - 2 * self._cadences[key[0]].nominal
        ]:
            del self._revisable[key]
        return out

    def _close_to(
        self,
        t: float,
        out: Closed,
        revised: dict[tuple[int, str, float], dict[str, Any]],
        on_window: Callable[[WindowPayload], None] | None,
        force: bool = True,
    ) -> None:
        """Take every row due by `t` from the kernel, a slice at a time."""
        keys = self._k.due_keys(t, force)
        left = self._rows_left(keys["point"], keys["interval"], keys["start"], keys["revision"])
        del keys
        grouped: dict[tuple[int, str, float], WindowPayload] = {}
        while True:  # in slices: the closed columns of one slice at a time exist
            wins, blocks = self._k.close_until(t, SLICE_ROWS, False)  # due_keys forced
            self._take_slice(wins, out, grouped, revised, left, on_window)
            out.blocks += self._demand_blocks(blocks)
            if len(wins["point"]) < SLICE_ROWS:
                break

    def _take_slice(
        self,
        wins: dict[str, Any],
        out: Closed,
        grouped: dict[tuple[int, str, float], WindowPayload],
        revised: dict[tuple[int, str, float], dict[str, Any]],
        left: dict[tuple[int, str, float], int],
        on_window: Callable[[WindowPayload], None] | None,
    ) -> None:
        """Fold one slice of closed rows into device windows; hand each over once `left` says
        its last row is in (a window's rows may come in different slices)."""
        nper = len(self._periods)
        periods: array[float] = wins["periods"]
        cols = wins
        points, intervals, starts, revisions = (
            cols["point"], cols["interval"], cols["start"], cols["revision"]
        )  # fmt: skip
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
                wp.revisable = True
            left[gkey] -= 1
            if not left[gkey]:
                del grouped[gkey]
                if on_window is not None:
                    on_window(wp)

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
        payload: dict[str, Any] = {
            "device": device,
            "interval": name,
            "start": utc_iso(start),
            "end": utc_iso(end),
        }
        shift = self._cadences[k].label(self._tz, start)
        if shift is not None:
            payload["shift"] = shift
        payload.update(revision=1, estimated=False, points={})
        return WindowPayload(name, device, start, payload, end)

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
                payload = self._new_window(k, spec.device, gkey[2], cols["end"][i]).payload
                payload["revision"] = cols["revision"][i]
            payload["estimated"] = True
            revised[gkey] = payload
            self._revisable[gkey] = payload
            out.windows.append(
                WindowPayload(
                    self._names[k], spec.device, gkey[2], payload, cols["end"][i], revisable=True
                )
            )
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
            self._by_period(body, spec, periods)
        body["samples"] = cols["samples"][i]
        body["bad"] = cols["bad"][i]
        body["coverage"] = cols["coverage"][i]
        if cols["estimated"][i]:
            body["estimated"] = True
        return body

    def _by_period(
        self, body: dict[str, Any], spec: AccountedPoint, periods: Sequence[float]
    ) -> None:
        """`by_period` energy per period name (the point's unit) and its `cost` (kWh x price).

        A name priced differently in two seasons is two kernel periods and one name here."""
        assert self._tou is not None
        energy: dict[str, float] = {}
        costs: dict[str, float] = {}
        unit = units.lookup(spec.unit)
        to_kwh = unit.factor if unit is not None else 1.0
        for name, amount, price in zip(self._periods, periods, self._tou.prices, strict=True):
            energy[name] = energy.get(name, 0.0) + amount
            costs[name] = costs.get(name, 0.0) + amount * to_kwh * price
        body["by_period"] = energy
        if spec.carrier == "electricity":
            body["cost"] = {
                "currency": self._tou.currency,
                "amount": sum(costs.values()),
                "by_period": costs,
            }

    # ---- state ------------------------------------------------------------------------------

    def snapshot(self, attached: Any = None) -> bytes:
        """Versioned bytes: the kernel's state (open windows, counter baselines, keyed by point
        key), the device windows a gap may still revise, and `attached` (JSON-able state of
        the caller's, handed back by `restore` as `self.attached`)."""
        # One join, one copy: chained `+` would copy the (multi-MB) kernel part twice more.
        return b"".join(self.snapshot_parts(attached))

    def snapshot_parts(self, attached: Any = None) -> tuple[bytes, bytes, bytes]:
        """The snapshot as (head, kernel part, JSON), to write without a join."""
        kernel = self._k.snapshot()
        revisable = [
            [self._names[k], device, start, payload]
            for (k, device, start), payload in self._revisable.items()
        ]
        extra = json.dumps(
            {"revisable": revisable, "attached": attached}, separators=(",", ":")
        ).encode()
        head = _MAGIC + bytes([AGGREGATOR_SNAPSHOT_VERSION]) + struct.pack("<Q", len(kernel))
        return head, kernel, extra

    def restore(self, data: bytes) -> list[str]:
        """Resume from a snapshot after `set_points`; returns the point keys resumed.

        A snapshot that is not usable raises ValueError and changes nothing.
        """
        if len(data) < 12 or data[:3] != _MAGIC:
            raise ValueError("not an ironwatt aggregator snapshot (bad magic); delete the file")
        if data[3] not in _READS:
            raise ValueError(
                f"aggregator snapshot version {data[3]} is not supported by this build (it "
                f"reads versions {', '.join(map(str, _READS))}); move the state file aside and "
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
        unreadable = (
            "aggregator snapshot: its revisable windows are unreadable; move the state file "
            "aside and restart"
        )
        try:
            rest = json.loads(data[12 + n :])
        except ValueError:
            raise ValueError(unreadable) from None
        attached = None
        if data[3] >= 2:
            if not isinstance(rest, dict) or not isinstance(rest.get("revisable"), list):
                raise ValueError(unreadable)
            rest, attached = rest["revisable"], rest.get("attached")
        for name, device, start, payload in rest:
            if name in self._names:
                revisable[(self._names.index(name), device, start)] = payload
        # A view, not a slice: the multi-MB kernel part is not copied again.
        with memoryview(data) as view:
            keys = list(self._k.restore(view[12 : 12 + n], dict(self.index.items())))
        self._revisable.update(revisable)
        self.attached = attached
        return keys

    def stats(self) -> dict[str, int]:
        """Samples the kernel dropped (out of order, beyond the grid, unknown point)."""
        return dict(self._k.stats())

    @property
    def implementation(self) -> str:
        return "compiled" if self._mod.__name__.endswith("_kernel") else "pure"
