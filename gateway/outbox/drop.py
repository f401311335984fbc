"""The size cap at work: choose what to drop (buffer_policy), delete it and record the gap event
in the same transaction, merging into the newest gap the uplink has not read yet.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import time
from typing import Any

from gateway.outbox.messages import encode_body
from gateway.outbox.policy import DROP_ORDER, Candidate, GapInfo, MessageClass, merge_gap, plan_drop
from gateway.outbox.rows import RowStore
from gateway.outbox.schema import meta_get, meta_set

__all__ = ["Dropping"]

log = logging.getLogger("ironwatt.buffer")

ROW_OVERHEAD = 40  # bytes a row costs beyond its topic and body (header, id, seq, index entry)
_CANDIDATES = 2000  # rows looked at per class and round of dropping


class Dropping(RowStore):
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
            saved = (self.next_seq, self._next_id)
            try:
                if self.next_seq >= self._reserved:  # the gap event may need a number
                    self._reserve(self.next_seq + self.settings.seq_block)
                # The uplink must not read the gap row between its update and the COMMIT: it
                # would publish the old text, and a resend would then differ from it.
                with self.handout_lock:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany("DELETE FROM outbox WHERE id = ?", [(c.id,) for c in chosen])
                    new_gap = self._record_gap(chosen, reason)
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self.next_seq, self._next_id = saved
                log.error("buffer %s: could not drop messages: %s", self.settings.path, exc)
                break
            total += len(chosen)
            self.backlog -= len(chosen) - new_gap
            self._gaps_total += new_gap
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
                cands.append(Candidate(rid, cls, seq, size + ROW_OVERHEAD, created))
                got += size + ROW_OVERHEAD
                found += 1
            # A class is looked past only once it is empty: the next round picks up the rest.
            if got >= excess or found == _CANDIDATES:
                break
        return cands

    def _record_gap(self, dropped: list[Candidate], reason: str) -> int:
        """Merge into the newest gap event if the uplink has not read it yet, else add one.

        Runs inside the drop's transaction, under handout_lock; returns 1 if a row was added.
        """
        conn = self._conn
        raw = meta_get(conn, "open_gap")
        existing, gap_id, gap_seq = None, None, 0
        if raw is not None:
            saved = json.loads(raw)
            alive = conn.execute("SELECT seq FROM outbox WHERE id = ?", (saved["id"],)).fetchone()
            if alive is not None and saved["id"] > self._handed_out:
                existing, gap_id, gap_seq = GapInfo(**saved["gap"]), saved["id"], alive[0]
        gap = merge_gap(existing, dropped, reason)
        rest = encode_body(gap.payload())
        added = 0
        if gap_id is None:
            rows: list[tuple[Any, ...]] = []
            self._prepare(
                [(self.settings.event_topic, rest, 1, int(MessageClass.GAP))],
                rows,
                time.time(),
                self.link_epoch,
            )
            self._insert(rows)
            gap_id, added = rows[0][0], 1
            meta_set(conn, "gaps_total", self._gaps_total + 1)
        else:
            head = self._heads()[1] % gap_seq
            conn.execute(
                "UPDATE outbox SET body = ?, splice = ? WHERE id = ?",
                (head + rest, len(head), gap_id),
            )
        meta_set(conn, "open_gap", json.dumps({"id": gap_id, "gap": dataclasses.asdict(gap)}))
        meta_set(conn, "dropped_total", self._dropped_total + len(dropped))
        return added

    def _note_handout(self, upto: int) -> None:
        if upto > self._handed_out:
            self._handed_out = upto
