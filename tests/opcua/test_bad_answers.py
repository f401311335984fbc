"""A PLC that answers badly, against the driver in both modes: Bad/Uncertain status codes, the
wrong type, NaN and ±Inf, SourceTimestamps going backwards, a namespace that moves under a live
session. In every case the point goes bad with one log line per transition, nothing but good
finite values of the node's type is delivered as good, the healthy points and the device beside
it keep their rate, and no traceback reaches the log.

One PLC process for the module (`--control`: values are injected as a misbehaving server sends
them, bypassing asyncua's own type checks); each test starts fresh drivers.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.base import Backoff
from drivers.opcua.driver import OpcuaDriver
from drivers.samples import QUALITY_BAD, QUALITY_GOOD, QUALITY_UNCERTAIN
from ext import kernel as km
from gateway.sim.opcua_plc import PLC_NAMESPACE
from tests.opcua.conftest import NSU, PlcProcess, make_device, point
from tests.support.recording import RecordingSink
from tests.support.tasks import running
from tests.support.waiting import await_until

FAULT = "Types.Double"  # a Double node (2.25 at rest) the tests break and mend
STEADY = "Furnace.Temp1"  # changes every 0.1 s: the healthy points' rate
SERVER_STATE = "i=2259"  # the device beside: ServerStatus.State, in no namespace that moves
FAULT_NODE = NSU + FAULT
MODES = ("subscribe", "poll")
# Healthy points sample at 100 ms (~10/s); this is far below that (a loaded machine) yet far
# above a stall (a device held up by its neighbour's bad answers, or reconnecting).
MIN_RATE = 1.0
# Deadlines are generous (a shared machine can be slow); waits end as soon as the state holds.
DEADLINE = 20.0


@pytest.fixture(scope="module")
def faulty_plc() -> Iterator[PlcProcess]:
    proc = PlcProcess("--evolve-interval", "0.1", control=True)
    proc.start()
    yield proc
    proc.kill()


@pytest.fixture
def plc(faulty_plc: PlcProcess, caplog: pytest.LogCaptureFixture) -> Iterator[PlcProcess]:
    """The module's PLC, well-behaved, with the fault node at rest; our log at info, asyncua's
    at warning."""
    faulty_plc.command("misbehave")
    faulty_plc.command("inject", node=FAULT, value=2.25)
    caplog.set_level(logging.WARNING, logger="asyncua")
    caplog.set_level(logging.INFO)
    yield faulty_plc
    faulty_plc.command("misbehave")


Mark = tuple[float, dict[str, int]]


class Rig:
    """Faulty devices (a `fault` and a `steady` point each) and a healthy device beside them."""

    def __init__(
        self,
        plc: PlcProcess,
        tmp_path: Path,
        devices: dict[str, dict[str, Any]],
        fault: dict[str, Any] | None = None,  # the fault point's own keys (max_gap …)
    ):
        self.sink = RecordingSink()
        points = [point("fault", FAULT_NODE, **(fault or {})), point("steady", NSU + STEADY)]
        configs = {
            name: make_device(plc.endpoint, points, name=name, **kw) for name, kw in devices.items()
        }
        configs["other"] = make_device(
            plc.endpoint, [point("steady", SERVER_STATE)], name="other", mode="poll"
        )
        self.drivers = {
            name: OpcuaDriver(
                cfg,
                self.sink.index,
                self.sink,
                tmp_path,
                "gw1",
                "plant1",
                flush_interval=0.05,
                backoff=Backoff(initial=0.2, maximum=1.0),
            )
            for name, cfg in configs.items()
        }
        self.faulty = list(devices)
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Rig:
        for driver in self.drivers.values():
            await self._stack.enter_async_context(running(driver))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def rows(self, device: str, name: str = "fault") -> list[tuple[str, float, float, int]]:
        return self.sink.rows(f"{device}.{name}")

    async def seen(self, pred: Callable[[float, int], bool], what: str) -> None:
        """Every faulty device delivered a fault sample with pred(value, quality), within 10 s."""
        await await_until(
            lambda: all(any(pred(v, q) for _k, _t, v, q in self.rows(d)) for d in self.faulty),
            10.0,
            what,
        )

    async def seen_good(self, value: float) -> None:
        await self.seen(lambda v, q: q == QUALITY_GOOD and v == value, f"good {value}")

    async def lines_reach(self, caplog: pytest.LogCaptureFixture, n: int, what: str) -> None:
        await await_until(
            lambda: all(len(lines(caplog, d)) >= n for d in self.faulty), DEADLINE, what
        )

    async def polls_pass(self, n: int) -> None:
        """n more polls of every polling device: a lasting state was read again and again."""
        polling = [d for d in self.drivers.values() if d.mode == "poll"]
        target = {id(d): d.health.polls + n for d in polling}
        await await_until(
            lambda: all(d.health.polls >= target[id(d)] for d in polling), DEADLINE, f"{n} polls"
        )

    def mark(self) -> Mark:
        """Now, and every device's poll count: where a rate is measured from."""
        return time.time(), {name: d.health.polls for name, d in self.drivers.items()}

    def assert_rates_kept(self, mark: Mark, devices: list[str] | None = None) -> None:
        """The healthy points of every device got their samples while the fault point was bad:
        polled ones one per poll (whatever the machine's load), all at a rate far from a stall."""
        since, polls_then = mark
        elapsed = time.time() - since
        assert elapsed > 0.5, "the fault phase was too short to measure a rate"
        for device in devices or self.drivers:
            driver = self.drivers[device]
            good = [t for _k, t, _v, q in self.rows(device, "steady") if q == QUALITY_GOOD]
            count = len([t for t in good if t >= since])
            assert count / elapsed >= MIN_RATE, (device, count / elapsed)
            if driver.mode == "poll" and not driver.source_timestamps:
                polls = driver.health.polls - polls_then[device]
                assert count >= polls - 1, (device, count, polls)  # one may be in flight
            assert driver.health.state == "up", device

    def assert_nothing_bad_is_good(self, allowed: set[float]) -> None:
        """The quality column: bad is NaN, good is finite and one of the values the PLC held."""
        for device in self.faulty:
            for _k, _t, v, q in self.rows(device):
                if q == QUALITY_BAD:
                    assert math.isnan(v), (device, v)
                elif q == QUALITY_GOOD:
                    assert math.isfinite(v), (device, v)
                    assert v in allowed, (device, v)
            for _k, _t, v, q in self.rows(device, "steady"):
                assert q == QUALITY_BAD or (q == QUALITY_GOOD and 1400 < v < 1500), (device, v, q)


