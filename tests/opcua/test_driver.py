"""The OPC UA driver against a real asyncua server: modes, types, deadband, quality, bad nodes."""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Client, ua

from drivers.opcua.driver import OpcuaDriver
from drivers.samples import QUALITY_BAD, QUALITY_GOOD, QUALITY_UNCERTAIN
from tests.opcua.conftest import (
    NSU,
    PlcProcess,
    make_device,
    point,
)
from tests.support.recording import RecordingSink
from tests.support.tasks import running
from tests.support.waiting import await_until

# Every numeric type of the simulated PLC, and Boolean; values are its static start values.
TYPED = {
    "sbyte": ("Types.SByte", -5.0),
    "byte": ("Types.Byte", 200.0),
    "int16": ("Types.Int16", -1234.0),
    "uint16": ("Types.UInt16", 54321.0),
    "int32": ("Types.Int32", -123456.0),
    "uint32": ("Types.UInt32", 3_000_000_000.0),
    "int64": ("Types.Int64", float(-(2**40))),
    "uint64": ("Types.UInt64", float(2**50)),
    "float": ("Types.Float", 1.5),
    "double": ("Types.Double", 2.25),
    "running": ("Status.Running", 1.0),
}


@pytest_asyncio.fixture
async def writer(plc: PlcProcess) -> AsyncIterator[Client]:
    client = Client(plc.endpoint, timeout=5)
    await client.connect()
    yield client
    await client.disconnect()


def driver(device: object, sink: RecordingSink, tmp_path: Path) -> OpcuaDriver:
    return OpcuaDriver(device, sink.index, sink, tmp_path, "gw1", "plant1", flush_interval=0.05)


def last_good(sink: RecordingSink) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, _ts, value, quality in sink.rows():
        if quality == QUALITY_GOOD:
            out[key.split(".", 1)[1]] = value
    return out


@pytest.mark.asyncio
async def test_subscribe_and_poll_deliver_the_same_values(plc: PlcProcess, tmp_path: Path) -> None:
    assert plc.ns_index is not None
    points = [point(name, NSU + node) for name, (node, _v) in TYPED.items()]
    # The ns= form too, with the index the server has right now.
    points.append(point("by_index", f"ns={plc.ns_index};s=Types.Double"))
    sub_sink, poll_sink = RecordingSink(), RecordingSink()
    sub = driver(make_device(plc.endpoint, points, name="sub"), sub_sink, tmp_path)
    # interval 100 ms, server limit MaxNodesPerRead = 4 -> 12 nodes in 4 reads per poll, each
    # read led by the NamespaceArray (3 nodes + 1)
    poll = driver(make_device(plc.endpoint, points, name="poll", mode="poll"), poll_sink, tmp_path)
    async with running(sub), running(poll):
        await await_until(
            lambda: len(last_good(sub_sink)) == 12, 10, "a value per subscribed point"
        )
        await await_until(lambda: poll.health.polls >= 3, 10, "three polls")
    expected = {name: value for name, (_node, value) in TYPED.items()} | {"by_index": 2.25}
    assert last_good(sub_sink) == expected
    assert last_good(poll_sink) == expected
    assert poll.health.requests == 4 * poll.health.polls
    assert sub.device_status()["state"] == "stopped"
    assert sub.health.last_error is None
    assert sub.namespace_indexes == {"urn:plant1:bf2": plc.ns_index}
    assert [e.type for e in sub_sink.events] == ["device_up"]
    # Timestamps are the gateway's receive time by default.
    now = datetime.now(UTC).timestamp()
    assert all(now - 15 < ts <= now for _k, ts, _v, _q in sub_sink.rows() + poll_sink.rows())


