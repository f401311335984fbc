"""`ironwatt demo`: the simulated steel works, a broker and the real gateway, and what a
subscriber upstream receives, as a live view or as lines.

The works of gateway.sim.plant (four Modbus meters under steel-plant loads, an OPC UA PLC),
Mosquitto on a free loopback port (amqtt when Mosquitto is not installed), `ironwatt run` as a
child process with 10 s windows. On cue a meter drops out for 10 s and the gateway's link to
the broker is cut for 12-20 s; at the end a verdict: messages per class, seq without holes,
replays and revisions, and one meter's windows against the simulator's own integral.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.sim.plant import WINDOW, WINDOW_S, Works
from gateway.sim.ports import free_port
from gateway.sim.view import Feed, Frame, PlainLines, render_live, say_line
from gateway.status_client import fetch_status

__all__ = ["outage_seconds", "run_demo", "verdict"]

PREFIX = "ironwatt"
TOLERANCE_PCT = 0.1  # aux-1's windows against the simulator's integral (the float32 register
# and the edges' interpolation keep it under 0.01 %, measured)


def outage_seconds(duration: float) -> float:
    """How long the link is cut: 20 s in a demo of 90 s or more, at least 12 s (a 60 s demo
    still sees the outbox drain: the uplink's backoff after the refusals is a few seconds)."""
    return float(round(min(20.0, max(12.0, duration * 0.22))))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


class Show:
    """Where the demo speaks: lines on stdout, or the live view's notes while it is drawn (the
    ones said after its last frame are printed when it ends)."""

    def __init__(self, live: bool) -> None:
        self.want_live = live
        self.live = False  # True while the live view is on the screen
        self.notes: list[tuple[float, str]] = []
        self.drawn = 0  # notes shown in the last frame drawn

    def say(self, text: str) -> None:
        self.notes.append((time.time(), text))
        if not self.live:
            say_line(f"demo: {text}")

    def after_live(self) -> None:
        self.live = False
        for _, text in self.notes[self.drawn :]:
            say_line(f"demo: {text}")


def run_demo(
    duration: float = 90.0, opcua: bool = True, keep: bool = False, plain: bool | None = None
) -> int:
    """`ironwatt demo`; `plain` None: lines when stdout is not a terminal, else the live view."""
    # The simulators run in this process: their servers' per-request chatter is not the demo.
    for noisy in ("asyncua", "pymodbus", "ironwatt.sim"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    live = not plain if plain is not None else sys.stdout.isatty()
    if live:
        try:
            import rich  # noqa: F401
        except ImportError:
            print("demo: the live view needs rich (pip install rich): lines instead", flush=True)
            live = False
    workdir = Path(tempfile.mkdtemp(prefix="ironwatt-demo-"))
    try:
        return asyncio.run(_demo(workdir, duration, opcua, live))
    except KeyboardInterrupt:
        return 130
    finally:
        if keep:
            print(f"demo: files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


async def _demo(workdir: Path, duration: float, opcua: bool, live: bool) -> int:
    from gateway.errors import SimulatorError
    from gateway.sim.broker import BrokerMissing, demo_broker

    # From the first step on, SIGINT/SIGTERM ask for a stop: what was started is stopped (in
    # the reverse order) and the verdict still comes.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    show = Show(live)
    try:
        broker = demo_broker(workdir)
    except BrokerMissing as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    works = Works()
    async with contextlib.AsyncExitStack() as running:
        try:
            await asyncio.to_thread(broker.start)
        except SimulatorError as exc:
            print(f"demo: the broker did not start: {exc}", file=sys.stderr)
            return 1
        running.push_async_callback(asyncio.to_thread, broker.stop)
        show.say(f"{broker.name} broker on {broker.url} (log: {broker.log})")
        feed, code = await _start_and_run(
            running, workdir, duration, opcua, show, broker, works, stop
        )
    with (workdir / "received.jsonl").open("w", encoding="utf-8") as received:
        for kind, doc in feed.received.docs:  # the verdict's evidence (QoS 1 JSON messages)
            received.write(json.dumps({"class": kind, "payload": doc}) + "\n")
    say_line("")
    lines, trusted = verdict(feed.received.docs, works.aux, works.born, not stop.is_set())
    for line in lines:
        say_line(f"demo: {line}")
    if code == 0 and not trusted:
        say_line(f"demo: the verdict failed; the gateway's log is {workdir / 'gateway.log'}")
        code = 1
    return code


async def _start_and_run(
    running: contextlib.AsyncExitStack, workdir: Path, duration: float, opcua: bool, show: Show,
    broker: Any, works: Works, stop: asyncio.Event,
) -> tuple[Feed, int]:  # fmt: skip
    """The link, the works, the viewer and the gateway, each stopped by `running` at the end
    (whatever happens), then the demo's minute(s)."""
    from ext import IMPLEMENTATION
    from gateway.sim.broker import UplinkCut

    cut = UplinkCut(broker.port)
    await cut.start()
    running.push_async_callback(cut.close)
    running.push_async_callback(works.stop)
    await works.start(opcua, show.say)
    show.say(
        f"aggregation kernel: {IMPLEMENTATION}"
        + (
            ""
            if IMPLEMENTATION == "compiled"
            else "; the pure-Python twin gives the same numbers, the compiled one is built "
            "at install when a C compiler is there"
        )
    )
    http_port = free_port()
    config = workdir / "ironwatt.toml"
    config.write_text(works.config(workdir, cut.url, http_port, broker.protocol), encoding="utf-8")
    show.say(f"gateway config written to {config} (its MQTT link runs through {cut.url})")
    feed = Feed(broker.port, PREFIX, on_message=None if show.want_live else PlainLines())
    running.callback(feed.close)
    log_path = workdir / "gateway.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("NOTIFY_SOCKET", None)
    with log_path.open("wb") as log_file:
        # Its own session: a Ctrl-C at the terminal reaches the demo, which stops the gateway
        # with SIGTERM (open windows to its snapshot) before the broker.
        gateway = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "run", "-c", str(config),
            stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    running.push_async_callback(_stop_gateway, gateway, show)
    show.say(
        f"gateway started (pid {gateway.pid}, log {log_path}, status: ironwatt status "
        f"-c {config}); {WINDOW} windows close every {WINDOW}, the first one within ~20 s"
    )
    show.say(f"running for {duration:g} s (Ctrl-C stops earlier)")
    code = await _run(gateway, feed, works, cut, show, duration, http_port, broker, stop)
    if code:
        tail = await asyncio.to_thread(log_path.read_text, encoding="utf-8", errors="replace")
        say_line(tail[-4000:])
    return feed, code


async def _run(
    gateway: asyncio.subprocess.Process, feed: Feed, works: Works, cut: Any, show: Show,
    duration: float, http_port: int, broker: Any, stop: asyncio.Event,
) -> int:  # fmt: skip
    """The demo's minute(s): the cues, the view refreshed every second, the outbox drained."""
    started = time.monotonic()
    deadline = started + duration
    code = 0
    cue = asyncio.create_task(_on_cue(duration, cut, works.dropout, show.say))
    base = f"http://127.0.0.1:{http_port}"

    def header() -> str:
        link = "CUT (outage on cue)" if cut.is_cut else "up"
        return (
            f"ironwatt demo: {time.monotonic() - started:.0f} of {duration:g} s; broker "
            f"{broker.name} on {broker.url}; the gateway's link to it: {link}"
        )

    with _live_display(show) as refresh:

        async def draw() -> dict[str, Any] | None:
            """Fetch /status; with the live view, draw a frame of it and the feed."""
            status = await _status_or_none(base)
            if refresh is not None:
                frame = feed.frame()
                frame.status, frame.notes, frame.header = status, list(show.notes), header()
                refresh(frame)
                show.drawn = len(frame.notes)
            return status

        while not stop.is_set() and time.monotonic() < deadline:
            if gateway.returncode is not None:
                show.say(f"the gateway exited with status {gateway.returncode}")
                code = 1
                break
            if refresh is not None:
                await draw()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
        # The end: the cue cut short, the link and the meter back, the outbox drained (unless
        # Ctrl-C) while the view goes on.
        cue.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cue
        cut.mend()
        works.dropout.silent = False
        if gateway.returncode is None and not stop.is_set():
            left = await _drained(draw, 20.0)
            if left:
                show.say(f"{left} messages still in the outbox at the stop (kept for the next run)")
    await _stop_gateway(gateway, show)
    await asyncio.sleep(0.5)  # the retained `offline` status
    return code


@contextlib.contextmanager
def _live_display(show: Show) -> Any:
    """Yields a function that draws a frame (rich's Live, redrawn in place), or None."""
    if not show.want_live:
        yield None
        return
    from rich.live import Live

    with Live(auto_refresh=False, screen=False, transient=False) as display:

        def draw(frame: Frame) -> None:
            display.update(render_live(frame), refresh=True)

        show.live = True
        try:
            yield draw
        finally:
            display.stop()
            show.after_live()


async def _status_or_none(base: str) -> dict[str, Any] | None:
    try:
        return await asyncio.to_thread(fetch_status, base, 2.0)
    except (OSError, ValueError):
        return None


async def _stop_gateway(gateway: asyncio.subprocess.Process, show: Show) -> None:
    if gateway.returncode is None:
        show.say("stopping the gateway (SIGTERM: open windows go to its snapshot)")
        gateway.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(gateway.wait(), 20)
        except TimeoutError:
            gateway.kill()
            await gateway.wait()


async def _drained(
    status: Callable[[], Awaitable[dict[str, Any] | None]], limit: float
) -> int | None:
    """Wait (at most `limit` s) until the gateway's outbox is empty; the backlog left (None:
    /status did not answer). `status` fetches it (and draws the live view)."""
    deadline = time.monotonic() + limit
    while True:
        doc = await status()
        left: int | None = None
        with contextlib.suppress(KeyError, TypeError, ValueError):
            left = int(doc["buffer"]["backlog"]) if doc is not None else None
        if left == 0 or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.5)


DROPOUT_S = 15.0  # how long mill-1 is silent


async def _on_cue(duration: float, cut: Any, dropout: Any, say: Callable[[str], None]) -> None:
    """A meter drops out for 15 s a fifth of the way in; then, at 35 % or once it is back,
    the gateway's link to the broker is cut (outage_seconds), so the backlog grows in the
    outbox and drains, replayed."""
    start = time.monotonic()

    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, start + duration * fraction - time.monotonic()))

    await at(0.2)
    # Silent from 2 s after a window edge: the next edge's window is closed (at its end plus
    # poll plus timeout) while the meter is still silent, so its revision is owed when it is
    # back; from a random moment, that close could come after the meter is back.
    await asyncio.sleep(WINDOW_S - time.time() % WINDOW_S + 2.0)
    dropout.silent = True
    say(
        f"meter mill-1 stops answering for {DROPOUT_S:g} s (its windows are revised once it "
        "is back)"
    )
    await asyncio.sleep(DROPOUT_S)
    dropout.silent = False
    say("meter mill-1 answers again")
    await at(0.35)
    outage = outage_seconds(duration)
    await cut.cut()
    say(
        f"the network between the gateway and the broker goes down for {outage:g} s: the "
        "gateway keeps every message in its outbox"
    )
    await asyncio.sleep(outage)
    cut.mend()
    say("the network is back: the outbox drains, its messages marked replayed")