def lines(caplog: pytest.LogCaptureFixture, device: str, name: str = "fault") -> list[str]:
    """The driver's log lines about one point, in order."""
    prefix = f"device {device} point {name} "
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("ironwatt") and r.getMessage().startswith(prefix)
    ]


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    for r in caplog.records:
        text = r.getMessage()
        assert r.exc_info is None, (r.name, text)
        assert r.exc_text is None, (r.name, text)
        assert "Traceback" not in text, (r.name, text)


def both_modes(**extra: Any) -> dict[str, dict[str, Any]]:
    return {mode: {"mode": mode, **extra} for mode in MODES}


@pytest.mark.asyncio
async def test_bad_and_uncertain_status_codes(
    plc: PlcProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with Rig(plc, tmp_path, both_modes()) as rig:
        await rig.seen_good(2.25)
        since = rig.mark()
        await plc.acommand("inject", node=FAULT, value=5.0, status="BadSensorFailure")
        await rig.seen(lambda v, q: q == QUALITY_BAD, "the bad status")
        await rig.polls_pass(5)  # Bad poll after poll: still one line
        bad_status = {d: rig.drivers[d].problems.current() for d in rig.faulty}
        await plc.acommand("inject", node=FAULT, value=7.5, status="UncertainLastUsableValue")
        await rig.seen(lambda v, q: q == QUALITY_UNCERTAIN and v == 7.5, "the uncertain value")
        await rig.polls_pass(3)
        await plc.acommand("inject", node=FAULT, value=3.5)
        await rig.seen_good(3.5)
        rig.assert_rates_kept(since)
        back_status = {d: rig.drivers[d].device_status()["point_errors"] for d in rig.faulty}
        assert rig.drivers["poll"].uncertain >= 1
        assert rig.drivers["poll"].device_status()["uncertain"]
    for device in rig.faulty:
        fall, uncertain, back = lines(caplog, device)  # exactly three transitions
        assert fall.startswith(f"device {device} point fault node {FAULT_NODE!r}: ")
        assert "the server reports BadSensorFailure (0x808C0000)" in fall
        assert "UncertainLastUsableValue (0x40900000)" in uncertain
        assert "uncertain" in uncertain
        assert "good again" in back
        assert set(bad_status[device]) == {"fault"}
        assert back_status[device] == {}
        uncertain_rows = [(v, q) for _k, _t, v, q in rig.rows(device) if q == QUALITY_UNCERTAIN]
        assert uncertain_rows
        assert set(uncertain_rows) == {(7.5, QUALITY_UNCERTAIN)}
        errors = [e.reason for e in rig.sink.events_of("point_error") if e.device == device]
        assert errors == [fall, uncertain]
    rig.assert_nothing_bad_is_good({2.25, 3.5})
    assert_no_traceback(caplog)


WRONG_TYPES: list[tuple[dict[str, Any], str]] = [
    (
        {"value": "abc", "type": "String"},
        "sent String 'abc', expected Double (the node's DataType)",
    ),
    ({"value": "xy", "type": "ByteString"}, "sent ByteString of 2 bytes, expected Double"),
    ({"value": True, "type": "Boolean"}, "sent Boolean True, expected Double"),
    ({"value": [1.0, 2.0], "type": "Double"}, "sent an array of 2 Double, expected Double"),
    ({"value": None, "type": "Null"}, "sent an empty value (Null), expected Double"),
]


@pytest.mark.asyncio
async def test_wrong_types_are_bad_until_a_double_comes_back(
    plc: PlcProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with Rig(plc, tmp_path, both_modes()) as rig:
        await rig.seen_good(2.25)
        since = rig.mark()
        for n, (inject, _text) in enumerate(WRONG_TYPES, start=1):
            await plc.acommand("inject", node=FAULT, **inject)
            await rig.lines_reach(caplog, n, f"the line about {inject}")
        await rig.polls_pass(3)
        # Another numeric type is still a number: taken, and the point is good again.
        await plc.acommand("inject", node=FAULT, value=5, type="Int32")
        await rig.seen_good(5.0)
        await plc.acommand("inject", node=FAULT, value=4.0)
        await rig.seen_good(4.0)
        rig.assert_rates_kept(since)
    for device in rig.faulty:
        logged = lines(caplog, device)
        assert len(logged) == len(WRONG_TYPES) + 1, logged
        for line, (_inject, text) in zip(logged, WRONG_TYPES, strict=False):
            assert line.startswith(f"device {device} point fault node {FAULT_NODE!r}: the server ")
            assert text in line, line
        assert "good again" in logged[-1]
        assert rig.drivers[device].bad >= len(WRONG_TYPES)
    rig.assert_nothing_bad_is_good({2.25, 5.0, 4.0})
    assert_no_traceback(caplog)


@pytest.mark.asyncio
async def test_nan_and_infinities_are_never_good(
    plc: PlcProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with Rig(plc, tmp_path, both_modes()) as rig:
        await rig.seen_good(2.25)
        since = rig.mark()
        for n, value in enumerate((math.nan, math.inf, -math.inf), start=1):
            await plc.acommand("inject", node=FAULT, value=value)
            await rig.lines_reach(caplog, n, f"the line about {value}")
        await rig.polls_pass(3)
        await plc.acommand("inject", node=FAULT, value=6.0)
        await rig.seen_good(6.0)
        rig.assert_rates_kept(since)
    for device in rig.faulty:
        nan, inf, ninf, back = lines(caplog, device)
        assert "sent NaN with a good status" in nan
        assert "sent +Inf" in inf
        assert "sent -Inf" in ninf
        assert "good again" in back
    rig.assert_nothing_bad_is_good({2.25, 6.0})
    assert_no_traceback(caplog)


@pytest.mark.asyncio
async def test_source_timestamps_going_backwards(
    plc: PlcProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """timestamps = "source": delivered in the order they came, the step back logged once, and the
    kernel drops the older samples (counted); with gateway timestamps nothing goes back at all."""
    base = float(int(time.time()) - 600)
    plc.command("inject", node=FAULT, value=2.25, source=base - 1)
    steps = [(10.0, base), (11.0, base + 1), (12.0, base - 3600), (13.0, base - 3599)]
    steps.append((14.0, base + 2))  # past the last delivered one again
    devices = {
        "src-sub": {"mode": "subscribe", "timestamps": "source"},
        "src-poll": {"mode": "poll", "timestamps": "source"},
        **both_modes(),
    }
    async with Rig(plc, tmp_path, devices) as rig:
        await rig.seen_good(2.25)
        since = rig.mark()
        for value, ts in steps:
            await plc.acommand("inject", node=FAULT, value=value, source=ts)
            await rig.seen_good(value)
            await rig.polls_pass(2)  # the same value read again must not repeat it
        rig.assert_rates_kept(since)
    for device in ("src-sub", "src-poll"):
        rows = [(t, v) for _k, t, v, q in rig.rows(device) if q == QUALITY_GOOD]
        assert rows == [(base - 1, 2.25)] + [(ts, v) for v, ts in steps], device
        back, caught_up = lines(caplog, device)
        assert "SourceTimestamp went back 3601.000 s" in back
        assert 'timestamps = "source"' in back
        assert "past the last delivered one again" in caught_up
        # Downstream, the kernel drops the two older samples and credits 10 -> 11 -> 14 only.
        k = km.Kernel(1)
        start = base - 7200 - base % 3600
        edges, masks, periods = km.build_grid([[start + 60 * i for i in range(241)]], [], [], 0)
        k.extend_grid(edges, masks, periods)
        k.configure_point(0, "fault", km.COUNTER, since=base - 1)
        k.ingest(*_columns(rows[1:]))
        wins, _blocks = k.close_until(start + 240 * 60)
        assert k.stats()["out_of_order"] == 2
        # A window before the first reading has no baseline (delta NaN): when `base` falls on
        # a minute edge, the point's first window is one (1 run in 60 picks such a second).
        assert sum(d for d in wins["delta"] if d == d) == pytest.approx(4.0)
    for device in MODES:
        got = rig.rows(device)
        assert all(q == QUALITY_GOOD for _k, _t, _v, q in got), device
        values = [v for _k, _t, v, _q in got]
        assert [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]] == [
            2.25,
            *(v for v, _ts in steps),
        ], device
        times = [t for _k, t, _v, _q in got]
        assert times == sorted(times), device  # gateway time: never back
        assert times[0] > since[0] - 30, device
        assert lines(caplog, device) == []
    assert_no_traceback(caplog)


def _columns(rows: list[tuple[float, float]]) -> tuple[Any, Any, Any, Any]:
    from array import array

    return (
        array("i", [0] * len(rows)),
        array("d", [t for t, _v in rows]),
        array("d", [v for _t, v in rows]),
        array("B", [0] * len(rows)),
    )


@pytest.mark.asyncio
async def test_namespace_moves_under_a_live_session(
    plc: PlcProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The index of the configured URI changes while connected: the driver must not go on
    reading the old index (now another namespace's variables, -999 here) as if nothing happened.
    It reconnects at once and resolves again; a namespace merely appended changes nothing."""
    async with Rig(plc, tmp_path, both_modes()) as rig:
        await rig.seen_good(2.25)
        old = (await plc.acommand("ns"))["ns"]
        assert all(rig.drivers[d].namespace_indexes == {PLC_NAMESPACE: old} for d in rig.faulty)
        await plc.acommand("register_namespace", uri=f"urn:plant1:extra{time.monotonic_ns()}")
        await plc.acommand("inject", node=FAULT, value=2.5)
        await rig.seen_good(2.5)  # seen after the appended namespace: nothing else happened
        assert rig.sink.events_of("device_down") == []
        moved = rig.mark()
        moved_at = moved[0]
        new = (await plc.acommand("move_namespace"))["ns"]
        await await_until(
            lambda: all(
                len([e for e in rig.sink.events_of("device_up") if e.device == d]) == 2
                for d in rig.faulty
            ),
            DEADLINE,
            "the devices back on the new index",
        )
        recovered = time.time() - moved_at
        await plc.acommand("inject", node=FAULT, value=42.0)  # at the new index
        await rig.seen_good(42.0)
        since = rig.mark()
        await rig.polls_pass(8)
        rig.assert_rates_kept(since)  # the moved devices are back at their rate
        rig.assert_rates_kept(moved, ["other"])  # and the device beside never lost it
        assert all(rig.drivers[d].namespace_indexes == {PLC_NAMESPACE: new} for d in rig.faulty)
    assert recovered < 5
    downs = rig.sink.events_of("device_down")
    assert sorted(e.device for e in downs) == sorted(rig.faulty)  # "other" has no nsu= point
    for event in downs:
        assert f"{PLC_NAMESPACE} moved from ns={old} to ns={new}" in event.reason
        assert "used by points fault, steady" in event.reason
        # The gap is visible: one bad sample per point at the change, nothing of the old index.
        for name in ("fault", "steady"):
            bad = [t for _k, t, _v, q in rig.rows(event.device, name) if q == QUALITY_BAD]
            assert len(bad) == 1, (event.device, name)
            assert moved_at <= bad[0], (event.device, name)
    down_lines = [r.getMessage() for r in caplog.records if " is down: " in r.getMessage()]
    assert len(down_lines) == len(rig.faulty)
    assert all("NamespaceArray changed under the live session" in line for line in down_lines)
    rig.assert_nothing_bad_is_good({2.25, 2.5, 42.0})
    assert_no_traceback(caplog)


def assert_no_asyncua_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing anonymous from asyncua: the driver's own line names the device."""
    noise = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("asyncua") and r.levelno >= logging.WARNING
    ]
    assert noise == []


def info_lines(caplog: pytest.LogCaptureFixture, device: str) -> list[str]:
    """The driver's lines about a device as a whole (not one of its points)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "ironwatt.opcua" and r.getMessage().startswith(f"device {device}: ")
    ]


@pytest.mark.asyncio
async def test_a_plc_at_its_monitored_item_limit_keeps_the_points(
    plc: PlcProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The NamespaceArray watch is one item more than the PLC takes: it answers a service fault.
    The points are monitored and the session is good: it goes on without the watch, said once."""
    await plc.acommand("misbehave", max_monitored_items=2)  # the device's two points
    async with Rig(plc, tmp_path, {"subscribe": {"mode": "subscribe"}}) as rig:
        await rig.seen_good(2.25)
        since = rig.mark()
        await plc.acommand("inject", node=FAULT, value=3.5)
        await rig.seen_good(3.5)
        await await_until(lambda: len(rig.rows("subscribe", "steady")) >= 20, DEADLINE, "values")
        rig.assert_rates_kept(since)
        assert rig.drivers["subscribe"].reconnects == 0
    assert rig.sink.events_of("device_down") == []
    (line,) = info_lines(caplog, "subscribe")
    assert "did not monitor its NamespaceArray (BadTooManyMonitoredItems)" in line
    assert "seen at the next reconnect only" in line
    assert_no_asyncua_warnings(caplog)
    assert_no_traceback(caplog)


@pytest.mark.asyncio
async def test_a_plc_slow_to_answer_the_datatype_read_keeps_the_session(
    plc: PlcProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The DataType read at connect comes after the device's timeout: the session goes on, its
    values judged one by one (a String is still bad), said once per device."""
    await plc.acommand("misbehave", datatype_read_delay=1.5)
    async with Rig(plc, tmp_path, both_modes(timeout="1s")) as rig:
        await rig.seen_good(2.25)
        since = rig.mark()
        await plc.acommand("inject", node=FAULT, value="abc", type="String")
        await rig.seen(lambda v, q: q == QUALITY_BAD, "the String")
        await plc.acommand("inject", node=FAULT, value=3.5)
        await rig.seen_good(3.5)
        await rig.polls_pass(5)
        rig.assert_rates_kept(since)
        assert all(rig.drivers[d].reconnects == 0 for d in rig.faulty)
    assert rig.sink.events_of("device_down") == []
    for device in rig.faulty:
        (line,) = info_lines(caplog, device)
        assert "did not read the DataType of its 2 nodes (no answer within 1 s)" in line
        assert "values are checked without it" in line
        fall, back = lines(caplog, device)
        assert "sent String 'abc', expected a number or Boolean" in fall
        assert "good again" in back
    rig.assert_nothing_bad_is_good({2.25, 3.5})
    assert_no_asyncua_warnings(caplog)
    assert_no_traceback(caplog)


@pytest.mark.asyncio
async def test_refreshes_do_not_make_a_late_value_look_like_a_step_back(
    plc: PlcProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """timestamps = "source", subscribe, max_gap: a value sampled just before a refresh of the
    held one and delivered after it is no step back; a real one still is, once."""
    devices = {"src-sub": {"mode": "subscribe", "timestamps": "source"}}
    async with Rig(plc, tmp_path, devices, fault={"max_gap": "1s"}) as rig:
        await rig.seen_good(2.25)
        await await_until(
            lambda: len([1 for _k, _t, v, q in rig.rows("src-sub") if v == 2.25]) >= 2,
            DEADLINE,
            "a refresh of the held value",
        )
        refreshed = max(t for _k, t, v, q in rig.rows("src-sub") if q == QUALITY_GOOD)
        # Sampled 50 ms before the refresh was made (the refresh is stamped a publishing
        # interval behind that moment), delivered after it.
        margin = rig.drivers["src-sub"].made_margin
        assert margin >= 0.1
        late = refreshed + margin - 0.05
        await plc.acommand("inject", node=FAULT, value=3.5, source=late)
        await rig.seen_good(3.5)
        assert lines(caplog, "src-sub") == []
        await plc.acommand("inject", node=FAULT, value=4.5, source=late - 10)
        await rig.seen_good(4.5)
    (back,) = lines(caplog, "src-sub")
    assert "the SourceTimestamp went back 10.000 s" in back
    assert [e.reason for e in rig.sink.events_of("point_error")] == [back]
    rows = rig.rows("src-sub")
    (at,) = [i for i, (_k, _t, v, _q) in enumerate(rows) if v == 3.5]
    stamped = rows[at][1]
    assert stamped == pytest.approx(late, abs=1e-3)  # as sent
    # Newer than the refresh and all before it: the kernel keeps it (it drops t <= its last).
    assert stamped > refreshed
    assert all(stamped > t for _k, t, _v, _q in rows[:at])
    assert_no_traceback(caplog)


@pytest.mark.asyncio
async def test_a_namespace_that_moves_at_every_session_takes_the_backoff(
    plc: PlcProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The PLC moves its namespace each time a client starts watching the array (what a server
    whose array differs between the read and the watch looks like): the first reconnect is
    immediate, the next ones take the backoff, growing; once it stops, the device stays up."""
    caplog.set_level(logging.DEBUG, logger="ironwatt.opcua")
    moves = 4
    await plc.acommand("misbehave", move_on_watch=moves)
    async with Rig(plc, tmp_path, {"subscribe": {"mode": "subscribe"}}) as rig:
        driver = rig.drivers["subscribe"]
        await await_until(lambda: driver.reconnects == moves, DEADLINE, "the reconnects")
        await plc.acommand("inject", node=FAULT, value=3.5)
        await rig.seen_good(3.5)
        assert driver.health.state == "up"
        assert driver.reconnects == moves
        now = (await plc.acommand("ns"))["ns"]
        assert driver.namespace_indexes == {PLC_NAMESPACE: now}
    delays = [
        r.args[1]
        for r in caplog.records
        if r.name == "ironwatt.opcua" and "reconnecting in" in str(r.msg)
        if isinstance(r.args, tuple) and r.args[0] == "subscribe" and isinstance(r.args[1], float)
    ]
    # Rig backoff: 0.2 s doubling to 1 s, jittered to 50-100 % of each step.
    assert len(delays) == moves, delays
    assert delays[0] == 0.0, delays
    assert 0.1 <= delays[1] <= 0.2
    assert 0.2 <= delays[2] <= 0.4
    assert 0.4 <= delays[3] <= 0.8
    downs = [e for e in rig.sink.events_of("device_down") if e.device == "subscribe"]
    assert len(downs) == moves
    assert all("NamespaceArray changed under the live session" in e.reason for e in downs)
    assert_no_traceback(caplog)
