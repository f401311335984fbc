"""The driver against real pymodbus servers: exception 2, isolation, reconnect, fixed rate."""

from __future__ import annotations

import itertools
import logging
import math
import statistics
import time

import pytest

from drivers.modbus.device import DeviceRunner
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.link import Link, LinkSettings, NoResponse, settings_of
from drivers.samples import QUALITY_BAD, QUALITY_GOOD, PointIndex
from gateway.sim.modbus_meters import ModbusPlant, SimMeter
from tests.support.tasks import running
from tests.support.waiting import await_until


@pytest.mark.asyncio
async def test_profile_meter_polls_canonical_points(plant, sink, device_factory) -> None:  # type: ignore[no-untyped-def]
    meter = plant.meter(1)
    # Pinned (float32-exact) values: the reading is known to the bit, not just to a range.
    meter.hold("voltage_l1", 231.5)
    meter.hold("power_total", 12.0)  # 12000 W in the register: the profile's scale makes kW
    meter.hold("energy_import", 1234.5)
    device = device_factory("m1", port=plant.port, unit=1, profile="eastron-sdm630")
    index = sink.index
    runner = DeviceRunner(device, Link(settings_of(device)), index, sink)
    try:
        batch = await runner.poll_once()
    finally:
        runner.link.close()
    values = {index.key(p): v for p, _, v, q in batch if q == QUALITY_GOOD}
    assert len(values) == 14
    assert values["m1.voltage_l1"] == 231.5
    assert values["m1.power_total"] == 12.0  # kW, not W
    assert values["m1.energy_import"] == 1234.5
    assert values["m1.energy_export"] == 12.5  # the simulator's constant
    assert runner.plan.requests == 2
    assert sink.events_of("device_up", "m1")


@pytest.mark.asyncio
async def test_exception_2_on_part_of_a_block_keeps_the_rest_flowing(
    plant, sink, device_factory
) -> None:  # type: ignore[no-untyped-def]
    meter = plant.meter(1)
    # A rejected register inside a bridged gap, and a rejected point (frequency at 70).
    meter.rejected = [("input", 58, 1), ("input", 70, 2)]
    device = device_factory("m1", port=plant.port, unit=1, profile="eastron-sdm630")
    index = sink.index
    runner = DeviceRunner(device, Link(settings_of(device)), index, sink)
    try:
        first = await runner.poll_once()
        second = await runner.poll_once()
    finally:
        runner.link.close()
    assert sum(q == QUALITY_BAD for q in first.quality) > 1  # the failing block, before learning
    quality = {index.key(p): q for p, _, _, q in second}
    assert quality.pop("m1.frequency") == QUALITY_BAD
    assert set(quality.values()) == {QUALITY_GOOD}
    assert len(quality) == 13
    starts = [(b.start, b.count) for b in runner.plan.blocks]
    assert all(not (s <= 58 < s + n) and not (s < 72 and s + n > 70) for s, n in starts)
    errors = sink.events_of("point_error", "m1")
    assert [e.point for e in errors] == ["frequency"]
    assert "70" in errors[0].reason
    assert "exception 2" in errors[0].reason
    assert runner.health.state == "up"


@pytest.mark.asyncio
async def test_dead_device_does_not_slow_a_healthy_one_on_another_link(
    plant, sink, device_factory
) -> None:  # type: ignore[no-untyped-def]
    async with ModbusPlant([SimMeter(9, silent=True)]) as dead_plant:
        period = 0.1
        healthy = device_factory(
            "ok", port=plant.port, unit=1, poll=period, profile="eastron-sdm630"
        )
        dead = device_factory(
            "dead", port=dead_plant.port, unit=9, poll=period, timeout=0.3, profile="eastron-sdm630"
        )
        # Two links, two drivers (as the daemon runs them: one unit per link).
        ok_link = ModbusDriver([healthy], sink.index, sink)
        dead_link = ModbusDriver([dead], sink.index, sink)
        async with running(ok_link), running(dead_link):
            started = time.monotonic()
            await await_until(
                lambda: len(sink.poll_times("ok")) >= 25 and len(sink.poll_times("dead")) >= 8,
                10.0,
                "25 polls of the healthy device and 8 of the dead one",
            )
            elapsed = time.monotonic() - started
            status = {**ok_link.status(), **dead_link.status()}
        times = sink.poll_times("ok")
        intervals = [b - a for a, b in itertools.pairwise(times)]
        # The median is the healthy device's period; one stall of this shared machine (a skipped
        # poll) must not decide the test, but more than a few would fail the count below.
        median = statistics.median(intervals)
        assert abs(median - period) <= 0.1 * period, (median, intervals)
        assert len(times) >= 0.85 * elapsed / period, (len(times), elapsed)
        assert max(intervals) < 0.3 + period  # never held up by the dead device's 0.3 s timeouts
        assert status["ok"]["state"] == "up"
        assert status["dead"]["state"] == "down"
        assert sink.events_of("device_down", "dead")
        # The dead device still reports, with bad quality and no values, every poll.
        dead_rows = sink.device_rows("dead")
        assert dead_rows
        assert all(q == QUALITY_BAD and math.isnan(v) for _, _, v, q in dead_rows)


