"""Report-by-exception for live values: which samples go out on `telemetry/{device}`, and when,
and their JSON (written straight to bytes: it is most of what a gateway publishes).

Per point an absolute or percent deadband, at most one message per device per poll interval,
and a heartbeat that repeats unchanged values every `heartbeat` seconds. Pure logic, no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from drivers.samples import QUALITY_BAD, QUALITY_GOOD, SampleBatch
from gateway.timefmt import utc_iso

__all__ = ["TelemetryEncoder", "TelemetryFilter", "TelemetryPoint", "TelemetryReport"]

_QUALITY_NAMES = {QUALITY_GOOD: "good", QUALITY_BAD: "bad"}


@dataclass(frozen=True, slots=True)
class TelemetryPoint:
    """What the filter needs to know of one point (from the config)."""

    pid: int
    device: str
    name: str
    unit: str = ""
    deadband: float | None = None
    deadband_percent: float | None = None


@dataclass(slots=True)
class TelemetryReport:
    """One message to publish: a device's points whose values are due, with their times."""

    device: str
    samples: list[tuple[TelemetryPoint, float, float, int]]  # (point, ts, value, quality)
    heartbeat: bool = False

    @property
    def points(self) -> dict[str, dict[str, object]]:
        """The payload's `points` as Python values (ts in epoch seconds)."""
        return {
            point.name: {
                "value": value if math.isfinite(value) else None,
                "unit": point.unit,
                "quality": _QUALITY_NAMES.get(quality, "uncertain"),
                "ts": ts,
            }
            for point, ts, value, quality in self.samples
        }


@dataclass(slots=True)
class _State:
    point: TelemetryPoint
    value: float | None = None  # last value reported
    quality: int | None = None
    pending: tuple[float, float, int] | None = None  # (ts, value, quality) newest unreported
    latest: tuple[float, float, int] | None = None  # newest seen, reported or not
    offer: int = 0  # the offer() that set `latest`


@dataclass(slots=True)
class _Device:
    min_period: float
    last_sent: float = -math.inf
    last_heartbeat: float = -math.inf
    pids: list[int] = field(default_factory=list)


def _changed(point: TelemetryPoint, old: float | None, new: float) -> bool:
    if old is None or math.isnan(old) != math.isnan(new):
        return True
    if math.isnan(new):
        return False
    diff = abs(new - old)
    if point.deadband is not None and diff <= point.deadband:
        return False
    # A percent deadband is relative to the last reported value; around zero it degenerates
    # to "any change", which is what a technician expects of a value leaving zero.
    if point.deadband_percent is not None and diff <= abs(old) * point.deadband_percent / 100:
        return False
    return diff > 0


