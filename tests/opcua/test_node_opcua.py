"""The driver against a second implementation, node-opcua (Node.js), where it is installed.

asyncua clients that send `nsu=` ExpandedNodeIds time out against node-opcua; ours resolves
namespaces first. Runs when IRONWATT_NODE_OPCUA names a directory holding
node_modules/node-opcua (`npm install --prefix DIR node-opcua@2.182.2`; Node 20 needs 2.182.x).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.opcua.driver import OpcuaDriver
from drivers.samples import QUALITY_BAD, QUALITY_GOOD
from gateway.sim.ports import free_port
from tests.opcua.conftest import make_device, point
from tests.support.recording import RecordingSink
from tests.support.tasks import running
from tests.support.waiting import await_until

PREFIX = os.environ.get("IRONWATT_NODE_OPCUA", "")
MODULES = Path(PREFIX) / "node_modules"
pytestmark = pytest.mark.skipif(
    not (PREFIX and (MODULES / "node-opcua").is_dir() and shutil.which("node")),
    reason="node-opcua not installed (set IRONWATT_NODE_OPCUA to an npm prefix holding it)",
)
NSU = "nsu=urn:plant1:bf2;s="


@pytest.fixture(scope="module")
def node_plc() -> Iterator[str]:
    port = free_port()
    script = Path(__file__).with_name("node_opcua_plc.js")
    proc = subprocess.Popen(
        ["node", str(script), str(port)],
        env=dict(os.environ, NODE_PATH=str(MODULES)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY") or (not line and proc.poll() is not None):
            break
    if proc.poll() is not None:
        pytest.fail("node-opcua server did not start")
    yield f"opc.tcp://127.0.0.1:{port}"
    proc.kill()
    proc.wait(10)


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["subscribe", "poll"])
async def test_values_and_bad_node_against_node_opcua(
    node_plc: str, tmp_path: Path, mode: str
) -> None:
    sink = RecordingSink()
    points = [
        point("flow", NSU + "Utilities.NG.Flow"),
        point("pieces", NSU + "Production.Pieces"),
        point("missing", NSU + "No.Such.Tag"),
    ]
    device = make_device(node_plc, points, mode=mode, interval="500ms", timeout="5s")
    driver = OpcuaDriver(device, sink.index, sink, tmp_path, "gw1", "plant1")
    async with running(driver):
        await await_until(lambda: len(sink.rows("bf2.pieces")) >= 3, 30, "three counter values")
    assert driver.namespace_indexes == {"urn:plant1:bf2": 3}
    pieces = [v for _k, _t, v, q in sink.rows("bf2.pieces") if q == QUALITY_GOOD]
    assert pieces == sorted(pieces)
    assert pieces[-1] > pieces[0]
    missing = sink.rows("bf2.missing")
    assert missing  # the unknown node is reported (bad), not left out
    assert all(q == QUALITY_BAD for _k, _t, _v, q in missing)
    (error,) = sink.events_of("point_error")
    assert error.point == "missing"
    assert "BadNodeIdUnknown" in error.reason
