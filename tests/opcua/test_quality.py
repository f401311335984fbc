"""Judging values without a server: DataType expectations, decoding, namespace changes."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua

from drivers.opcua.driver import OpcuaDriver
from drivers.opcua.quality import ANY, decode, describe_value, expect_for_datatype
from drivers.samples import QUALITY_BAD, QUALITY_GOOD
from tests.opcua.conftest import NSU, make_device, point
from tests.support.recording import RecordingSink

DOUBLE = expect_for_datatype(0, 11)
BOOLEAN = expect_for_datatype(0, 1)


def variant(value: Any, vtype: str) -> Any:
    return ua.Variant(value, getattr(ua.VariantType, vtype))


@pytest.mark.parametrize(
    ("ns", "ident", "kind", "name", "fast"),
    [
        (0, 11, "number", "Double", float),
        (0, 10, "number", "Float", float),
        (0, 6, "number", "Int32", int),
        (0, 9, "number", "UInt64", int),
        (0, 290, "number", "Duration", float),
        (0, 26, "number", "Number", None),
        (0, 1, "bool", "Boolean", bool),
        (0, 12, "other", "String", None),
        (0, 15, "other", "ByteString", None),
        (0, 24, "any", ANY.name, None),  # BaseDataType: anything goes, judged value by value
        (0, 852, "any", ANY.name, None),  # an enumeration (ServerState)
        (3, 11, "any", ANY.name, None),  # a vendor type that happens to be i=11 elsewhere
        (0, "x", "any", ANY.name, None),
    ],
)
def test_expectation_from_the_datatype(
    ns: int, ident: object, kind: str, name: str, fast: type | None
) -> None:
    expect = expect_for_datatype(ns, ident)
    assert (expect.kind, expect.name, expect.fast) == (kind, name, fast)


@pytest.mark.parametrize(
    ("value", "vtype", "expect", "result", "key"),
    [
        (2.5, "Double", DOUBLE, 2.5, None),
        (7, "Int32", DOUBLE, 7.0, None),  # another number is still a number
        (2**63, "UInt64", DOUBLE, float(2**63), None),
        (True, "Boolean", BOOLEAN, 1.0, None),
        (True, "Boolean", ANY, 1.0, None),
        (True, "Boolean", DOUBLE, math.nan, "type:Boolean"),
        (1.0, "Double", BOOLEAN, math.nan, "type:Double"),
        ("abc", "String", DOUBLE, math.nan, "type:String"),
        (b"\x00\x01", "ByteString", DOUBLE, math.nan, "type:ByteString"),
        ([1.0, 2.0], "Double", DOUBLE, math.nan, "type:array:Double"),
        (None, "Null", DOUBLE, math.nan, "type:Null"),
        (math.nan, "Double", DOUBLE, math.nan, "nonfinite:NaN"),
        (math.inf, "Double", ANY, math.nan, "nonfinite:+Inf"),
        (-math.inf, "Float", DOUBLE, math.nan, "nonfinite:-Inf"),
        (1.0, "Double", expect_for_datatype(0, 12), math.nan, "datatype:String"),
    ],
)
def test_decode(value: Any, vtype: str, expect: Any, result: float, key: str | None) -> None:
    got, got_key, what = decode(variant(value, vtype), expect)
    assert got_key == key
    assert got == result or (math.isnan(got) and math.isnan(result))
    assert (what == "") == (key is None)


def test_messages_say_what_came_and_what_was_expected() -> None:
    _v, _k, what = decode(variant("a" * 100, "String"), DOUBLE)
    assert what.startswith("the server sent String 'aaaa")
    assert "expected Double (the node's DataType)" in what
    assert len(what) < 200
    assert describe_value(variant([1, 2, 3], "Int16")) == "an array of 3 Int16"
    assert describe_value(None) == "an empty value (Null)"
    _v, _k, what = decode(variant("x", "String"), ANY)
    assert "expected a number or Boolean" in what


def driver_for(nodes: list[str]) -> tuple[OpcuaDriver, RecordingSink]:
    sink = RecordingSink()
    device = make_device(
        "opc.tcp://127.0.0.1:4840", [point(f"p{i}", n) for i, n in enumerate(nodes)]
    )
    return OpcuaDriver(device, sink.index, sink, Path("/nonexistent"), "gw", "site"), sink


@pytest.mark.parametrize(
    ("before", "after", "changed"),
    [
        (["ua", "srv", "urn:a"], ["ua", "srv", "urn:a", "urn:new"], None),  # appended: let be
        (["ua", "srv", "urn:a"], ["ua", "srv", "urn:x", "urn:a"], "urn:a moved from ns=2 to ns=3"),
        (["ua", "srv", "urn:a"], ["ua", "srv"], "urn:a (ns=2) is gone"),
        (["ua", "srv"], ["ua", "srv", "urn:a"], "urn:a appeared at ns=2"),
    ],
)
def test_namespace_changes_that_matter(
    before: list[str], after: list[str], changed: str | None
) -> None:
    import asyncio

    drv, _sink = driver_for(["nsu=urn:a;s=X", "nsu=urn:a;i=5", "ns=1;s=Y"])
    drv._lost = asyncio.Event()
    drv._resolve(before, ua)
    unchanged = drv._namespaces_unchanged(ua.DataValue(variant(after, "String")))
    assert unchanged == (changed is None)
    if changed is not None:
        assert drv._lost.is_set()
        assert drv._retry_now
        assert changed in drv._lost_reason
        assert "used by points p0, p1" in drv._lost_reason


def test_a_point_logs_its_fall_and_its_return_once(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio
    import logging

    caplog.set_level(logging.INFO, logger="ironwatt")
    drv, sink = driver_for([NSU + "Types.Double"])
    drv._lost = asyncio.Event()
    drv._expect[0] = DOUBLE
    bad = ua.DataValue(variant(0.0, "Double"), StatusCode=ua.StatusCode(ua.UInt32(0x808C0000)))
    good = ua.DataValue(variant(1.5, "Double"))
    for dv in (bad, bad, bad, good, good, bad):
        drv._append(0, dv, 1000.0)
    drv.flush()
    messages = [r.getMessage() for r in caplog.records if r.name == "ironwatt.opcua"]
    assert len(messages) == 3
    assert "BadSensorFailure (0x808C0000)" in messages[0]
    assert "good again" in messages[1]
    assert [q for _k, _t, _v, q in sink.rows()] == [QUALITY_BAD] * 3 + [QUALITY_GOOD] * 2 + [
        QUALITY_BAD
    ]
    assert len(sink.events_of("point_error")) == 2


def response(*handles: int, value: float = 1.5) -> Any:
    """A PublishResult with one data change per client handle (a handle < 0: a broken item)."""
    items = []
    for handle in handles:
        item = ua.MonitoredItemNotification()
        item.ClientHandle = max(handle, 0)
        item.Value = ua.DataValue(variant(value, "Double")) if handle >= 0 else None
        items.append(item)
    change = ua.DataChangeNotification()
    change.MonitoredItems = items
    result = ua.PublishResult()
    result.NotificationMessage = ua.NotificationMessage(NotificationData=[change])
    return result


def test_an_undecodable_publish_response_is_dropped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An item nothing here expected (no DataValue at all) costs that response, no traceback."""
    import asyncio
    import logging

    caplog.set_level(logging.INFO, logger="ironwatt")
    drv, sink = driver_for([NSU + "Types.Double"])
    drv._lost = asyncio.Event()
    drv._fast[0] = float
    for _ in range(3):
        drv._on_publish(response(0, -1))
    drv._on_publish(response(0))
    drv.flush()
    assert [(v, q) for _k, _t, v, q in sink.rows()] == [(1.5, QUALITY_GOOD)]
    records = [r for r in caplog.records if r.name == "ironwatt.opcua"]
    assert len(records) == 1
    assert "could not be decoded (AttributeError" in records[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records)


