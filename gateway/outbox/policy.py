"""Drop policy of the outbox: which messages go when the buffer is over its cap, and the gap.

Pure functions, no I/O: the outbox feeds them candidate rows and writes what they decide.
Order: oldest telemetry first, then the oldest windows, then the oldest events; gaps never.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from gateway.timefmt import utc_iso

__all__ = [
    "DROP_ORDER",
    "Candidate",
    "GapInfo",
    "MessageClass",
    "merge_gap",
    "plan_drop",
]


class MessageClass(IntEnum):
    """What a message is, in the order it is sacrificed when the buffer is full."""

    TELEMETRY = 0
    WINDOW = 1
    EVENT = 2
    GAP = 3


# Gap events are never in this tuple: they are the record of what was dropped.
DROP_ORDER: tuple[MessageClass, ...] = (
    MessageClass.TELEMETRY,
    MessageClass.WINDOW,
    MessageClass.EVENT,
)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One stored message as the policy sees it."""

    id: int
    cls: MessageClass
    seq: int | None
    size: int
    created: float


def plan_drop(candidates: Iterable[Candidate], excess_bytes: int) -> list[Candidate]:
    """The messages to drop so that at least `excess_bytes` go, least valuable and oldest first.

    Returns an empty list when nothing needs to go; may free less than asked when only gap
    events remain (they are kept whatever it costs).
    """
    if excess_bytes <= 0:
        return []
    by_class: dict[MessageClass, list[Candidate]] = {c: [] for c in DROP_ORDER}
    for cand in candidates:
        if cand.cls in by_class:
            by_class[cand.cls].append(cand)
    chosen: list[Candidate] = []
    freed = 0
    for cls in DROP_ORDER:
        for cand in sorted(by_class[cls], key=lambda c: c.id):
            if freed >= excess_bytes:
                return chosen
            chosen.append(cand)
            freed += cand.size
    return chosen


@dataclass(slots=True)
class GapInfo:
    """What a `gap` event says: the seq range that went, how many messages and why."""

    reason: str
    first_seq: int | None = None
    last_seq: int | None = None
    messages: int = 0
    by_class: dict[str, int] = field(default_factory=dict)
    first_created: float | None = None
    last_created: float | None = None

    def payload(self) -> dict[str, object]:
        """The event body (without the common fields the outbox adds)."""
        return {
            "type": "gap",
            "reason": self.reason,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "messages": self.messages,
            "by_class": dict(sorted(self.by_class.items())),
            "from": utc_iso(self.first_created) if self.first_created is not None else None,
            "to": utc_iso(self.last_created) if self.last_created is not None else None,
        }


def _lo(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _hi(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def merge_gap(existing: GapInfo | None, dropped: Sequence[Candidate], reason: str) -> GapInfo:
    """Fold a batch of dropped messages into a gap (a new one when `existing` is None).

    Consecutive drops merge into one gap event; a different reason is joined ("a+b") so a
    subscriber still reads every cause.
    """
    gap = (
        GapInfo(reason=reason)
        if existing is None
        else GapInfo(
            reason=existing.reason,
            first_seq=existing.first_seq,
            last_seq=existing.last_seq,
            messages=existing.messages,
            by_class=dict(existing.by_class),
            first_created=existing.first_created,
            last_created=existing.last_created,
        )
    )
    if reason not in gap.reason.split("+"):
        gap.reason = f"{gap.reason}+{reason}"
    for cand in dropped:
        if cand.cls is MessageClass.GAP:
            raise ValueError(f"gap event {cand.id} cannot be dropped")
        gap.messages += 1
        name = cand.cls.name.lower()
        gap.by_class[name] = gap.by_class.get(name, 0) + 1
        if cand.seq is not None:
            gap.first_seq = cand.seq if gap.first_seq is None else min(gap.first_seq, cand.seq)
            gap.last_seq = cand.seq if gap.last_seq is None else max(gap.last_seq, cand.seq)
        gap.first_created = _lo(gap.first_created, cand.created)
        gap.last_created = _hi(gap.last_created, cand.created)
    return gap
