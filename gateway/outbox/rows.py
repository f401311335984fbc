"""The writer's connection and what it numbers: opening the database (schema, seq and id
resumed safely), row building with the stored JSON heads, durable seq reservation, used size.

Used by the writer thread only (writer.py, and drop.py inside its transactions).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.outbox.messages import OutboxSettings
from gateway.outbox.pending import Item
from gateway.outbox.policy import MessageClass
from gateway.outbox.schema import meta_get, meta_set, migrate, migrate_in_child

__all__ = ["CACHE_KIB", "INSERT_SQL", "PAGE_SIZE", "RowStore", "open_rows"]

log = logging.getLogger("ironwatt.buffer")

PAGE_SIZE = 16384  # of a new database
# Page cache per connection, KiB (SQLite's default is 2,000). Appends touch the rightmost pages,
# the uplink reads in id order: 32 pages of 16 KiB serve both at the same rate (bench/buffer.py),
# and the writer and each reader hold 1.5 MB less for as long as the daemon runs.
CACHE_KIB = 512
INSERT_SQL = "INSERT INTO outbox VALUES (?,?,?,?,?,?,?,?,?)"
# Each seq reservation is an fsync'd commit even under `normal`. A block used up faster than
# this asks for twice as many numbers next time (up to _MAX_BLOCKS x seq_block), so a burst
# costs few fsyncs while a power cut's hole stays about what ~10 s of that rate would use.
_FAST_BLOCK_S = 10.0
_MAX_BLOCKS = 100

Numbering = tuple[int, int]  # (next_seq, next_id): what a failed transaction gives back


class RowStore:
    """The writer's connection and the numbers it hands out (`open_rows` makes one)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        settings: OutboxSettings,
        stream: str,
        session: int,
        next_seq: int,
        next_id: int,
    ) -> None:
        self.conn = conn
        self.settings = settings
        self.stream = stream
        self.session = session  # grows at every open, durably: part of the link epoch
        self.next_seq = next_seq
        self.next_id = next_id
        self.reserved = next_seq - 1 + settings.seq_block  # committed by open_rows
        self._block = settings.seq_block  # size of the last reservation
        self._reserved_at = time.monotonic()

    def mark(self) -> Numbering:
        return self.next_seq, self.next_id

    def rewind(self, mark: Numbering) -> None:
        """The transaction that used these numbers rolled back: nothing was stored with them."""
        self.next_seq, self.next_id = mark

    @contextlib.contextmanager
    def synced(self) -> Iterator[None]:
        """One fsync'd commit even under `normal` (WAL sync covers every earlier frame too)."""
        self.conn.execute("PRAGMA synchronous=FULL")
        try:
            yield
        finally:
            self.conn.execute(f"PRAGMA synchronous={_sync_mode(self.settings)}")

    def measure(self) -> int:
        conn = self.conn
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def prepare(
        self, items: list[Item], rows: list[tuple[Any, ...]], now: float, epoch: int
    ) -> list[int | None]:
        tele_head, seq_fmt = self.heads()
        seqs: list[int | None] = []
        append, tele = rows.append, int(MessageClass.TELEMETRY)
        seq, rid = self.next_seq, self.next_id
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
        self.next_seq, self.next_id = seq, rid
        return seqs

    def heads(self) -> tuple[bytes, bytes]:
        """The stored JSON's common fields: for telemetry, and a %-template for a seq."""
        common = (
            b',"gw":'
            + json.dumps(self.settings.gw_id).encode()
            + b',"site":'
            + json.dumps(self.settings.site).encode()
        )
        head = b'{"v":1,"stream":"' + self.stream.encode() + b'","seq":'
        return b'{"v":1' + common, head.replace(b"%", b"%%") + b"%d" + common.replace(b"%", b"%%")

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert prepared rows and the seq/id high-water marks, inside the caller's transaction."""
        self.conn.executemany(INSERT_SQL, rows)
        meta_set(self.conn, "last_seq", self.next_seq - 1)
        meta_set(self.conn, "last_id", self.next_id - 1)

    def delete(self, ids: list[int]) -> int:
        """Delete acknowledged rows inside the caller's transaction; how many went."""
        cur = self.conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
        return max(cur.rowcount, 0)

    def reserve_if_needed(self) -> None:
        """Before a commit uses numbers past the reserved block: reserve more, durably."""
        if self.next_seq - 1 > self.reserved:
            self._reserve_ahead()

    def _reserve_ahead(self) -> None:
        """Reserve numbers past the ones just assigned, in a block sized to the current rate."""
        now, base = time.monotonic(), self.settings.seq_block
        fast = now - self._reserved_at < _FAST_BLOCK_S
        self._block = min(self._block * 2, base * _MAX_BLOCKS) if fast else base
        self.reserve(self.next_seq - 1 + self._block)
        self._reserved_at = now

    def reserve(self, upto: int) -> None:
        with self.synced():
            self.conn.execute("BEGIN IMMEDIATE")
            meta_set(self.conn, "reserved_seq", upto)
            self.conn.execute("COMMIT")
        self.reserved = upto


def _sync_mode(settings: OutboxSettings) -> str:
    return "FULL" if settings.durability == "full" else "NORMAL"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def open_rows(settings: OutboxSettings) -> RowStore:
    """The writer's connection: schema brought up to date, seq and id resumed where it is safe,
    a new session recorded (fsync'd). The caller holds the process lock."""
    conn = sqlite3.connect(settings.path, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        return _open(conn, settings)
    except BaseException:
        conn.close()
        raise


def _open(conn: sqlite3.Connection, settings: OutboxSettings) -> RowStore:
    # Only a new database takes it (before its first table; WAL fixes it after): 16 KiB
    # pages hold ~40 messages each, which costs the insert path about a quarter less CPU
    # than 4 KiB pages. An existing database keeps its page size.
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    if settings.migrate_in_child:
        migrate_in_child(conn, settings.path)
    else:
        migrate(conn)
    if settings.max_page_count is not None:
        conn.execute(f"PRAGMA max_page_count={int(settings.max_page_count)}")
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
            settings.path,
            reserved + 1,
            reserved - last_seq,
        )
        last_seq = reserved
    rows = RowStore(
        conn,
        settings,
        stream=meta_get(conn, "stream") or "",
        session=int(meta_get(conn, "session") or 0) + 1,
        next_seq=last_seq + 1,
        next_id=max(int(meta_get(conn, "last_id") or 0), top[1] or 0) + 1,
    )
    with rows.synced():
        conn.execute("BEGIN IMMEDIATE")
        for key, value in (
            ("clean", 0),
            ("boot_id", _boot_id()),
            ("session", rows.session),
            ("durability", settings.durability),
            ("last_seq", last_seq),
            ("reserved_seq", rows.reserved),
        ):
            meta_set(conn, key, value)
        conn.execute("COMMIT")
    conn.execute(f"PRAGMA synchronous={_sync_mode(settings)}")
    return rows