@pytest.mark.asyncio
async def test_absolute_deadband_is_honoured(
    plc: PlcProcess, writer: Client, tmp_path: Path
) -> None:
    node = writer.get_node(f"ns={plc.ns_index};s=Test.Setpoint")
    await node.write_value(0.0)
    banded, plain = RecordingSink(), RecordingSink()
    nsu = NSU + "Test.Setpoint"
    d1 = driver(
        make_device(
            plc.endpoint,
            [point("sp", nsu, deadband_type="absolute", deadband_value=1.0)],
            name="band",
        ),
        banded,
        tmp_path,
    )
    d2 = driver(make_device(plc.endpoint, [point("sp", nsu)], name="plain"), plain, tmp_path)
    async with running(d1), running(d2):
        await await_until(lambda: banded.rows() and plain.rows(), 10, "initial values")
        for value in (0.5, 1.7, 2.0, 5.0):
            await node.write_value(value)
            # One write per publish: with queue size 1 a second write in the same publishing
            # interval would replace the first (a loaded machine must not make that happen).
            await await_until(
                lambda v=value: plain.rows()[-1][2] == v, 10, f"{value} on the plain item"
            )
        await await_until(lambda: len(banded.rows()) >= 3, 5, "5.0 on the banded item")
    assert [v for _k, _t, v, _q in plain.rows()] == [0.0, 0.5, 1.7, 2.0, 5.0]
    assert [v for _k, _t, v, _q in banded.rows()] == [0.0, 1.7, 5.0]


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["subscribe", "poll"])
async def test_bad_nodes_are_isolated_to_their_points(
    plc: PlcProcess, tmp_path: Path, mode: str
) -> None:
    points = [
        point("good", NSU + "Types.Double"),
        point("missing", NSU + "No.Such.Tag"),
        point("foreign", "nsu=urn:nowhere;s=Types.Double"),
        point("text", NSU + "Info.Name"),
        point("garbled", "ns=2;x=1"),
    ]
    sink = RecordingSink()
    d = driver(make_device(plc.endpoint, points, mode=mode), sink, tmp_path)
    # A static value is notified once when subscribed; polled, it comes every interval.
    wanted = 1 if mode == "subscribe" else 3
    async with running(d):
        await await_until(
            lambda: (
                len(sink.rows("bf2.good")) >= wanted and len(sink.events_of("point_error")) >= 4
            ),
            10,
            "good values and four point errors",
        )
    assert {v for _k, _t, v, q in sink.rows("bf2.good") if q == QUALITY_GOOD} == {2.25}
    for name in ("missing", "foreign", "text", "garbled"):
        rows = sink.rows(f"bf2.{name}")
        assert rows, name
        assert all(q == QUALITY_BAD and math.isnan(v) for _k, _t, v, q in rows), name
    errors = {e.point: e.reason for e in sink.events_of("point_error")}
    assert set(errors) == {"missing", "foreign", "text", "garbled"}
    assert "No.Such.Tag" in errors["missing"]
    assert "BadNodeIdUnknown" in errors["missing"]
    assert "urn:nowhere" in errors["foreign"]
    assert "NamespaceArray" in errors["foreign"]
    assert "not a number" in errors["text"]
    assert "device bf2 point text" in errors["text"]
    assert "invalid node id" in errors["garbled"]
    assert all("ironwatt opcua browse" in reason for reason in errors.values())
    assert d.health.state == "stopped"
    assert len(sink.events_of("device_up")) == 1
    # Reported once each, not once per poll.
    assert len(sink.events_of("point_error")) == 4


@pytest.mark.asyncio
async def test_source_timestamps_and_uncertain_quality(
    plc: PlcProcess, writer: Client, tmp_path: Path
) -> None:
    node = writer.get_node(f"ns={plc.ns_index};s=Test.Quality")
    stamp = datetime(2024, 1, 1, tzinfo=UTC)
    source_sink, gateway_sink = RecordingSink(), RecordingSink()
    nsu = NSU + "Test.Quality"
    src = driver(
        make_device(plc.endpoint, [point("q", nsu)], name="src", timestamps="source"),
        source_sink,
        tmp_path,
    )
    gw = driver(make_device(plc.endpoint, [point("q", nsu)], name="gw"), gateway_sink, tmp_path)
    async with running(src), running(gw):
        await await_until(lambda: source_sink.rows() and gateway_sink.rows(), 10, "initial values")
        dv = ua.DataValue(
            ua.Variant(7.5, ua.VariantType.Double),
            StatusCode=ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue),
            SourceTimestamp=stamp,
        )
        await node.write_attribute(ua.AttributeIds.Value, dv)
        await await_until(lambda: len(source_sink.rows()) >= 2, 5, "the uncertain value")
        await await_until(lambda: len(gateway_sink.rows()) >= 2, 5, "the uncertain value")
    _k, ts, value, quality = source_sink.rows()[-1]
    assert (ts, value, quality) == (stamp.timestamp(), 7.5, QUALITY_UNCERTAIN)
    _k, ts, value, quality = gateway_sink.rows()[-1]
    assert value == 7.5
    assert quality == QUALITY_UNCERTAIN
    assert abs(ts - datetime.now(UTC).timestamp()) < 10
    assert src.uncertain == 1
    assert src.device_status()["uncertain"] == 1
    assert src.bad == 0


@pytest.mark.asyncio
async def test_steady_subscribed_value_is_refreshed_within_max_gap(
    plc: PlcProcess, tmp_path: Path
) -> None:
    """Report-by-exception sends nothing while a value is steady: re-assert it every max_gap/2."""
    sink = RecordingSink()
    points = [
        point("refreshed", NSU + "Types.Int32", max_gap="1s"),
        point("quiet", NSU + "Types.Int16"),
    ]
    d = driver(make_device(plc.endpoint, points), sink, tmp_path)
    async with running(d):
        await await_until(lambda: len(sink.rows("bf2.refreshed")) >= 4, 10, "refreshed values")
    assert d.refresh_after == {0: 0.5}
    rows = sink.rows("bf2.refreshed")
    assert {(v, q) for _k, _t, v, q in rows} == {(-123456.0, QUALITY_GOOD)}
    gaps = [b[1] - a[1] for a, b in itertools.pairwise(rows)]
    assert all(0.4 <= g <= 1.0 for g in gaps), gaps
    assert len(sink.rows("bf2.quiet")) == 1
