"""Report-by-exception: deadbands, once per poll, heartbeat."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.samples import QUALITY_BAD, QUALITY_GOOD, SampleBatch
from gateway.daemon.telemetry import (
    TelemetryEncoder,
    TelemetryFilter,
    TelemetryPoint,
    TelemetryReport,
)
from gateway.timefmt import utc_iso


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


def test_a_value_back_where_it_was_reported_is_not_sent() -> None:
    filt = _filter()
    filt.offer(_batch((0, 1.0, 10.0, 0)))
    assert [r.points["p"]["value"] for r in filt.due(100.0)] == [10.0]
    filt.offer(_batch((0, 2.0, 11.0, 0)))  # a change, held back inside the poll period ...
    filt.offer(_batch((0, 3.0, 10.0, 0)))  # ... and gone again before it could be sent
    assert filt.due(101.0) == []
    filt.offer(_batch((0, 4.0, 12.0, 0), (0, 3.5, 99.0, 0)))  # an older sample never wins
    assert [r.points["p"]["value"] for r in filt.due(102.0)] == [12.0]


def test_between_heartbeats_only_changed_devices_report() -> None:
    points = [TelemetryPoint(k, f"m{k}", "p") for k in range(3)]
    filt = TelemetryFilter(points, {f"m{k}": 1.0 for k in range(3)}, heartbeat=10.0)
    for k in range(3):
        filt.offer(_batch((k, 1.0, 5.0, 0)))
    assert {r.device for r in filt.due(0.0)} == {"m0", "m1", "m2"}  # first: everyone
    filt.offer(_batch((1, 2.0, 6.0, 0)))
    assert [(r.device, r.heartbeat) for r in filt.due(4.0)] == [("m1", False)]
    assert filt.due(9.9) == []
    assert sorted((r.device, r.heartbeat) for r in filt.due(10.0)) == [
        ("m0", True),
        ("m1", True),
        ("m2", True),
    ]


@pytest.mark.parametrize("pass_s", [0.25, 0.3])
def test_every_poll_goes_out_when_passes_do_not_line_up_with_polls(pass_s: float) -> None:
    # Polls every 1 s, the pipeline's passes every pass_s: a pass that falls just before the
    # period is up must not hold the poll back to the next one (it was 50 of 60 at 0.3 s).
    filt = TelemetryFilter([TelemetryPoint(0, "m1", "p")], {"m1": 1.0}, slack=pass_s)
    sent: list[float] = []
    passes = iter(k * pass_s for k in range(1, 10_000))
    now = next(passes)
    for poll in range(60):
        t = 0.9 + poll * 1.0  # the poll's value arrives
        filt.offer(_batch((0, 1000.0 + t, float(poll), 0)))
        while now < t:
            now = next(passes)
        sent += [r.points["p"]["value"] for r in filt.due(now)]  # type: ignore[misc]
    assert len(sent) >= 59
    assert sent == sorted(sent)


def test_telemetry_goes_on_after_the_wall_clock_steps_back() -> None:
    filt = _filter()
    filt.offer(_batch((0, 5000.0, 1.0, 0)))
    assert [r.points["p"]["value"] for r in filt.due(0.0)] == [1.0]
    # NTP steps the clock back an hour: the next batches carry older times, and are live.
    filt.offer(_batch((0, 1400.0, 2.0, 0)))
    [report] = filt.due(1.0)
    assert report.points["p"]["value"] == 2.0
    assert report.points["p"]["ts"] == 1400.0
    filt.offer(_batch((0, 1401.0, 3.0, 0)))
    assert [r.points["p"]["value"] for r in filt.due(2.0)] == [3.0]


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
    assert report.heartbeat
    assert report.points["p"]["value"] == 7.0
    assert report.points["p"]["ts"] == 3.0


def test_unknown_points_ignored() -> None:
    filt = _filter()
    filt.offer(_batch((5, 1.0, 1.0, 0)))
    assert filt.due(0.0) == []


# -- the encoder: the same bytes json.dumps gives for the payload's dict -------------------------

_names = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
_samples = st.lists(
    st.tuples(
        _names,
        _names,
        st.floats(1e9, 2e9),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([QUALITY_GOOD, QUALITY_BAD, 2]),
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda t: t[0],
)


def _no_constant(name: str) -> object:
    # json.loads takes NaN and Infinity by default: a body holding them must fail here.
    raise AssertionError(f"{name} in a telemetry body")


def _reference(report: TelemetryReport) -> bytes:
    points = {
        name: {**item, "ts": utc_iso(float(item["ts"]))}  # type: ignore[arg-type]
        for name, item in report.points.items()
    }
    body: dict[str, object] = {"device": report.device, "points": points}
    if report.heartbeat:
        body["heartbeat"] = True
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@settings(max_examples=300, deadline=None)
@given(_samples, st.booleans(), st.booleans())
def test_encoder_writes_what_json_dumps_writes(
    rows: list[tuple[str, str, float, float, int]], heartbeat: bool, shared_ts: bool
) -> None:
    encoder = TelemetryEncoder()
    samples = [
        (TelemetryPoint(k, "m-1", name, unit), rows[0][2] if shared_ts else ts, value, quality)
        for k, (name, unit, ts, value, quality) in enumerate(rows)
    ]
    report = TelemetryReport("m-1", samples, heartbeat=heartbeat)
    for _ in range(2):  # the second time from the encoder's caches
        got = encoder.encode(report)
        assert got == _reference(report)
        json.loads(got, parse_constant=_no_constant)  # valid JSON: no NaN or Infinity
    # A reload gives points new units under the same pids: the caches follow.
    renamed = [(replace(p, unit=p.unit + "x"), ts, v, q) for p, ts, v, q in samples]
    again = TelemetryReport("m-1", renamed, heartbeat=heartbeat)
    assert encoder.encode(again) == _reference(again)


def test_encoder_body_goes_through_the_outbox_hot_path() -> None:
    from gateway.outbox.messages import encode_body

    encoder = TelemetryEncoder()
    report = TelemetryReport("m1", [(TelemetryPoint(0, "m1", "p", "kW"), 1.7e9, 2.5, 0)])
    body = encoder.encode(report)
    assert body.startswith(b'{"')
    assert body.endswith(b"}")
    assert encode_body(body) == b"," + body[1:]
