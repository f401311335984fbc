"""The PLC dies and comes back with its namespaces in another order: the driver must follow."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.base import Backoff
from drivers.opcua.driver import OpcuaDriver
from drivers.samples import QUALITY_BAD, QUALITY_GOOD
from tests.opcua.conftest import (
    NSU,
    PlcProcess,
    make_device,
    point,
)
from tests.support.recording import RecordingSink
from tests.support.tasks import running
from tests.support.waiting import await_until


@pytest.fixture(scope="module")
def plc_process() -> Iterator[PlcProcess]:
    """One PLC process for the module (a start costs seconds); each test takes it as it needs."""
    proc = PlcProcess("--evolve-interval", "0.1")
    yield proc
    proc.kill()


@pytest.fixture
def restartable_plc(plc_process: PlcProcess) -> PlcProcess:
    """The module's PLC, running (a test that needs a namespace order restarts it)."""
    proc = plc_process
    if proc.proc is not None and proc.proc.poll() is not None:
        proc.kill()
    if proc.proc is None:
        proc.start()
    return proc


@pytest.mark.asyncio
async def test_server_restart_with_new_namespace_order(
    restartable_plc: PlcProcess, tmp_path: Path
) -> None:
    plc = restartable_plc
    if plc.ns_index != 2:  # the default order first, so that the restart changes it
        plc.kill()
        plc.start()
    points = [point("flow", NSU + "Utilities.NG.Flow"), point("temp", NSU + "Furnace.Temp1")]
    sinks = {mode: RecordingSink() for mode in ("subscribe", "poll")}
    drivers = {
        mode: OpcuaDriver(
            make_device(plc.endpoint, points, mode=mode),
            sinks[mode].index,
            sinks[mode],
            tmp_path,
            "gw1",
            "plant1",
            flush_interval=0.05,
            backoff=Backoff(initial=0.5, maximum=1.0),
        )
        for mode in sinks
    }
    sub, poll = drivers["subscribe"], drivers["poll"]
    async with running(sub), running(poll):
        await await_until(
            lambda: all(len(s.rows()) >= 6 for s in sinks.values()), 10, "values before the restart"
        )
        assert sub.namespace_indexes == poll.namespace_indexes == {"urn:plant1:bf2": 2}
        killed_at = time.time()
        plc.kill()
        await await_until(
            lambda: all(s.events_of("device_down") for s in sinks.values()), 10, "device_down"
        )
        down_at = time.time()
        # Restarted with two other namespaces registered first: urn:plant1:bf2 moves to ns=4.
        plc.start("--namespace-order", "shifted")
        restarted_at = time.time()
        await await_until(
            lambda: all(len(s.events_of("device_up")) == 2 for s in sinks.values()),
            5,
            "device_up after the restart",
            interval=0.02,
        )
        up_at = time.time()
        await await_until(
            lambda: all(
                sum(1 for _k, ts, _v, q in s.rows() if q == QUALITY_GOOD and ts > restarted_at) >= 4
                for s in sinks.values()
            ),
            10,
            "values after the restart",
        )
    # The server was back (start() waits for it): the next attempt comes within the backoff's
    # maximum (1 s, jittered below it), and a session's setup is a few requests on loopback.
    assert up_at - restarted_at < 1.0 + 1.0, up_at - restarted_at
    for mode, sink in sinks.items():
        driver = drivers[mode]
        assert driver.namespace_indexes == {"urn:plant1:bf2": 4}, mode
        assert driver.reconnects >= 1
        (down,) = sink.events_of("device_down")
        assert down.device == "bf2"
        assert plc.endpoint in down.reason
        for key in ("bf2.flow", "bf2.temp"):
            rows = sink.rows(key)
            # The gap is visible: a bad sample at the loss, then nothing until the server is back.
            bad = [ts for _k, ts, _v, q in rows if q == QUALITY_BAD]
            assert len(bad) == 1, (mode, key)
            assert killed_at <= bad[0] <= down_at, (mode, key)
            during = [
                ts for _k, ts, _v, q in rows if q == QUALITY_GOOD and bad[0] <= ts < restarted_at
            ]
            assert during == [], (mode, key)
            assert any(ts > restarted_at and q == QUALITY_GOOD for _k, ts, _v, q in rows)
            assert 800 < rows[-1][2] < 1500


@pytest.mark.asyncio
async def test_frozen_server_is_detected_by_keepalive(
    restartable_plc: PlcProcess, tmp_path: Path
) -> None:
    """SIGSTOP: the socket stays open but nothing answers, as with a pulled cable or a hung PLC."""
    plc = restartable_plc
    assert plc.proc is not None
    sink = RecordingSink()
    driver = OpcuaDriver(
        make_device(
            plc.endpoint,
            # "steady" never changes: its value is refreshed every 0.5 s while the PLC speaks.
            [
                point("flow", NSU + "Utilities.NG.Flow"),
                point("steady", NSU + "Types.Int32", max_gap="1s"),
            ],
            timeout="1s",
        ),
        sink.index,
        sink,
        tmp_path,
        "gw1",
        "plant1",
        flush_interval=0.05,
        backoff=Backoff(initial=0.5, maximum=1.0),
    )
    async with running(driver):
        await await_until(lambda: len(sink.rows("bf2.steady")) >= 2, 10, "a refreshed value")
        plc.proc.send_signal(signal.SIGSTOP)
        try:
            stopped_at = time.time()
            await await_until(lambda: sink.events_of("device_down"), 10, "device_down")
            detected = time.time() - stopped_at
        finally:
            plc.proc.send_signal(signal.SIGCONT)
        resumed_at = time.time()
        await await_until(lambda: len(sink.events_of("device_up")) == 2, 15, "device_up")
        await await_until(
            lambda: any(ts > resumed_at and q == QUALITY_GOOD for _k, ts, _v, q in sink.rows()),
            10,
            "values after the resume",
        )
    # The watchdog probes every `timeout` (1 s) and waits as long for the answer: a freeze
    # right after a probe is seen 2 s later at most (0.5 s of room for a loaded machine).
    assert detected < 2 * 1.0 + 0.5, detected
    assert [q for _k, _t, _v, q in sink.rows()].count(QUALITY_BAD) == 2
    # No refresh of the steady value once the PLC went quiet (keepalive 0.25 s + 2 intervals,
    # plus room for a keepalive answer already in flight that a loaded machine handles late;
    # a refresh loop that ignored the silence would still re-send every 0.5 s until resumed).
    steady = [ts for _k, ts, _v, q in sink.rows("bf2.steady") if q == QUALITY_GOOD]
    assert len([ts for ts in steady if ts < stopped_at]) >= 2
    assert [ts for ts in steady if stopped_at + 1.0 < ts < resumed_at] == []
