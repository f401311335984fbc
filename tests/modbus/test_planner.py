"""The request planner: table cases, and the brute-force optimum on small random cases."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.planner import Span, plan


def H(start: int, count: int = 2, function: str = "holding") -> Span:
    return Span(function, start, count)


def blocks(p):  # type: ignore[no-untyped-def]
    return [(b.function, b.start, b.count) for b in p.blocks]


CASES = [
    ("adjacent floats merge", [H(0), H(2), H(4)], {}, [("holding", 0, 6)]),
    ("gap within limit is bridged", [H(0), H(12)], {"max_gap": 10}, [("holding", 0, 14)]),
    (
        "gap beyond limit splits",
        [H(0), H(13)],
        {"max_gap": 10},
        [("holding", 0, 2), ("holding", 13, 2)],
    ),
    ("zero gap allowance", [H(0), H(3)], {"max_gap": 0}, [("holding", 0, 2), ("holding", 3, 2)]),
    (
        "125-register cap",
        [H(0), H(123), H(125)],
        {"max_gap": 200},
        [("holding", 0, 125), ("holding", 125, 2)],
    ),
    (
        "per-device smaller cap",
        [H(0), H(2), H(4), H(6)],
        {"max_registers": 4},
        [("holding", 0, 4), ("holding", 4, 4)],
    ),
    (
        "functions never mix",
        [H(0), H(2, function="input")],
        {},
        [("holding", 0, 2), ("input", 2, 2)],
    ),
    (
        "coils: gaps count in bits (16 per register of allowance)",
        [Span("coil", 0, 1), Span("coil", 150, 1), Span("coil", 400, 1)],
        {"max_gap": 10},
        [("coil", 0, 151), ("coil", 400, 1)],
    ),
    (
        "coils: 2000-bit cap",
        [Span("discrete", 0, 1), Span("discrete", 1999, 1), Span("discrete", 2000, 1)],
        {"max_gap": 200},
        [("discrete", 0, 2000), ("discrete", 2000, 1)],
    ),
    ("overlapping points share a block", [H(10, 1), H(10, 2), H(11, 1)], {}, [("holding", 10, 2)]),
    (
        "never bridge a rejected range",
        [H(0), H(6)],
        {"bad": [Span("holding", 3, 2)]},
        [("holding", 0, 2), ("holding", 6, 2)],
    ),
    (
        "a barrier splits adjacent points",
        [H(0), H(2)],
        {"bad": [Span("holding", 2, 0)]},
        [("holding", 0, 2), ("holding", 2, 2)],
    ),
    (
        "a rejected range of another function is irrelevant",
        [H(0), H(6)],
        {"bad": [Span("input", 3, 2)]},
        [("holding", 0, 8)],
    ),
    ("unsorted input", [H(40), H(0), H(20)], {"max_gap": 20}, [("holding", 0, 42)]),
]


@pytest.mark.parametrize(("name", "fields", "kw", "expected"), CASES, ids=[c[0] for c in CASES])
def test_plan_table(name: str, fields: list[Span], kw: dict, expected: list) -> None:  # type: ignore[type-arg]
    assert blocks(plan(fields, **kw)) == expected


def test_unreadable_fields_are_reported_not_planned() -> None:
    fields = [H(0), H(4), Span("holding", 100, 4)]
    p = plan(fields, bad=[Span("holding", 5, 1)], max_registers=2)
    assert p.unreadable == (1, 2)  # inside a rejected range; wider than the cap
    assert blocks(p) == [("holding", 0, 2)]


def test_members_cover_every_readable_field_once() -> None:
    fields = [H(a) for a in (0, 2, 30, 32, 100, 300, 302)] + [Span("input", 5, 1)]
    p = plan(fields)
    members = sorted(i for b in p.blocks for i in b.members)
    assert members == list(range(len(fields)))
    for b in p.blocks:
        for i in b.members:
            assert b.start <= fields[i].start
            assert fields[i].end <= b.end


def brute_force(fields: list[Span], max_registers: int, max_gap: int, bad: list[Span]) -> int:
    """Fewest requests by trying every set of candidate windows (fields don't overlap here)."""
    fs = sorted(
        (f for f in fields if not any(f.start < b.end and b.start < f.end for b in bad)),
        key=lambda f: f.start,
    )
    if not fs:
        return 0
    candidates = []
    for i, j in itertools.combinations_with_replacement(range(len(fs)), 2):
        start, end = fs[i].start, fs[j].end
        inside = fs[i : j + 1]
        ok = end - start <= max_registers
        ok = ok and all(b.start >= end or b.end <= start for b in bad)
        ok = ok and all(
            inside[k + 1].start - inside[k].end <= max_gap for k in range(len(inside) - 1)
        )
        if ok:
            candidates.append(set(range(i, j + 1)))
    everything = set(range(len(fs)))
    for k in range(1, len(fs) + 1):
        for combo in itertools.combinations(candidates, k):
            if set().union(*combo) == everything:
                return k
    raise AssertionError("no cover found")


@st.composite
def small_cases(draw):  # type: ignore[no-untyped-def]
    widths = draw(st.lists(st.sampled_from([1, 2, 4]), min_size=1, max_size=5))
    fields, pos = [], 0
    for w in widths:
        pos += draw(st.integers(0, 6))
        fields.append(Span("holding", pos, w))
        pos += w
    bad = [
        Span("holding", draw(st.integers(0, pos)), draw(st.integers(1, 3)))
        for _ in range(draw(st.integers(0, 2)))
    ]
    return fields, draw(st.integers(4, 16)), draw(st.integers(0, 5)), bad


@settings(max_examples=300, deadline=None)
@given(small_cases())
def test_request_count_equals_brute_force_optimum(case) -> None:  # type: ignore[no-untyped-def]
    fields, max_registers, max_gap, bad = case
    p = plan(fields, max_registers=max_registers, max_gap=max_gap, bad=bad)
    assert p.requests == brute_force(fields, max_registers, max_gap, bad)