class TelemetryFilter:
    """Feed every sample batch to `offer`; `due(now)` returns the reports to publish now.

    `now` is the monotonic clock, so a wall-clock step neither floods nor silences telemetry.
    `slack`: how late after a poll `due` may be called (the pipeline's pass interval). The once
    per poll limit allows that much less, or a pass falling just before the period is up would
    hold a poll back to the next one, and sending would drift behind the polls.
    """

    def __init__(
        self,
        points: Iterable[TelemetryPoint],
        poll_periods: dict[str, float],
        heartbeat: float = 300.0,
        slack: float = 0.0,
    ) -> None:
        self.heartbeat = heartbeat
        self.slack = slack
        self._points: dict[int, TelemetryPoint] = {}
        self._state: dict[int, _State] = {}
        self._devices: dict[str, _Device] = {}
        for point in points:
            self._points[point.pid] = point
            self._state[point.pid] = _State(point)
            device = self._devices.setdefault(
                point.device, _Device(min_period=poll_periods.get(point.device, 1.0))
            )
            device.pids.append(point.pid)
        # Devices with something to report, in the order their changes came (a dict: ordered).
        self._dirty: dict[str, None] = {}
        self._next_heartbeat = -math.inf  # when the first device's heartbeat is due
        self._offers = 0  # numbers each offer(): "newest" is judged within one batch

    def offer(self, batch: SampleBatch) -> None:
        """Remember the newest sample of each known point; mark changed ones pending.

        One pass over the batch's columns (the hot path: every value read). A point whose newest
        value is back where it was last reported has nothing pending any more. Within a batch the
        newest sample wins; across batches the later batch does, whatever its timestamps: after
        the wall clock steps back, live values keep going out (the kernel drops what is older
        than it has seen; a live view must not go silent for the length of the step).
        """
        states, dirty = self._state, self._dirty
        self._offers += 1
        offer = self._offers
        for pid, ts, value, quality in zip(
            batch.point, batch.ts, batch.value, batch.quality, strict=True
        ):
            state = states.get(pid)
            if state is None:
                continue
            latest = state.latest
            if latest is not None and ts < latest[0] and state.offer == offer:
                continue  # an older sample of this batch: the newer one stands
            state.offer = offer
            sample = state.latest = (ts, value, quality)
            if quality != state.quality or _changed(state.point, state.value, value):
                state.pending = sample
                dirty[state.point.device] = None
            else:
                state.pending = None

    def due(self, now: float) -> list[TelemetryReport]:
        reports: list[TelemetryReport] = []
        beat = now >= self._next_heartbeat
        # Only devices with changes, unless some device's heartbeat is due: then all of them.
        names = list(self._devices) if beat else list(self._dirty)
        for name in names:
            device = self._devices[name]
            heartbeat = now - device.last_heartbeat >= self.heartbeat
            if name not in self._dirty and not heartbeat:
                continue
            if now - device.last_sent < device.min_period - self.slack and not heartbeat:
                continue
            samples: list[tuple[TelemetryPoint, float, float, int]] = []
            for pid in device.pids:
                state = self._state[pid]
                sample = state.latest if heartbeat else state.pending
                if sample is None:
                    continue
                ts, value, quality = sample
                samples.append((state.point, ts, value, quality))
                state.value, state.quality, state.pending = value, quality, None
            self._dirty.pop(name, None)
            if heartbeat:
                device.last_heartbeat = now
            if samples:
                device.last_sent = now
                reports.append(TelemetryReport(name, samples, heartbeat=heartbeat))
        if beat:
            first = min((d.last_heartbeat for d in self._devices.values()), default=now)
            self._next_heartbeat = first + self.heartbeat
        return reports


def _json(text: str) -> bytes:
    return json.dumps(text, ensure_ascii=False).encode()


class TelemetryEncoder:
    """A report's body as the outbox stores it: the bytes `json.dumps` would give, made faster.

    `{"device":..,"points":{"p":{"value":..,"unit":..,"quality":..,"ts":".."},..}[,"heartbeat":true]}`.
    The fixed parts of each point are encoded once, and the points of one poll share their
    timestamp, so it is formatted once: this was the largest share of the daemon's CPU at 200
    meters with telemetry on. Non-finite values are `null` (JSON has no NaN or Infinity).
    """

    def __init__(self) -> None:
        # (pid, quality) -> (the point they were made for, head, tail); a reload makes new points.
        self._parts: dict[tuple[int, int], tuple[TelemetryPoint, bytes, bytes]] = {}
        self._devices: dict[str, bytes] = {}
        self._last_ts = math.nan
        self._last_iso = b""

    def encode(self, report: TelemetryReport) -> bytes:
        device = self._devices.get(report.device)
        if device is None:
            device = self._devices[report.device] = b'{"device":' + _json(report.device)
        out = [device, b',"points":{']
        append, parts, isfinite = out.append, self._parts, math.isfinite
        sep = b""
        for point, ts, value, quality in report.samples:
            fixed = parts.get((point.pid, quality))
            if fixed is None or fixed[0] is not point:
                fixed = parts[(point.pid, quality)] = self._fixed(point, quality)
            append(sep)
            append(fixed[1])
            append(repr(value).encode() if isfinite(value) else b"null")
            append(fixed[2])
            if ts != self._last_ts:
                self._last_ts, self._last_iso = ts, utc_iso(ts).encode()
            append(self._last_iso)
            append(b'"}')
            sep = b","
        append(b'},"heartbeat":true}' if report.heartbeat else b"}}")
        return b"".join(out)

    @staticmethod
    def _fixed(point: TelemetryPoint, quality: int) -> tuple[TelemetryPoint, bytes, bytes]:
        head = _json(point.name) + b':{"value":'
        tail = (
            b',"unit":' + _json(point.unit)
            + b',"quality":' + _json(_QUALITY_NAMES.get(quality, "uncertain"))
            + b',"ts":"'
        )  # fmt: skip
        return point, head, tail
