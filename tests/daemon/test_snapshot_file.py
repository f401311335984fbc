"""The daemon's kernel snapshot file: written at every close, survives a full disk, a corrupt or
unreadable file does not stop the gateway, and a restart resumes from it."""

from __future__ import annotations

import contextlib
import json
import shutil
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gateway.energy.snapshot_file import SNAPSHOT_NAME
from gateway.sim.modbus_meters import SimMeter
from gateway.sim.ports import free_port
from tests.daemon.conftest import GatewayProcess, PlantThread
from tests.support.mosquitto import Mosquitto


def _config(path: Path, data: Path, broker: Mosquitto, port: int, http: int) -> None:
    path.write_text(f"""
[gateway]
id = "gw-snap"
site = "testsite"
timezone = "UTC"
data_dir = "{data}"

[mqtt]
url = "{broker.url}"

[http]
listen = "127.0.0.1:{http}"

[energy]
intervals = ["2s"]
demand_interval = "2s"

[[devices]]
name = "m1"
driver = "modbus"
host = "127.0.0.1"
port = {port}
unit = 1
poll = "500ms"
timeout = "400ms"
profile = "eastron-sdm630"
""")


def _energy(http: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/status", timeout=5) as r:
        doc: dict[str, Any] = json.load(r)
    return dict(doc["energy"])


@contextlib.contextmanager
def _gateway(
    broker: Mosquitto, tmp_path: Path, prepare: Callable[[Path], object] = lambda data: None
) -> Iterator[tuple[GatewayProcess, Path, int]]:
    """A one-meter plant and its gateway (not started): (gateway, data_dir, http port).

    `prepare(data_dir)` runs first: what the gateway finds in its folder at start.
    """
    plant = PlantThread([SimMeter(unit=1, profile="eastron-sdm630", energy_kwh=100.0)])
    config, data, http = tmp_path / "ironwatt.toml", tmp_path / "data", free_port()
    data.mkdir()
    _config(config, data, broker, plant.plant.port, http)
    prepare(data)
    gw = GatewayProcess(config, tmp_path)
    try:
        yield gw, data, http
    finally:
        gw.close()
        plant.stop()


def test_a_snapshot_that_cannot_be_written_is_reported_and_polling_goes_on(
    shared_broker: Mosquitto, tmp_path: Path
) -> None:
    # The temp file cannot be created: what a full or read-only disk does.
    blocked = _gateway(
        shared_broker, tmp_path, lambda data: (data / (SNAPSHOT_NAME + ".tmp")).mkdir()
    )
    with blocked as (gw, data, http):
        blocker = data / (SNAPSHOT_NAME + ".tmp")
        gw.start()
        gw.read_notes(until="READY=1", timeout=20)
        gw.wait_until(lambda: _energy(http)["snapshot"]["error"], 20, "the snapshot error")
        windows = _energy(http)["windows"]
        snapshot = _energy(http)["snapshot"]
        assert snapshot["path"] == str(data / SNAPSHOT_NAME)
        assert "Is a directory" in snapshot["error"]
        assert snapshot["at"] is None
        assert not (data / SNAPSHOT_NAME).exists()
        # Windows keep closing and being stored; the error is logged once, not at every close.
        gw.wait_until(lambda: _energy(http)["windows"] >= windows + 2, 20, "more windows")
        assert gw.log().count("kernel snapshot not written") == 1
        assert "check free space and permissions of data_dir" in gw.log()

        shutil.rmtree(blocker)
        gw.wait_until(lambda: _energy(http)["snapshot"]["error"] is None, 20, "a written snapshot")
        snapshot = _energy(http)["snapshot"]
        assert snapshot["at"]
        assert snapshot["bytes"] > 0
        assert (data / SNAPSHOT_NAME).stat().st_size == snapshot["bytes"]
        assert "kernel snapshot written again" in gw.log()
        assert gw.stop() == 0


def test_a_corrupt_snapshot_is_not_used_and_replaced_then_resumed_from(
    shared_broker: Mosquitto, tmp_path: Path
) -> None:
    def torn(data: Path) -> None:  # a torn or foreign file
        (data / SNAPSHOT_NAME).write_bytes(b"IWA\x01" + b"\x00" * 64)

    with _gateway(shared_broker, tmp_path, torn) as (gw, data, http):
        gw.start()
        gw.read_notes(until="READY=1", timeout=20)
        gw.wait_until(lambda: _energy(http)["snapshot"]["at"], 20, "a snapshot written")
        assert f"kernel snapshot {data / SNAPSHOT_NAME} not used" in gw.log()
        assert "resumed" not in gw.log()
        assert (data / SNAPSHOT_NAME).stat().st_size == _energy(http)["snapshot"]["bytes"]
        assert gw.stop() == 0  # the stop writes the last snapshot, open windows included
        gw.start()
        gw.wait_until(lambda: "resumed the open windows of" in gw.log(), 20, "the resume")
        assert gw.stop() == 0


def test_an_unreadable_snapshot_does_not_stop_the_gateway(
    shared_broker: Mosquitto, tmp_path: Path
) -> None:
    # Cannot be read (nor replaced): EISDIR, as EIO or EACCES would.
    unreadable = _gateway(shared_broker, tmp_path, lambda data: (data / SNAPSHOT_NAME).mkdir())
    with unreadable as (gw, _, http):
        gw.start()
        gw.read_notes(until="READY=1", timeout=20)
        assert "unreadable (Is a directory): the open windows start empty" in gw.log()
        gw.wait_until(lambda: _energy(http)["snapshot"]["error"], 20, "the write error")
        assert gw.stop() == 0
