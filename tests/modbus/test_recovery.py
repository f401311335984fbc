"""How soon a device that stopped answering is tried again: alone on its link, and on a shared one.

A meter alone on its link is read again within its reconnect_max (5 s) of its return; a dead
unit on a shared line keeps slow retries so its neighbours lose little. Measured against real
servers, with the recovery time and the attempt spacing printed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from drivers.modbus.driver import ModbusDriver
from drivers.modbus.link import LinkSettings, make_client
from drivers.modbus.recovery import Member, Steps, device_steps, link_steps, reconnect_max
from drivers.samples import QUALITY_BAD, QUALITY_GOOD, PointIndex, SampleBatch
from gateway.sim.modbus_meters import ModbusPlant, SimMeter
from tests.modbus.badserver import BadServer
from tests.modbus.conftest import make_device
from tests.support.recording import RecordingSink
from tests.support.tasks import running
from tests.support.waiting import await_until

# Long enough for the old link backoff (0.5 s doubling to 30 s) to have grown past 5 s.
DOWNTIME = 13.0


@dataclass
class TimedSink(RecordingSink):
    """Also keeps the monotonic time each batch arrived and whether all of it was good."""

    arrivals: list[tuple[float, bool]] = field(default_factory=list)

    def add_samples(self, batch: SampleBatch) -> None:
        super().add_samples(batch)
        good = len(batch) > 0 and all(q == QUALITY_GOOD for q in batch.quality)
        self.arrivals.append((time.monotonic(), good))


@pytest.mark.parametrize(
    ("members", "link", "devices"),
    [
        # alone: 5 s between attempts at most, first step max(poll, 1 s)
        ([Member(1.0)], Steps(1.0, 4.0), [Steps(1.0, 4.0)]),
        ([Member(0.2)], Steps(1.0, 4.8), [Steps(1.0, 4.8)]),
        ([Member(0.2, 2.0)], Steps(1.0, 1.8), [Steps(1.0, 1.8)]),
        ([Member(5.0)], Steps(0.0, 0.0), [Steps(0.0, 0.0)]),  # every poll is an attempt
        ([Member(1.0, 30.0)], Steps(1.0, 29.0), [Steps(1.0, 29.0)]),
        # shared: the link as before (0.5 s doubling to 30 s), a dead unit up to 60 s
        ([Member(1.0), Member(1.0)], Steps(0.5, 30.0), [Steps(1.0, 59.0), Steps(1.0, 59.0)]),
        ([Member(0.1), Member(2.0)], Steps(0.5, 30.0), [Steps(0.5, 59.9), Steps(2.0, 58.0)]),
        # shared, one device asks for more: the link follows the tightest, each device its own
        ([Member(1.0, 10.0), Member(1.0)], Steps(0.5, 9.0), [Steps(1.0, 9.0), Steps(1.0, 59.0)]),
        ([Member(1.0, 60.0), Member(1.0, 90.0)], Steps(0.5, 30.0),
         [Steps(1.0, 59.0), Steps(1.0, 89.0)]),
        ([], Steps(0.5, 30.0), []),  # a tool's link, no device attached
    ],
)  # fmt: skip
def test_retry_caps(members: list[Member], link: Steps, devices: list[Steps]) -> None:
    shared = len(members) > 1
    assert link_steps(members) == link
    assert [device_steps(m, shared) for m in members] == devices
    for m, steps in zip(members, devices, strict=True):
        # The guarantee: a retry due at most `maximum` after an attempt is made at the next
        # poll, so attempts are never more than reconnect_max apart.
        assert steps.maximum + m.poll <= max(reconnect_max(m, shared), m.poll) + 1e-9


@pytest.mark.asyncio
async def test_a_meter_alone_on_its_link_is_read_again_within_5_s_of_its_return(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Switched off for 13 s, back on the same port: the first good reading comes < 5 s later.

    Before reconnect_max the link's backoff had grown to 8-16 s by then: 15-30 s for a meter
    off for 30 s, as the issue measured.
    """
    caplog.set_level(logging.INFO)
    sink = TimedSink()
    attempts: list[float] = []

    def counting(settings: LinkSettings) -> Any:
        attempts.append(time.monotonic())
        return make_client(settings)

    async with ModbusPlant([SimMeter(1, profile="eastron-sdm630")]) as plant:
        device = make_device("m1", port=plant.port, poll=0.2, timeout=0.2, profile="eastron-sdm630")
        driver = ModbusDriver([device], sink.index, sink, client_factory=counting)
        async with running(driver):
            await await_until(lambda: any(good for _, good in sink.arrivals), 5.0, "a good reading")
            await plant.stop()
            stopped = time.monotonic()
            await asyncio.sleep(DOWNTIME)  # the meter is off: this is the scenario, not a wait
            await plant.start()
            back = time.monotonic()

            def read_again() -> bool:
                return any(good and t > back for t, good in sink.arrivals)

            await await_until(read_again, 35.0, "a good reading after the meter's return")
            assert driver.status()["m1"]["state"] == "up"
    first_good = next(t for t, good in sink.arrivals if good and t > back)
    recovery = first_good - back
    tries = [t for t in attempts if t > stopped]
    spacing = [b - a for a, b in itertools.pairwise([stopped, *tries])]
    print(
        f"\nalone on its link, off {DOWNTIME:.0f} s: read again {recovery:.2f} s after its "
        f"return; {len(tries)} connection attempts, spaced "
        + ", ".join(f"{s:.1f}" for s in spacing)
        + " s"
    )
    assert recovery < 5.5, recovery
    assert max(spacing) < 5.5, spacing
    # Meanwhile: bad samples every poll, never a stale good one.
    during = [good for t, good in sink.arrivals if stopped + 0.3 < t < back]
    assert len(during) >= 0.8 * DOWNTIME / 0.2
    assert not any(during)
    # One line for the outage (no pymodbus line per attempt), one for the return.
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert lines[0].startswith("device m1 is down: cannot open"), lines
    assert any("device m1 is up (recovered)" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_a_dead_unit_on_a_shared_line_keeps_slow_retries() -> None:
    """RTU over TCP: unit 1 answers, unit 3 never does. Attempts at unit 3 thin out to far
    more than 5 s apart (the dedicated cap does not apply on a shared link), counted at the
    server; unit 1 keeps its poll period."""
    poll = 0.1
    sink = TimedSink()
    async with BadServer(registers={0: 7, 1: 8}, rtu=True, units=(1,)) as server:
        points = [{"name": "a", "address": 0}, {"name": "b", "address": 1}]
        live = make_device("live", port=server.port, unit=1, poll=poll, timeout=0.1,
                           transport="rtu-over-tcp", points=points)  # fmt: skip
        dead = make_device("dead", port=server.port, unit=3, poll=poll, timeout=0.1,
                           transport="rtu-over-tcp", points=points)  # fmt: skip
        driver = ModbusDriver([live, dead], sink.index, sink)
        async with running(driver):
            started = time.monotonic()

            def longest_wait() -> float:
                times = [r.at for r in server.requests_to(3)]
                now = time.monotonic()
                return max((b - a for a, b in itertools.pairwise([*times, now])), default=0.0)

            # The backoff grows 0.5, 1, 2, 4, 8 s...: a wait past 5.5 s (more than the dedicated
            # cap allows) comes within ~15 s.
            await await_until(
                lambda: longest_wait() > 5.5, 25.0, "a wait over 5.5 s between attempts at unit 3"
            )
            elapsed = time.monotonic() - started
            status = driver.status()
    asked = [r.at - started for r in server.requests_to(3)]
    # Every poll delivers a batch (bad samples while down), tried or not.
    dead_polls = len(sink.poll_times("dead"))
    print(
        f"\nshared line, {elapsed:.1f} s: {len(asked)} requests to the dead unit in "
        f"{dead_polls} polls, at " + ", ".join(f"{t:.1f}" for t in asked) + " s"
    )
    assert len(asked) <= 0.1 * dead_polls, (len(asked), dead_polls)
    assert status["dead"]["state"] == "down"
    # The live unit: every poll on time (median; a stall of this shared machine must not
    # decide it), every sample good.
    times = sink.poll_times("live")
    intervals = [b - a for a, b in itertools.pairwise(times)]
    assert abs(statistics.median(intervals) - poll) <= 0.1 * poll, intervals
    assert len(times) >= 0.85 * elapsed / poll, (len(times), elapsed)
    live_rows = sink.device_rows("live")
    assert live_rows
    assert all(q == QUALITY_GOOD for *_, q in live_rows)
    assert status["live"]["errors"] == 0
    dead_rows = sink.device_rows("dead")
    assert dead_rows
    assert all(q == QUALITY_BAD for *_, q in dead_rows)


@pytest.mark.asyncio
async def test_a_reload_that_shares_or_frees_a_link_changes_its_policy() -> None:
    """ModbusDriver.update(): a second device on the link makes it shared (slow retries);
    removing it again gives the one left its own link's policy."""
    async with BadServer(registers={0: 1}, units=(1, 2)) as server:
        a = make_device(
            "a", port=server.port, unit=1, poll=0.2, points=[{"name": "x", "address": 0}]
        )
        b = make_device(
            "b", port=server.port, unit=2, poll=0.2, points=[{"name": "x", "address": 0}]
        )
        driver = ModbusDriver([a], PointIndex(), RecordingSink())
        async with running(driver):
            # Polling already: the reload below meets a running driver.
            await await_until(lambda: driver.status()["a"]["polls"] >= 1, 2.0, "a first poll")
            link = driver.link
            assert not link.shared
            assert link._backoff.maximum == pytest.approx(4.8)
            assert driver.runners["a"].backoff.maximum == pytest.approx(4.8)

            assert await driver.update([a, b])
            driver.activate()
            assert link.shared
            assert link._backoff.maximum == 30.0
            runner = driver.runners["a"]
            # Each runner fits itself to the link when it next needs a retry.
            runner._retune()
            assert runner.backoff.maximum == pytest.approx(59.8)
            assert driver.runners["b"].backoff.maximum == pytest.approx(59.8)

            assert await driver.update([a])
            assert not link.shared
            assert link._backoff.maximum == pytest.approx(4.8)
            runner._retune()
            assert runner.backoff.maximum == pytest.approx(4.8)
