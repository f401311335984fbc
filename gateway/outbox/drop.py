"""The size cap at work: choose what to drop (policy.py), delete it and record the gap event in
the same transaction, merging into the newest gap the uplink has not read yet.

Runs in the writer thread, on the writer's RowStore.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import threading
import time
from typing import Any

from gateway.outbox.epoch import LinkEpoch
from gateway.outbox.messages import encode_body
from gateway.outbox.policy import DROP_ORDER, Candidate, GapInfo, MessageClass, merge_gap, plan_drop
from gateway.outbox.rows import RowStore
from gateway.outbox.schema import meta_get, meta_set

__all__ = ["ROW_OVERHEAD", "Dropper", "Handout"]

log = logging.getLogger("ironwatt.buffer")

ROW_OVERHEAD = 40  # bytes a row costs beyond its topic and body (header, id, seq, index entry)
_CANDIDATES = 2000  # rows looked at per class and round of dropping


class Handout:
    """How far the uplink has read: a gap row past `upto` may still be edited, none before it
    (a resend must be identical). Readers move it under `lock`; the dropper reads it there."""

    __slots__ = ("lock", "upto")

    def __init__(self, upto: int) -> None:
        self.lock = threading.Lock()
        self.upto = upto

    def note(self, upto: int) -> None:
        if upto > self.upto:
            self.upto = upto


class Dropper:
    """Drops per policy until enough room is free; keeps the drop counters (in meta too)."""

    def __init__(self, rows: RowStore, handout: Handout, epoch: LinkEpoch) -> None:
        self._rows = rows
        self._handout = handout
        self._epoch = epoch
        self.gaps_total = int(meta_get(rows.conn, "gaps_total") or 0)
        self.dropped_total = int(meta_get(rows.conn, "dropped_total") or 0)

    def drop(self, excess: int, reason: str) -> int:
        """Drop until `excess` bytes of pages are free; returns how many rows fewer there are
        (the messages dropped less the gap events added)."""
        rows = self._rows
        conn, settings = rows.conn, rows.settings
        dropped = fewer = 0
        for _ in range(50):
            if excess <= 0:
                break
            before = rows.measure()
            chosen = plan_drop(self._candidates(excess), excess)
            if not chosen:
                log.error(
                    "buffer %s: over its %s but only gap events are left", settings.path, reason
                )
                break
            mark = rows.mark()
            try:
                if rows.next_seq >= rows.reserved:  # the gap event may need a number
                    rows.reserve(rows.next_seq + settings.seq_block)
                # The uplink must not read the gap row between its update and the COMMIT: it
                # would publish the old text, and a resend would then differ from it.
                with self._handout.lock:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany("DELETE FROM outbox WHERE id = ?", [(c.id,) for c in chosen])
                    new_gap = self._record_gap(chosen, reason)
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                rows.rewind(mark)
                log.error("buffer %s: could not drop messages: %s", settings.path, exc)
                break
            dropped += len(chosen)
            fewer += len(chosen) - new_gap
            self.gaps_total += new_gap
            self.dropped_total += len(chosen)
            excess -= max(before - rows.measure(), 1)
        if dropped:
            log.warning(
                "buffer %s: dropped %d messages (%s); a gap event says which",
                settings.path,
                dropped,
                reason,
            )
        return fewer

    def _candidates(self, excess: int) -> list[Candidate]:
        cands: list[Candidate] = []
        got = 0
        for cls in DROP_ORDER:
            # A literal class, so that SQLite uses the partial index of telemetry.
            cur = self._rows.conn.execute(
                "SELECT id, seq, length(topic) + length(body), created FROM outbox "
                f"WHERE cls = {int(cls)} ORDER BY id LIMIT {_CANDIDATES}"
            )
            found = 0
            for rid, seq, size, created in cur:
                cands.append(Candidate(rid, cls, seq, size + ROW_OVERHEAD, created))
                got += size + ROW_OVERHEAD
                found += 1
            # A class is looked past only once it is empty: the next round picks up the rest.
            if got >= excess or found == _CANDIDATES:
                break
        return cands

    def _record_gap(self, dropped: list[Candidate], reason: str) -> int:
        """Merge into the newest gap event if the uplink has not read it yet, else add one.

        Runs inside the drop's transaction, under the handout lock; returns 1 if a row was added.
        """
        rows = self._rows
        conn = rows.conn
        raw = meta_get(conn, "open_gap")
        existing, gap_id, gap_seq = None, None, 0
        if raw is not None:
            saved = json.loads(raw)
            alive = conn.execute("SELECT seq FROM outbox WHERE id = ?", (saved["id"],)).fetchone()
            if alive is not None and saved["id"] > self._handout.upto:
                existing, gap_id, gap_seq = GapInfo(**saved["gap"]), saved["id"], alive[0]
        gap = merge_gap(existing, dropped, reason)
        rest = encode_body(gap.payload())
        added = 0
        if gap_id is None:
            new: list[tuple[Any, ...]] = []
            rows.prepare(
                [(rows.settings.event_topic, rest, 1, int(MessageClass.GAP))],
                new,
                time.time(),
                self._epoch.value,
            )
            rows.insert(new)
            gap_id, added = new[0][0], 1
            meta_set(conn, "gaps_total", self.gaps_total + 1)
        else:
            head = rows.heads()[1] % gap_seq
            conn.execute(
                "UPDATE outbox SET body = ?, splice = ? WHERE id = ?",
                (head + rest, len(head), gap_id),
            )
        meta_set(conn, "open_gap", json.dumps({"id": gap_id, "gap": dataclasses.asdict(gap)}))
        meta_set(conn, "dropped_total", self.dropped_total + len(dropped))
        return added
