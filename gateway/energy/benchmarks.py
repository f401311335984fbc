"""Steel process energy benchmarks: where a group's kgce per tonne stands.

The NDRC benchmark and baseline levels (发改产业〔2023〕723号) and the limit grades of
GB 21256-2025 (sintering, pelletizing, blast furnace, BOF, EAF) and GB 21342-2025 (coking),
from ../shared/data/energy-rules.md §2.3 with their confidence there. A site corrects them for
ore grade, scrap ratio and the like by entering the adjusted limits in its config: the
standards' corrections depend on facts the gateway does not measure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "BENCHMARKS",
    "PROCESSES",
    "Benchmark",
    "benchmark_for",
    "judge",
    "levels_of",
    "table_process",
]


@dataclass(frozen=True, slots=True)
class Benchmark:
    """One process judged by one standard, in kgce per tonne of product (lower is better)."""

    process: str
    standard: str
    benchmark: float  # NDRC benchmark level (标杆水平)
    baseline: float  # NDRC baseline level (基准水平)
    limits: Mapping[str, float] = field(default_factory=dict)  # the standard's grades 1..3
    unit: str = "kgce/t"
    source: str = ""


_NDRC = "NDRC 发改产业〔2023〕723号"
_GB_STEEL = "GB 21256-2025"
_GB_COKE = "GB 21342-2025"
_RULES = "../shared/data/energy-rules.md §2.3"


def _b(process: str, standard: str, bench: float, base: float, limits: dict[str, float],
       confidence: str) -> Benchmark:  # fmt: skip
    return Benchmark(
        process, standard, bench, base, limits,
        source=f"benchmark/baseline: {_NDRC}; limits: {standard}; {confidence} ({_RULES})",
    )  # fmt: skip


# process -> standard -> levels. EAF classes are by nominal furnace capacity.
BENCHMARKS: dict[str, dict[str, Benchmark]] = {
    "coking_top": {_GB_COKE: _b("coking_top", _GB_COKE, 110, 135,
                                {"1": 110, "2": 110, "3": 135}, "[U] NDRC, [S] limits")},
    "coking_stamp": {_GB_COKE: _b("coking_stamp", _GB_COKE, 110, 140,
                                  {"1": 115, "2": 115, "3": 140}, "[S]")},
    "sintering": {_GB_STEEL: _b("sintering", _GB_STEEL, 45, 55,
                                {"1": 43, "2": 46, "3": 52}, "[S]")},
    "pelletizing": {_GB_STEEL: _b("pelletizing", _GB_STEEL, 15, 33,
                                  {"1": 15, "2": 22, "3": 33},
                                  "[S] limits; no NDRC level: grade 1 and 3 stand in")},
    "blast_furnace": {_GB_STEEL: _b("blast_furnace", _GB_STEEL, 361, 435,
                                    {"1": 361, "2": 370, "3": 415}, "[S]")},
    "bof": {_GB_STEEL: _b("bof", _GB_STEEL, -30, -10, {"1": -30, "2": -28, "3": -12}, "[S]")},
    "eaf_below_50t": {_GB_STEEL: _b("eaf_below_50t", _GB_STEEL, 67, 86, {"1": 61, "3": 86},
                                    "[U] NDRC (30-50 t), [S] limits")},
    "eaf_50_70t": {_GB_STEEL: _b("eaf_50_70t", _GB_STEEL, 61, 72, {"1": 61, "3": 72},
                                 "[U] NDRC (>= 50 t), [S] limits")},
    "eaf_70t_up": {_GB_STEEL: _b("eaf_70t_up", _GB_STEEL, 61, 72, {"1": 61, "2": 64, "3": 72},
                                 "[U] NDRC (>= 50 t), [S] limits")},
}  # fmt: skip

PROCESSES = tuple(BENCHMARKS)


def benchmark_for(
    process: str, standard: str | None = None, adjusted: Mapping[str, Any] | None = None
) -> Benchmark:
    """The levels that judge `process`, with the site's adjusted values laid over them.

    KeyError names what is unknown (the config checks word it for the technician).
    """
    tables = BENCHMARKS[process]
    chosen = tables[standard] if standard is not None else next(iter(tables.values()))
    if not adjusted:
        return chosen
    limits = {str(k): float(v) for k, v in (adjusted.get("limits") or chosen.limits).items()}
    return replace(
        chosen,
        benchmark=float(adjusted.get("benchmark", chosen.benchmark)),
        baseline=float(adjusted.get("baseline", chosen.baseline)),
        limits=limits,
        source=f"site-adjusted ({', '.join(sorted(adjusted))}); default: {chosen.source}",
    )


def table_process(process: str | None, furnace_capacity_t: float | None) -> str | None:
    """The benchmark table's process for a group's `process`: an EAF's class follows its
    furnace size (None without one); the others are their own."""
    if process != "eaf":
        return process
    if furnace_capacity_t is None:
        return None
    size = furnace_capacity_t
    return "eaf_below_50t" if size < 50 else "eaf_50_70t" if size < 70 else "eaf_70t_up"


def levels_of(group: Any) -> Benchmark | None:
    """The levels judging a `[[groups]]` entry (its process, standard and the site's adjusted
    levels), None when it names no process; ValueError naming the group for an unknown table.

    From the group's fields, never a model property: the daemon's config records have none."""
    process = table_process(group.process, group.furnace_capacity_t)
    if process is None:
        return None
    adjusted = (
        {k: v for k, v in group.benchmark.model_dump().items() if v is not None}
        if group.benchmark
        else None
    )
    try:
        return benchmark_for(process, group.standard, adjusted)
    except KeyError as exc:
        raise ValueError(f"group {group.name!r}: no benchmark {exc} for {process}") from None


def judge(levels: Benchmark, value: float | None) -> dict[str, Any]:
    """The payload's `benchmark` object for a window's kgce per tonne (`value`, None = unknown).

    EEI follows GB/T 28924: value ÷ benchmark, and benchmark ÷ value where the benchmark is
    negative (a BOF recovers more than it uses), so EEI <= 1 is at or better than the benchmark
    either way. With a negative benchmark and a value of the other sign (or zero) the ratio
    means nothing and EEI is null; `standing` still says where the value is.
    """
    out: dict[str, Any] = {
        "process": levels.process, "standard": levels.standard, "unit": levels.unit,
        "value": value, "benchmark": levels.benchmark, "baseline": levels.baseline,
        "limits": dict(levels.limits), "source": levels.source,
    }  # fmt: skip
    if value is None:
        out.update(eei=None, standing=None, grade=None)
        return out
    eei: float | None
    if levels.benchmark > 0:
        eei = value / levels.benchmark
    elif levels.benchmark < 0 and value < 0:
        eei = levels.benchmark / value
    else:
        eei = None
    if value <= levels.benchmark:
        standing = "at_or_better_than_benchmark"
    elif value > levels.baseline:
        standing = "worse_than_baseline"
    else:
        standing = "between_benchmark_and_baseline"
    met = [int(g) for g, limit in levels.limits.items() if value <= limit]
    out.update(eei=eei, standing=standing, grade=min(met) if met else None)
    return out
