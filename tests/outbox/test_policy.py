"""The pure drop policy: which messages go first, and what the gap event says."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.outbox.policy import Candidate, GapInfo, MessageClass, merge_gap, plan_drop

T, W, E, G = MessageClass.TELEMETRY, MessageClass.WINDOW, MessageClass.EVENT, MessageClass.GAP


def cand(i: int, cls: MessageClass, size: int = 100) -> Candidate:
    return Candidate(id=i, cls=cls, seq=None if cls is T else i, size=size, created=1000.0 + i)


ROWS = [cand(1, W), cand(2, T), cand(3, E), cand(4, G), cand(5, W), cand(6, T), cand(7, E)]


@pytest.mark.parametrize(
    ("excess", "expected"),
    [
        (0, []),
        (-5, []),
        (1, [2]),  # the oldest telemetry first
        (150, [2, 6]),  # all telemetry before any window
        (250, [2, 6, 1]),  # then the oldest window
        (400, [2, 6, 1, 5]),
        (500, [2, 6, 1, 5, 3]),  # then the oldest event
        (10_000, [2, 6, 1, 5, 3, 7]),  # never the gap
    ],
)
def test_drop_order(excess: int, expected: list[int]) -> None:
    assert [c.id for c in plan_drop(ROWS, excess)] == expected


def test_gap_counts_and_range() -> None:
    gap = merge_gap(None, [cand(2, T), cand(1, W), cand(5, W)], "max_size")
    assert (gap.first_seq, gap.last_seq, gap.messages) == (1, 5, 3)
    assert gap.by_class == {"telemetry": 1, "window": 2}
    assert (gap.first_created, gap.last_created) == (1001.0, 1005.0)
    body = gap.payload()
    assert body["type"] == "gap"
    assert body["reason"] == "max_size"
    assert body["messages"] == 3
    assert body["from"] == "1970-01-01T00:16:41.000Z"


def test_merge_extends_and_joins_reasons() -> None:
    first = merge_gap(None, [cand(1, W)], "max_size")
    both = merge_gap(first, [cand(9, W)], "disk_full")
    assert (both.first_seq, both.last_seq, both.messages) == (1, 9, 2)
    assert both.reason == "max_size+disk_full"
    assert first.messages == 1  # the original is not changed
    assert merge_gap(both, [cand(10, E)], "max_size").reason == "max_size+disk_full"


def test_a_gap_is_never_dropped() -> None:
    with pytest.raises(ValueError, match="gap event 4 cannot be dropped"):
        merge_gap(None, [cand(4, G)], "max_size")


rows_strategy = st.lists(
    st.tuples(st.sampled_from(list(MessageClass)), st.integers(1, 500)), max_size=60
).map(lambda xs: [cand(i + 1, c, s) for i, (c, s) in enumerate(xs)])


@given(rows_strategy, st.integers(-10, 20_000))
def test_policy_properties(rows: list[Candidate], excess: int) -> None:
    chosen = plan_drop(rows, excess)
    ids = {c.id for c in chosen}
    assert all(c.cls is not G for c in chosen)
    freed = sum(c.size for c in chosen)
    droppable = [c for c in rows if c.cls is not G]
    if excess <= 0:
        assert chosen == []
    elif freed < excess:
        assert len(chosen) == len(droppable)  # short only when nothing else can go
    else:
        assert freed - chosen[-1].size < excess  # no more than needed
    # Nothing of a class goes while an older one of the same class, or any of a cheaper
    # class, is kept.
    for c in chosen:
        for other in droppable:
            if other.id in ids:
                continue
            assert not (other.cls < c.cls)
            assert not (other.cls == c.cls and other.id < c.id)
    gap = merge_gap(None, chosen, "max_size") if chosen else GapInfo("max_size")
    assert gap.messages == len(chosen)
    assert sum(gap.by_class.values()) == len(chosen)
