"""The OPC UA device driver: one session per device, subscribe or poll, recovery after restarts.

Notifications and read results go straight into a columnar `SampleBatch` (no object per sample
beyond what asyncua decodes); batches reach the sink every ~100 ms. asyncua is imported lazily.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from drivers.base import (
    SESSION_RECONNECT,
    Backoff,
    DeviceEvent,
    DeviceHealth,
    DeviceSink,
    FixedRate,
)
from drivers.errors import DriverError
from drivers.opcua.nodes import NodeIdError, NodeRef, parse_node_id, resolve_namespace
from drivers.opcua.quality import (
    ANY,
    Expect,
    PointProblems,
    datatype_message,
    decode,
    expect_for_datatype,
)
from drivers.opcua.security import (
    ConnectionSettings,
    OpcuaConnectError,
    connect,
    settings_for_device,
    ua_module,
)
from drivers.opcua.subscription import KEEPALIVE_S
from drivers.samples import QUALITY_BAD, QUALITY_GOOD, QUALITY_UNCERTAIN, PointIndex, SampleBatch

__all__ = ["ConnectionLost", "OpcuaDriver"]

log = logging.getLogger("ironwatt.opcua")

NAN = math.nan
# StatusCode severity bits (Part 4 §7.34.1): 00 good, 01 uncertain, 10/11 bad; the low 16 bits
# are info bits (overflow, limits) that say nothing about what went wrong.
_SEVERITY = 0xC0000000
_BAD = 0x80000000
_UNCERTAIN = 0x40000000
_CODE = 0xFFFF0000
_NAMESPACE_ARRAY = 2255  # Server_NamespaceArray
# Fallback when a server does not publish OperationLimits (0 there means "no limit").
DEFAULT_CHUNK = 1000
_MAX_NODES_PER_READ = 11705
_MAX_MONITORED_ITEMS_PER_CALL = 11714
# After the NamespaceArray changed the driver reconnects at once, but at most once this often
# (monotonic s): a server whose array differs at every session takes the backoff instead, and
# the backoff is reset only by a session that lasted this long.
QUICK_RETRY_S = 10.0
# A sample the driver makes itself with source timestamps is stamped at least this much after
# the point's last real source time (the kernel drops a sample not newer than the last one).
_MADE_AFTER_S = 0.001


class _AsyncuaNoise(logging.Filter):
    """Drops asyncua's anonymous warnings about answers the driver tolerates and reports itself.

    A PLC at its monitored-item limit answers the NamespaceArray watch with a service fault
    (the driver's "did not monitor its NamespaceArray" line names the device), and the late
    answer to a request the driver gave up on (the DataType read past the timeout: "did not
    read the DataType …") finds its future done. Matched on asyncua's message templates and
    arguments; every other asyncua record passes.
    """

    FAULT = "ServiceFault (%s, diagnostics: %s) from server received %s"
    LATE = "Future for request id %s is already done"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == self.LATE:
            return False
        if record.msg == self.FAULT and isinstance(record.args, tuple) and len(record.args) == 3:
            name, _diagnostics, context = record.args
            return not (
                name == "BadTooManyMonitoredItems"
                and context == " in response to CreateMonitoredItemsRequest"
            )
        return True


# On the logger asyncua's UASocketProtocol logs with (created here if asyncua is not imported
# yet: it gets this same logger object, filter included).
logging.getLogger("asyncua.client.ua_client.UASocketProtocol").addFilter(_AsyncuaNoise())


class ConnectionLost(DriverError):
    """The session died (keepalive, publish or read failure); the driver reconnects."""


class OpcuaDriver:
    """Reads one configured OPC UA device into `sink` until cancelled.

    `device` has the attributes of `drivers.opcua.config.OpcuaDevice`; point ids come from
    `point_index` (key "device.point"). `run()` never returns on its own: connection problems become
    device_down/device_up events and a bad-quality sample per point at the moment of the loss.
    """

    def __init__(
        self,
        device: Any,
        point_index: PointIndex,
        sink: DeviceSink,
        data_dir: Path,
        gateway_id: str,
        site: str,
        *,
        flush_interval: float = 0.1,
        flush_samples: int = 4096,
        backoff: Backoff | None = None,
        watchdog_interval: float | None = None,
    ) -> None:
        self.device = device
        self.name: str = device.name
        self.sink = sink
        self.data_dir = Path(data_dir)
        self.gateway_id = gateway_id
        self.site = site
        self.mode: str = device.mode
        self.interval = float(device.interval)
        self.flush_interval = flush_interval
        self.flush_samples = flush_samples
        self.backoff = backoff or Backoff.of(SESSION_RECONNECT)
        # asyncua probes ServerStatus this often and gives the answer as long to come: the
        # device's `timeout`, like every other request. A 1 s probe (asyncua's default) made
        # a busy server (2,000 items at 100 ms on a loaded machine) look dead and flap.
        self.watchdog_interval = (
            float(device.timeout) if watchdog_interval is None else watchdog_interval
        )
        self.source_timestamps = getattr(device, "timestamps", "gateway") == "source"
        # With source timestamps, samples the driver makes itself are stamped this far behind
        # (s): a real value the server sampled just before and delivers up to a publishing
        # interval later is newer, not dropped downstream. The subscription's revised
        # publishing interval when longer.
        self.made_margin = self.interval
        self.health = DeviceHealth(self.name, sink)
        self.points: tuple[Any, ...] = tuple(device.points)
        self.pids: list[int] = [point_index.add(f"{self.name}.{p.name}") for p in self.points]
        # What is wrong with each point now; every change is logged once (fall and return).
        self.problems = PointProblems(self.name, self.points, sink)
        # Config-time problems (unparsable node ids) are permanent: the point stays bad.
        self.refs: list[NodeRef | None] = []
        self._config_errors: dict[int, str] = {}
        for slot, point in enumerate(self.points):
            try:
                self.refs.append(parse_node_id(point.node))
            except NodeIdError as exc:
                self.refs.append(None)
                self._config_errors[slot] = self._hinted(f"invalid node id: {exc}")
        self._batch = SampleBatch()
        self._lost: asyncio.Event | None = None
        self._lost_reason = ""
        self._retry_now = False  # reconnect without a backoff step (the namespaces moved)
        self._quick_at = -math.inf  # monotonic time of the last such immediate reconnect
        self._up_since: float | None = None  # monotonic time the current session came up
        self._backoff_held = False  # sessions keep coming up only to see the namespaces move
        self._refused: set[str] = set()  # optional checks the server would not do (logged once)
        self._stray_logged = False  # a ClientHandle never given out, logged once per session
        self._undecodable: str | None = None  # the last publish decoding failure, logged once
        self._client: Any = None
        self._sub: Any = None
        n = len(self.points)
        # The node's DataType per slot, read at every connect, and the Python type the hot path
        # accepts without a second look (None: always the careful path, e.g. while a point has
        # a problem, so that its return is seen). One more entry: the NamespaceArray's handle.
        self._expect: list[Expect] = [ANY] * n
        self._fast: list[type | None] = [None] * (n + 1)
        self._ns_handle = n
        # nsu= URIs in use -> the index they had at connect (None: missing then); a change of
        # any of them under a live session means the node ids on the wire name other nodes.
        self._watch: dict[str, int | None] = {}
        # timestamps = "source": the latest time delivered per point, whether a point's clock is
        # behind it (logged once), and the previous sample, to skip a steady value polled again.
        self._last_ts: list[float] = [-math.inf] * n
        self._behind: list[bool] = [False] * n
        self._prev_ts: list[float] = [NAN] * n
        self._prev_value: list[float] = [NAN] * n
        self._prev_quality: list[int] = [-1] * n
        # Last good value per slot (NaN: none), when it arrived, and source-minus-receive time:
        # what the refresh of subscribed points re-asserts (see _refresh_loop).
        self._last_value: list[float] = [NAN] * n
        self._last_seen: list[float] = [0.0] * n
        self._last_offset: list[float] = [0.0] * n
        # Subscribed points with a max_gap get their held value re-sent after max_gap/2 of
        # silence while the session is healthy: with report-by-exception a steady value is
        # silence, and max_gap must measure a silent connection, not a steady process.
        self.refresh_after: dict[int, float] = {
            slot: float(p.max_gap) / 2.0
            for slot, p in enumerate(self.points)
            if getattr(p, "max_gap", None)
        }
        self._refresher: asyncio.Task[None] | None = None
        # Keepalives often enough that a refresh always follows recent proof of life.
        self._keepalive_s = min([KEEPALIVE_S, *(a / 2.0 for a in self.refresh_after.values())])
        self.samples = 0
        self.bad = 0
        self.uncertain = 0
        self.reconnects = 0
        self.unknown_handles = 0  # values for a ClientHandle this driver never gave out
        self.namespace_indexes: dict[str, int] = {}

    # -- public -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, deliver, and reconnect with backoff, until cancelled."""
        flusher = asyncio.create_task(self._flush_loop(), name=f"opcua-flush-{self.name}")
        try:
            while True:
                try:
                    await self._session()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # every failure is per device: report, back off, retry
                    self._went_down(self._reason(exc))
                finally:
                    await self._close()
                delay = self._reconnect_delay(time.monotonic())
                log.debug("device %s: reconnecting in %.1f s", self.name, delay)
                await asyncio.sleep(delay)
                self.reconnects += 1
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await self._close()
            self.flush()
            self.health.stopped()

    def _reconnect_delay(self, now: float) -> float:
        """How long to wait before the next session, `now` being the monotonic time.

        0 s after the NamespaceArray changed (nothing is wrong with the link: resolve again),
        unless the last immediate reconnect was less than QUICK_RETRY_S ago: a server whose
        array differs between the read and the watch, or that reorders it at every session,
        would otherwise be reconnected to every few ms. It takes the backoff then, which keeps
        growing over such sessions until one lasts QUICK_RETRY_S.
        """
        up_since, self._up_since = self._up_since, None
        if up_since is not None and now - up_since >= QUICK_RETRY_S and self._backoff_held:
            self._backoff_held = False
            self.backoff.reset()
        moved, self._retry_now = self._retry_now, False
        if moved:
            if now - self._quick_at >= QUICK_RETRY_S:
                self._quick_at = now
                return 0.0
            self._backoff_held = True
        return self.backoff.next_delay()

    def _came_up(self) -> None:
        """The session works: the backoff starts over (unless the namespaces keep moving)."""
        self._up_since = time.monotonic()
        if not self._backoff_held:
            self.backoff.reset()

    def status(self) -> dict[str, dict[str, object]]:
        """For `/status` and `ironwatt status`: per device, as every driver's (one here)."""
        return {self.name: self.device_status()}

    def device_status(self) -> dict[str, object]:
        return {
            "driver": "opcua",
            "endpoint": self.device.endpoint,
            "mode": self.mode,
            **self.health.snapshot(),
            "samples": self.samples,
            "bad": self.bad,
            "uncertain": self.uncertain,
            "reconnects": self.reconnects,
            "namespaces": dict(self.namespace_indexes),
            "point_errors": self.problems.current(),
            "flapping": self.problems.flapping(),
            "unknown_handles": self.unknown_handles,
        }

    def flush(self) -> None:
        """Hand the pending samples to the sink (called by the flush task and on overflow)."""
        batch = self._batch
        if len(batch):
            self._batch = SampleBatch()
            self.samples += len(batch)
            self.sink.add_samples(batch)

    # -- session ----------------------------------------------------------------------------

    def settings(self) -> ConnectionSettings:
        """Read afresh at every connect: a fixed password file is picked up on the next try."""
        settings = settings_for_device(self.device, self.data_dir, self.gateway_id, self.site)
        return replace(settings, watchdog_interval=self.watchdog_interval)

    async def _session(self) -> None:
        ua = ua_module()
        self._lost = asyncio.Event()
        self._lost_reason = ""
        settings = self.settings()
        client = await connect(settings)
        self._client = client
        client.connection_lost_callback = self._on_connection_lost
        # The device's timeout bounds each request of the session, not a whole step: the
        # helpers below take it as a parameter (hence their noqa ASYNC109) and give it to
        # every request they make, and name it in what they report.
        timeout = settings.timeout
        namespaces = await asyncio.wait_for(client.get_namespace_array(), timeout)
        nodeids = self._resolve(namespaces, ua)
        read_limit = await self._operation_limit(client, _MAX_NODES_PER_READ, timeout, ua)
        await self._read_types(client, nodeids, read_limit, timeout, ua)
        if self.mode == "poll":
            await self._poll(client, nodeids, read_limit, timeout, ua)
        else:
            await self._subscribe(client, nodeids, timeout, ua)
            await self._lost.wait()
            raise ConnectionLost(self._lost_reason or "session lost")

    async def _on_connection_lost(self, exc: Exception) -> None:
        self._mark_lost(f"connection lost ({exc!r})")

    def _mark_lost(self, reason: str) -> None:
        if self._lost is not None and not self._lost.is_set():
            self._lost_reason = reason
            self._lost.set()

    def _went_down(self, reason: str) -> None:
        was_up = self.health.state == "up"
        if was_up:
            # The gap must be visible: a bad sample per point at the moment of the loss, so
            # "hold" integration stops here instead of holding the last value across the outage.
            now = time.time()
            batch = self._batch
            for slot, pid in enumerate(self.pids):
                batch.append(pid, self._made_ts(slot, now), NAN, QUALITY_BAD)
            self.flush()
        self.health.failure(f"{self.device.endpoint}: {reason}", fatal=True)
        if not was_up:
            log.debug("device %s: still down: %s", self.name, reason)

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, OpcuaConnectError | ConnectionLost):
            return str(exc).removeprefix(f"device {self.name}: ")
        if isinstance(exc, TimeoutError | asyncio.TimeoutError):
            return f"no answer within {self.device.timeout:g} s"
        return f"{type(exc).__name__}: {exc}"

    async def _close(self) -> None:
        refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        client, self._client, self._sub = self._client, None, None
        if client is None:
            return
        client.connection_lost_callback = None
        try:
            await asyncio.wait_for(client.disconnect(), 2.0)
        except BaseException as exc:
            # A dead transport cannot close politely (and a cancel may cut it short): drop the
            # socket so nothing of this session lingers.
            with contextlib.suppress(Exception):
                client.disconnect_socket()
            if not isinstance(exc, Exception):
                raise

    # -- node ids ---------------------------------------------------------------------------

    def _hinted(self, what: str) -> str:
        return f"{what} (check the node with `ironwatt opcua browse {self.device.endpoint}`)"

    def _set_problem(self, slot: int, key: str, what: str, at: float) -> None:
        """The point has a problem (logged and reported if new); its values take the slow path."""
        self._fast[slot] = None
        if self.problems.keys[slot] != key:
            self.problems.set(slot, key, what, at)

    def _clear_problem(self, slot: int) -> None:
        self.problems.clear(slot)
        self._fast[slot] = self._expect[slot].fast

    def _resolve(self, namespaces: Sequence[str], ua: Any) -> list[Any]:
        """ns= NodeIds for this session; nsu= looked up in the server's NamespaceArray now."""
        now = time.time()
        nodeids: list[Any] = []
        self.namespace_indexes = {}
        self._watch = {}
        for slot, ref in enumerate(self.refs):
            if ref is None:
                self._set_problem(slot, "config", self._config_errors[slot], now)
                nodeids.append(None)
                continue
            if ref.ns_uri is not None:
                uri = ref.ns_uri
                self._watch[uri] = list(namespaces).index(uri) if uri in namespaces else None
            try:
                ns = resolve_namespace(ref, namespaces)
            except NodeIdError as exc:
                self._set_problem(slot, f"namespace:{ref.ns_uri}", self._hinted(str(exc)), now)
                nodeids.append(None)
                continue
            if ref.ns_uri is not None:
                self.namespace_indexes[ref.ns_uri] = ns
            nodeids.append(ua.NodeId(ref.identifier, ns))
        return nodeids

    async def _read_types(
        self,
        client: Any,
        nodeids: list[Any],
        limit: int,
        timeout: float,  # noqa: ASYNC109
        ua: Any,
    ) -> None:
        """Every node's DataType: what its values must be (a Double node sending text is bad)."""
        now = time.time()
        self._expect = [ANY] * len(self.points)
        slots = [s for s, n in enumerate(nodeids) if n is not None]
        for start in range(0, len(slots), limit):
            chunk = slots[start : start + limit]
            params = ua.ReadParameters()
            for slot in chunk:
                rv = ua.ReadValueId()
                rv.NodeId = nodeids[slot]
                rv.AttributeId = ua.AttributeIds.DataType
                params.NodesToRead.append(rv)
            try:
                results = await asyncio.wait_for(client.uaclient.read(params), timeout)
            except (ua.UaStatusCodeError, TimeoutError) as exc:
                # Not worth the session (a big read a slow PLC cannot answer in time, a service
                # fault): values are still judged one by one, by their own type.
                self._refused_extra(
                    "datatypes",
                    f"read the DataType of its {len(slots)} nodes",
                    exc,
                    timeout,
                    "values are checked without it, each by its own type",
                )
                break
            for slot, dv in zip(chunk, results, strict=True):
                # An unknown node answers Bad here; its monitored item or read says so later.
                dtype = dv.Value.Value if dv.Value is not None else None
                if isinstance(dtype, ua.NodeId):
                    expect = expect_for_datatype(dtype.NamespaceIndex, dtype.Identifier)
                    self._expect[slot] = expect
                    if expect.kind == "other":
                        what = self._hinted(datatype_message(expect))
                        self._set_problem(slot, f"datatype:{expect.name}", what, now)
        else:
            self._refused.discard("datatypes")
        for slot in range(len(self.points)):
            if self.problems.keys[slot] is None:
                self._fast[slot] = self._expect[slot].fast

    def _refused_extra(
        self, check: str, what: str, why: BaseException | str, timeout: float, without: str
    ) -> None:
        """An optional check the server would not do: logged once (info); the session goes on.

        Logged again only after the check has worked in between.
        """
        if check in self._refused:
            return
        self._refused.add(check)
        if isinstance(why, TimeoutError):
            reason = f"no answer within {timeout:g} s"
        elif isinstance(why, str):
            reason = why
        else:
            code = getattr(why, "code", None)
            reason = self._status_name(code) if isinstance(code, int) else str(why)
        log.info("device %s: the server did not %s (%s); %s", self.name, what, reason, without)

    def _namespaces_unchanged(self, dv: Any) -> bool:
        """False, and the session marked lost, when a URI in use moved, vanished or appeared.

        A namespace appended to the array moves nothing and is let be.
        """
        variant = dv.Value
        array = variant.Value if variant is not None else None
        status = dv.StatusCode
        if not isinstance(array, list) or (status is not None and status.is_bad()):
            return True  # cannot tell; the next notification or read will
        changes = []
        for uri, index in self._watch.items():
            now_at = array.index(uri) if uri in array else None
            if now_at == index:
                continue
            users = [
                p.name for p, r in zip(self.points, self.refs, strict=True) if r and r.ns_uri == uri
            ]
            named = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
            if index is None:
                change = f"{uri} appeared at ns={now_at}"
            elif now_at is None:
                change = f"{uri} (ns={index}) is gone"
            else:
                change = f"{uri} moved from ns={index} to ns={now_at}"
            changes.append(f"{change}, used by point{'s' if len(users) > 1 else ''} {named}")
        if not changes:
            return True
        self._retry_now = True
        self._mark_lost(
            f"the server's NamespaceArray changed under the live session ({'; '.join(changes)}); "
            "reconnecting to resolve the node ids again"
        )
        return False

    def _made_ts(self, slot: int, now: float) -> float:
        """The time of a sample the driver makes itself (bad at a loss, a refresh)."""
        if not self.source_timestamps:
            return now
        # On the server's timeline, or it would sit ahead of the values that follow it, and a
        # publishing interval behind: a value sampled just before a refresh yet delivered after
        # it is newer (kept downstream), never older than the point's last real source time.
        # Not taken as the point's latest source time: no step back of the server's clock.
        ts = now + self._last_offset[slot] - self.made_margin
        last = self._last_ts[slot]
        return ts if ts >= last + _MADE_AFTER_S else last + _MADE_AFTER_S

    def _bad_now(self, slots: Sequence[int]) -> None:
        now = time.time()
        for slot in slots:
            self._batch.append(self.pids[slot], self._made_ts(slot, now), NAN, QUALITY_BAD)
        self.bad += len(slots)

    # -- value decoding (hot path) ----------------------------------------------------------

    def _append(self, slot: int, dv: Any, now: float) -> None:
        """One DataValue into the batch, judged: status, type against the DataType, finiteness.

        The careful path: every value that is not a plain good number of the node's own type
        comes here (and every value in poll mode or with source timestamps).
        """
        if slot >= self._ns_handle:
            if slot == self._ns_handle:
                self._namespaces_unchanged(dv)
            else:
                self._unknown_handle(slot)
            return
        status = dv.StatusCode
        code = status.value if status is not None else 0
        key: str | None
        if code & _BAD:
            value, quality = NAN, QUALITY_BAD
            key = f"status:{code & _CODE:#x}"
            name = self._status_name(code)
            what = f"the server reports {name} (0x{code:08X})"
            if name.startswith("BadNodeId"):
                what = self._hinted(what)
        else:
            value, key, what = decode(dv.Value, self._expect[slot])
            if key is not None:
                quality = QUALITY_BAD
            elif code & _SEVERITY == _UNCERTAIN:
                quality = QUALITY_UNCERTAIN
                key = f"uncertain:{code & _CODE:#x}"
                what = (
                    f"the server reports {self._status_name(code)} (0x{code:08X}): values are "
                    "kept with uncertain quality, which the energy kernel does not count"
                )
            else:
                quality = QUALITY_GOOD
        ts = now
        if self.source_timestamps:
            source = self._source_time(slot, dv, value, quality, now)
            if source is None:
                return  # a steady value read again: nothing new (and out of order downstream)
            ts = source
        batch = self._batch
        batch.point.append(self.pids[slot])
        batch.ts.append(ts)
        batch.value.append(value)
        batch.quality.append(quality)
        self._last_seen[slot] = now
        if quality == QUALITY_GOOD:
            self._last_value[slot] = value
            if self.problems.keys[slot] is not None:
                self._clear_problem(slot)
            return
        self._last_value[slot] = NAN
        if quality == QUALITY_BAD:
            self.bad += 1
        else:
            self.uncertain += 1
        assert key is not None
        self._set_problem(slot, key, what, now)

    def _source_time(
        self, slot: int, dv: Any, value: float, quality: int, now: float
    ) -> float | None:
        """The sample's time with timestamps = "source"; None for a steady value read again."""
        src = dv.SourceTimestamp or dv.ServerTimestamp
        ts: float = src.timestamp() if src is not None else now + self._last_offset[slot]
        pv = self._prev_value[slot]
        if (
            ts == self._prev_ts[slot]
            and quality == self._prev_quality[slot]
            and (value == pv or (value != value and pv != pv))
        ):
            return None
        if src is not None:  # learnt when the value is new, or a loss would be stamped too early
            self._last_offset[slot] = ts - now
        self._prev_ts[slot] = ts
        self._prev_value[slot] = value
        self._prev_quality[slot] = quality
        last = self._last_ts[slot]
        if ts > last:
            self._last_ts[slot] = ts
            if self._behind[slot]:
                self._caught_up(slot, ts)
        elif ts < last and not self._behind[slot]:
            self._went_back(slot, ts, last, now)
        return ts

    def _unknown_handle(self, handle: int) -> None:
        """A value for a ClientHandle never given out (a server bug): nothing to attribute it to.

        Skipped (the rest of its PublishResponse is kept) and counted; logged once per session.
        """
        self.unknown_handles += 1
        if not self._stray_logged:
            self._stray_logged = True
            log.warning(
                "device %s: the server sent a value for client handle %d, which this session "
                "never gave out; such values are skipped and counted (status unknown_handles)",
                self.name,
                handle,
            )

    def _status_name(self, code: int) -> str:
        """The StatusCode's symbolic name (info bits masked off), as the server's manual has it."""
        return str(ua_module().StatusCode(code & _CODE).name)

    def _went_back(self, slot: int, ts: float, last: float, now: float) -> None:
        self._behind[slot] = True
        what = (
            f"the SourceTimestamp went back {last - ts:.3f} s (to {_iso(ts)}, the last was "
            f"{_iso(last)}); samples older than the point's last one are dropped and counted "
            'downstream until the server\'s clock passes it again (timestamps = "source")'
        )
        message = self.problems.message(slot, what)
        log.warning("%s", message)
        self.sink.add_event(
            DeviceEvent("point_error", self.name, message, now, point=self.points[slot].name)
        )

    def _caught_up(self, slot: int, ts: float) -> None:
        self._behind[slot] = False
        point = self.points[slot]
        log.info(
            "device %s point %s node %r: the SourceTimestamp is past the last delivered one "
            "again (%s)",
            self.name,
            point.name,
            point.node,
            _iso(ts),
        )

    # -- subscribe mode ---------------------------------------------------------------------

    async def _subscribe(
        self,
        client: Any,
        nodeids: list[Any],
        timeout: float,  # noqa: ASYNC109
        ua: Any,
    ) -> None:
        from drivers.opcua.subscription import make_subscription

        period_ms = self.interval * 1000.0
        self._stray_logged = False
        for slot in range(len(self.points)):
            self._last_value[slot] = NAN
        sub = await asyncio.wait_for(
            make_subscription(client, period_ms, self._on_publish, self._keepalive_s), timeout
        )
        self._sub = sub
        revised = float(getattr(sub, "revised_interval_ms", period_ms) or period_ms)
        self.made_margin = max(self.interval, revised / 1000.0)
        now = time.time()
        bad = [s for s, n in enumerate(nodeids) if n is None]
        slots = [s for s, n in enumerate(nodeids) if n is not None]
        limit = await self._operation_limit(client, _MAX_MONITORED_ITEMS_PER_CALL, timeout, ua)
        queue_size = int(getattr(self.device, "queue_size", 1))
        for start in range(0, len(slots), limit):
            chunk = slots[start : start + limit]
            requests = [
                self._item_request(slot, nodeids[slot], period_ms, queue_size, ua) for slot in chunk
            ]
            results = await asyncio.wait_for(sub.create_monitored_items(requests), timeout)
            for slot, result in zip(chunk, results, strict=True):
                if isinstance(result, ua.StatusCode):
                    what = f"the server refused to monitor it ({result.name})"
                    if "Filter" in result.name:
                        what += (
                            "; check deadband_type/deadband_value (a percent deadband needs "
                            "an EURange on the node)"
                        )
                    self._set_problem(slot, f"monitor:{result.name}", self._hinted(what), now)
                    bad.append(slot)
        if self._watch:
            await self._watch_namespaces(sub, period_ms, timeout, ua)
        self._bad_now(sorted(bad))
        if self.refresh_after:
            self._refresher = asyncio.create_task(
                self._refresh_loop(), name=f"opcua-refresh-{self.name}"
            )
        self.health.success()
        self._came_up()

    async def _refresh_loop(self) -> None:
        """Re-send held values of quiet subscribed points while the session is alive."""
        lost = self._lost
        tick = min(1.0, min(self.refresh_after.values()) / 2.0)
        alive_within = self._keepalive_s + 2.0 * self.interval
        while lost is not None and not lost.is_set():
            await asyncio.sleep(tick)
            now = time.time()
            if lost.is_set() or now - (self.health.last_success or 0.0) > alive_within:
                continue  # no word from the server lately: never re-assert a value then
            batch = self._batch
            for slot, after in self.refresh_after.items():
                value = self._last_value[slot]
                if value == value and now - self._last_seen[slot] >= after:
                    batch.append(self.pids[slot], self._made_ts(slot, now), value)
                    self._last_seen[slot] = now

    async def _watch_namespaces(
        self,
        sub: Any,
        period_ms: float,
        timeout: float,  # noqa: ASYNC109
        ua: Any,
    ) -> None:
        """A monitored item on the NamespaceArray: a URI in use that moves ends the session."""
        rv = ua.ReadValueId()
        rv.NodeId = ua.NodeId(_NAMESPACE_ARRAY, 0)
        rv.AttributeId = ua.AttributeIds.Value
        params = ua.MonitoringParameters()
        params.ClientHandle = self._ns_handle
        params.SamplingInterval = period_ms
        params.QueueSize = 1
        params.DiscardOldest = True
        req = ua.MonitoredItemCreateRequest()
        req.ItemToMonitor = rv
        req.MonitoringMode = ua.MonitoringMode.Reporting
        req.RequestedParameters = params
        refused: BaseException | str
        try:
            (result,) = await asyncio.wait_for(sub.create_monitored_items([req]), timeout)
        except (ua.UaStatusCodeError, TimeoutError) as exc:
            # A PLC at its monitored-item limit: the points are monitored, the session is good.
            refused = exc
        else:
            if not isinstance(result, ua.StatusCode):
                self._refused.discard("namespace watch")
                return
            refused = str(result.name)
        self._refused_extra(
            "namespace watch",
            "monitor its NamespaceArray",
            refused,
            timeout,
            "a namespace that moves under a live session is seen at the next reconnect only",
        )

    def _item_request(
        self, slot: int, nodeid: Any, period_ms: float, queue_size: int, ua: Any
    ) -> Any:
        point = self.points[slot]
        params = ua.MonitoringParameters()
        params.ClientHandle = slot
        # Explicit: asyncua would default to 50 ms, far more than the device asked for.
        params.SamplingInterval = period_ms
        params.QueueSize = queue_size
        params.DiscardOldest = True
        deadband = getattr(point, "deadband_type", "none")
        if deadband in ("absolute", "percent"):
            flt = ua.DataChangeFilter()
            flt.Trigger = ua.DataChangeTrigger.StatusValue
            flt.DeadbandType = (
                ua.DeadbandType.Absolute if deadband == "absolute" else ua.DeadbandType.Percent
            )
            flt.DeadbandValue = float(point.deadband_value)
            params.Filter = flt
        rv = ua.ReadValueId()
        rv.NodeId = nodeid
        rv.AttributeId = ua.AttributeIds.Value
        req = ua.MonitoredItemCreateRequest()
        req.ItemToMonitor = rv
        req.MonitoringMode = ua.MonitoringMode.Reporting
        req.RequestedParameters = params
        return req

    def _on_publish(self, result: Any) -> None:
        """Publish callback: every data change of one PublishResponse into the batch.

        Good numeric values of the node's own type (nearly all of them) take the inlined path
        with local bindings; anything else goes through `_append`. ~2.5x faster than calling
        `_append` per item. Never raises: asyncua would log a traceback for it.
        """
        now = time.time()
        # Keepalives count too: the session is alive, `status` shows when it last spoke.
        self.health.last_success = now
        lost = self._lost
        if lost is None or lost.is_set():
            return  # the session is being torn down: what it still says counts no more
        data = result.NotificationMessage.NotificationData
        if not data:
            return
        batch = self._batch
        mark = len(batch)
        put_point, put_ts = batch.point.append, batch.ts.append
        put_value, put_quality = batch.value.append, batch.quality.append
        pids, fast, last_value, last_seen = self.pids, self._fast, self._last_value, self._last_seen
        ns_handle = self._ns_handle
        slow = self._append
        slow_only = self.source_timestamps  # each sample has its own time then
        try:
            for notif in data:
                items = getattr(notif, "MonitoredItems", None)
                if items is None:
                    if hasattr(notif, "Status"):
                        status = notif.Status
                        if status is not None and status.is_bad():
                            self._mark_lost(f"subscription ended by the server ({status.name})")
                    continue
                for item in items:
                    slot = item.ClientHandle
                    dv = item.Value
                    status = dv.StatusCode
                    variant = dv.Value
                    # Handles from ns_handle up: the NamespaceArray, or never given out (skipped).
                    if (
                        slow_only
                        or variant is None
                        or (status is not None and status.value)
                        or slot >= ns_handle
                    ):
                        slow(slot, dv, now)
                        continue
                    v = variant.Value
                    # The node's own type, and finite (NaN and +-Inf fail v - v == 0).
                    if type(v) is not fast[slot] or v - v != 0:
                        slow(slot, dv, now)
                        continue
                    put_point(pids[slot])
                    put_ts(now)
                    put_value(v)
                    put_quality(QUALITY_GOOD)
                    last_value[slot] = v
                    last_seen[slot] = now
        except Exception as exc:  # a notification nothing here expected: drop it, say so once
            _truncate(batch, mark)
            what = f"{type(exc).__name__}: {exc}"
            if self._undecodable != what:
                self._undecodable = what
                log.warning(
                    "device %s: a publish response could not be decoded (%s); its values were "
                    "dropped, and so will be those of the next ones like it",
                    self.name,
                    what,
                )
            return
        self._undecodable = None
        if lost.is_set():
            # Lost while decoding (the namespaces moved): these values may name other nodes.
            _truncate(batch, mark)
            return
        if len(batch) >= self.flush_samples:
            self.flush()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            self.flush()
            self.problems.settle()

    # -- poll mode --------------------------------------------------------------------------

    async def _operation_limit(
        self,
        client: Any,
        node: int,
        timeout: float,  # noqa: ASYNC109
        ua: Any,
    ) -> int:
        try:
            value = await asyncio.wait_for(
                client.get_node(ua.NodeId(node, 0)).read_value(), timeout
            )
        except Exception:
            return DEFAULT_CHUNK
        return int(value) if isinstance(value, int) and value > 0 else DEFAULT_CHUNK

    async def _poll(
        self,
        client: Any,
        nodeids: list[Any],
        limit: int,
        timeout: float,  # noqa: ASYNC109
        ua: Any,
    ) -> None:
        unresolved = sorted(s for s, n in enumerate(nodeids) if n is None)
        slots = [s for s, n in enumerate(nodeids) if n is not None]
        # Each Read carries the NamespaceArray first: values read along with a changed array
        # are never taken for the nodes they no longer are.
        watch = bool(self._watch)
        per_read = max(1, limit - 1) if watch else limit
        groups = [slots[i : i + per_read] for i in range(0, len(slots), per_read)]
        if watch and not groups:
            groups = [[]]  # nothing resolvable yet: still watch for the namespace to appear
        chunks: list[tuple[list[int], Any]] = []
        for chunk in groups:
            params = ua.ReadParameters()
            params.MaxAge = 0
            params.TimestampsToReturn = (
                ua.TimestampsToReturn.Source
                if self.source_timestamps
                else ua.TimestampsToReturn.Neither
            )
            if watch:
                rv = ua.ReadValueId()
                rv.NodeId = ua.NodeId(_NAMESPACE_ARRAY, 0)
                rv.AttributeId = ua.AttributeIds.Value
                params.NodesToRead.append(rv)
            for slot in chunk:
                rv = ua.ReadValueId()
                rv.NodeId = nodeids[slot]
                rv.AttributeId = ua.AttributeIds.Value
                params.NodesToRead.append(rv)
            chunks.append((chunk, params))
        loop = asyncio.get_running_loop()
        lost = self._lost
        assert lost is not None
        read = client.uaclient.read
        first = True
        schedule = FixedRate(self.interval, loop.time())
        while not lost.is_set():
            began = loop.time()
            try:
                for chunk, params in chunks:
                    results = await asyncio.wait_for(read(params), timeout)
                    now = time.time()
                    if watch:
                        if not self._namespaces_unchanged(results[0]):
                            break
                        results = results[1:]
                    for slot, dv in zip(chunk, results, strict=True):
                        self._append(slot, dv, now)
            finally:  # a read that failed or timed out took its time too
                self.health.timed(loop.time() - began)
            if lost.is_set():
                break
            if unresolved:
                self._bad_now(unresolved)
            self.health.requests += len(chunks)
            self.health.success()
            if first:
                self._came_up()
                first = False
            self.flush()
            # Fixed rate on the monotonic clock; missed ticks are skipped and counted.
            now_m = loop.time()
            self.health.overruns += schedule.advance(now_m)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), schedule.due - now_m)
        raise ConnectionLost(self._lost_reason or "session lost")


def _truncate(batch: SampleBatch, n: int) -> None:
    """Forget the samples appended after the first `n`."""
    del batch.point[n:]
    del batch.ts[n:]
    del batch.value[n:]
    del batch.quality[n:]


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
