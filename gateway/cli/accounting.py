"""`ironwatt carriers` and `ironwatt benchmarks`: the factors and levels the accounting uses.

Without `--config` they list the built-in tables; with it, the tables as that config merges
them (its overrides, its grid region, its adjusted levels), each value with its source, so an
auditor can trace every kgce and kgCO2e of a group window without the code.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

__all__ = ["benchmark_rows", "carrier_rows", "register"]


def register(subparsers: Any) -> None:
    carriers = subparsers.add_parser(
        "carriers",
        help="list the energy carriers: unit, kgce and kgCO2e per unit, method, source",
        description="The carrier table: built in, or as a config merges it (--config).",
    )
    benchmarks = subparsers.add_parser(
        "benchmarks",
        help="list the process benchmarks (kgce/t) with their standards and sources",
        description="The benchmark tables: built in, or as a config's groups use them.",
    )
    for parser in (carriers, benchmarks):
        parser.add_argument(
            "-c", "--config", metavar="FILE", help="use the tables as this config merges them"
        )
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    carriers.set_defaults(func=_run_carriers)
    benchmarks.set_defaults(func=_run_benchmarks)


def carrier_rows(cfg: Any = None) -> list[dict[str, Any]]:
    """One row per carrier: the config's merged table, or the built-in defaults."""
    if cfg is not None:
        table = cfg.energy.carriers
    else:
        from gateway.energy.carriers import DEFAULT_CARRIERS

        table = DEFAULT_CARRIERS
    return [
        {
            "carrier": name,
            "unit": c.unit,
            "kgce_per_unit": c.kgce_per_unit,
            "kgco2e_per_unit": c.kgco2e_per_unit,
            "method": c.method,
            "source": c.source,
        }
        for name, c in table.items()
    ]


def benchmark_rows(cfg: Any = None) -> list[dict[str, Any]]:
    """Every built-in table, or the levels each of a config's judged groups uses."""
    from gateway.energy.benchmarks import BENCHMARKS, levels_of

    def row(levels: Any, group: str | None = None) -> dict[str, Any]:
        out = {"group": group} if group is not None else {}
        return {
            **out,
            "process": levels.process,
            "standard": levels.standard,
            "unit": levels.unit,
            "benchmark": levels.benchmark,
            "baseline": levels.baseline,
            "limits": dict(levels.limits),
            "source": levels.source,
        }

    if cfg is None:
        return [row(b) for tables in BENCHMARKS.values() for b in tables.values()]
    rows = []
    for group in cfg.groups:
        levels = levels_of(group)
        if levels is not None:
            rows.append(row(levels, group.name))
    return rows


def _load(path: str | None) -> Any:
    if path is None:
        return None
    from gateway.config.load import load_config

    return load_config(path)


def _number(x: float) -> str:
    return f"{x:g}"


def _print_table(out: TextIO, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header[:-1])]
    for line in [header, *rows]:
        cells = [c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)]
        print("  ".join([*cells, line[-1]]).rstrip(), file=out)


def _run_carriers(args: argparse.Namespace) -> int:
    rows = carrier_rows(_load(args.config))
    if args.json:
        json.dump(rows, sys.stdout, ensure_ascii=False, indent=1)
        print()
        return 0
    _print_table(
        sys.stdout,
        ["carrier", "unit", "kgce/unit", "kgCO2e/unit", "method", "source"],
        [
            [r["carrier"], r["unit"], _number(r["kgce_per_unit"]),
             _number(r["kgco2e_per_unit"]), r["method"], r["source"]]
            for r in rows
        ],
    )  # fmt: skip
    return 0


def _run_benchmarks(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    rows = benchmark_rows(cfg)
    if args.json:
        json.dump(rows, sys.stdout, ensure_ascii=False, indent=1)
        print()
        return 0
    if cfg is not None and not rows:
        print("no group names a process: nothing is judged against a benchmark", file=sys.stdout)
        return 0
    lead = ["group"] if cfg is not None else []
    _print_table(
        sys.stdout,
        [*lead, "process", "standard", "benchmark", "baseline", "grades 1/2/3", "source"],
        [
            [
                *([r["group"]] if cfg is not None else []),
                r["process"], r["standard"], _number(r["benchmark"]), _number(r["baseline"]),
                " / ".join(_number(r["limits"][g]) if g in r["limits"] else "-"
                           for g in ("1", "2", "3")),
                r["source"],
            ]
            for r in rows
        ],
    )  # fmt: skip
    return 0
