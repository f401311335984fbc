"""What the demo shows: every message as a subscriber upstream receives it, as lines
(`--plain`, and whenever stdout is not a terminal) or as a live terminal view (rich) refreshed
every second from those messages and the gateway's own /status.

`Feed` subscribes and keeps what the views need; `format_message` is one message as lines;
`render_live` draws one frame (the test renders it once at a fixed size).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.timefmt import ago

__all__ = [
    "Feed",
    "Frame",
    "PlainLines",
    "format_message",
    "render_live",
    "render_text",
    "short_line",
]

WINDOW = "10s"  # the interval the live view shows (the demo config's shortest)
_PRINTING = threading.Lock()  # lines come from paho's thread and from the event loop


def say_line(text: str) -> None:
    """One line to stdout, whole (never interleaved with another thread's)."""
    with _PRINTING:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def _n(value: Any, digits: int = 3) -> str:
    return "null" if value is None else f"{value:.{digits}f}"


def _clock(iso: Any) -> str:
    return str(iso)[11:19] if isinstance(iso, str) else "?"


def _span(start: Any, end: Any) -> str:
    """A window's edges as clock times; with the month and day where they are on different
    days (a shift that began yesterday evening, a day, a month)."""
    if isinstance(start, str) and isinstance(end, str) and start[:10] != end[:10]:
        return f"{start[5:10]} {_clock(start)}-{end[5:10]} {_clock(end)}"
    return f"{_clock(start)}-{_clock(end)}"


def format_message(topic: str, payload: bytes) -> str:
    """One readable line (or a few) per MQTT message."""
    parts = topic.split("/")
    kind = parts[3] if len(parts) > 3 else topic
    try:
        doc = json.loads(payload)
    except ValueError:
        return f"{topic}: {payload[:200]!r}"
    if kind == "status":
        return (
            f"status  {doc.get('state')}: {doc.get('devices')} devices, "
            f"backlog {doc.get('backlog')}, lag {doc.get('lag_s')} s"
        )
    head = f"seq {doc.get('seq')}" + (" replayed" if doc.get("replayed") else "")
    if kind == "event":
        extra = doc.get("device") or ""
        return f"event   {doc.get('type')} {extra} ({doc.get('reason', '')}) [{head}]"
    if kind == "energy":
        lines = [
            f"energy  {doc.get('interval')} {doc.get('device')} "
            f"{_span(doc.get('start'), doc.get('end'))} "
            f"rev {doc.get('revision')} [{head}]"
        ]
        for name, p in sorted(doc.get("points", {}).items()):
            if p.get("kind") == "counter":
                lines.append(
                    f"          {name:<16} delta {_n(p.get('delta'))} {p.get('unit')} "
                    f"(first {_n(p.get('first'), 2)}, last {_n(p.get('last'), 2)}), "
                    f"coverage {_n(p.get('coverage'), 2)}"
                    + "".join(
                        f", {what} {p[what]}" for what in ("rollovers", "resets") if p.get(what)
                    )
                )
            elif p.get("kind") == "rate" and name in ("power_total", "gas_flow"):
                lines.append(
                    f"          {name:<16} mean {_n(p.get('mean'), 2)} {p.get('unit')}, "
                    f"integral {_n(p.get('integral'))} {p.get('integral_unit', '')}"
                )
            elif p.get("kind") == "gauge" and name in ("voltage_l1", "furnace_temp", "frequency"):
                lines.append(
                    f"          {name:<16} mean {_n(p.get('mean'), 2)} {p.get('unit')} "
                    f"[{_n(p.get('min'), 2)} .. {_n(p.get('max'), 2)}]"
                )
        return "\n".join(lines)
    if kind == "group":
        carriers = ", ".join(
            f"{c} {_n(v.get('amount'))} {v.get('unit')}" for c, v in doc.get("carriers", {}).items()
        )
        recovered = doc.get("recovered") or {}
        if recovered:
            carriers += "; recovered " + ", ".join(
                f"{c} {_n(v.get('amount'))} {v.get('unit')}" for c, v in recovered.items()
            )
        production = doc.get("production") or {}
        if production.get("amount") is not None:
            carriers += f"; production {_n(production['amount'])} {production.get('unit')}"
        shift = f" shift {doc['shift']}" if doc.get("shift") else ""
        line = (
            f"group   {doc.get('interval')} {doc.get('group')}{shift} "
            f"{_span(doc.get('start'), doc.get('end'))} rev {doc.get('revision')} [{head}]"
            f"\n          {carriers}"
            f"\n          kgce {_n(doc.get('kgce'))}, kgCO2e {_n(doc.get('kgco2e'))}, intensity "
            f"{_n(doc.get('intensity_kgce_per_unit'))} kgce/t"
        )
        cost = doc.get("cost")
        if isinstance(cost, dict):
            periods = ", ".join(f"{k} {_n(v, 2)}" for k, v in cost.get("by_period", {}).items())
            line += f", cost {_n(cost.get('amount'), 2)} {cost.get('currency', '')} ({periods})"
        demand = doc.get("demand")
        if isinstance(demand, dict) and demand.get("peak") is not None:
            line += f", demand {_n(demand.get('peak'), 1)} kW"
        bench = doc.get("benchmark")
        if isinstance(bench, dict):
            line += (
                f"\n          {bench.get('process')}: EEI {_n(bench.get('eei'), 3)}, "
                f"{bench.get('standing')} (benchmark {_n(bench.get('benchmark'), 1)}, baseline "
                f"{_n(bench.get('baseline'), 1)} kgce/t, {bench.get('standard')})"
            )
        return line
    return f"{kind:<7} {topic}: {payload[:160].decode(errors='replace')}"


def short_line(kind: str, doc: Mapping[str, Any]) -> str:
    """One message in one line, for the view's "last messages"."""
    head = f"seq {doc.get('seq')}" + (" replayed" if doc.get("replayed") else "")
    if kind == "energy":
        what = (
            f"{doc.get('interval')} {doc.get('device')} {_span(doc.get('start'), doc.get('end'))}"
        )
        return f"energy {what} rev {doc.get('revision')} [{head}]"
    if kind == "group":
        what = f"{doc.get('interval')} {doc.get('group')} {_span(doc.get('start'), doc.get('end'))}"
        return f"group  {what} kgce {_n(doc.get('kgce'), 1)} [{head}]"
    if kind == "event":
        return f"event  {doc.get('type')} {doc.get('device') or ''} [{head}]"
    if kind == "telemetry":
        return f"telemetry {doc.get('device')}: {len(doc.get('points', {}))} values"
    return f"{kind} {doc.get('state', '')}"


@dataclass
class Frame:
    """What one frame of the live view shows (a copy: the feed goes on in its thread)."""

    values: dict[str, dict[str, Any]]  # device -> point -> {value, unit, quality, ts}
    windows: dict[str, dict[str, Any]]  # device -> its last closed WINDOW energy window
    groups: dict[str, dict[str, Any]]  # group -> its last closed WINDOW group window
    recent: list[tuple[float, str]]
    counts: dict[str, int]
    replayed: int
    status: dict[str, Any] | None = None  # the gateway's /status (None: no answer)
    notes: list[tuple[float, str]] = field(default_factory=list)  # the demo's announcements
    header: str = ""


class Received:
    """What a subscriber has received: every QoS 1 payload (for the verdict), and the latest
    values and windows (for the view). `add` takes one message; `frame` copies the view's part.
    Not thread-safe by itself: Feed holds a lock around both."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.docs: list[tuple[str, dict[str, Any]]] = []  # (class, payload) of QoS 1 messages
        self.values: dict[str, dict[str, Any]] = {}
        self.windows: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.recent: deque[tuple[float, str]] = deque(maxlen=12)
        self.replayed = 0

    def add(self, kind: str, doc: Any, now: float) -> None:
        self.counts[kind] += 1
        if not isinstance(doc, dict):
            return
        if kind == "telemetry":
            points = doc.get("points")
            if isinstance(points, dict):
                self.values.setdefault(str(doc.get("device")), {}).update(points)
            return  # QoS 0, no seq: not part of the verdict
        self.docs.append((kind, doc))
        self.replayed += bool(doc.get("replayed"))
        if kind != "status":
            self.recent.append((now, short_line(kind, doc)))
        if kind in ("energy", "group") and doc.get("interval") == WINDOW:
            into = self.windows if kind == "energy" else self.groups
            key = str(doc.get("device") if kind == "energy" else doc.get("group"))
            # the latest window, or a revision of it (replays and revisions come late)
            if str(doc.get("end")) >= str(into.get(key, {}).get("end", "")):
                into[key] = doc

    def frame(self) -> Frame:
        return Frame(
            values={d: dict(p) for d, p in self.values.items()},
            windows=dict(self.windows),
            groups=dict(self.groups),
            recent=list(self.recent),
            counts=dict(self.counts),
            replayed=self.replayed,
        )


class Feed:
    """Subscribes to everything the gateway publishes (through the broker directly, never
    through the link the demo cuts) into `received`; `on_message(topic, payload)` is called
    for each message too (the plain view)."""

    def __init__(
        self, port: int, prefix: str, on_message: Callable[[str, bytes], None] | None = None
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.received = Received()
        self._on_message_cb = on_message
        self._lock = threading.Lock()
        # A session the broker keeps: a reconnect of this viewer misses nothing.
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="ironwatt-demo-viewer", clean_session=False
        )
        self.client.reconnect_delay_set(1, 2)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{prefix}/#", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        parts = msg.topic.split("/")
        kind = parts[3] if len(parts) > 3 else msg.topic
        doc: Any = None
        with contextlib.suppress(ValueError):
            doc = json.loads(msg.payload)
        with self._lock:
            self.received.add(kind, doc, time.time())
        if self._on_message_cb is not None:
            self._on_message_cb(msg.topic, msg.payload)

    def frame(self) -> Frame:
        with self._lock:
            return self.received.frame()

    def close(self) -> None:
        """Stop receiving; `received` stays as it is."""
        self.client.loop_stop()
        self.client.disconnect()


# ---- the live view ------------------------------------------------------------------------

# The values the view shows per device (the rest are in the telemetry messages).
SHOWN_VALUES = (
    "power_total", "energy_import", "voltage_l1", "pf_total", "hot_metal", "gas_flow",
    "converter_gas", "line_status", "furnace_temp",
)  # fmt: skip
GOOD = {"good": "green", "bad": "red", "stale": "yellow", "uncertain": "yellow"}
STATES = {"up": "green", "down": "red", "starting": "yellow"}


def _short(value: Any) -> str:
    """A reading at a precision the eye takes in at once."""
    if not isinstance(value, int | float):
        return "null"
    size = abs(value)
    return f"{value:.0f}" if size >= 1000 else f"{value:.1f}" if size >= 10 else f"{value:.3f}"


def render_live(frame: Frame, now: float | None = None) -> Any:
    """One frame: devices, latest values, last windows, groups, outbox and uplink, messages."""
    from rich import box
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    now = time.time() if now is None else now
    status = frame.status or {}
    table_style: dict[str, Any] = {
        "expand": True,
        "title_justify": "left",
        "box": box.SIMPLE_HEAD,
        "padding": (0, 1),
    }
    devices = Table(title="devices", **table_style)
    for col in ("device", "state", "last poll", "polls", "errors", "last error"):
        devices.add_column(col, overflow="fold")
    for name, dev in sorted(status.get("devices", {}).items()):
        state = str(dev.get("state", "?"))
        devices.add_row(
            name, Text(state, style=STATES.get(state, "")), ago(dev.get("last_success"), now),
            str(dev.get("polls", "")), str(dev.get("errors", "")), str(dev.get("last_error") or ""),
        )  # fmt: skip
    if frame.status is None:
        devices.add_row("(the gateway's /status does not answer yet)", "", "", "", "", "")

    values = Table(title="latest values (telemetry)", **table_style)
    values.add_column("device")
    values.add_column("values")
    for device, points in sorted(frame.values.items()):
        shown = Text()
        for name in SHOWN_VALUES:
            p = points.get(name)
            if not isinstance(p, dict):
                continue
            # Report-by-exception: an unchanged value is not sent again, so its age is no
            # sign of staleness; its quality is (bad, stale and uncertain come as such).
            quality = str(p.get("quality", "good"))
            unit = "" if p.get("unit") in (None, "1") else f" {p['unit']}"
            style = GOOD.get(quality, "yellow")
            shown.append(f"{name} {_short(p.get('value'))}{unit}", style=style)
            if quality != "good":
                shown.append(f" ({quality})", style=style)
            shown.append("  ")
        values.add_row(device, shown)

    windows = Table(title=f"last closed {WINDOW} windows", **table_style)
    for col in ("device", "window", "kWh", "peak demand kW", "coverage", "rev"):
        windows.add_column(col)
    for device, doc in sorted(frame.windows.items()):
        points = doc.get("points", {})
        energy = points.get("energy_import")
        power = points.get("power_total")
        if not isinstance(energy, dict):
            continue  # a PLC: its counters are in the groups
        windows.add_row(
            device, _span(doc.get("start"), doc.get("end")), _n(energy.get("delta"), 3),
            _n(power.get("peak_demand"), 1) if isinstance(power, dict) else "",
            _n(energy.get("coverage"), 2), str(doc.get("revision", "")),
        )  # fmt: skip

    groups = Table(title=f"process groups ({WINDOW})", **table_style)
    for col in ("group", "kgce", "kgCO2e", "kgce/t", "cost", "by period", "EEI", "standing"):
        groups.add_column(col, overflow="fold")
    for name, doc in sorted(frame.groups.items()):
        cost: dict[str, Any] = doc["cost"] if isinstance(doc.get("cost"), dict) else {}
        bench: dict[str, Any] = doc["benchmark"] if isinstance(doc.get("benchmark"), dict) else {}
        standing = str(bench.get("standing", "")).replace("_", " ")
        style = "green" if "better" in standing else "red" if "worse" in standing else "yellow"
        groups.add_row(
            name, _n(doc.get("kgce"), 1), _n(doc.get("kgco2e"), 1),
            _n(doc.get("intensity_kgce_per_unit"), 1),
            f"{_n(cost.get('amount'), 2)} {cost.get('currency', '')}" if cost else "",
            ", ".join(f"{k} {_n(v, 2)}" for k, v in cost.get("by_period", {}).items() if v),
            _n(bench.get("eei"), 3) if bench else "", Text(standing, style=style),
        )  # fmt: skip

    buffer = status.get("buffer", {})
    uplink = status.get("uplink", {})
    oldest = buffer.get("oldest_age_s")
    link = "connected" if uplink.get("connected") else "NOT connected"
    outbox = Text.assemble(
        ("uplink ", "bold"), (link, "green" if uplink.get("connected") else "red"),
        f" to {uplink.get('broker', '?')}, {uplink.get('acked', 0)} acknowledged (last "
        f"{ago(uplink.get('last_ack'), now)}), lag {_n(uplink.get('lag_s'), 1)} s\n",
        ("outbox ", "bold"), f"{buffer.get('backlog', '?')} waiting",
        f", oldest {oldest:.0f} s" if isinstance(oldest, int | float) else "",
        f", {buffer.get('dropped_total', 0)} dropped; {frame.replayed} replayed received; ",
        ", ".join(f"{n} {k}" for k, n in sorted(frame.counts.items())) + " received",
    )  # fmt: skip
    recent = Text("\n".join(
        f"{time.strftime('%H:%M:%S', time.localtime(t))} {line}" for t, line in frame.recent[-6:]
    ))  # fmt: skip
    notes = Text("\n".join(
        f"{time.strftime('%H:%M:%S', time.localtime(t))} {line}" for t, line in frame.notes[-4:]
    ))  # fmt: skip
    # Most telling first: a terminal shorter than the frame crops its bottom (rich's Live).
    return Group(
        Text(frame.header, style="bold"),
        notes,
        Panel(outbox, title="outbox and uplink", title_align="left"),
        devices,
        groups,
        windows,
        values,
        Panel(recent, title="last messages received upstream", title_align="left"),
    )


def render_text(frame: Frame, width: int = 140, now: float | None = None) -> str:
    """One frame as plain text at a fixed width (for tests and logs)."""
    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(render_live(frame, now))
    return console.export_text()


class PlainLines:
    """The `--plain` view: each message as lines as it arrives (telemetry left out: several a
    second would drown the windows; the status only when its state changes)."""

    def __init__(self) -> None:
        self._last_status: str | None = None
        self._lock = threading.Lock()

    def __call__(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        kind = parts[3] if len(parts) > 3 else topic
        if kind == "telemetry":
            return
        with self._lock:
            if kind == "status":
                state = None
                with contextlib.suppress(ValueError, AttributeError):
                    state = json.loads(payload).get("state")
                if state == self._last_status:
                    return
                self._last_status = state
        say_line(f"{time.strftime('%H:%M:%S')} {format_message(topic, payload)}")
