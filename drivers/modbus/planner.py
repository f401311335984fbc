"""The request planner: points in, the fewest read requests out. Pure, no I/O.

Per function code, neighbouring points merge into blocks up to the request limit, bridging gaps
of at most `max_gap` unused registers and never reading across a range the device rejected.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from drivers.modbus.points import BIT_FUNCTIONS

__all__ = ["Block", "Plan", "Span", "plan"]

_FUNCTION_ORDER = {"coil": 0, "discrete": 1, "holding": 2, "input": 3}


@dataclass(frozen=True, slots=True)
class Span:
    """`count` registers (bits for coils/discrete) from `start`, on one function.

    As a bad range, a zero-length span at `start` is a barrier: no request may straddle the
    boundary between `start - 1` and `start` (the device rejected the pair, not either half).
    """

    function: str
    start: int
    count: int

    @property
    def end(self) -> int:
        return self.start + self.count


@dataclass(frozen=True, slots=True)
class Block:
    """One read request and the indices of the fields it carries (sorted by address)."""

    function: str
    start: int
    count: int
    members: tuple[int, ...]

    @property
    def end(self) -> int:
        return self.start + self.count


@dataclass(frozen=True, slots=True)
class Plan:
    blocks: tuple[Block, ...]
    # Fields that no request may read: inside a rejected range, or wider than the request limit.
    unreadable: tuple[int, ...] = field(default=())

    @property
    def requests(self) -> int:
        return len(self.blocks)


def _conflicts(start: int, end: int, bad: Sequence[Span]) -> bool:
    """Whether a request over [start, end) touches a rejected range or straddles a barrier."""
    for b in bad:
        if b.count == 0:
            if start < b.start < end:
                return True
        elif start < b.end and b.start < end:
            return True
    return False


def plan(
    fields: Sequence[Span],
    *,
    max_registers: int = 125,
    max_bits: int = 2000,
    max_gap: int = 10,
    bad: Iterable[Span] = (),
) -> Plan:
    """The minimal list of block requests covering every readable field.

    Greedy left to right over fields sorted by address is optimal here: the constraints on a
    block (length, gaps, rejected ranges) hold for every sub-run of a feasible run, so taking
    each block as long as possible never costs a request later. Each field lies wholly inside
    one block; for coils and discrete inputs the gap allowance is `max_gap` × 16 bits.
    """
    bad_by_fn: dict[str, list[Span]] = {}
    for b in bad:
        bad_by_fn.setdefault(b.function, []).append(b)
    order = sorted(
        range(len(fields)),
        key=lambda i: (_FUNCTION_ORDER.get(fields[i].function, 9), fields[i].start, fields[i].end),
    )
    blocks: list[Block] = []
    unreadable: list[int] = []
    current: list[int] = []
    cur_fn = ""
    cur_start = cur_end = 0

    def close() -> None:
        if current:
            blocks.append(Block(cur_fn, cur_start, cur_end - cur_start, tuple(current)))
            current.clear()

    for i in order:
        f = fields[i]
        bits = f.function in BIT_FUNCTIONS
        limit = max_bits if bits else max_registers
        gap_limit = max_gap * 16 if bits else max_gap
        fn_bad = bad_by_fn.get(f.function, ())
        if f.count > limit or _conflicts(f.start, f.end, fn_bad):
            unreadable.append(i)
            continue
        if current and f.function == cur_fn:
            new_end = max(cur_end, f.end)
            gap = f.start - cur_end
            if (
                new_end - cur_start <= limit
                and gap <= gap_limit
                and not _conflicts(cur_start, new_end, fn_bad)
            ):
                current.append(i)
                cur_end = new_end
                continue
        close()
        cur_fn, cur_start, cur_end = f.function, f.start, f.end
        current.append(i)
    close()
    return Plan(tuple(blocks), tuple(sorted(unreadable)))
