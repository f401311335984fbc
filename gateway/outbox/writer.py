"""The outbox's writer thread: group commits with seq, batched deletes, the size cap check,
and what happens when the disk is full or read-only (pressure events, retries, recovery).

Every write to the database happens here, on one connection (its RowStore), in one thread.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.errors import OutboxClosed
from gateway.outbox.drop import ROW_OVERHEAD, Dropper
from gateway.outbox.epoch import LinkEpoch
from gateway.outbox.messages import encode_body
from gateway.outbox.pending import Call, Item, PendingPut, WriteQueue
from gateway.outbox.policy import MessageClass
from gateway.outbox.rows import RowStore
from gateway.outbox.schema import meta_set

log = logging.getLogger("ironwatt.buffer")

__all__ = ["Writer"]

_LOW_WATER = 0.95  # a drop brings the used size down to this fraction of the cap
_NEAR_CAP, _NEAR_CAP_CLEAR = 0.90, 0.80
_RETRY_S = 0.5  # how often a stalled writer (disk full, read-only) tries again
_FAILURE_NAMES = {
    sqlite3.SQLITE_FULL: "disk_full",
    sqlite3.SQLITE_READONLY: "read_only",
    sqlite3.SQLITE_IOERR: "io_error",
    sqlite3.SQLITE_CANTOPEN: "io_error",
}


def _storage_failure(exc: sqlite3.Error) -> str | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else _FAILURE_NAMES.get(code & 0xFF)


class Writer:
    """The Outbox's writer thread: takes what waits in the queue, writes it through its RowStore,
    and has its Dropper make room when the cap or a full disk says so."""

    def __init__(
        self, rows: RowStore, queue: WriteQueue, dropper: Dropper, epoch: LinkEpoch
    ) -> None:
        self.rows = rows
        self.dropper = dropper
        self._queue = queue
        self._epoch = epoch
        # Called after every commit that stored messages; copied on write (read without a lock).
        self.listeners: list[Callable[[], None]] = []
        self.backlog = int(rows.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        self.used_bytes = rows.measure()
        self.pressure: str | None = None  # disk_full, read_only, io_error, error
        self._pressure_since = 0.0
        self.near_cap = False
        self._pending_events: list[Item] = []
        self.thread = threading.Thread(target=self._run, name="ironwatt-outbox", daemon=True)

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._shutdown()

    def _loop(self) -> None:
        retry_at = 0.0
        while True:
            work = self._take(retry_at)
            if work is None:
                return
            acks, calls, puts = work
            if acks:
                retry_at = 0.0  # room may have come back
                if not puts:
                    self._delete(acks)
            if puts:
                if self._write(puts, acks):
                    self._queue.stored(len(puts))
                else:
                    retry_at = time.monotonic() + _RETRY_S
            self._answer(calls)
            # Not kept while the writer waits: the last batch (a window close's messages, ~1 MB
            # at 8,000 points) would stay alive until the next one.
            del work, acks, calls, puts

    def _take(self, retry_at: float) -> tuple[list[int], list[Call], list[PendingPut]] | None:
        """What there is to do, once there is something: acknowledged ids, calls, and the queued
        batches (not while the disk refuses them, until `retry_at`). None: closed, and nothing
        left that could be stored."""
        q = self._queue
        with q.cv:
            while True:
                stalled = self.pressure is not None
                can_put = bool(q.puts) and (not stalled or time.monotonic() >= retry_at)
                if q.acks or q.calls or can_put:
                    break
                if q.closing and (not q.puts or stalled):
                    return None
                q.cv.wait(_RETRY_S if stalled else None)
            acks, q.acks = q.acks, []
            calls = list(q.calls)
            q.calls.clear()
            puts = list(q.puts) if can_put else []
        return acks, calls, puts

    def _write(self, puts: list[PendingPut], acks: list[int]) -> bool:
        """Store the batches (with the deletes); False when the disk refused them (retried)."""
        conn = self.rows.conn
        try:
            # Deletes ride the same transaction: one commit (one fsync) instead of two.
            return self._store(puts, acks)
        except Exception as exc:
            # A bug, not the disk: fail these batches loudly, keep the writer alive.
            log.exception("buffer %s: could not store %d batches", self._path, len(puts))
            for put in puts:
                if not put.future.done():
                    put.future.set_exception(exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if acks:
                self._delete(acks)
            return True

    def _answer(self, calls: list[Call]) -> None:
        """Run the calls queued for the writer's connection; each caller gets its result."""
        conn = self.rows.conn
        for fn, fut in calls:
            try:
                fut.set_result(fn(conn))
            except BaseException as exc:  # the caller gets it; the writer carries on
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                fut.set_exception(exc)

    @property
    def _path(self) -> Path:
        return self.rows.settings.path

    def _shutdown(self) -> None:
        conn, puts = self.rows.conn, self._queue.puts
        for put in puts:
            if not put.future.done():
                put.future.set_exception(OutboxClosed("outbox closed before the disk took it"))
        try:
            with self.rows.synced():
                conn.execute("BEGIN IMMEDIATE")
                meta_set(conn, "clean", 0 if puts else 1)
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("buffer %s: could not record a clean shutdown: %s", self._path, exc)
        conn.close()

    def _delete(self, ids: list[int]) -> None:
        conn = self.rows.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            deleted = self.rows.delete(ids)
            conn.execute("COMMIT")
            self.backlog -= deleted
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            # The rows stay and are sent again: a duplicate, never a loss.
            log.error(
                "buffer %s: could not delete %d acknowledged messages: %s",
                self._path,
                len(ids),
                exc,
            )

    def _store(self, puts: list[PendingPut], acks: list[int]) -> bool:
        """One transaction for every queued batch and the acknowledged deletes; False when the
        disk refused it (the deletes are then tried on their own)."""
        rows = self.rows
        conn = rows.conn
        mark = rows.mark()
        now, epoch = time.time(), self._epoch.value
        new: list[tuple[Any, ...]] = []
        events = list(self._pending_events)
        try:
            if events:
                rows.prepare(events, new, now, epoch)
            results = [rows.prepare(put.items, new, now, epoch) for put in puts]
            rows.reserve_if_needed()
            conn.execute("BEGIN IMMEDIATE")
            deleted = rows.delete(acks) if acks else 0
            rows.insert(new)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            rows.rewind(mark)
            self._storage_failed(exc, sum(len(p.items) for p in puts))
            if acks:
                self._delete(acks)  # deletes make room: never held back by a refused insert
            return False
        self.backlog += len(new) - deleted
        self._pending_events = self._pending_events[len(events) :]
        if self.pressure is not None:
            self._recovered()
        self._after_commit()
        for put, seqs in zip(puts, results, strict=True):
            put.future.set_result(seqs)
        for listener in self.listeners:
            listener()
        return True

    def _drop(self, excess: int, reason: str) -> None:
        self.backlog -= self.dropper.drop(excess, reason)

    # -- pressure: disk full, read-only, near the cap -----------------------------------------

    def _storage_failed(self, exc: sqlite3.Error, waiting: int) -> None:
        # Anything else (a lock held too long by another process...) is retried the same way.
        kind = _storage_failure(exc) or "error"
        if self.pressure != kind:
            self.pressure, self._pressure_since = kind, time.time()
            log.error(
                "buffer %s: cannot store messages (%s: %s); %d messages wait in memory and "
                "producers are held back. Check free space and that the data_dir partition is "
                "writable; the gateway retries every %.1f s",
                self._path,
                kind,
                exc,
                waiting,
                _RETRY_S,
            )
            self._queue_event(
                {
                    "type": "buffer_pressure",
                    "state": kind,
                    "detail": str(exc),
                    "used_bytes": self.used_bytes,
                    "max_bytes": self.rows.settings.max_size_bytes,
                }
            )
        puts = self._queue.puts
        if kind == "disk_full" and len(puts) >= self.rows.settings.max_pending:
            # Producers are blocked: make room the way the cap would, with a gap that says so.
            need = sum(len(t) + len(r) + ROW_OVERHEAD for p in puts for t, r, _, _ in p.items)
            self._drop(need * 2, "disk_full")

    def _recovered(self) -> None:
        kind, since = self.pressure, self._pressure_since
        self.pressure = None
        log.warning(
            "buffer %s: storing again after %s for %.1f s",
            self._path,
            kind,
            time.time() - since,
        )
        self._queue_event(
            {
                "type": "buffer_pressure",
                "state": "cleared",
                "after": kind,
                "duration_s": round(time.time() - since, 3),
            }
        )
        self._flush_events()

    def _queue_event(self, body: dict[str, Any]) -> None:
        self._pending_events.append(
            (self.rows.settings.event_topic, encode_body(body), 1, int(MessageClass.EVENT))
        )

    def _flush_events(self) -> None:
        """Store queued pressure events now (they ride the next batch when this fails)."""
        if not self._pending_events:
            return
        rows = self.rows
        conn, new = rows.conn, list[tuple[Any, ...]]()
        mark = rows.mark()
        events = list(self._pending_events)
        try:
            rows.prepare(events, new, time.time(), self._epoch.value)
            rows.reserve_if_needed()
            conn.execute("BEGIN IMMEDIATE")
            rows.insert(new)
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            rows.rewind(mark)
            return
        self.backlog += len(new)
        self._pending_events = []

    def _after_commit(self) -> None:
        self.used_bytes = self.rows.measure()
        cap = self.rows.settings.max_size_bytes
        if self.used_bytes > cap:
            self._drop(self.used_bytes - int(cap * _LOW_WATER), "max_size")
            self.used_bytes = self.rows.measure()
        if not self.near_cap and self.used_bytes >= cap * _NEAR_CAP:
            self.near_cap = True
            log.warning(
                "buffer %s: %d of %d bytes used: the uplink is behind; the oldest "
                "telemetry, then windows, go past the cap",
                self._path,
                self.used_bytes,
                cap,
            )
            self._queue_event(
                {
                    "type": "buffer_pressure",
                    "state": "near_cap",
                    "used_bytes": self.used_bytes,
                    "max_bytes": cap,
                }
            )
            self._flush_events()
        elif self.near_cap and self.used_bytes < cap * _NEAR_CAP_CLEAR:
            self.near_cap = False
