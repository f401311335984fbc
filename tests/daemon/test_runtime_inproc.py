"""The Gateway object on the test's own loop: a wall-clock step becomes a `clock_step` event."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from gateway.config.load import load_config
from gateway.daemon import Gateway
from gateway.daemon.clock import ClockWatch
from gateway.daemon.notify import Notifier
from tests.support.mosquitto import Collector, Mosquitto
from tests.support.waiting import await_until


@pytest.mark.asyncio
async def test_clock_step_is_published(shared_broker: Mosquitto, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"""
[gateway]
id = "gw-clock"
site = "s"
timezone = "UTC"
data_dir = "{tmp_path / "data"}"
[mqtt]
url = "{shared_broker.url}"
topic_prefix = "iw"
[energy]
intervals = ["1m"]
""")
    collector = Collector(shared_broker, "iw/s/gw-clock/event", client_id="clock-collector")
    gateway = Gateway(load_config(path), notifier=Notifier(""))
    task = asyncio.create_task(gateway.run())
    try:
        await await_until(lambda: gateway.clock is not None, 5.0, "the gateway's clock watch")
        offset = [0.0]
        # The same monotonic clock, a wall clock that an operator sets back by 2 minutes.
        gateway.clock = ClockWatch(60.0, 3.0, wall=lambda: time.time() + offset[0])
        offset[0] = -120.0
        loop = asyncio.get_running_loop()
        got = await loop.run_in_executor(
            None, lambda: collector.wait_for(bool, timeout=10, what="a clock_step event")
        )
        event = json.loads(got[0][1])
        assert event["type"] == "clock_step"
        assert event["offset_s"] == pytest.approx(-120, abs=1)
        assert "backward" in event["reason"]
        assert isinstance(event["seq"], int)
        assert gateway.clock.steps == 1
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, 20)
        collector.close()
