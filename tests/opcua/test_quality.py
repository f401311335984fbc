"""Judging values without a server: DataType expectations, decoding, namespace changes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua

from drivers.opcua.driver import OpcuaDriver
from drivers.opcua.quality import ANY, decode, describe_value, expect_for_datatype
from gateway.samples import QUALITY_BAD, QUALITY_GOOD
from tests.opcua.conftest import NSU, RecordingSink, make_device, point

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
    assert "expected Double (the node's DataType)" in what and len(what) < 200
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
        assert drv._lost.is_set() and drv._retry_now
        assert changed in drv._lost_reason and "used by points p0, p1" in drv._lost_reason


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
    assert "BadSensorFailure (0x808C0000)" in messages[0] and "good again" in messages[1]
    assert [q for _k, _t, _v, q in sink.rows()] == [QUALITY_BAD] * 3 + [QUALITY_GOOD] * 2 + [
        QUALITY_BAD
    ]
    assert len(sink.events_of("point_error")) == 2


def test_an_undecodable_publish_response_is_dropped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client handle never given out (a server bug) costs that response, and no traceback."""
    import asyncio
    import logging

    caplog.set_level(logging.INFO, logger="ironwatt")
    drv, sink = driver_for([NSU + "Types.Double"])
    drv._lost = asyncio.Event()
    drv._fast[0] = float

    def response(*handles: int) -> Any:
        items = []
        for handle in handles:
            item = ua.MonitoredItemNotification()
            item.ClientHandle = handle
            item.Value = ua.DataValue(variant(1.5, "Double"))
            items.append(item)
        change = ua.DataChangeNotification()
        change.MonitoredItems = items
        result = ua.PublishResult()
        result.NotificationMessage = ua.NotificationMessage(NotificationData=[change])
        return result

    for _ in range(3):
        drv._on_publish(response(0, 7))
    drv._on_publish(response(0))
    drv.flush()
    assert [(v, q) for _k, _t, v, q in sink.rows()] == [(1.5, QUALITY_GOOD)]
    records = [r for r in caplog.records if r.name == "ironwatt.opcua"]
    assert len(records) == 1 and "could not be decoded (IndexError" in records[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records)
