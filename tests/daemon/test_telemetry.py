"""Report-by-exception: deadbands, once per poll, heartbeat."""

from __future__ import annotations

import math

import pytest

from gateway.samples import QUALITY_BAD, SampleBatch
from gateway.telemetry import TelemetryFilter, TelemetryPoint


def _batch(*rows: tuple[int, float, float, int]) -> SampleBatch:
    batch = SampleBatch()
    for row in rows:
        batch.append(*row)
    return batch


def _filter(**deadbands: float | None) -> TelemetryFilter:
    return TelemetryFilter(
        [TelemetryPoint(0, "m1", "p", "kW", deadbands.get("abs"), deadbands.get("pct"))],
        {"m1": 1.0},
        heartbeat=300.0,
    )


@pytest.mark.parametrize(
    ("deadbands", "values", "reported"),
    [
        ({}, [10.0, 10.0, 10.5, 10.5], [10.0, 10.5]),
        ({"abs": 1.0}, [10.0, 10.9, 11.0, 11.1, 10.2, 9.9], [10.0, 11.1, 9.9]),
        ({"pct": 5.0}, [100.0, 104.0, 106.0, 110.0, 111.4], [100.0, 106.0, 111.4]),
        ({"pct": 5.0}, [0.0, 0.1], [0.0, 0.1]),
        ({}, [1.0, math.nan, math.nan, 2.0], [1.0, None, 2.0]),
    ],
)
def test_deadbands(deadbands, values, reported) -> None:
    filt = _filter(**deadbands)
    out: list[object] = []
    for step, value in enumerate(values):
        now = 10.0 + step * 1.0  # one poll per second, heartbeat far away after the first
        filt.offer(_batch((0, 1000.0 + step, value, 0)))
        for report in filt.due(now):
            out.append(report.points["p"]["value"])
    assert out == reported


def test_at_most_once_per_poll_keeps_newest() -> None:
    filt = _filter()
    filt.offer(_batch((0, 1.0, 1.0, 0)))
    assert [r.points["p"]["value"] for r in filt.due(100.0)] == [1.0]
    filt.offer(_batch((0, 2.0, 2.0, 0)))
    filt.offer(_batch((0, 3.0, 3.0, 0)))
    assert filt.due(100.4) == []  # inside the poll period
    reports = filt.due(101.0)
    assert [r.points["p"]["value"] for r in reports] == [3.0]
    assert filt.due(102.0) == []


def test_quality_change_is_reported() -> None:
    filt = _filter(abs=100.0)
    filt.offer(_batch((0, 1.0, 5.0, 0)))
    filt.due(0.0)
    filt.offer(_batch((0, 2.0, 5.0, QUALITY_BAD)))
    [report] = filt.due(5.0)
    assert report.points["p"]["quality"] == "bad"


def test_heartbeat_repeats_unchanged_values() -> None:
    filt = _filter()
    filt.offer(_batch((0, 1.0, 7.0, 0)))
    assert len(filt.due(0.0)) == 1
    filt.offer(_batch((0, 2.0, 7.0, 0)))
    assert filt.due(150.0) == []
    filt.offer(_batch((0, 3.0, 7.0, 0)))
    [report] = filt.due(300.0)
    assert (
        report.heartbeat and report.points["p"]["value"] == 7.0 and report.points["p"]["ts"] == 3.0
    )


def test_unknown_points_ignored() -> None:
    filt = _filter()
    filt.offer(_batch((5, 1.0, 1.0, 0)))
    assert filt.due(0.0) == []
