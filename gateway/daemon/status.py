"""What the daemon says about itself: the /status document, /metrics families, the status table.

Pure functions over plain dicts, so `ironwatt status` can render what it fetched over HTTP
with the same code that built it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.daemon.health import Metric
from gateway.timefmt import ago, utc_iso

__all__ = ["health_verdict", "metrics_of", "render_table", "status_document", "status_line"]


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _oldest_age(buffer: Mapping[str, Any]) -> float | None:
    """0 when the outbox is empty (its oldest age is then null in /status): a series that
    vanishes in the healthy state would read as "no data" to an alert."""
    age = _num(buffer.get("oldest_age_s"))
    if age is None and buffer.get("backlog") == 0:
        return 0.0
    return age


def metrics_of(status: Mapping[str, Any]) -> list[Metric]:
    """Prometheus families from a /status document."""
    devices: Mapping[str, Mapping[str, Any]] = status.get("devices", {})
    up = Metric("ironwatt_device_up", "gauge", "1 when the device answered its last poll")
    polls = Metric("ironwatt_device_polls_total", "counter", "polls attempted per device")
    errors = Metric("ironwatt_device_errors_total", "counter", "failed polls per device")
    overruns = Metric(
        "ironwatt_device_poll_overruns_total", "counter", "polls skipped because one ran late"
    )
    last = Metric(
        "ironwatt_device_last_success_timestamp_seconds", "gauge", "UTC time of the last good poll"
    )
    crashes = Metric("ironwatt_device_crashes_total", "counter", "driver task restarts")
    # A summary without quantiles: rate(_sum) / rate(_count) is the mean poll time.
    poll_time = Metric(
        "ironwatt_device_poll_duration_seconds", "summary",
        "time one poll of the device took (every block or node read once)",
    )  # fmt: skip
    for name, dev in devices.items():
        if isinstance(dev.get("poll_seconds"), int | float):
            poll_time.add(_num(dev.get("poll_seconds")), suffix="_sum", device=name)
            poll_time.add(_num(dev.get("timed_polls")), suffix="_count", device=name)
        up.add(1 if dev.get("state") == "up" else 0, device=name)
        polls.add(_num(dev.get("polls")), device=name)
        errors.add(_num(dev.get("errors")), device=name)
        overruns.add(_num(dev.get("overruns")), device=name)
        last.add(_num(dev.get("last_success")), device=name)
        crashes.add(_num(dev.get("crashes")), device=name)
    buffer: Mapping[str, Any] = status.get("buffer", {})
    uplink: Mapping[str, Any] = status.get("uplink", {})
    energy: Mapping[str, Any] = status.get("energy", {})
    dropped = Metric(
        "ironwatt_kernel_dropped_samples_total", "counter", "samples dropped before any window"
    )
    for reason, count in energy.get("dropped", {}).items():
        dropped.add(_num(count), reason=reason)
    process: Mapping[str, Any] = status.get("process", {})
    reloads = Metric(
        "ironwatt_config_reloads_total", "counter", "config reloads asked for, by their outcome"
    )
    reloads.add(_num(status.get("reloads")), result="applied")
    reloads.add(_num(status.get("reloads_refused", 0)), result="refused")
    build = Metric("ironwatt_build_info", "gauge", "version and aggregation kernel of this build")
    build.add(
        1,
        version=str(status.get("version", "")),
        # "compiled" or "pure" (the reason a twin runs is in /status and the start-up line)
        kernel=str(status.get("kernel", "")).split(" ", 1)[0],
        python=str(process.get("python", "")),
    )
    return [
        # No ironwatt_up: the scraper's own `up` says whether /metrics answered.
        build,
        Metric("process_start_time_seconds", "gauge", "start time of the process, Unix epoch").add(
            _num(status.get("started"))
        ),
        Metric("process_resident_memory_bytes", "gauge", "resident set size of the process").add(
            _num(process.get("rss_bytes"))
        ),
        Metric(
            "process_cpu_seconds_total", "counter", "user and system CPU time of the process"
        ).add(_num(process.get("cpu_seconds"))),
        up, polls, errors, overruns, last, crashes, poll_time,
        Metric("ironwatt_samples_total", "counter", "samples received from all drivers").add(
            _num(energy.get("samples"))
        ),
        dropped,
        Metric("ironwatt_windows_total", "counter", "device energy windows stored").add(
            _num(energy.get("windows"))
        ),
        Metric("ironwatt_group_windows_total", "counter", "group windows stored").add(
            _num(energy.get("group_windows"))
        ),
        Metric(
            "ironwatt_group_slots_held",
            "gauge",
            "group windows waiting for members, or kept for a revision",
        ).add(_num(energy.get("groups_pending"))),
        Metric("ironwatt_buffer_backlog_messages", "gauge", "messages waiting in the outbox").add(
            _num(buffer.get("backlog"))
        ),
        Metric(
            "ironwatt_buffer_oldest_age_seconds", "gauge",
            "age of the oldest message not yet acknowledged (0 with an empty outbox)",
        ).add(_oldest_age(buffer)),
        Metric("ironwatt_buffer_used_bytes", "gauge", "outbox size").add(
            _num(buffer.get("used_bytes"))
        ),
        Metric("ironwatt_buffer_max_bytes", "gauge", "outbox size cap").add(
            _num(buffer.get("max_size_bytes"))
        ),
        Metric("ironwatt_buffer_dropped_total", "counter", "messages dropped at the size cap").add(
            _num(buffer.get("dropped_total"))
        ),
        Metric("ironwatt_uplink_connected", "gauge", "1 while connected to the broker").add(
            1 if uplink.get("connected") else 0
        ),
        Metric(
            "ironwatt_uplink_acknowledged_total", "counter",
            "QoS 1 messages the broker acknowledged (PUBACK), replays included",
        ).add(_num(uplink.get("acked"))),
        Metric(
            "ironwatt_uplink_written_qos0_total", "counter",
            "QoS 0 messages (telemetry) written to the broker connection; no acknowledgement",
        ).add(_num(uplink.get("written_qos0"))),
        # (the uplink's lag_s in /status is the same age, seen from its thread: not repeated here)
        Metric("ironwatt_uplink_last_ack_timestamp_seconds", "gauge", "time of the last PUBACK")
        .add(_num(uplink.get("last_ack"))),
        Metric("ironwatt_clock_steps_total", "counter", "wall-clock steps detected").add(
            _num(status.get("clock_steps"))
        ),
        reloads,
    ]  # fmt: skip


def render_table(status: Mapping[str, Any], now: float | None = None) -> str:
    """The /status document for a technician: devices first, then buffer and uplink."""
    now = time.time() if now is None else now
    lines = [
        f"gateway {status.get('gw')} at site {status.get('site')}, version "
        f"{status.get('version')} (kernel: {status.get('kernel', '?')}), up since "
        f"{status.get('since')}",
        f"config {status.get('config')}",
        "",
    ]
    rows = [
        ("DEVICE", "DRIVER", "STATE", "LAST SUCCESS", "POLLS", "ERRORS", "OVERRUNS", "LAST ERROR")
    ]
    for name, dev in sorted(status.get("devices", {}).items()):
        rows.append((
            name, str(dev.get("driver", "")), str(dev.get("state", "?")),
            ago(dev.get("last_success"), now), str(dev.get("polls", "")),
            str(dev.get("errors", "")), str(dev.get("overruns", "")),
            str(dev.get("last_error") or ""),
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
        )
    buffer = status.get("buffer", {})
    uplink = status.get("uplink", {})
    oldest = _num(buffer.get("oldest_age_s"))
    lines += [
        "",
        f"buffer: {buffer.get('backlog', '?')} messages waiting"
        + (f", oldest {oldest:.0f}s" if oldest is not None else "")
        + f", {buffer.get('used_bytes', '?')} of {buffer.get('max_size_bytes', '?')} bytes, "
        f"{buffer.get('dropped_total', 0)} dropped, stream {buffer.get('stream', '?')} "
        f"next seq {buffer.get('next_seq', '?')}",
        f"uplink: {'connected' if uplink.get('connected') else 'NOT connected'} to "
        f"{uplink.get('broker', '?')} ({uplink.get('state', '?')} since "
        f"{ago(uplink.get('since'), now)}), {uplink.get('acked', 0)} acknowledged "
        f"(last {ago(uplink.get('last_ack'), now)}), "
        + (f"{uplink['written_qos0']} written at QoS 0, " if uplink.get("written_qos0") else "")
        + f"lag {uplink.get('lag_s', '?')} s"
        + (f", last error: {uplink['last_error']}" if uplink.get("last_error") else ""),
    ]
    return "\n".join(lines) + "\n"


def iso(ts: float | None) -> str | None:
    return None if ts is None else utc_iso(ts)


def status_document(
    *,
    gw: str,
    site: str,
    config: str,
    started: float,
    devices: Mapping[str, Any],
    buffer: Mapping[str, Any],
    uplink: Mapping[str, Any],
    energy: Mapping[str, Any],
    clock_steps: int,
    reloads: int,
    reloads_refused: int = 0,
) -> dict[str, Any]:
    """The /status document (docs/daemon.md) from the parts' own status."""
    from ext import IMPLEMENTATION

    return {
        "v": 1,
        "gw": gw,
        "site": site,
        "version": __version__,
        "kernel": IMPLEMENTATION,
        "process": process_facts(),
        "config": config,
        "started": started,
        "since": utc_iso(started),
        "devices": dict(devices),
        "buffer": dict(buffer),
        "uplink": dict(uplink),
        "energy": dict(energy),
        "clock_steps": clock_steps,
        "reloads": reloads,
        "reloads_refused": reloads_refused,
    }


