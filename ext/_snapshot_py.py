"""The kernel snapshot codec of the pure-Python twin: point state to bytes and back.

The format is ext/_layout.py's (docs/kernel.md); ext/_snapshot.pyx is the compiled codec and
writes the same bytes. Which points a snapshot resumes is the kernel's decision, not the codec's.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from ext._layout import (
    ACC_FIELDS,
    BLOCK,
    COUNT,
    CRC,
    CRC_AT,
    CRC_END,
    CSTART_AT,
    F64,
    GAUGE,
    HEAD,
    KERNEL_SNAPSHOT_VERSION,
    KEY_LEN,
    MAGIC,
    corrupt,
    snapshot_structs,
)
from ext._state_py import Point, Queued, QueuedBlock

__all__ = ["SnapshotCodec", "cstart_at"]

_NAN = float("nan")


def cstart_at(view: memoryview, at: int) -> float:
    """The open cell's start of the point whose kind byte is at `at`."""
    (cstart,) = F64.unpack_from(view, at + CSTART_AT)
    return float(cstart)


class SnapshotCodec:
    """Encodes and decodes the snapshot of a kernel with `nk` intervals and `nper` periods."""

    __slots__ = ("_nk", "_nper", "_point", "_rec", "_step")

    def __init__(self, nk: int, nper: int) -> None:
        self._nk = nk
        self._nper = nper
        self._point, self._rec = snapshot_structs(nk, nper)
        self._step = len(ACC_FIELDS) + nper  # one window accumulator and its periods

    def encode(
        self, points: Iterable[Point | None], queue: Iterable[Queued], blocks: Iterable[QueuedBlock]
    ) -> bytes:
        """Every point's state with its pending windows and blocks, in id order."""
        point_s, rec_s = self._point, self._rec
        # One pass groups the pending windows and blocks by point: a snapshot stays linear.
        queued: dict[int, list[Queued]] = {}
        for item in queue:
            queued.setdefault(item[1][0], []).append(item)
        grouped: dict[int, list[tuple[Any, ...]]] = {}
        for _, brec in blocks:
            grouped.setdefault(brec[0], []).append(brec)
        out = bytearray(HEAD.size)
        count = 0
        for st in points:
            if st is None:
                continue
            count += 1
            key = st.key.encode()
            out += KEY_LEN.pack(len(key))
            out += key
            c = st.cell
            vals: list[Any] = [
                st.kind, st.tseen, st.based, st.t0, st.v0, st.cstart, st.pend_bad, st.pend_t,
                c.delta, c.covered, c.vmin, c.vmax, c.first, c.last,
                c.samples, c.bad, c.rollovers, c.resets, c.estimated,
            ]  # fmt: skip
            for w in st.wins:
                vals += (
                    w.start, w.delta, w.covered, w.vmin, w.vmax, w.first, w.last,
                    w.samples, w.bad, w.rollovers, w.resets, w.estimated, w.peak, w.peak_at,
                )  # fmt: skip
                vals += w.periods
            out += point_s.pack(*vals)
            mine = queued.get(st.pid, ())
            out += COUNT.pack(len(mine))
            for _, rec, per in mine:
                out += rec_s.pack(*rec[1:], *per)
            bmine = grouped.get(st.pid, ())
            out += COUNT.pack(len(bmine))
            for brec in bmine:
                out += BLOCK.pack(*brec[1:])
            out += COUNT.pack(len(st.revisable))
            for rec, per in st.revisable:
                out += rec_s.pack(*rec[1:], *per)
        HEAD.pack_into(out, 0, MAGIC, KERNEL_SNAPSHOT_VERSION, 0, self._nk, self._nper, count)
        with memoryview(out) as view:
            crc = zlib.crc32(view[CRC_END:])
        CRC.pack_into(out, CRC_AT, crc)
        return bytes(out)

    def walk(self, view: memoryview, count: int) -> list[tuple[str, int]]:
        """Check the structure of every point; returns (key, offset of its kind byte) of each.

        Bounds, counts, keys and kinds are checked before anything is restored, so a bad
        snapshot changes nothing. The compiled codec checks the same things in the same
        order, with the same messages. The header is checked before (layout.check_header).
        """
        n = len(view)
        pos = HEAD.size
        fixed = self._point.size
        rsize = self._rec.size
        nk = self._nk
        seen: set[str] = set()
        out: list[tuple[str, int]] = []
        for i in range(count):
            if n - pos < KEY_LEN.size:
                raise corrupt(f"point {i + 1} of {count} ends early")
            (klen,) = KEY_LEN.unpack_from(view, pos)
            pos += KEY_LEN.size
            if n - pos < klen + fixed:
                raise corrupt(f"point {i + 1} of {count} ends early")
            try:
                key = str(view[pos : pos + klen], "utf-8")
            except UnicodeDecodeError:
                raise corrupt(f"point {i + 1} of {count}: its key is not UTF-8") from None
            if key in seen:
                raise corrupt(f"point {i + 1} of {count}: key {key!r} appears twice")
            seen.add(key)
            pos += klen
            kind = view[pos]
            if kind > GAUGE:
                raise corrupt(f"point {i + 1} of {count} ({key!r}): unknown kind {kind}")
            out.append((key, pos))
            pos += fixed
            # pending windows, demand blocks, revisable windows
            for size, records in ((rsize, True), (BLOCK.size, False), (rsize, True)):
                if n - pos < COUNT.size:
                    raise corrupt(f"point {i + 1} of {count} ({key!r}) ends early")
                (m,) = COUNT.unpack_from(view, pos)
                pos += COUNT.size
                if m > (n - pos) // size:
                    raise corrupt(f"point {i + 1} of {count} ({key!r}) ends early")
                if records:
                    for r in range(pos, pos + m * size, size):
                        # an interval indexes per-interval lists when the record is revised
                        if view[r] >= nk:
                            raise corrupt(
                                f"point {i + 1} of {count} ({key!r}): a window of interval "
                                f"{view[r]} of {nk}"
                            )
                pos += m * size
        if pos != n:
            raise corrupt(f"{n - pos} bytes after the last point")
        return out

    def decode_point(
        self,
        view: memoryview,
        at: int,
        st: Point,
        queue: list[Queued],
        blocks: list[QueuedBlock],
    ) -> None:
        """Read the point whose kind byte is at `at` (walked) into `st`; append its pending
        windows and blocks to `queue` and `blocks`, due at their end + the point's grace."""
        point_s, rec_s = self._point, self._rec
        pid = st.pid
        step = self._step
        vals: Sequence[Any] = point_s.unpack_from(view, at)
        st.tseen, st.based, st.t0, st.v0, st.cstart, st.pend_bad, st.pend_t = vals[1:8]
        c = st.cell
        (
            c.delta, c.covered, c.vmin, c.vmax, c.first, c.last,
            c.samples, c.bad, c.rollovers, c.resets, c.estimated,
        ) = vals[8:19]  # fmt: skip
        c.start = st.cstart  # a cell's start is its point's cstart and it has no peak
        c.peak = _NAN
        c.peak_at = _NAN
        i = 19
        for w in st.wins:
            (
                w.start, w.delta, w.covered, w.vmin, w.vmax, w.first, w.last,
                w.samples, w.bad, w.rollovers, w.resets, w.estimated, w.peak, w.peak_at,
            ) = vals[i : i + 14]  # fmt: skip
            w.periods = list(vals[i + 14 : i + step])
            i += step
        pos = at + point_s.size
        (m,) = COUNT.unpack_from(view, pos)
        pos += COUNT.size
        for _ in range(m):
            r = rec_s.unpack_from(view, pos)
            pos += rec_s.size
            queue.append((r[5] + st.grace, (pid, *r[:20]), r[20:]))
        (m,) = COUNT.unpack_from(view, pos)
        pos += COUNT.size
        for _ in range(m):
            b = BLOCK.unpack_from(view, pos)
            pos += BLOCK.size
            blocks.append((b[1] + st.grace, (pid, *b)))
        (m,) = COUNT.unpack_from(view, pos)
        pos += COUNT.size
        revisable = []
        for _ in range(m):
            r = rec_s.unpack_from(view, pos)
            pos += rec_s.size
            revisable.append(((pid, *r[:20]), r[20:]))
        st.revisable = revisable
