"""Where a window's kgce per tonne stands against the benchmark tables."""

from __future__ import annotations

import pytest

from gateway.energy.benchmarks import BENCHMARKS, benchmark_for, judge


def test_a_blast_furnace_between_benchmark_and_baseline() -> None:
    got = judge(benchmark_for("blast_furnace"), 372.4)
    assert got["standard"] == "GB 21256-2025"
    assert (got["benchmark"], got["baseline"]) == (361, 435)
    assert got["limits"] == {"1": 361, "2": 370, "3": 415}
    assert got["eei"] == pytest.approx(372.4 / 361, rel=1e-12)
    assert got["standing"] == "between_benchmark_and_baseline"
    assert got["grade"] == 3  # over grade 2's 370, within grade 3's 415


@pytest.mark.parametrize(
    ("value", "eei", "standing", "grade"),
    [
        (-33.0, -30 / -33, "at_or_better_than_benchmark", 1),
        (-29.0, -30 / -29, "between_benchmark_and_baseline", 2),
        (-11.0, -30 / -11, "between_benchmark_and_baseline", None),  # over grade 3's -12
        (-5.0, -30 / -5, "worse_than_baseline", None),
        (4.0, None, "worse_than_baseline", None),  # the ratio of opposite signs means nothing
        (0.0, None, "worse_than_baseline", None),
    ],
)
def test_a_converter_uses_the_negative_value_rule(
    value: float, eei: float | None, standing: str, grade: int | None
) -> None:
    got = judge(benchmark_for("bof"), value)
    assert got["eei"] == (pytest.approx(eei, rel=1e-12) if eei is not None else None)
    assert (got["standing"], got["grade"]) == (standing, grade)


def test_an_unknown_value_is_judged_null() -> None:
    got = judge(benchmark_for("sintering"), None)
    assert (got["value"], got["eei"], got["standing"], got["grade"]) == (None, None, None, None)


def test_the_site_adjusts_the_levels_and_the_source_says_so() -> None:
    levels = benchmark_for("blast_furnace", adjusted={"benchmark": 375.44, "limits": {"3": 430}})
    assert (levels.benchmark, levels.baseline, dict(levels.limits)) == (375.44, 435, {"3": 430.0})
    assert levels.source.startswith(
        "site-adjusted (benchmark, limits); default: benchmark/baseline: NDRC"
    )
    assert judge(levels, 372.4)["standing"] == "at_or_better_than_benchmark"


def test_every_table_is_ordered_from_best_to_worst() -> None:
    for process, tables in BENCHMARKS.items():
        for standard, b in tables.items():
            assert b.benchmark <= b.baseline, (process, standard)
            grades = [b.limits[g] for g in sorted(b.limits)]
            assert grades == sorted(grades), (process, standard)
            assert b.source, (process, standard)
