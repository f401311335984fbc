"""The soak bench, short: 50 meters for 60 s through the whole path, with bench/soak.py's code.

The real `ironwatt run` polls 50 Modbus TCP meters (a port each; the libmodbus C server when it
builds here, else pymodbus plants) whose values change every poll, with telemetry at QoS 0 beside
the QoS-1 windows and events (the mix that stalled the uplink after 20 messages, issue 17), into
a real Mosquitto and a subscriber on `#`. Asserted: every class arrives, no seq hole, and the
backlog stays bounded. Never a speed: CPU, memory and lag goals are the bench's to print.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import POLL_S, REQUIRED, SoakSpec, run_soak

METERS = 50
# A stalled uplink piles up ~50 rows/s here (thousands in a minute); a healthy one peaks at a
# window close (50 windows) plus a second of telemetry. 10 s of traffic leaves room for a
# loaded machine and none for a stall.
BACKLOG_BOUND = 10 * METERS / POLL_S


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_soak_short(tmp_path: Path) -> None:
    spec = SoakSpec(
        meters=METERS, duration_s=60.0, qos=0, warmup_s=5.0, install=False, window_wait_s=75.0
    )
    result = run_soak(spec, tmp_path)
    report = result.table()
    print(report)
    print(result.result_line())
    assert result.failure is None, report
    missing = [c for c in REQUIRED if not result.delivered.get(c)]
    assert not missing, f"never delivered: {missing}\n{report}"
    assert result.streams == 1, report
    assert result.seq_holes == 0, report
    assert result.bad_payloads == 0, report
    # The bounds below hold trivially for a run that stored nothing (the backlog is 0 then):
    # the path carried the traffic, at least half a message per meter and poll (telemetry alone
    # is one, the values change every poll).
    assert result.stored_per_s >= 0.5 * METERS / POLL_S, report
    assert result.backlog_max <= BACKLOG_BOUND, report
    assert result.backlog_end <= BACKLOG_BOUND, report
