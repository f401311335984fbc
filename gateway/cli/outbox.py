"""`ironwatt buffer stats|export|verify`: look into the outbox of a gateway, running or not.

Read-only on the database (a running daemon is never disturbed); export hand-carries data off a
gateway whose uplink is dead.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from typing import Any, TextIO

from drivers.wording import error_text
from gateway.outbox import MessageClass, OutboxSettings, Row, compose
from gateway.timefmt import utc_iso

__all__ = ["buffer_export", "buffer_stats", "buffer_verify", "parse_since", "register"]

_DEFAULT_CONFIG = "/etc/ironwatt/ironwatt.toml"


def register(subparsers: Any) -> None:
    buffer = subparsers.add_parser(
        "buffer",
        help="inspect, export or check the SQLite outbox",
        description="Look into the outbox (read-only): safe while the gateway runs.",
    )
    commands = buffer.add_subparsers(dest="buffer_command", metavar="COMMAND")
    commands.required = True

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
        p.add_argument(
            "-c",
            "--config",
            default=_DEFAULT_CONFIG,
            metavar="FILE",
            help=f"the config file (default: {_DEFAULT_CONFIG})",
        )
        return p

    stats = add("stats", "messages, bytes, oldest age, seq range and drops")
    stats.add_argument("--json", action="store_true", help="one JSON object")
    stats.set_defaults(func=_run_stats)
    export = add("export", "write the waiting messages as JSON lines or CSV")
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument(
        "--since",
        metavar="WHEN",
        help="only messages stored since: an RFC 3339 time or an age (2h, 1d)",
    )
    export.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    export.set_defaults(func=_run_export)
    verify = add("verify", "SQLite integrity check and seq bookkeeping")
    verify.set_defaults(func=_run_verify)


# -- args -> settings ---------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> OutboxSettings:
    given = getattr(args, "outbox_settings", None)
    if isinstance(given, OutboxSettings):
        return given
    from gateway.config.load import load_config

    return OutboxSettings.from_config(load_config(args.config))


def _run_stats(args: argparse.Namespace) -> int:
    return buffer_stats(_settings(args), sys.stdout, as_json=bool(getattr(args, "json", False)))


def _run_export(args: argparse.Namespace) -> int:
    try:
        since = parse_since(args.since) if getattr(args, "since", None) else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = _settings(args)
    if getattr(args, "output", None):
        try:
            out = open(args.output, "w", newline="", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            print(
                f"error: cannot write {args.output}: {error_text(exc)}; check the path and that "
                "the USB stick or directory is writable",
                file=sys.stderr,
            )
            return 1
        with out:
            return buffer_export(settings, out, args.format, since)
    return buffer_export(settings, sys.stdout, args.format, since)


def _run_verify(args: argparse.Namespace) -> int:
    return buffer_verify(_settings(args), sys.stdout)


_AGE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")


def parse_since(text: str, now: float | None = None) -> float:
    """UTC epoch seconds from an RFC 3339 time or an age like `90m`, `2h`, `1d`."""
    match = _AGE.match(text.strip())
    if match:
        factor = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return (time.time() if now is None else now) - float(match.group(1)) * factor
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected an RFC 3339 time "
            "(2026-11-29T06:00:00Z) or an age (90m, 2h, 1d)"
        ) from None
    if stamp.tzinfo is None:
        raise ValueError(f"--since {text!r}: give a time zone (Z or +08:00)")
    return stamp.timestamp()


# -- settings -> action ---------------------------------------------------------------------------


def _open(settings: OutboxSettings) -> sqlite3.Connection | None:
    if not settings.path.exists():
        print(
            f"no buffer database at {settings.path}: check gateway.data_dir in the config "
            "(the gateway creates it on its first start)",
            file=sys.stderr,
        )
        return None
    return sqlite3.connect(f"{settings.path.resolve().as_uri()}?mode=ro", uri=True)


def _meta(conn: sqlite3.Connection) -> dict[str, str]:
    return {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")}


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def collect_stats(conn: sqlite3.Connection, settings: OutboxSettings) -> dict[str, Any]:
    meta = _meta(conn)
    by_class = {
        MessageClass(c).name.lower(): n
        for c, n in conn.execute("SELECT cls, COUNT(*) FROM outbox GROUP BY cls")
    }
    first = conn.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
    seq_lo, seq_hi = conn.execute("SELECT MIN(seq), MAX(seq) FROM outbox").fetchone()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    oldest = None if first is None else float(first[0])
    return {
        "path": str(settings.path),
        "schema_version": int(meta.get("schema_version", 0)),
        "stream": meta.get("stream"),
        "messages": sum(by_class.values()),
        "by_class": by_class,
        "used_bytes": (pages - free) * page,
        "file_bytes": pages * page,
        "max_size_bytes": settings.max_size_bytes,
        "oldest": None if oldest is None else utc_iso(oldest),
        "oldest_age_s": None if oldest is None else round(max(0.0, time.time() - oldest), 3),
        "first_seq": seq_lo,
        "last_seq": seq_hi,
        "next_seq": int(meta.get("last_seq", 0)) + 1,
        "dropped_total": int(meta.get("dropped_total", 0)),
        "gaps_total": int(meta.get("gaps_total", 0)),
        "durability": meta.get("durability"),
        "clean_shutdown": meta.get("clean") == "1",
    }


def buffer_stats(settings: OutboxSettings, out: TextIO, as_json: bool = False) -> int:
    conn = _open(settings)
    if conn is None:
        return 1
    with closing(conn):
        s = collect_stats(conn, settings)
    if as_json:
        out.write(json.dumps(s, indent=2) + "\n")
        return 0
    classes = ", ".join(f"{k} {v}" for k, v in sorted(s["by_class"].items())) or "empty"
    age = "" if s["oldest_age_s"] is None else f" ({s['oldest_age_s']:.0f} s ago)"
    seq = "none" if s["first_seq"] is None else f"{s['first_seq']} .. {s['last_seq']}"
    lines = [
        f"buffer      {s['path']} (schema v{s['schema_version']}, stream {s['stream']})",
        f"messages    {s['messages']} ({classes})",
        f"bytes       {_size(s['used_bytes'])} used of a {_size(s['max_size_bytes'])} cap "
        f"(file {_size(s['file_bytes'])})",
        f"oldest      {s['oldest'] or '-'}{age}",
        f"seq         {seq} (next {s['next_seq']})",
        f"drops       {s['dropped_total']} messages, reported in {s['gaps_total']} gap events",
        f"durability  {s['durability']}",
    ]
    out.write("\n".join(lines) + "\n")
    return 0


def _rows(conn: sqlite3.Connection, since: float | None) -> Iterator[Row]:
    cur = conn.execute(
        "SELECT id, seq, topic, body, splice, qos, cls, created, epoch FROM outbox "
        "WHERE created >= ? ORDER BY id",
        (since if since is not None else float("-inf"),),
    )
    for r in cur:
        yield Row(*r)


def buffer_export(
    settings: OutboxSettings, out: TextIO, fmt: str = "jsonl", since: float | None = None
) -> int:
    """Every waiting message, oldest first, as it would be published now (replayed: true)."""
    conn = _open(settings)
    if conn is None:
        return 1
    sent = utc_iso(time.time()).encode()
    writer = csv.writer(out) if fmt == "csv" else None
    if writer is not None:
        writer.writerow(["topic", "seq", "qos", "class", "created", "payload"])
    count = 0
    with closing(conn):
        for row in _rows(conn, since):
            payload = compose(row, sent, True).decode()
            created = utc_iso(row.created)
            cls = MessageClass(row.cls).name.lower()
            if writer is not None:
                writer.writerow(
                    [row.topic, "" if row.seq is None else row.seq, row.qos, cls, created, payload]
                )
            else:
                out.write(
                    f'{{"topic":{json.dumps(row.topic)},"qos":{row.qos},'
                    f'"class":"{cls}","created":"{created}","payload":{payload}}}\n'
                )
            count += 1
    print(f"exported {count} messages from {settings.path}", file=sys.stderr)
    return 0


def buffer_verify(settings: OutboxSettings, out: TextIO) -> int:
    """SQLite's integrity check plus our own bookkeeping: 0 when sound, 1 otherwise."""
    conn = _open(settings)
    if conn is None:
        return 1
    problems: list[str] = []
    with closing(conn):
        try:
            result = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            result = [str(exc)]
        if result != ["ok"]:
            problems += [f"integrity: {r}" for r in result]
        else:
            meta = _meta(conn)
            top = conn.execute("SELECT MAX(seq) FROM outbox").fetchone()[0] or 0
            if top > int(meta.get("reserved_seq", 0)):
                problems.append(
                    f"seq {top} is stored past the reserved block "
                    f"{meta.get('reserved_seq')}: seq numbers could be reused"
                )
            dup = conn.execute(
                "SELECT seq FROM outbox WHERE seq IS NOT NULL GROUP BY seq "
                "HAVING COUNT(*) > 1 LIMIT 1"
            ).fetchone()
            if dup:
                problems.append(f"seq {dup[0]} is stored twice")
            bad = conn.execute(
                "SELECT COUNT(*) FROM outbox WHERE splice < 1 OR splice >= length(body)"
            ).fetchone()[0]
            if bad:
                problems.append(f"{bad} messages have a damaged body")
    if problems:
        out.write(
            "\n".join(problems) + f"\n{settings.path}: NOT OK; export what you can "
            "(`ironwatt buffer export`) and move the file aside: the gateway starts a "
            "new stream with an empty buffer\n"
        )
        return 1
    out.write(f"{settings.path}: ok\n")
    return 0
