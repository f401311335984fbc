"""The sample batch, the point-id map, and the device health/backoff every driver shares."""

from __future__ import annotations

import random

import pytest

from drivers.base import (
    DRIVER_RESTART,
    SESSION_RECONNECT,
    Backoff,
    DeviceHealth,
    FixedRate,
)
from drivers.samples import QUALITY_BAD, PointIndex, SampleBatch
from tests.support.recording import RecordingSink


def test_batch_is_columnar_and_extends() -> None:
    a = SampleBatch()
    a.append(0, 10.0, 1.5)
    b = SampleBatch()
    b.append(1, 11.0, float("nan"), QUALITY_BAD)
    a.extend(b)
    assert len(a) == 2
    assert a.point.typecode == "i"
    assert a.ts.typecode == "d"
    assert a.quality.typecode == "B"
    rows = list(a)
    assert rows[0] == (0, 10.0, 1.5, 0)
    assert rows[1][3] == QUALITY_BAD


def test_point_ids_are_stable_and_never_reused() -> None:
    index = PointIndex(["m1.energy_import", "m1.power_total"])
    assert index.id("m1.power_total") == 1
    index.retire("m1.energy_import")
    assert "m1.energy_import" not in index
    assert index.add("m2.energy_import") == 2  # a fresh id, not the retired 0
    assert index.add("m1.power_total") == 1
    assert index.capacity == 3
    assert len(index) == 2
    with pytest.raises(KeyError, match="retired"):
        index.key(0)


def test_health_reports_each_transition_once() -> None:
    sink = RecordingSink()
    clock = iter(range(100)).__next__
    health = DeviceHealth("m1", sink, failures_to_down=2, clock=lambda: float(clock()))
    health.success()
    health.failure("timeout")
    assert health.state == "up"
    for _ in range(5):
        health.failure("timeout after 2 retries")
    health.success()
    assert [(e.type, e.reason) for e in sink.events] == [
        ("device_up", "connected"),
        ("device_down", "timeout after 2 retries"),
        ("device_up", "recovered"),
    ]
    assert health.errors == 6
    assert health.snapshot()["state"] == "up"


def test_connection_loss_takes_a_device_down_at_once() -> None:
    sink = RecordingSink()
    health = DeviceHealth("m1", sink, failures_to_down=3)
    health.success()
    health.failure("connection refused", fatal=True)
    assert health.state == "down"
    assert sink.events[-1].type == "device_down"


def test_backoff_grows_with_jitter_and_caps() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    steps = [1, 2, 4, 8, 8, 8, 8, 8]
    assert all(0.5 * s <= d <= s for d, s in zip(delays, steps, strict=True))
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_fixed_rate_counts_the_ticks_a_poll_ran_past() -> None:
    """One definition of an overrun for every driver: a tick a poll ran past, skipped."""
    schedule = FixedRate(period=1.0, due=10.0)
    # (ticks skipped, the next due tick) after a poll that ended at the given time.
    assert (schedule.advance(10.3), schedule.due) == (0, 11.0)  # on time: no drift
    assert (schedule.advance(11.0), schedule.due) == (0, 12.0)  # ended exactly on the tick
    assert (schedule.advance(14.5), schedule.due) == (2, 15.0)  # ticks 13, 14 skipped
    assert (schedule.advance(16.0), schedule.due) == (0, 16.0)  # ended on tick 16: it runs
    assert (schedule.advance(17.5), schedule.due) == (1, 18.0)  # tick 17 skipped
    assert schedule.due > 17.5  # never a catch-up burst: the next tick is in the future


def test_backoff_of_a_named_situation() -> None:
    backoff = Backoff.of(DRIVER_RESTART)
    assert (backoff.initial, backoff.maximum) == (DRIVER_RESTART.first, DRIVER_RESTART.maximum)
    assert Backoff.of(SESSION_RECONNECT).maximum == 30.0