@pytest.mark.parametrize("slow", [False, True], ids=["fast path", "source timestamps"])
def test_a_client_handle_never_given_out_costs_that_item_only(
    caplog: pytest.LogCaptureFixture, slow: bool
) -> None:
    """A server bug: a handle above the points' (and the NamespaceArray's). The other values of
    the response are kept; the stray ones are counted, logged once per session."""
    import asyncio
    import logging

    caplog.set_level(logging.INFO, logger="ironwatt")
    drv, sink = driver_for([NSU + "Types.Double", NSU + "Types.Float"])
    drv._lost = asyncio.Event()
    drv._fast[0] = drv._fast[1] = float
    drv.source_timestamps = slow
    for n in range(3):
        drv._on_publish(response(0, 7, 2**31, 1, value=1.5 + n))
    drv.flush()
    assert [(k, v, q) for k, _t, v, q in sink.rows()] == [
        (key, 1.5 + n, QUALITY_GOOD) for n in range(3) for key in ("bf2.p0", "bf2.p1")
    ]
    assert drv.unknown_handles == 6
    assert drv.device_status()["unknown_handles"] == 6
    (record,) = [r for r in caplog.records if r.name == "ironwatt.opcua"]
    assert "client handle 7, which this session never gave out" in record.getMessage()
    assert drv.problems.current() == {}


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def problems_for(n: int = 1) -> tuple[Any, RecordingSink, Clock]:
    from types import SimpleNamespace

    from drivers.opcua.quality import PointProblems

    sink, clock = RecordingSink(), Clock()
    points = [SimpleNamespace(name=f"p{i}", node=f"ns=2;s=P{i}") for i in range(n)]
    return PointProblems("bf2", points, sink, clock), sink, clock


