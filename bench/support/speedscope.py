"""Where a gateway's CPU goes, per thread: a py-spy speedscope profile (`--threads`) read with
the CPU each thread really used (/proc/<pid>/task, measured beside it).

py-spy counts a thread as busy in some waits it does not recognise (epoll and select.select
with a timeout, Condition.wait, an executor's queue), and a COMMIT's fsync is a wait too: its
raw shares overstate the threads that mostly wait (the uplink, the outbox writer). Here the
samples whose innermost frame is such a wait are set apart, the rest are spread over the
thread's measured CPU, and the busy samples are grouped by what the gateway does.

    python -m bench.support.speedscope PROFILE.json [event-loop=9.1 ironwatt-uplink=2.4 ...]
"""

from __future__ import annotations

import json
import linecache
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ThreadProfile", "load", "render"]

# Innermost frames that are waiting, not computing (path tail, function).
WAITS = (
    ("selectors.py", "EpollSelector.select"),
    ("threading.py", "Condition.wait"),
    ("threading.py", "Event.wait"),
    ("concurrent/futures/thread.py", "_worker"),
    ("gateway/uplink/mqtt_client.py", "pump"),  # its select.select (line by line: nothing else)
)

# What a busy sample is doing: the first rule one of its frames matches, per thread (matched
# on the thread's name). A frame reads "path:function:line", the innermost one
# "path:function:source text of its line" (read from the file if it is still there), so a rule
# can name a statement without depending on line numbers.
RULES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "MainThread": [
        ("pipeline: telemetry messages", ("Gateway._telemetry_messages",)),
        ("pipeline: telemetry filter (offer)", ("TelemetryFilter.offer",)),
        ("pipeline: outbox enqueue (JSON encoding)", ("Outbox.aenqueue", "Outbox.submit")),
        ("pipeline: window close", ("EnergyStage.close_due",)),
        ("pipeline: kernel ingest", ("EnergyStage.ingest",)),
        ("pipeline: kernel snapshot", ("Gateway._save_snapshot",)),
        ("pipeline: other", ("Gateway._one_pass", "Gateway._pipeline")),
        ("Modbus links: pymodbus", ("pymodbus/",)),
        ("Modbus links: drivers/modbus", ("drivers/modbus/",)),
        ("samples handed to the pipeline", ("gateway/daemon/devices.py",)),
        ("http /status", ("gateway/daemon/health.py", "Gateway._status_doc")),
        ("ticker (watchdog, clock)", ("Gateway._ticker",)),
        ("asyncio: sockets (Modbus replies and requests)", ("selector_events.py",)),
        ("asyncio: loop", ("asyncio/",)),
    ],
    "ironwatt-uplink": [
        ("status publish (+ ack flush)", ("MqttSession._publish_status", "Outbox.flush")),
        ("compose payloads", ("gateway/outbox/messages.py:compose",)),
        ("outbox fetch", ("OutboxReader.fetch",)),
        ("outbox ack (hand ids to the writer)", ("Outbox.ack",)),
        ("paho publish (packet, send)", ("Client.publish",)),
        ("paho read (PUBACKs, on_publish)", ("Client.loop_read",)),
        ("paho write", ("Client.loop_write",)),
        ("paho misc", ("Client.loop_misc",)),
        ("session loop", ("MqttSession._drain",)),
    ],
    "ironwatt-outbox": [
        ("store: COMMIT (incl. fsync wait)", ('Writer._store:conn.execute("COMMIT")',)),
        ("delete acked: COMMIT (incl. fsync wait)", ('Writer._delete:conn.execute("COMMIT")',)),
        ("store: size measure", ("RowStore.measure",)),
        ("store: insert rows", ("RowStore.insert", "RowStore.prepare")),
        ("store: wake listeners (uplink, loop)", ("Wakeup.poke", "_write_to_self", "Future")),
        ("store: other", ("Writer._store",)),
        ("delete acked: other", ("Writer._delete",)),
        ("writer loop", ("Writer._loop",)),
    ],
}


def _tail(path: str) -> str:
    """A frame's file as a short path: after site-packages, the repo or the stdlib folder."""
    for marker in ("site-packages/", "/work/main/", "/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return re.sub(r"^.*/(gateway|drivers|ext|bench)/", r"\1/", path)


@dataclass
class ThreadProfile:
    name: str
    samples: int = 0
    waiting: int = 0
    groups: Counter[str] = field(default_factory=Counter)
    self_time: Counter[str] = field(default_factory=Counter)

    @property
    def busy(self) -> int:
        return self.samples - self.waiting


def load(path: Path) -> list[ThreadProfile]:
    doc = json.loads(path.read_text())
    frames = [
        (_tail(f.get("file") or ""), str(f.get("name")), int(f.get("line") or 0))
        for f in doc["shared"]["frames"]
    ]
    sources = [
        linecache.getline(str(f.get("file") or ""), int(f.get("line") or 0)).strip()
        for f in doc["shared"]["frames"]
    ]
    out = []
    for prof in doc["profiles"]:
        m = re.search(r'"([^"]+)"', prof["name"])
        tp = ThreadProfile(m.group(1) if m else prof["name"])
        rules = RULES.get(tp.name, [])
        for stack in prof["samples"]:
            tp.samples += 1
            file, name, line = frames[stack[-1]]
            if any(file.endswith(f) and name == n for f, n in WAITS):
                tp.waiting += 1
                continue
            keys = [f"{frames[i][0]}:{frames[i][1]}:{frames[i][2]}" for i in stack[:-1]]
            keys.append(f"{file}:{name}:{sources[stack[-1]]}")
            group = next(
                (label for label, subs in rules if any(s in k for k in keys for s in subs)),
                "other",
            )
            tp.groups[group] += 1
            tp.self_time[f"{name} ({file}:{line})"] += 1
        out.append(tp)
    return out


# py-spy's MainThread is the event loop; the bench names the OS threads (prctl) "event-loop".
_ALIASES = {"MainThread": "event-loop"}


def _share(n: int, busy: int, cpu: float | None) -> str:
    frac = n / busy
    return f"{100 * frac:5.1f} %" + (f"  {cpu * frac:5.2f} %core" if cpu else "")


def render(profiles: Sequence[ThreadProfile], cpu_pct: dict[str, float], top: int = 12) -> str:
    """Per thread: measured CPU, py-spy's busy/waiting samples, groups and top self lines,
    each as a share of the thread's busy samples and as % of a core (from `cpu_pct`)."""
    lines = []
    total = sum(cpu_pct.values()) or 1.0
    for tp in sorted(profiles, key=lambda p: -cpu_pct.get(_ALIASES.get(p.name, p.name), 0.0)):
        cpu = cpu_pct.get(_ALIASES.get(tp.name, tp.name))
        head = f"{tp.name}: "
        if cpu is not None:
            head += f"{cpu:.2f} % of a core measured ({100 * cpu / total:.0f} % of the process); "
        head += (
            f"py-spy {tp.samples} samples, {tp.waiting} of them waiting "
            f"(raw share {100 * tp.samples / max(1, sum(p.samples for p in profiles)):.0f} %)"
        )
        lines.append(head)
        if not tp.busy:
            continue

        for label, n in tp.groups.most_common():
            lines.append(f"    {_share(n, tp.busy, cpu)}  {label}")
        lines.append("    top lines (self):")
        for label, n in tp.self_time.most_common(top):
            lines.append(f"      {_share(n, tp.busy, cpu)}  {label}")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    cpu = {k: float(v) for k, v in (a.split("=", 1) for a in sys.argv[2:])}
    print(render(load(Path(sys.argv[1])), cpu))
