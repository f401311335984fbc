"""The SQLite outbox: every outgoing message is committed here, with its seq, before it is sent.

One writer thread (writer.py) owns every write: batched transactions from a bounded queue, the
size cap and drop policy; readers (the uplink, stats) use their own connections.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from gateway.errors import OutboxBusy, OutboxLocked
from gateway.outbox.drop import Dropper, Handout
from gateway.outbox.epoch import LinkEpoch
from gateway.outbox.messages import Message, OutboxSettings, OutboxStats, Row, encode_body
from gateway.outbox.pending import Item, WriteQueue
from gateway.outbox.policy import MessageClass
from gateway.outbox.rows import CACHE_KIB, open_rows
from gateway.outbox.schema import meta_set
from gateway.outbox.writer import Writer

log = logging.getLogger("ironwatt.buffer")

__all__ = [
    "Message",
    "MessageClass",
    "Outbox",
    "OutboxReader",
    "OutboxSettings",
    "OutboxStats",
    "open_outbox",
]


def _lock(path: Path) -> int:
    """An exclusive advisory lock beside the database, held while the outbox is open."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise OutboxLocked(
            f"buffer {path} is in use by another gateway process (pid {holder}); stop it first "
            "(`ironwatt buffer stats/export` can read a buffer in use)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class Outbox:
    """The durable queue between the daemon and the uplink. Thread-safe; close() when done.

    The face of the writer thread (writer.py), which owns the database connection; readers
    (the uplink, stats) have connections of their own.
    """

    def __init__(self, settings: OutboxSettings) -> None:
        self.settings = settings
        settings.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._lock_fd = _lock(settings.path)
        try:
            rows = open_rows(settings)
            try:
                self.stream = rows.stream
                self._epoch = LinkEpoch(rows.session)
                # Rows written by an earlier process may have been published: never edit them.
                self._handout = Handout(rows.next_id - 1)
                self._queue = WriteQueue(settings.path, settings.max_pending)
                dropper = Dropper(rows, self._handout, self._epoch)
                self._writer = Writer(rows, self._queue, dropper, self._epoch)
            except BaseException:
                rows.conn.close()
                raise
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._writer.thread.start()

    # -- the public API ---------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Messages stored and not yet acknowledged (gap events included)."""
        return self._writer.backlog

    @property
    def link_epoch(self) -> int:
        """Changes at every connect and disconnect of the uplink, and at every process start."""
        return self._epoch.value

    @property
    def link_up(self) -> bool:
        return self._epoch.up

    def set_link(self, up: bool) -> None:
        """The uplink says it (dis)connected: rows stored from now on carry the new epoch."""
        self._epoch.set(up)

    def is_live(self, row: Row) -> bool:
        """Stored while connected and no disconnect since: `replayed` is false."""
        return row.epoch == self._epoch.live

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called from the writer thread after every commit that stored messages."""
        # Copy on write: the writer iterates the list without a lock.
        self._writer.listeners = [*self._writer.listeners, callback]

    def remove_listener(self, callback: Callable[[], None]) -> None:
        self._writer.listeners = [cb for cb in self._writer.listeners if cb != callback]

    def submit(
        self, messages: Iterable[Message], block: bool = True, timeout: float | None = None
    ) -> concurrent.futures.Future[list[int | None]]:
        """Queue messages for the next commit; the future gives their seqs (None: telemetry).

        Blocks while the writer is `max_pending` batches behind (backpressure); with
        block=False raises OutboxBusy instead.
        """
        items: list[Item] = []
        append, telemetry = items.append, MessageClass.TELEMETRY
        for msg in messages:
            cls, body, qos = msg.cls, msg.body, msg.qos
            if qos != 1 and cls != telemetry:
                raise ValueError(f"{msg.topic}: windows and events are published at QoS 1")
            # The hot path inline: a compact pre-serialized object (`{"` ... `}`, as the daemon
            # builds them) needs one slice and one concatenation, not encode_body's checks.
            if type(body) is bytes and body[:2] == b'{"' and body[-1:] == b"}":
                append((msg.topic, b"," + body[1:], qos, int(cls)))
            else:
                append((msg.topic, encode_body(body), qos, int(cls)))
        return self._queue.put(items, block, timeout)

    def enqueue(
        self, messages: Iterable[Message], timeout: float | None = None
    ) -> list[int | None]:
        """Store messages and wait for the commit; returns their seqs."""
        return self.submit(messages, timeout=timeout).result(timeout)

    async def aenqueue(self, messages: Sequence[Message]) -> list[int | None]:
        """Store messages without blocking the event loop; returns once they are committed."""
        try:
            fut = self.submit(messages, block=False)
        except OutboxBusy:
            loop = asyncio.get_running_loop()
            fut = await loop.run_in_executor(None, lambda: self.submit(messages))
        return await asyncio.wrap_future(fut)

    def ack(self, ids: Iterable[int]) -> None:
        """The broker has them: delete (batched with the next commit). Never blocks."""
        self._queue.ack(ids)

    def call(self, fn: Callable[[sqlite3.Connection], Any]) -> concurrent.futures.Future[Any]:
        """Run fn(conn) in the writer thread, inside a transaction when it writes."""
        return self._queue.call(fn, self._writer.thread.is_alive())

    def flush(self, timeout: float | None = 10.0) -> None:
        """Wait until everything submitted or acked so far is committed."""
        self.call(lambda conn: None).result(timeout)

    def sync(self, timeout: float | None = 30.0) -> None:
        """Make every commit so far durable (one fsync), whatever the durability setting."""
        synced = self._writer.rows.synced

        def synced_commit(conn: sqlite3.Connection) -> None:
            with synced():
                conn.execute("BEGIN IMMEDIATE")
                meta_set(conn, "synced_at", time.time())
                conn.execute("COMMIT")

        self.call(synced_commit).result(timeout)

    def limit_pages(self, pages: int | None) -> None:
        """Set SQLite's max_page_count on the writer (None: as large as SQLite allows)."""
        value = 4294967294 if pages is None else int(pages)
        self.call(lambda conn: conn.execute(f"PRAGMA max_page_count={value}")).result(10)

    def reader(self) -> OutboxReader:
        """A read connection for the calling thread (the uplink's)."""
        return OutboxReader(self._handout, self._new_reader())

    def oldest_age_s(self) -> float:
        """Age of the oldest message waiting (0 when none): `status.lag_s`."""
        row = (
            self._reader_conn().execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
        )
        return 0.0 if row is None else max(0.0, time.time() - float(row[0]))

    def stats(self) -> OutboxStats:
        conn = self._reader_conn()
        first = conn.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
        seqs = conn.execute(
            "SELECT (SELECT seq FROM outbox WHERE seq IS NOT NULL ORDER BY id LIMIT 1),"
            " (SELECT seq FROM outbox WHERE seq IS NOT NULL ORDER BY id DESC LIMIT 1)"
        ).fetchone()
        oldest = None if first is None else float(first[0])
        writer = self._writer
        return OutboxStats(
            stream=self.stream,
            backlog=writer.backlog,
            used_bytes=writer.used_bytes,
            max_size_bytes=self.settings.max_size_bytes,
            oldest_created=oldest,
            oldest_age_s=None if oldest is None else max(0.0, time.time() - oldest),
            first_seq=seqs[0],
            last_seq=seqs[1],
            next_seq=writer.rows.next_seq,
            dropped_total=writer.dropper.dropped_total,
            gaps_total=writer.dropper.gaps_total,
            pressure=writer.pressure or ("near_cap" if writer.near_cap else None),
            pending_batches=len(self._queue),
        )

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued (unless the disk refuses), mark a clean shutdown, stop."""
        if not self._queue.close():
            return
        self._writer.thread.join(timeout)
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        if not self._writer.thread.is_alive():  # it may still commit: keep the lock until then
            os.close(self._lock_fd)

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- readers ------------------------------------------------------------------------------

    def _new_reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.settings.path, isolation_level=None, check_same_thread=False, timeout=30
        )
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        with self._readers_lock:
            self._readers.append(conn)
        return conn

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._new_reader()
            self._local.conn = conn
        return conn


class OutboxReader:
    """The uplink's view: the oldest rows in publish order. One thread per reader."""

    def __init__(self, handout: Handout, conn: sqlite3.Connection) -> None:
        self._handout = handout
        self._conn = conn

    def fetch(self, after_id: int, limit: int) -> list[Row]:
        """Up to `limit` rows with id > after_id, oldest first."""
        handout = self._handout
        with handout.lock:
            rows = [
                Row(*r)
                for r in self._conn.execute(
                    "SELECT id, seq, topic, body, splice, qos, cls, created, epoch FROM outbox "
                    "WHERE id > ? ORDER BY id LIMIT ?",
                    (after_id, limit),
                )
            ]
            if rows:
                handout.note(rows[-1].id)
        return rows

    def oldest_created(self) -> float | None:
        row = self._conn.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
        return None if row is None else float(row[0])

    def close(self) -> None:
        self._conn.close()


def open_outbox(settings: OutboxSettings) -> Outbox:
    """Open (creating or migrating) the outbox database and start its writer."""
    return Outbox(settings)