@pytest.mark.asyncio
async def test_dead_unit_on_a_shared_link_is_pushed_to_slower_retries(
    plant, sink, device_factory
) -> None:  # type: ignore[no-untyped-def]
    period = 0.1
    healthy = device_factory("ok", port=plant.port, unit=1, poll=period, profile="eastron-sdm630")
    dead = device_factory(
        "dead", port=plant.port, unit=3, poll=period, timeout=0.1, profile="eastron-sdm630"
    )
    driver = ModbusDriver([healthy, dead], sink.index, sink)
    async with running(driver):
        started = time.monotonic()
        await await_until(lambda: driver.status()["ok"]["polls"] >= 20, 10.0, "20 healthy polls")
        elapsed = time.monotonic() - started
        status = driver.status()
    # Without backoff the dead unit would cost 3 timeouts per poll, 20 polls: 60 requests.
    assert status["dead"]["requests"] <= 10, status["dead"]
    # ...and the healthy unit, waiting behind them, would not keep 2/3 of its rate.
    assert status["ok"]["polls"] >= 0.65 * elapsed / period, (status["ok"], elapsed)


@pytest.mark.asyncio
async def test_reconnects_after_the_server_restarts(plant, sink, device_factory) -> None:  # type: ignore[no-untyped-def]
    device = device_factory("m1", port=plant.port, unit=1, poll=0.1, profile="eastron-sdm630")
    driver = ModbusDriver([device], sink.index, sink)
    async with running(driver):
        await await_until(lambda: len(sink.poll_times("m1")) >= 3, 5.0, "three polls")
        await plant.restart(downtime=0.6)
        await await_until(lambda: sink.events_of("device_up", "m1")[1:], 5.0, "device_up again")
        back_at = sink.events_of("device_up", "m1")[1].at
        await await_until(
            lambda: len([t for t in sink.poll_times("m1") if t > back_at]) >= 3,
            5.0,
            "three polls after the return",
        )
    assert [e.type for e in sink.events if e.type.startswith("device_")] == [
        "device_up",
        "device_down",
        "device_up",
    ]
    assert sink.events_of("device_up", "m1")[1].reason == "recovered"
    down = sink.events_of("device_down", "m1")[0]
    up = sink.events_of("device_up", "m1")[1]
    # Between the fall and the poll that brought it back, only bad samples (no stale values).
    during = [r for r in sink.rows() if down.at <= r[1] < up.at - 0.05]
    assert during
    assert all(q == QUALITY_BAD for *_, q in during)
    # After it: every poll good again.
    after = [r for r in sink.rows() if r[1] > up.at]
    assert len(after) >= 3 * 14
    assert {q for *_, q in after} == {QUALITY_GOOD}


@pytest.mark.asyncio
async def test_overrun_skips_missed_polls_instead_of_bunching(plant, sink, device_factory) -> None:  # type: ignore[no-untyped-def]
    plant.meter(1).delay = 0.12  # two blocks: each poll takes ~0.24 s for a 0.1 s period
    device = device_factory(
        "slow", port=plant.port, unit=1, poll=0.1, timeout=0.5, profile="eastron-sdm630"
    )
    driver = ModbusDriver([device], sink.index, sink)
    async with running(driver):
        await await_until(
            lambda: driver.status()["slow"]["overruns"] >= 4 and len(sink.poll_times("slow")) >= 5,
            10.0,
            "four overruns in five polls",
        )
        status = driver.status()["slow"]
    starts = sink.poll_times("slow")
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps
    assert min(gaps) > 0.15  # no burst of catch-up polls after each slow one
    assert status["state"] == "up"


@pytest.mark.asyncio
async def test_rejected_ranges_are_tried_again_after_an_hour(plant, sink, device_factory) -> None:  # type: ignore[no-untyped-def]
    meter = plant.meter(1)
    meter.rejected = [("input", 70, 2)]
    device = device_factory("m1", port=plant.port, unit=1, profile="eastron-sdm630")
    index = sink.index
    now = [1000.0]
    runner = DeviceRunner(device, Link(settings_of(device)), index, sink, mono=lambda: now[0])
    try:
        await runner.poll_once()
        assert [runner.specs[i].name for i in runner.plan.unreadable] == ["frequency"]
        meter.rejected = []  # the meter was reconfigured
        now[0] += 1800
        await runner.poll_once()
        assert len(runner.plan.unreadable) == 1  # still remembered within the hour
        now[0] += 1900
        batch = await runner.poll_once()
    finally:
        runner.link.close()
    assert runner.plan.unreadable == ()
    quality = {index.key(p): q for p, _, _, q in batch}
    assert quality["m1.frequency"] == QUALITY_GOOD


