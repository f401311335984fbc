"""The outbox's rows as the writer builds them: seq and id assignment, the stored JSON heads,
durable seq reservation, and the used-size measure. Base of the writer (buffer_writer.py).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.outbox.messages import OutboxSettings
from gateway.outbox.policy import MessageClass
from gateway.outbox.schema import meta_set

__all__ = ["INSERT_SQL", "Fut", "PendingPut", "RowStore"]

INSERT_SQL = "INSERT INTO outbox VALUES (?,?,?,?,?,?,?,?,?)"
# Each seq reservation is an fsync'd commit even under `normal`. A block used up faster than
# this asks for twice as many numbers next time (up to _MAX_BLOCKS x seq_block), so a burst
# costs few fsyncs while a power cut's hole stays about what ~10 s of that rate would use.
_FAST_BLOCK_S = 10.0
_MAX_BLOCKS = 100
Fut = concurrent.futures.Future


@dataclasses.dataclass(slots=True)
class PendingPut:
    items: list[tuple[str, bytes, int, int]]  # topic, encoded rest, qos, cls
    future: concurrent.futures.Future[list[int | None]]


class RowStore:
    """State and row building shared by the writer's parts (the Outbox sets every attribute)."""

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
    _block: int  # size of the last reservation
    _reserved_at: float  # monotonic time of the last reservation
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

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert prepared rows and the seq/id high-water marks, inside the caller's transaction."""
        self._conn.executemany(INSERT_SQL, rows)
        meta_set(self._conn, "last_seq", self.next_seq - 1)
        meta_set(self._conn, "last_id", self._next_id - 1)

    def _reserve_ahead(self) -> None:
        """Reserve numbers past the ones just assigned, in a block sized to the current rate."""
        now, base = time.monotonic(), self.settings.seq_block
        fast = now - self._reserved_at < _FAST_BLOCK_S
        self._block = min(self._block * 2, base * _MAX_BLOCKS) if fast else base
        self._reserve(self.next_seq - 1 + self._block)
        self._reserved_at = now

    def _reserve(self, upto: int) -> None:
        with self._synced():
            self._conn.execute("BEGIN IMMEDIATE")
            meta_set(self._conn, "reserved_seq", upto)
            self._conn.execute("COMMIT")
        self._reserved = upto