def opcua_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ironwatt.opcua"]


def test_a_flapping_point_says_so_once_then_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    """NaN, good, NaN, good … every poll: five falls reported, then one "flapping" line and event,
    then nothing until it holds steady 10 min (a line, no event: it is good); then as usual."""
    import logging

    from drivers.opcua.quality import FLAP_FALLS, STEADY_S

    caplog.set_level(logging.INFO, logger="ironwatt")
    problems, sink, clock = problems_for()
    for _poll in range(200):
        clock.now += 1.0
        problems.set(0, "nonfinite:NaN", "the server sent NaN", clock.now)
        clock.now += 1.0
        problems.clear(0)
    logged = opcua_lines(caplog)
    events = sink.events_of("point_error")
    assert len(events) == FLAP_FALLS + 1
    assert "flapping: 6 problems within 10 min, the last: the server sent NaN" in events[-1].reason
    assert "until it holds steady for 10 min" in events[-1].reason
    assert len(logged) == 2 * FLAP_FALLS + 1
    assert logged[-1] == events[-1].reason
    assert problems.flapping() == {"p0": 200 - FLAP_FALLS - 1}
    clock.now += STEADY_S - 1
    problems.settle()
    assert len(opcua_lines(caplog)) == len(logged)  # not steady long enough yet
    clock.now += 1
    problems.settle()
    problems.settle()
    (steady,) = opcua_lines(caplog)[len(logged) :]
    assert "steady for 10 min after flapping (194 more problems counted" in steady
    assert steady.endswith("good now")
    assert len(sink.events_of("point_error")) == len(events)
    assert problems.flapping() == {}
    assert problems.set(0, "nonfinite:NaN", "the server sent NaN", clock.now)  # reported again
    assert len(sink.events_of("point_error")) == len(events) + 1


