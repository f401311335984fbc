"""What the uplink has handed to paho and not yet seen finished: the ack window, by message id.

Right whatever order paho calls back in: without a thread of its own, paho writes a QoS 0
PUBLISH inside `publish()` and calls `on_publish` right there, before the caller holds the mid.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

__all__ = ["MID_SPAN", "Done", "InFlight", "Kind"]

# paho numbers messages 1..65535 and wraps without asking whether a number is still waiting
# for its PUBACK (a QoS 1 collision is refused, a QoS 0 one is not), so nothing new is handed
# over once the oldest waiting message is this many numbers behind.
MID_SPAN = 65_000


class Kind(Enum):
    ROW = "row"  # an outbox row at QoS 1: holds a slot of the ack window until its PUBACK
    ROW_QOS0 = "row_qos0"  # an outbox row at QoS 0: done once written; holds no ack slot
    STATUS = "status"  # the retained status document: not a row, holds no slot


@dataclass(frozen=True, slots=True)
class Done:
    """A message paho has finished with: acknowledged (QoS 1) or written (QoS 0)."""

    kind: Kind
    row_id: int  # 0 for STATUS
    ok: bool  # False: the broker refused it (a PUBACK reason code >= 0x80)


@dataclass(slots=True)
class _Entry:
    kind: Kind
    row_id: int
    sent_at: float  # monotonic
    number: int  # how many messages this session had handed over before it


class InFlight:
    """Messages handed over, by mid, and completions that arrived before their mid was known.

    `handed(...)` after each publish(), `finished(mid, ok)` from on_publish; both return the
    `Done` they complete, if any, so the caller books it in one place.
    """

    def __init__(self) -> None:
        self._by_mid: dict[int, _Entry] = {}
        # Ack-window order (QoS 1 rows): the oldest waiting one decides the ack timeout.
        self._order: deque[tuple[int, int]] = deque()  # (mid, number)
        self._early: dict[int, bool] = {}  # mid -> ok, finished before handed() saw it
        self._handed = 0
        self._slots = 0  # QoS 1 rows waiting for their PUBACK
        self._unwritten = 0  # QoS 0 rows paho holds but has not yet written

    @property
    def slots(self) -> int:
        """QoS 1 rows waiting for a PUBACK: what the ack window limits."""
        return self._slots

    @property
    def unwritten(self) -> int:
        """QoS 0 rows queued inside paho (its socket was full): bounded apart from the window."""
        return self._unwritten

    @property
    def rows(self) -> int:
        """Outbox rows paho holds, of either QoS (status documents are not rows)."""
        return self._slots + self._unwritten

    def __len__(self) -> int:
        return len(self._by_mid)

    def waiting(self, mid: int) -> bool:
        return mid in self._by_mid

    def may_hand_over(self) -> bool:
        """False while the oldest waiting message is about to share its mid with a new one."""
        oldest = self._oldest()
        return oldest is None or self._handed - oldest.number < MID_SPAN

    def oldest_sent_at(self) -> float | None:
        """When the oldest QoS 1 row still waiting for its PUBACK was handed over."""
        oldest = self._oldest_row()
        return None if oldest is None else oldest.sent_at

    def handed(self, mid: int, kind: Kind, row_id: int, now: float) -> Done | None:
        """paho took a message under `mid`; returns its Done if paho already finished it."""
        number = self._handed
        self._handed += 1
        early = self._early.pop(mid, None)
        if early is not None:
            return Done(kind, row_id, early)
        self._by_mid[mid] = _Entry(kind, row_id, now, number)
        if kind is Kind.ROW:
            self._slots += 1
            self._order.append((mid, number))
        elif kind is Kind.ROW_QOS0:
            self._unwritten += 1
        return None

    def finished(self, mid: int, ok: bool) -> Done | None:
        """paho reports `mid` acknowledged or written; None if it is not handed over yet."""
        entry = self._by_mid.pop(mid, None)
        if entry is None:
            # Finished before publish() returned its mid: handed() completes it.
            self._early[mid] = ok
            return None
        if entry.kind is Kind.ROW:
            self._slots -= 1
        elif entry.kind is Kind.ROW_QOS0:
            self._unwritten -= 1
        return Done(entry.kind, entry.row_id, ok)

    def clear(self) -> None:
        """The session ended: paho forgets everything it held, and so do we."""
        self._by_mid.clear()
        self._order.clear()
        self._early.clear()
        self._handed = self._slots = self._unwritten = 0

    def _oldest_row(self) -> _Entry | None:
        order, by_mid = self._order, self._by_mid
        while order:
            mid, number = order[0]
            entry = by_mid.get(mid)
            if entry is not None and entry.number == number:
                return entry
            order.popleft()  # finished meanwhile
        return None

    def _oldest(self) -> _Entry | None:
        """The oldest entry of any kind (for the mid span): rows first, then a scan of the rest."""
        oldest = self._oldest_row()
        if len(self._by_mid) == self._slots:
            return oldest
        # QoS 0 rows and status messages are few and short-lived: a scan is cheap.
        for entry in self._by_mid.values():
            if oldest is None or entry.number < oldest.number:
                oldest = entry
        return oldest