@pytest.mark.asyncio
async def test_dead_units_do_not_cut_a_live_one_off_a_shared_connection(
    sink, device_factory
) -> None:  # type: ignore[no-untyped-def]
    # Between two polls of the live meter, the dead ones time out many times in a row: pymodbus
    # alone would close the shared connection and take the live meter down with them.
    dead = (3, 4, 5, 6)
    meters = [SimMeter(1, profile="eastron-sdm630")] + [SimMeter(u, silent=True) for u in dead]
    async with ModbusPlant(meters) as plant:
        live = device_factory(
            "u1", port=plant.port, unit=1, poll=0.5, timeout=0.05, profile="eastron-sdm630"
        )
        devices = [live] + [
            device_factory(f"u{u}", port=plant.port, unit=u, poll=0.1, timeout=0.05,
                           profile="eastron-sdm630")
            for u in dead
        ]  # fmt: skip
        driver = ModbusDriver(devices, sink.index, sink)
        async with running(driver):
            # Four polls of the live unit (2 s): the dead ones time out ~80 times meanwhile.
            await await_until(
                lambda: (
                    driver.status()["u1"]["polls"] >= 4
                    and {driver.status()[f"u{u}"]["state"] for u in dead} == {"down"}
                ),
                10.0,
                "four polls of u1 with every dead unit down",
            )
            status = driver.status()
        link = driver.link
    assert status["u1"]["state"] == "up", status["u1"]
    assert status["u1"]["errors"] == 0, status["u1"]
    assert not sink.events_of("device_down", "u1")
    assert {status[f"u{u}"]["state"] for u in dead} == {"down"}
    assert link.connects == 1  # one connection all along


@pytest.mark.asyncio
async def test_a_link_where_no_unit_answers_is_reconnected(sink, device_factory) -> None:  # type: ignore[no-untyped-def]
    async with ModbusPlant([SimMeter(9, silent=True)]) as plant:
        device = device_factory("mute", port=plant.port, unit=9, timeout=0.05, retries=5,
                                profile="eastron-sdm630")  # fmt: skip
        runner = DeviceRunner(device, Link(settings_of(device)), PointIndex(), sink)
        try:
            await runner.poll_once()  # 6 silences in a row: a half-open connection, maybe
            assert runner.link.connects == 1
            assert not runner.link.connected
            runner._retry_at = 0.0  # skip the device backoff: probe now
            await runner.poll_once()
            assert runner.link.connects == 2
        finally:
            runner.link.close()
    assert runner.health.state == "down"


@pytest.mark.asyncio
async def test_a_missed_reply_reads_the_same_whichever_timer_fires(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One link, two silent units: one with the link's (longest) timeout, which the client's own
    timer enforces, one with a shorter one, which gets its own. Both say what to check, in time;
    pymodbus's own error line for the same event is not logged; the link stays up."""
    meters = [
        SimMeter(1, profile="eastron-sdm630"),
        SimMeter(7, silent=True),
        SimMeter(8, silent=True),
    ]
    async with ModbusPlant(meters) as plant:
        link = Link(LinkSettings("tcp", host="127.0.0.1", port=plant.port, timeout=0.3))
        try:
            with caplog.at_level(logging.INFO):
                for unit, timeout in ((7, 0.3), (8, 0.05)):
                    started = time.monotonic()
                    with pytest.raises(
                        NoResponse, match=rf"unit {unit} .*: no answer within {timeout:g} s \(check"
                    ):
                        await link.read(unit, "input", 0, 2, timeout)
                    took = time.monotonic() - started
                    assert timeout * 0.9 <= took < timeout + 0.2, (unit, took)
                assert link.connected
                assert len(await link.read(1, "input", 0, 2, 0.3)) == 2
        finally:
            link.close()
    assert not [r for r in caplog.records if "No response received" in r.getMessage()]


def test_one_driver_runs_one_link(sink, device_factory) -> None:  # type: ignore[no-untyped-def]
    """The daemon runs one driver per link (its unit); a device of another link is a bug."""
    here = device_factory("here", port=15020)
    there = device_factory("there", port=15021)
    with pytest.raises(ValueError, match=r"devices there are not on tcp://127\.0\.0\.1:15020"):
        ModbusDriver([here, there], PointIndex(), sink)
    driver = ModbusDriver([here, device_factory("also", port=15020, unit=2)], PointIndex(), sink)
    assert driver.link.shared
    assert set(driver.runners) == {"here", "also"}
    driver.link.close()