def test_a_flapping_point_that_stays_bad_is_reported_bad_once_steady(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from drivers.opcua.quality import STEADY_S

    caplog.set_level(logging.INFO, logger="ironwatt")
    problems, sink, clock = problems_for(2)
    for _poll in range(10):
        clock.now += 5.0
        problems.set(0, "nonfinite:NaN", "the server sent NaN", clock.now)
        problems.clear(0)
    problems.set(0, "status:0x808c0000", "the server reports BadSensorFailure", clock.now)
    problems.set(1, "type:String", "the server sent String 'x'", clock.now)  # its own count
    before = len(sink.events_of("point_error"))
    clock.now += STEADY_S
    problems.settle(at=42.0)
    last = sink.events_of("point_error")[before:]
    assert [(e.point, e.at) for e in last] == [("p0", 42.0)]
    assert "after flapping (5 more problems counted" in last[0].reason
    assert last[0].reason.endswith("bad now: the server reports BadSensorFailure")
    assert problems.current() == {
        "p0": "device bf2 point p0 node 'ns=2;s=P0': the server reports BadSensorFailure",
        "p1": "device bf2 point p1 node 'ns=2;s=P1': the server sent String 'x'",
    }
    # The next change after a steady spell that settle() did not see: reported as usual.
    for _poll in range(10):
        clock.now += 5.0
        problems.clear(0)
        problems.set(0, "nonfinite:NaN", "the server sent NaN", clock.now)
    clock.now += STEADY_S
    caplog.clear()
    assert problems.clear(0)
    no_longer, back = opcua_lines(caplog)
    assert "no longer flapping: steady for 10 min" in no_longer
    assert "good again" in back


def test_falls_far_apart_are_not_flapping() -> None:
    from drivers.opcua.quality import FLAP_WINDOW_S

    problems, sink, clock = problems_for()
    for _fall in range(20):
        clock.now += FLAP_WINDOW_S / 4
        problems.set(0, "nonfinite:NaN", "the server sent NaN", clock.now)
        problems.clear(0)
    assert len(sink.events_of("point_error")) == 20
    assert problems.flapping() == {}


def test_the_driver_damps_a_point_alternating_nan_and_good() -> None:
    """Through the driver's careful path, as a polled sensor would deliver it."""
    import asyncio

    drv, sink = driver_for([NSU + "Types.Double"])
    clock = Clock()
    drv.problems.clock = clock
    drv._lost = asyncio.Event()
    drv._expect[0] = DOUBLE
    nan, good = ua.DataValue(variant(math.nan, "Double")), ua.DataValue(variant(1.5, "Double"))
    for poll in range(100):
        clock.now += 1.0
        drv._append(0, nan if poll % 2 else good, 1000.0 + poll)
    drv.flush()
    assert len(sink.rows()) == 100  # every sample is delivered, bad or good
    assert len(sink.events_of("point_error")) == 6
    assert drv.device_status()["flapping"] == {"p0": 50 - 6}


def test_immediate_reconnects_after_a_namespace_change_are_rationed() -> None:
    """One at once per QUICK_RETRY_S; in between the backoff, growing over sessions that come up
    only to see the array move again, and reset by a session that lasts QUICK_RETRY_S."""
    from drivers.base import Backoff

    drv, _sink = driver_for([NSU + "Types.Double"])
    drv.backoff = Backoff(initial=1.0, maximum=8.0, rng=FixedRandom())

    def session(up_at: float, moved: bool, lasted: float = 0.03) -> float:
        """A session that came up at `up_at` (monotonic) and ended `lasted` later: its delay."""
        drv._came_up()
        drv._up_since = up_at
        drv._retry_now = moved
        return drv._reconnect_delay(up_at + lasted)

    delays = [session(t, True) for t in (100.0, 100.1, 101.2, 103.3, 107.4)]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert session(116.0, True) == 0.0  # 10 s after the last immediate one
    assert session(116.1, True) == 8.0  # the backoff held: these sessions do not reset it
    assert session(125.0, False, lasted=12.0) == 1.0  # a session that lasted 10 s does
    assert session(140.0, True) == 0.0
    drv._up_since = None  # failed connects: no session came up, the backoff grows as ever
    assert drv._reconnect_delay(140.1) == 1.0
    assert drv._reconnect_delay(141.5) == 2.0
    assert session(145.0, True) == 1.0  # 5 s after the immediate one
    assert session(146.0, False) == 2.0  # held: a short session after it still grows it
    assert session(150.0, False, lasted=10.0) == 1.0


class FixedRandom(random.Random):
    """Backoff's jitter pinned at its top (a delay is the full step)."""

    def random(self) -> float:
        return 1.0


def test_refreshes_do_not_count_as_the_source_time_of_a_point(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """timestamps = "source": a refresh (or the bad sample at a loss) the driver stamps itself
    does not make a real value sampled just before it, delivered after, look like a step back;
    a real step back is still reported."""
    import asyncio
    import logging
    from datetime import UTC, datetime

    caplog.set_level(logging.INFO, logger="ironwatt")
    drv, sink = driver_for([NSU + "Types.Double"])
    drv.source_timestamps = True
    drv._lost = asyncio.Event()
    drv._expect[0] = DOUBLE

    def at(value: float, ts: float) -> Any:
        stamp: Any = datetime.fromtimestamp(ts, UTC)
        return ua.DataValue(variant(value, "Double"), SourceTimestamp=stamp)

    drv._append(0, at(1.0, 5000.0), 5000.2)  # offset -0.2 s
    refresh = drv._made_ts(0, 5010.0)
    assert drv.made_margin == pytest.approx(0.1)  # the publishing interval
    assert refresh == pytest.approx(5009.7)  # server time of the refresh, a margin behind
    drv._append(0, at(2.0, 5009.75), 5010.05)  # sampled before the refresh, delivered after
    assert refresh < 5009.75  # so newer than the refresh: kept downstream
    # Never before the point's last real source time (the kernel would drop it as not newer).
    assert drv._made_ts(0, 5010.06) == pytest.approx(5009.751)
    drv.health.success()
    drv._went_down("lost")  # the bad sample at a loss: stamped by the driver too
    drv._append(0, at(3.0, 5009.0), 5010.1)  # a real step back: 0.75 s before the last value
    lines = opcua_lines(caplog)
    assert len(lines) == 1
    assert "the SourceTimestamp went back 0.750 s" in lines[0]
    assert len(sink.events_of("point_error")) == 1
    drv.flush()
    assert [(v, q) for _k, _t, v, q in sink.rows() if q == QUALITY_GOOD] == [
        (1.0, QUALITY_GOOD),
        (2.0, QUALITY_GOOD),
        (3.0, QUALITY_GOOD),
    ]
    assert [q for _k, _t, _v, q in sink.rows()].count(QUALITY_BAD) == 1


def test_only_the_tolerated_asyncua_warnings_are_dropped() -> None:
    """The filter on asyncua's socket logger drops the service fault of a PLC at its
    monitored-item limit and the late answer to an abandoned request; nothing else."""
    import logging

    logger = logging.getLogger("asyncua.client.ua_client.UASocketProtocol")
    fault = "ServiceFault (%s, diagnostics: %s) from server received %s"

    def passes(msg: str, *args: object) -> bool:
        record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, msg, args, None)
        return all(f.filter(record) for f in logger.filters)

    create = " in response to CreateMonitoredItemsRequest"
    assert not passes(fault, "BadTooManyMonitoredItems", "d", create)
    assert not passes("Future for request id %s is already done", 6)
    assert passes(fault, "BadTooManyMonitoredItems", "d", " in response to ReadRequest")
    assert passes(fault, "BadSessionIdInvalid", "d", create)
    assert passes("Future for request id %s not handled due to disconnect", 6)
    assert passes("Socket has closed connection")
