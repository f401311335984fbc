"""The outbox's writer thread: group commits with seq, batched deletes, the size cap check,
and what happens when the disk is full or read-only (pressure events, retries, recovery).

Every write to the database happens here, on one connection, in one thread.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any

from gateway.errors import OutboxClosed
from gateway.outbox.drop import ROW_OVERHEAD, Dropping
from gateway.outbox.messages import encode_body
from gateway.outbox.policy import MessageClass
from gateway.outbox.rows import PendingPut
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


class Writer(Dropping):
    """The writer thread of the Outbox: `_run` is its target."""

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._shutdown()

    def _loop(self) -> None:
        retry_at = 0.0
        while True:
            with self._cv:
                while True:
                    stalled = self._pressure is not None
                    can_put = bool(self._puts) and (not stalled or time.monotonic() >= retry_at)
                    if self._acks or self._calls or can_put:
                        break
                    if self._closing and (not self._puts or stalled):
                        return
                    self._cv.wait(_RETRY_S if stalled else None)
                acks, self._acks = self._acks, []
                calls = list(self._calls)
                self._calls.clear()
                puts = list(self._puts) if can_put else []
            if acks:
                retry_at = 0.0  # room may have come back
                if not puts:
                    self._delete(acks)
            if puts:
                try:
                    # Deletes ride the same transaction: one commit (one fsync) instead of two.
                    stored = self._store(puts, acks)
                except Exception as exc:
                    # A bug, not the disk: fail these batches loudly, keep the writer alive.
                    log.exception(
                        "buffer %s: could not store %d batches", self.settings.path, len(puts)
                    )
                    for put in puts:
                        if not put.future.done():
                            put.future.set_exception(exc)
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    if acks:
                        self._delete(acks)
                    stored = True
                if stored:
                    with self._cv:
                        for _ in puts:
                            self._puts.popleft()
                        self._cv.notify_all()
                else:
                    retry_at = time.monotonic() + _RETRY_S
            for fn, fut in calls:
                try:
                    fut.set_result(fn(self._conn))
                except BaseException as exc:  # the caller gets it; the writer carries on
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    fut.set_exception(exc)
            # Not kept while the writer waits: the last batch (a window close's messages, ~1 MB
            # at 8,000 points) would stay alive until the next one.
            del acks, calls, puts

    def _shutdown(self) -> None:
        conn = self._conn
        for put in self._puts:
            if not put.future.done():
                put.future.set_exception(OutboxClosed("outbox closed before the disk took it"))
        try:
            with self._synced():
                conn.execute("BEGIN IMMEDIATE")
                meta_set(conn, "clean", 0 if self._puts else 1)
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("buffer %s: could not record a clean shutdown: %s", self.settings.path, exc)
        conn.close()

    def _delete_rows(self, ids: list[int]) -> int:
        """Delete acknowledged rows inside the caller's transaction; how many went."""
        cur = self._conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
        return max(cur.rowcount, 0)

    def _delete(self, ids: list[int]) -> None:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            deleted = self._delete_rows(ids)
            conn.execute("COMMIT")
            self.backlog -= deleted
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            # The rows stay and are sent again: a duplicate, never a loss.
            log.error(
                "buffer %s: could not delete %d acknowledged messages: %s",
                self.settings.path,
                len(ids),
                exc,
            )

    def _store(self, puts: list[PendingPut], acks: list[int]) -> bool:
        """One transaction for every queued batch and the acknowledged deletes; False when the
        disk refused it (the deletes are then tried on their own)."""
        conn = self._conn
        saved = (self.next_seq, self._next_id)
        now, epoch = time.time(), self.link_epoch
        rows: list[tuple[Any, ...]] = []
        events = list(self._pending_events)
        try:
            if events:
                self._prepare(events, rows, now, epoch)
            results = [self._prepare(put.items, rows, now, epoch) for put in puts]
            if self.next_seq - 1 > self._reserved:
                self._reserve_ahead()
            conn.execute("BEGIN IMMEDIATE")
            deleted = self._delete_rows(acks) if acks else 0
            self._insert(rows)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self.next_seq, self._next_id = saved
            self._storage_failed(exc, sum(len(p.items) for p in puts))
            if acks:
                self._delete(acks)  # deletes make room: never held back by a refused insert
            return False
        self.backlog += len(rows) - deleted
        self._pending_events = self._pending_events[len(events) :]
        if self._pressure is not None:
            self._recovered()
        self._after_commit()
        for put, seqs in zip(puts, results, strict=True):
            put.future.set_result(seqs)
        for listener in self._listeners:
            listener()
        return True

    # -- pressure: disk full, read-only, near the cap -----------------------------------------

    def _storage_failed(self, exc: sqlite3.Error, waiting: int) -> None:
        # Anything else (a lock held too long by another process...) is retried the same way.
        kind = _storage_failure(exc) or "error"
        if self._pressure != kind:
            self._pressure, self._pressure_since = kind, time.time()
            log.error(
                "buffer %s: cannot store messages (%s: %s); %d messages wait in memory and "
                "producers are held back. Check free space and that the data_dir partition is "
                "writable; the gateway retries every %.1f s",
                self.settings.path,
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
                    "max_bytes": self.settings.max_size_bytes,
                }
            )
        if kind == "disk_full" and len(self._puts) >= self.settings.max_pending:
            # Producers are blocked: make room the way the cap would, with a gap that says so.
            need = sum(len(t) + len(r) + ROW_OVERHEAD for p in self._puts for t, r, _, _ in p.items)
            self._drop(need * 2, "disk_full")

    def _recovered(self) -> None:
        kind, since = self._pressure, self._pressure_since
        self._pressure = None
        log.warning(
            "buffer %s: storing again after %s for %.1f s",
            self.settings.path,
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
            (self.settings.event_topic, encode_body(body), 1, int(MessageClass.EVENT))
        )

    def _flush_events(self) -> None:
        """Store queued pressure events now (they ride the next batch when this fails)."""
        if not self._pending_events:
            return
        conn, rows = self._conn, list[tuple[Any, ...]]()
        saved = (self.next_seq, self._next_id)
        events = list(self._pending_events)
        try:
            self._prepare(events, rows, time.time(), self.link_epoch)
            if self.next_seq - 1 > self._reserved:
                self._reserve_ahead()
            conn.execute("BEGIN IMMEDIATE")
            self._insert(rows)
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self.next_seq, self._next_id = saved
            return
        self.backlog += len(rows)
        self._pending_events = []

    def _after_commit(self) -> None:
        self.used_bytes = self._measure()
        cap = self.settings.max_size_bytes
        if self.used_bytes > cap:
            self._drop(self.used_bytes - int(cap * _LOW_WATER), "max_size")
            self.used_bytes = self._measure()
        if not self._near_cap and self.used_bytes >= cap * _NEAR_CAP:
            self._near_cap = True
            log.warning(
                "buffer %s: %d of %d bytes used: the uplink is behind; the oldest "
                "telemetry, then windows, go past the cap",
                self.settings.path,
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
        elif self._near_cap and self.used_bytes < cap * _NEAR_CAP_CLEAR:
            self._near_cap = False
