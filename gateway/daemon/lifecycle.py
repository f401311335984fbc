"""The supervisor behind `ironwatt run`: builds every part from the config and runs it on one loop.

Drivers → QueueSink → pipeline (energy stage, telemetry) → outbox → uplink, plus the clock
watch, the watchdog, the status listener and the control socket. SIGTERM/SIGINT stop
gracefully, SIGHUP (or `ironwatt reload`) reloads the config.

Resources sit in one AsyncExitStack, pushed in the order they start, so whatever has started
is closed, in reverse, however the run ends (a failed start included); the loops run in one
TaskGroup. A loop that fails does not cancel its siblings at once, as a TaskGroup would: it
asks for the graceful stop instead, so the samples and windows already taken are still stored
before the process exits non-zero (and systemd restarts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import time
from collections.abc import Awaitable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from drivers.samples import PointIndex
from ext import IMPLEMENTATION
from gateway import __version__
from gateway.config.records import load_config_isolated
from gateway.daemon.clock import ClockWatch
from gateway.daemon.devices import QueueSink, Supervisor, plan_units
from gateway.daemon.energy_stage import EnergyStage
from gateway.daemon.health import HealthServer, Metric
from gateway.daemon.logs import TRANSITION, register_secret
from gateway.daemon.notify import Notifier, watchdog_interval
from gateway.daemon.pipeline import Pipeline
from gateway.daemon.reload import plan_reload, validate
from gateway.daemon.reload_control import (
    ControlServer,
    ReloadOutcome,
    ReloadRequests,
    socket_path,
)
from gateway.daemon.status import health_verdict, metrics_of, status_document, status_line
from gateway.daemon.uplink_thread import UplinkStage
from gateway.errors import ConfigWorkerError, SchemaError, UplinkError
from gateway.outbox import Outbox, OutboxSettings, open_outbox
from gateway.timefmt import utc_iso

if TYPE_CHECKING:
    from gateway.config.model import Config

__all__ = ["STOP_BUDGET_S", "Gateway", "run_gateway"]

log = logging.getLogger("ironwatt.runtime")

# Bounded graceful stop: well inside systemd's TimeoutStopSec (30 s in our unit).
STOP_BUDGET_S = 15.0
_STATUS_EVERY_S = 10.0
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _device_secrets(cfg: Config) -> list[str | None]:
    out: list[str | None] = []
    for device in cfg.devices:
        getter = getattr(device, "password", None)
        if getter is not None:
            with contextlib.suppress(OSError):
                out.append(getter())
    return out


class Gateway:
    """One gateway process. `await run()` returns the exit status once stopped."""

    def __init__(self, cfg: Config, *, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.notifier = notifier or Notifier()
        # The aggregator owns the point index (ids of every batch); set when the run starts.
        self.index = PointIndex()
        self.sink = QueueSink()
        self.started = time.time()
        self.outbox: Outbox | None = None
        self.energy: EnergyStage | None = None
        self.pipeline: Pipeline | None = None
        self.uplink: UplinkStage | None = None
        self.supervisor: Supervisor | None = None
        self.health: HealthServer | None = None
        self.clock: ClockWatch | None = None
        self.reloads = 0
        self.reloads_refused = 0
        self._stop = asyncio.Event()
        # SIGHUP and `ironwatt reload` (the control socket) ask here; the main loop answers.
        self.reload_requests = ReloadRequests()
        self._reload_refused: str | None = None  # shown in STATUS= until a reload is applied
        self._loop_tick = time.monotonic()
        # Migrations in a child: sqlite-utils must not stay resident (gateway/outbox/schema.py).
        self._settings = replace(OutboxSettings.from_config(cfg), migrate_in_child=True)
        self.failed = False  # an internal task died: exit non-zero so systemd restarts us
        self._deadline: float | None = None  # of the graceful stop, once it began

    # -- public ---------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> asyncio.Future[ReloadOutcome]:
        return self.reload_requests.request()

    async def run(self) -> int:
        with self._signal_handlers():
            async with contextlib.AsyncExitStack() as resources:
                resources.push_async_callback(self._stopped)
                await self._start(resources)
                async with asyncio.TaskGroup() as loops:
                    assert self.pipeline is not None
                    pipeline = loops.create_task(self._guarded(self.pipeline.run(), "pipeline"))
                    ticker = loops.create_task(self._guarded(self._ticker(), "ticker"))
                    try:
                        await self._serve()
                    finally:
                        await self._wind_down(pipeline, ticker)
        return 0

    # -- start ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        handlers = (self.request_stop, self.request_stop, self.request_reload)
        for sig, handler in zip(_SIGNALS, handlers, strict=True):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, handler)
        try:
            yield
        finally:
            for sig in _SIGNALS:
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)

    async def _start(self, resources: contextlib.AsyncExitStack) -> None:
        """Open and start every part, each pushed on `resources` with what stops it.

        The order of the pushes is the reverse of the stop's: the outbox closes last, after the
        uplink (which reads it) and after the last pass has stored into it.
        """
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        for secret in (cfg.mqtt.password(), *_device_secrets(cfg)):
            register_secret(secret)
        # Opening the database may migrate or recover it: off the loop.
        outbox = self.outbox = await loop.run_in_executor(None, open_outbox, self._settings)
        resources.push_async_callback(self._close_outbox, outbox)
        self.energy = EnergyStage(cfg, time.time())
        self.index = self.energy.index
        pipeline = self.pipeline = Pipeline(
            cfg, self.sink, self.energy, outbox, sync=self._settings.durability != "full"
        )
        blob = await loop.run_in_executor(None, pipeline.read_snapshot)
        if blob is not None:
            try:
                restored = self.energy.restore(blob)
                log.info(
                    "resumed the open windows of %d points from the last snapshot", len(restored)
                )
                self.energy.hold_catch_up(time.time())
            except ValueError as exc:
                log.error("kernel snapshot %s not used: %s", pipeline.snapshot_path, exc)
        del blob
        smallest = min((i.seconds for i in cfg.energy.intervals if i.seconds), default=60)
        self.clock = ClockWatch(forward_threshold=float(smallest))
        uplink = self.uplink = UplinkStage(cfg, outbox, self._enabled_devices)
        uplink.start()
        resources.push_async_callback(lambda: uplink.stop(timeout=self._left()))
        if cfg.http is not None:
            health = self.health = HealthServer(
                cfg.http.listen, self._healthz, self._status_doc, self._metrics
            )
            await health.start()
            resources.push_async_callback(health.stop)
        # After the drivers stopped and the pipeline drained (the TaskGroup's end).
        resources.push_async_callback(self._last_pass)
        supervisor = self.supervisor = Supervisor(
            self.index, self.sink, Path(cfg.gateway.data_dir), cfg.gateway.id, cfg.gateway.site
        )
        for unit in plan_units(cfg.devices).values():
            supervisor.start(unit)
        # Stopped at the wind-down already; here for a start that fails after this line.
        resources.push_async_callback(supervisor.stop_all)
        # Before READY=1: a `systemctl reload` right after the start must find the socket.
        control = ControlServer(
            socket_path(cfg.gateway.data_dir), self.reload_requests, self._status_doc
        )
        await control.start()
        resources.push_async_callback(control.close)

    async def _serve(self) -> None:
        """Say READY, then answer reloads until the stop is asked for."""
        cfg = self.cfg
        devices = self._enabled_devices()
        log.info(
            "gateway %s/%s running: ironwatt %s, kernel %s, %d devices, %d points, intervals %s, "
            "buffer %s",
            cfg.gateway.site, cfg.gateway.id, __version__, IMPLEMENTATION, devices,
            len(self.index), ",".join(i.name for i in cfg.energy.intervals), self._settings.path,
            extra=TRANSITION,
        )  # fmt: skip
        self.notifier.ready(f"running: {devices} devices")
        while not self._stop.is_set():
            stop = asyncio.ensure_future(self._stop.wait())
            reload = asyncio.ensure_future(self.reload_requests.pending.wait())
            await asyncio.wait({stop, reload}, return_when=asyncio.FIRST_COMPLETED)
            for fut in (stop, reload):
                fut.cancel()
            if self.reload_requests.pending.is_set() and not self._stop.is_set():
                asked = self.reload_requests.take()
                try:
                    outcome = await self._apply_reload()
                except BaseException:
                    failed = ReloadOutcome(False, "the reload failed: see the journal")
                    self.reload_requests.answer(asked, failed)
                    raise
                self.reload_requests.answer(asked, outcome)

    def _enabled_devices(self) -> int:
        return sum(1 for d in self.cfg.devices if getattr(d, "enabled", True))

    async def _guarded(self, coro: Awaitable[None], name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            # The pipeline is the gateway: without it nothing is stored. Stop and let
            # systemd restart us (Restart=on-failure) rather than run hollow.
            log.critical("internal task %s failed; stopping the gateway", name, exc_info=True)
            self.failed = True
            self._stop.set()

    # -- stop -----------------------------------------------------------------------------------

    def _left(self) -> float:
        """Seconds of the stop budget left (at least half a second for each step)."""
        if self._deadline is None:
            self._deadline = time.monotonic() + STOP_BUDGET_S
        return max(0.5, self._deadline - time.monotonic())

    async def _wind_down(self, pipeline: asyncio.Task[None], ticker: asyncio.Task[None]) -> None:
        """Refuse reloads, stop polling, let the pipeline store what it took, stop the ticker.
        The rest (last pass, snapshot, flush, offline status, close) unwinds the stack."""
        self.notifier.stopping()
        log.info("stopping")
        self._left()  # the budget starts now
        self.reload_requests.refuse_all("the gateway is stopping")
        if self.supervisor is not None:
            await self.supervisor.stop_all()
        if self.pipeline is not None:
            self.pipeline.drain()
        # Let a pass in progress store what it took from the kernel; then no more waiting.
        await asyncio.wait({pipeline}, timeout=self._left())
        pipeline.cancel()
        ticker.cancel()

    async def _last_pass(self) -> None:
        """The windows that are due, the snapshot, and every commit on disk."""
        if self.pipeline is None or self.outbox is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(self.pipeline.finish(), timeout=self._left())
            await loop.run_in_executor(None, self.outbox.flush, self._left())
        except Exception:
            log.exception("stop: the last windows or the snapshot could not be stored")

    async def _close_outbox(self, outbox: Outbox) -> None:
        await asyncio.get_running_loop().run_in_executor(None, outbox.close, self._left())

    async def _stopped(self) -> None:
        self.reload_requests.refuse_all("the gateway is stopping")
        self.notifier.close()
        log.info("stopped")

    # -- housekeeping ---------------------------------------------------------------------------

    async def _ticker(self) -> None:
        """Watchdog pings, clock-step checks and STATUS= lines, all from the event loop.

        WATCHDOG=1 comes from here on purpose: when the loop stalls, the pings stop and
        systemd restarts the process.
        """
        assert self.pipeline is not None
        interval = watchdog_interval()
        next_ping = time.monotonic()
        next_status = time.monotonic() + _STATUS_EVERY_S
        while True:
            now = time.monotonic()
            self._loop_tick = now
            if interval is not None and now >= next_ping:
                self.notifier.watchdog()
                next_ping = now + interval
            if self.clock is not None:
                step = self.clock.check()
                if step is not None:
                    log.warning("clock: %s", step.reason())
                    await self.pipeline.publish_event({
                        "type": "clock_step", "offset_s": round(step.offset, 3),
                        "from": utc_iso(step.previous_wall), "to": utc_iso(step.at),
                        "reason": step.reason(),
                    })  # fmt: skip
            if now >= next_status:
                self.notifier.status(self._status_line())
                next_status = now + _STATUS_EVERY_S
            await asyncio.sleep(min(1.0, interval or 1.0))

    def _status_line(self) -> str:
        return status_line(
            self.supervisor.status() if self.supervisor else {},
            self.outbox.backlog if self.outbox else 0,
            bool(self.uplink.status().get("connected")) if self.uplink else False,
            self._reload_refused,
        )

    def _healthz(self) -> tuple[bool, str]:
        pressure = self.outbox.stats().pressure if self.outbox is not None else None
        return health_verdict(time.monotonic() - self._loop_tick, self.outbox is not None, pressure)

    def _status_doc(self) -> dict[str, object]:
        buffer: dict[str, object] = {}
        if self.outbox is not None:
            stats = self.outbox.stats()
            buffer = {k: getattr(stats, k) for k in stats.__dataclass_fields__}
        pipeline = self.pipeline
        snapshot = (
            {"path": str(pipeline.snapshot_path), **pipeline.snapshot_status} if pipeline else {}
        )
        return status_document(
            gw=self.cfg.gateway.id,
            site=self.cfg.gateway.site,
            config=str(self.cfg.path),
            started=self.started,
            devices=self.supervisor.status() if self.supervisor else {},
            buffer=buffer,
            uplink=self.uplink.status() if self.uplink else {},
            energy={
                **(self.energy.stats() if self.energy else {}),
                "samples": self.sink.samples_total,
                "snapshot": snapshot,
            },
            clock_steps=self.clock.steps if self.clock else 0,
            reloads=self.reloads,
            reloads_refused=self.reloads_refused,
        )

    def _metrics(self) -> list[Metric]:
        return metrics_of(self._status_doc())

    # -- reload ---------------------------------------------------------------------------------

    async def _apply_reload(self) -> ReloadOutcome:
        """Validate the file (in the config child, off the loop) and apply it, or refuse it and
        keep the running config. systemd hears RELOADING=1 ... READY=1 either way (what
        Type=notify-reload waits for); the verdict goes to whoever asked (`ironwatt reload`)."""
        path = self.cfg.path
        self.notifier.reloading(f"reloading {path}")
        log.info("reloading %s", path, extra=TRANSITION)
        new = await validate(path)
        outcome = new if isinstance(new, ReloadOutcome) else await self._apply(new)
        self._reload_refused = None if outcome.applied else outcome.summary
        self.reloads_refused += not outcome.applied
        verdict = "config reloaded" if outcome.applied else "reload refused"
        self.notifier.ready(f"{verdict}: {outcome.summary}")
        return outcome

    async def _apply(self, new: Config) -> ReloadOutcome:
        """Carry out plan_reload(running, new): units stopped, retuned in place or restarted."""
        assert self.supervisor is not None
        assert self.energy is not None
        assert self.pipeline is not None
        plan = plan_reload(self.cfg, new)
        stop, start, updated = list(plan.stop), list(plan.start), []
        for key in plan.retune:
            if await self.supervisor.update(plan.units[key]):
                updated.append(key)
            else:  # this driver cannot take its new devices in place: restart it
                stop.append(key)
                start.append(key)
        for key in stop:
            await self.supervisor.stop(key)
        # What the stopped drivers delivered last still belongs to their old points.
        await self.pipeline.process()
        # Retires removed points' ids and adds new ones; unchanged points keep their state.
        fresh, retuned = self.energy.reconfigure(new, time.time())
        for secret in (new.mqtt.password(), *_device_secrets(new)):
            register_secret(secret)
        self.cfg = new
        if self.pipeline.telemetry is not None or new.mqtt.telemetry:
            self.pipeline.configure(new)
        for key in updated:
            self.supervisor.activate(key)
        for key in start:
            self.supervisor.start(plan.units[key])
        self.reloads += 1
        for warning in plan.warnings:
            log.warning("config reload: %s", warning, extra=TRANSITION)
        log.info("config reloaded: %s", plan.note, extra=TRANSITION)
        await self.pipeline.publish_event(plan.event(fresh, retuned))
        return ReloadOutcome(True, plan.note, warnings=plan.warnings)


def run_gateway(config_path: str | Path) -> int:
    """Load the config (ConfigError: exit 2, reported by the CLI) and run until stopped.

    An uplink that cannot be set up as configured (UplinkError: a broker URL it cannot use, in a
    file that bypassed `ironwatt check`) is a config error too: one line, exit 2, which the
    unit's RestartPreventExitStatus= does not restart.

    The file is validated in a child process: this one never imports pydantic (why:
    gateway/config/records.py).
    """
    try:
        cfg = load_config_isolated(config_path)
    except ConfigWorkerError as exc:
        log.critical("cannot start: %s", exc)
        return 1
    gateway = Gateway(cfg)

    async def main() -> int:
        code = await gateway.run()
        return 1 if gateway.failed else code

    try:
        return asyncio.run(main())
    except SchemaError as exc:
        log.critical("cannot start: %s", exc)
        return 1
    except UplinkError as exc:
        log.critical("cannot start: %s (check the file: ironwatt check -c %s)", exc, config_path)
        return 2
    except (OSError, sqlite3.Error) as exc:
        # Storage that cannot be opened is the usual first-install problem: say where and why.
        log.critical(
            "cannot start: %s (data_dir %s: does it exist, is it writable by the service user, "
            "is the disk full?)", exc, cfg.gateway.data_dir,
        )  # fmt: skip
        return 1