def verdict(
    docs: list[tuple[str, dict[str, Any]]], aux: Any, wall_born: float, complete: bool = True
) -> tuple[list[str], bool]:
    """What a user can trust at the end: messages per class, seq per stream without holes,
    revisions, replays, and one meter's window deltas against the simulator's own integral;
    and whether it holds. `complete`: the demo ran its whole time (the cues happened), so
    no replay or no revision is a failure too."""
    counts = Counter(kind for kind, _ in docs)
    lines = ["received " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing")]
    failed: list[str] = []
    seqs: dict[str, set[int]] = {}
    for _, doc in docs:
        if isinstance(doc.get("seq"), int):
            seqs.setdefault(str(doc.get("stream")), set()).add(doc["seq"])
    for stream, got in seqs.items():
        missing = set(range(min(got), max(got) + 1)) - got
        lines.append(
            f"seq {min(got)}..{max(got)} of stream {stream}: "
            + ("no hole" if not missing else f"{len(missing)} missing: {sorted(missing)[:10]}")
        )
        if missing:
            failed.append(f"seq holes in stream {stream}")
    if not seqs:
        failed.append("no message with a seq")
    replayed = sum(1 for _, d in docs if d.get("replayed"))
    revised = sum(1 for k, d in docs if k in ("energy", "group") and d.get("revision", 1) > 1)
    lines.append(
        f"{_plural(replayed, 'message')} replayed after the outage, "
        f"{_plural(revised, 'window')} revised"
    )
    if complete and not replayed:
        failed.append("nothing replayed after the outage")
    if complete and not revised:
        failed.append("no window revised after the dropout")
    check, off = _integral_check(docs, aux, wall_born)
    lines.append(check)
    if off is None or not off < TOLERANCE_PCT:
        failed.append(f"aux-1's windows not within {TOLERANCE_PCT} % of the simulator's integral")
    lines.append(
        "verdict: " + ("every check holds" if not failed else "FAILED: " + "; ".join(failed))
    )
    return lines, not failed


def _whole(window: dict[str, Any]) -> bool:
    """A window whose counter edges both come from readings around them (coverage 1): one
    that began before the meter's first reading, or closed before a reading after its end,
    has an edge at the nearest reading instead, and the energy beyond it is in its neighbour."""
    energy = window.get("points", {}).get("energy_import", {})
    return energy.get("delta") is not None and (energy.get("coverage") or 0.0) >= 0.999


def _integral_check(
    docs: list[tuple[str, dict[str, Any]]], aux: Any, wall_born: float
) -> tuple[str, float | None]:
    """The line, and how far apart in % (None: nothing to check)."""
    latest: dict[str, dict[str, Any]] = {}
    for kind, doc in docs:
        mine = kind == "energy" and doc.get("device") == "aux-1" and doc.get("interval") == WINDOW
        if mine and doc.get("revision", 1) >= latest.get(doc["start"], {}).get("revision", 0):
            latest[doc["start"]] = doc
    windows = [latest[k] for k in sorted(latest)]
    # The checked span runs from the first whole window to the last: windows chain (one's
    # `last` is the next one's `first`), so inside it the deltas add up whatever happened.
    while windows and not _whole(windows[0]):
        windows.pop(0)
    while windows and not _whole(windows[-1]):
        windows.pop()
    deltas = [w.get("points", {}).get("energy_import", {}).get("delta") for w in windows]
    if not windows or any(d is None for d in deltas):
        return "aux-1: not enough whole windows to check against the simulator", None
    breaks = [b["start"] for a, b in itertools.pairwise(windows) if a["end"] != b["start"]]
    if breaks:
        return f"aux-1: windows missing before {', '.join(breaks)}: no total to check", None
    t0 = _epoch(windows[0]["start"]) - wall_born
    t1 = _epoch(windows[-1]["end"]) - wall_born
    truth = aux.load.energy_kwh(t1) - aux.load.energy_kwh(t0)
    total = sum(deltas)
    off = abs(total - truth) / truth * 100 if truth else float("nan")
    return (
        f"aux-1: {_plural(len(windows), 'window')} of {WINDOW} add up to {total:.4f} kWh; the "
        "simulator "
        f"integrated {truth:.4f} kWh over the same span ({off:.3f} % apart)"
    ), off


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