def process_facts() -> dict[str, Any]:
    """This process's memory and CPU, read when asked (a scrape, a status request)."""
    times = os.times()
    rss = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        # /proc/self/statm: sizes in pages; the second is the resident set
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        rss = pages * os.sysconf("SC_PAGE_SIZE")
    return {
        "pid": os.getpid(),
        "rss_bytes": rss,
        "cpu_seconds": round(times.user + times.system, 3),
        "python": platform.python_version(),
    }


def status_line(
    devices: Mapping[str, Mapping[str, Any]],
    backlog: int,
    connected: bool,
    reload_refused: str | None,
) -> str:
    """The STATUS= line systemd shows (`systemctl status ironwatt`)."""
    up = sum(1 for d in devices.values() if d.get("state") == "up")
    line = (
        f"{up}/{len(devices)} devices up, backlog {backlog}, uplink "
        f"{'connected' if connected else 'disconnected'}"
    )
    if reload_refused is not None:
        line += f"; last reload refused: {reload_refused}"
    return line


# The event loop has not ticked for this long: /healthz fails (the watchdog would follow).
LOOP_STALL_S = 10.0


def health_verdict(loop_age: float, database_open: bool, pressure: str | None) -> tuple[bool, str]:
    """/healthz: (ok, why) from the loop's last tick age and the outbox's state."""
    if loop_age > LOOP_STALL_S:
        return False, f"event loop stalled for {loop_age:.0f}s"
    if not database_open:
        return False, "database not open"
    if pressure in ("disk_full", "read_only", "io_error"):
        return False, f"database not writable: {pressure}"
    return True, "ok"
