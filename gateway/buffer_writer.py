"""The outbox's writer thread: batched inserts with seq, batched deletes, the size cap,
the drop policy and what happens when the disk is full or read-only.

Every write to the database happens here, on one connection, in one thread.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.buffer_policy import DROP_ORDER, Candidate, GapInfo, MessageClass, merge_gap, plan_drop
from gateway.buffer_schema import meta_get, meta_set
from gateway.buffer_types import OutboxSettings, encode_body

log = logging.getLogger("ironwatt.buffer")

__all__ = ["Fut", "PendingPut", "Writer"]

_ROW_OVERHEAD = 40  # bytes a row costs beyond its topic and body (header, id, seq, index entry)
_LOW_WATER = 0.95  # a drop brings the used size down to this fraction of the cap
_NEAR_CAP, _NEAR_CAP_CLEAR = 0.90, 0.80
_RETRY_S = 0.5  # how often a stalled writer (disk full, read-only) tries again
_CANDIDATES = 2000  # rows looked at per class and round of dropping
_FAILURE_NAMES = {
    sqlite3.SQLITE_FULL: "disk_full",
    sqlite3.SQLITE_READONLY: "read_only",
    sqlite3.SQLITE_IOERR: "io_error",
    sqlite3.SQLITE_CANTOPEN: "io_error",
}


Fut = concurrent.futures.Future


def _storage_failure(exc: sqlite3.Error) -> str | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else _FAILURE_NAMES.get(code & 0xFF)


@dataclasses.dataclass(slots=True)
class PendingPut:
    items: list[tuple[str, bytes, int, int]]  # topic, encoded rest, qos, cls
    future: concurrent.futures.Future[list[int | None]]


class Writer:
    """The writer half of the Outbox (which sets every attribute below before starting it)."""

    settings: OutboxSettings
    stream: str
    next_seq: int
    backlog: int
    used_bytes: int
    _conn: sqlite3.Connection
    _cv: threading.Condition
    _puts: deque[PendingPut]
    _acks: list[int]
    _calls: deque[tuple[Callable[[sqlite3.Connection], Any], Fut[Any]]]
    _closing: bool
    _listeners: list[Callable[[], None]]
    handout_lock: threading.Lock
    _handed_out: int
    _pressure: str | None
    _pressure_since: float
    _near_cap: bool
    _pending_events: list[tuple[str, bytes, int, int]]
    _next_id: int
    _reserved: int
    _gaps_total: int
    _dropped_total: int

    _session: int
    _link_transitions: int

    @property
    def link_epoch(self) -> int:
        """Changes at every connect and disconnect of the uplink, and at every process start."""
        return (self._session << 32) | self._link_transitions

    @contextlib.contextmanager
    def _synced(self) -> Any:
        """One fsync'd commit even under `normal` (WAL sync covers every earlier frame too)."""
        self._conn.execute("PRAGMA synchronous=FULL")
        try:
            yield
        finally:
            sync = "FULL" if self.settings.durability == "full" else "NORMAL"
            self._conn.execute(f"PRAGMA synchronous={sync}")

    def _measure(self) -> int:
        conn = self._conn
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    # -- the writer thread --------------------------------------------------------------------

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
                self._delete(acks)
                retry_at = 0.0  # room may have come back
            if puts:
                try:
                    stored = self._store(puts)
                except Exception as exc:
                    # A bug, not the disk: fail these batches loudly, keep the writer alive.
                    log.exception(
                        "buffer %s: could not store %d batches", self.settings.path, len(puts)
                    )
                    for put in puts:
                        if not put.future.done():
                            put.future.set_exception(exc)
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

    def _shutdown(self) -> None:
        conn = self._conn
        for put in self._puts:
            if not put.future.done():
                put.future.set_exception(RuntimeError("outbox closed before the disk took it"))
        try:
            with self._synced():
                conn.execute("BEGIN IMMEDIATE")
                meta_set(conn, "clean", 0 if self._puts else 1)
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("buffer %s: could not record a clean shutdown: %s", self.settings.path, exc)
        conn.close()

    def _delete(self, ids: list[int]) -> None:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            conn.execute("COMMIT")
            self.backlog -= max(cur.rowcount, 0)
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

    def _prepare(
        self,
        items: list[tuple[str, bytes, int, int]],
        rows: list[tuple[Any, ...]],
        now: float,
        epoch: int,
    ) -> list[int | None]:
        tele_head, seq_fmt = self._heads()
        seqs: list[int | None] = []
        append, tele = rows.append, int(MessageClass.TELEMETRY)
        seq, rid = self.next_seq, self._next_id
        for topic, rest, qos, cls in items:
            if cls == tele:
                append((rid, None, topic, tele_head + rest, len(tele_head), qos, cls, now, epoch))
                seqs.append(None)
            else:
                prefix = seq_fmt % seq
                append((rid, seq, topic, prefix + rest, len(prefix), qos, cls, now, epoch))
                seqs.append(seq)
                seq += 1
            rid += 1
        self.next_seq, self._next_id = seq, rid
        return seqs

    def _heads(self) -> tuple[bytes, bytes]:
        """The stored JSON's common fields: for telemetry, and a %-template for a seq."""
        common = (
            b',"gw":'
            + json.dumps(self.settings.gw_id).encode()
            + b',"site":'
            + json.dumps(self.settings.site).encode()
        )
        head = b'{"v":1,"stream":"' + self.stream.encode() + b'","seq":'
        return b'{"v":1' + common, head.replace(b"%", b"%%") + b"%d" + common.replace(b"%", b"%%")

    def _store(self, puts: list[PendingPut]) -> bool:
        """One transaction for every queued batch; False when the disk refused it."""
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
                self._reserve(self.next_seq - 1 + self.settings.seq_block)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO outbox VALUES (?,?,?,?,?,?,?,?,?)", rows)
            meta_set(conn, "last_seq", self.next_seq - 1)
            meta_set(conn, "last_id", self._next_id - 1)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self.next_seq, self._next_id = saved
            self._storage_failed(exc, sum(len(p.items) for p in puts))
            return False
        self.backlog += len(rows)
        self._pending_events = self._pending_events[len(events) :]
        if self._pressure is not None:
            self._recovered()
        self._after_commit()
        for put, seqs in zip(puts, results, strict=True):
            put.future.set_result(seqs)
        for listener in self._listeners:
            listener()
        return True

    def _reserve(self, upto: int) -> None:
        with self._synced():
            self._conn.execute("BEGIN IMMEDIATE")
            meta_set(self._conn, "reserved_seq", upto)
            self._conn.execute("COMMIT")
        self._reserved = upto

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
            need = sum(
                len(t) + len(r) + _ROW_OVERHEAD for p in self._puts for t, r, _, _ in p.items
            )
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
                self._reserve(self.next_seq - 1 + self.settings.seq_block)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO outbox VALUES (?,?,?,?,?,?,?,?,?)", rows)
            meta_set(conn, "last_seq", self.next_seq - 1)
            meta_set(conn, "last_id", self._next_id - 1)
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

    # -- dropping -----------------------------------------------------------------------------

    def _drop(self, excess: int, reason: str) -> int:
        """Drop per policy until `excess` bytes of pages are free; returns messages dropped."""
        conn, total = self._conn, 0
        for _ in range(50):
            if excess <= 0:
                break
            before = self._measure()
            cands = self._candidates(excess)
            chosen = plan_drop(cands, excess)
            if not chosen:
                log.error(
                    "buffer %s: over its %s but only gap events are left",
                    self.settings.path,
                    reason,
                )
                break
            try:
                if self.next_seq >= self._reserved:  # the gap event may need a number
                    self._reserve(self.next_seq + self.settings.seq_block)
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("DELETE FROM outbox WHERE id = ?", [(c.id,) for c in chosen])
                self._record_gap(chosen, reason)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                log.error("buffer %s: could not drop messages: %s", self.settings.path, exc)
                break
            total += len(chosen)
            self.backlog -= len(chosen)
            self._dropped_total += len(chosen)
            excess -= max(before - self._measure(), 1)
        if total:
            log.warning(
                "buffer %s: dropped %d messages (%s); a gap event says which",
                self.settings.path,
                total,
                reason,
            )
        return total

    def _candidates(self, excess: int) -> list[Candidate]:
        cands: list[Candidate] = []
        got = 0
        for cls in DROP_ORDER:
            # A literal class, so that SQLite uses the partial index of telemetry.
            cur = self._conn.execute(
                "SELECT id, seq, length(topic) + length(body), created FROM outbox "
                f"WHERE cls = {int(cls)} ORDER BY id LIMIT {_CANDIDATES}"
            )
            found = 0
            for rid, seq, size, created in cur:
                cands.append(Candidate(rid, cls, seq, size + _ROW_OVERHEAD, created))
                got += size + _ROW_OVERHEAD
                found += 1
            # A class is looked past only once it is empty: the next round picks up the rest.
            if got >= excess or found == _CANDIDATES:
                break
        return cands

    def _record_gap(self, dropped: list[Candidate], reason: str) -> None:
        """Merge into the newest gap event if the uplink has not read it yet, else a new one."""
        conn = self._conn
        raw = meta_get(conn, "open_gap")
        with self.handout_lock:
            existing, gap_id = None, None
            if raw is not None:
                saved = json.loads(raw)
                alive = conn.execute(
                    "SELECT seq FROM outbox WHERE id = ?", (saved["id"],)
                ).fetchone()
                if alive is not None and saved["id"] > self._handed_out:
                    existing, gap_id, gap_seq = GapInfo(**saved["gap"]), saved["id"], alive[0]
            gap = merge_gap(existing, dropped, reason)
            rest = encode_body(gap.payload())
            if gap_id is None:
                rows: list[tuple[Any, ...]] = []
                self._prepare(
                    [(self.settings.event_topic, rest, 1, int(MessageClass.GAP))],
                    rows,
                    time.time(),
                    self.link_epoch,
                )
                conn.executemany("INSERT INTO outbox VALUES (?,?,?,?,?,?,?,?,?)", rows)
                gap_id = rows[0][0]
                meta_set(conn, "last_seq", self.next_seq - 1)
                meta_set(conn, "last_id", self._next_id - 1)
                self.backlog += 1
                self._gaps_total += 1
                meta_set(conn, "gaps_total", self._gaps_total)
            else:
                head = self._heads()[1] % gap_seq
                conn.execute(
                    "UPDATE outbox SET body = ?, splice = ? WHERE id = ?",
                    (head + rest, len(head), gap_id),
                )
            meta_set(conn, "open_gap", json.dumps({"id": gap_id, "gap": dataclasses.asdict(gap)}))
            meta_set(conn, "dropped_total", self._dropped_total + len(dropped))

    def _note_handout(self, upto: int) -> None:
        if upto > self._handed_out:
            self._handed_out = upto
