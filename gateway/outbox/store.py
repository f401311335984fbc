"""The SQLite outbox: every outgoing message is committed here, with its seq, before it is sent.

One writer thread (buffer_writer.py) owns every write: batched transactions, a bounded queue, the
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
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from gateway.errors import OutboxBusy, OutboxClosed, OutboxLocked
from gateway.outbox.messages import Message, OutboxSettings, OutboxStats, Row, encode_body
from gateway.outbox.policy import MessageClass
from gateway.outbox.rows import Fut, PendingPut
from gateway.outbox.schema import meta_get, meta_set, migrate, migrate_in_child
from gateway.outbox.writer import Writer

PAGE_SIZE = 16384  # of a new database
# Page cache per connection, KiB (SQLite's default is 2,000). Appends touch the rightmost pages,
# the uplink reads in id order: 32 pages of 16 KiB serve both at the same rate (bench/buffer.py),
# and the writer and each reader hold 1.5 MB less for as long as the daemon runs.
CACHE_KIB = 512

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


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class Outbox(Writer):
    """The durable queue between the daemon and the uplink. Thread-safe; close() when done."""

    def __init__(self, settings: OutboxSettings) -> None:
        self.settings = settings
        settings.path.parent.mkdir(parents=True, exist_ok=True)
        self._cv = threading.Condition()
        self._puts: deque[PendingPut] = deque()
        self._acks: list[int] = []
        self._calls: deque[tuple[Callable[[sqlite3.Connection], Any], Fut[Any]]] = deque()
        self._closing = False
        self._listeners: list[Callable[[], None]] = []
        # Rows the uplink has read (possibly published): a gap row past this may still be edited.
        self.handout_lock = threading.Lock()
        self._handed_out = 0
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._pressure: str | None = None
        self._pressure_since = 0.0
        self._near_cap = False
        self._pending_events: list[tuple[str, bytes, int, int]] = []
        self._link_transitions = 0
        self._lock_fd = _lock(settings.path)
        try:
            self._conn = self._connect()
            try:
                self._open_session()
            except BaseException:
                self._conn.close()
                raise
        except BaseException:
            os.close(self._lock_fd)
            raise
        self.used_bytes = self._measure()
        self._writer = threading.Thread(target=self._run, name="ironwatt-outbox", daemon=True)
        self._writer.start()

    # -- opening ------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.settings.path, isolation_level=None, check_same_thread=False, timeout=30
        )
        # Only a new database takes it (before its first table; WAL fixes it after): 16 KiB
        # pages hold ~40 messages each, which costs the insert path about a quarter less CPU
        # than 4 KiB pages. An existing database keeps its page size.
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        return conn

    def _open_session(self) -> None:
        conn = self._conn
        if self.settings.migrate_in_child:
            migrate_in_child(conn, self.settings.path)
        else:
            migrate(conn)
        if self.settings.max_page_count is not None:
            conn.execute(f"PRAGMA max_page_count={int(self.settings.max_page_count)}")
        self.stream = meta_get(conn, "stream") or ""
        last_seq = int(meta_get(conn, "last_seq") or 0)
        reserved = int(meta_get(conn, "reserved_seq") or 0)
        trusted = (
            meta_get(conn, "clean") == "1"
            or meta_get(conn, "durability") == "full"
            or meta_get(conn, "boot_id") == _boot_id()
        )
        # The table may hold seqs past last_seq only if meta was lost with them: be safe.
        top = conn.execute("SELECT MAX(seq), MAX(id) FROM outbox").fetchone()
        last_seq = max(last_seq, top[0] or 0)
        if not trusted and reserved > last_seq:
            # An OS crash or power cut under `normal`: numbers past last_seq may have been sent.
            log.warning(
                "buffer %s: unclean shutdown under durability=normal; seq resumes at %d "
                "(a hole of %d numbers, never a reuse)",
                self.settings.path,
                reserved + 1,
                reserved - last_seq,
            )
            last_seq = reserved
        self.next_seq = last_seq + 1
        self._next_id = max(int(meta_get(conn, "last_id") or 0), top[1] or 0) + 1
        self._session = int(meta_get(conn, "session") or 0) + 1
        self._reserved = last_seq + self.settings.seq_block
        self._block, self._reserved_at = self.settings.seq_block, time.monotonic()
        self._gaps_total = int(meta_get(conn, "gaps_total") or 0)
        self._dropped_total = int(meta_get(conn, "dropped_total") or 0)
        with self._synced():
            conn.execute("BEGIN IMMEDIATE")
            for key, value in (
                ("clean", 0),
                ("boot_id", _boot_id()),
                ("session", self._session),
                ("durability", self.settings.durability),
                ("last_seq", last_seq),
                ("reserved_seq", self._reserved),
            ):
                meta_set(conn, key, value)
            conn.execute("COMMIT")
        sync = "FULL" if self.settings.durability == "full" else "NORMAL"
        conn.execute(f"PRAGMA synchronous={sync}")
        self.backlog = int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        # Rows written by an earlier process may have been published: never edit them.
        self._handed_out = self._next_id - 1

    # -- the public API ---------------------------------------------------------------------

    @property
    def link_up(self) -> bool:
        return self._link_transitions % 2 == 1

    def set_link(self, up: bool) -> None:
        """The uplink says it (dis)connected: rows stored from now on carry the new epoch."""
        if up != self.link_up:
            self._link_transitions += 1

    def is_live(self, row: Row) -> bool:
        """Stored while connected and no disconnect since: `replayed` is false."""
        return self.link_up and row.epoch == self.link_epoch

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called from the writer thread after every commit that stored messages."""
        # Copy on write: the writer iterates the list without a lock.
        self._listeners = [*self._listeners, callback]

    def remove_listener(self, callback: Callable[[], None]) -> None:
        self._listeners = [cb for cb in self._listeners if cb != callback]

    def submit(
        self, messages: Iterable[Message], block: bool = True, timeout: float | None = None
    ) -> concurrent.futures.Future[list[int | None]]:
        """Queue messages for the next commit; the future gives their seqs (None: telemetry).

        Blocks while the writer is `max_pending` batches behind (backpressure); with
        block=False raises OutboxBusy instead.
        """
        items: list[tuple[str, bytes, int, int]] = []
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
        fut: concurrent.futures.Future[list[int | None]] = concurrent.futures.Future()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while len(self._puts) >= self.settings.max_pending and not self._closing:
                if not block:
                    raise OutboxBusy(f"buffer {self.settings.path}: writer queue full")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise OutboxBusy(f"buffer {self.settings.path}: writer queue full")
                self._cv.wait(left)
            if self._closing:
                raise OutboxClosed(f"outbox {self.settings.path} is closed")
            self._puts.append(PendingPut(items, fut))
            self._cv.notify_all()
        return fut

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
        with self._cv:
            self._acks.extend(ids)
            self._cv.notify_all()

    def call(self, fn: Callable[[sqlite3.Connection], Any]) -> concurrent.futures.Future[Any]:
        """Run fn(conn) in the writer thread, inside a transaction when it writes."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._cv:
            if self._closing or not self._writer.is_alive():
                fut.set_exception(OutboxClosed(f"outbox {self.settings.path} is closed"))
                return fut
            self._calls.append((fn, fut))
            self._cv.notify_all()
        return fut

    def flush(self, timeout: float | None = 10.0) -> None:
        """Wait until everything submitted or acked so far is committed."""
        self.call(lambda conn: None).result(timeout)

    def sync(self, timeout: float | None = 30.0) -> None:
        """Make every commit so far durable (one fsync), whatever the durability setting."""

        def synced_commit(conn: sqlite3.Connection) -> None:
            with self._synced():
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
        return OutboxReader(self, self._new_reader())

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
        return OutboxStats(
            stream=self.stream,
            backlog=self.backlog,
            used_bytes=self.used_bytes,
            max_size_bytes=self.settings.max_size_bytes,
            oldest_created=oldest,
            oldest_age_s=None if oldest is None else max(0.0, time.time() - oldest),
            first_seq=seqs[0],
            last_seq=seqs[1],
            next_seq=self.next_seq,
            dropped_total=self._dropped_total,
            gaps_total=self._gaps_total,
            pressure=self._pressure or ("near_cap" if self._near_cap else None),
            pending_batches=len(self._puts),
        )

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued (unless the disk refuses), mark a clean shutdown, stop."""
        with self._cv:
            if self._closing:
                return
            self._closing = True
            self._cv.notify_all()
        self._writer.join(timeout)
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        if not self._writer.is_alive():  # the writer may still commit: keep the lock until then
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

    def __init__(self, outbox: Outbox, conn: sqlite3.Connection) -> None:
        self._outbox = outbox
        self._conn = conn

    def fetch(self, after_id: int, limit: int) -> list[Row]:
        """Up to `limit` rows with id > after_id, oldest first."""
        with self._outbox.handout_lock:
            rows = [
                Row(*r)
                for r in self._conn.execute(
                    "SELECT id, seq, topic, body, splice, qos, cls, created, epoch FROM outbox "
                    "WHERE id > ? ORDER BY id LIMIT ?",
                    (after_id, limit),
                )
            ]
            if rows:
                self._outbox._note_handout(rows[-1].id)
        return rows

    def oldest_created(self) -> float | None:
        row = self._conn.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
        return None if row is None else float(row[0])

    def close(self) -> None:
        self._conn.close()


def open_outbox(settings: OutboxSettings) -> Outbox:
    """Open (creating or migrating) the outbox database and start its writer."""
    return Outbox(settings)
