"""Schema of the outbox database and its migrations: an upgraded gateway opens its old buffer.

Every step is idempotent (IF NOT EXISTS): a step interrupted by a power cut is simply run again.
The daemon runs them in a child (`python -m gateway.outbox.schema DB`, see migrate_in_child):
sqlite-utils, which they use, would otherwise stay resident (~3.5 MB) in a gateway that was
started once on a new database and then runs for months.
"""

from __future__ import annotations

import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.child import python_child_env
from gateway.errors import SchemaError

if TYPE_CHECKING:
    # Imported by migrate() only when there is something to migrate: a database already at
    # the current schema (every start but the first) never loads sqlite-utils (~3.5 MB).
    import sqlite_utils

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "meta_get",
    "meta_set",
    "migrate",
    "migrate_in_child",
]


def _v1_outbox(db: sqlite_utils.Database) -> None:
    """The first shipped schema: the message table and the key/value meta table."""
    db.create_table("meta", {"key": str, "value": str}, pk="key", if_not_exists=True)
    db.create_table(
        "outbox",
        {
            "id": int,  # insertion order: the publish order (seq grows with it)
            "seq": int,  # NULL for telemetry
            "topic": str,
            "body": bytes,  # JSON with every common field but `sent` and `replayed`
            "splice": int,  # byte offset where `sent`/`replayed` are spliced in at publish time
            "qos": int,
            "cls": int,  # gateway.outbox.policy.MessageClass
            "created": float,  # UTC epoch seconds
            "epoch": int,  # uplink connection epoch when stored (decides `replayed`)
        },
        pk="id",
        not_null={"topic", "body", "splice", "qos", "cls", "created", "epoch"},
        if_not_exists=True,
    )
    # The drop policy looks for the oldest telemetry first: a partial index (sqlite-utils has no
    # WHERE for indexes) costs the hot path nothing for windows and events, which are found by
    # walking the rowid from the oldest.
    db.execute("CREATE INDEX IF NOT EXISTS outbox_telemetry ON outbox(id) WHERE cls = 0")
    stream = secrets.token_hex(4)
    db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('stream', ?)", [stream])


def _v2_state(db: sqlite_utils.Database) -> None:
    """Named blobs of the daemon (kernel snapshots) in the same database, same writer."""
    db.create_table(
        "state",
        {"name": str, "value": bytes, "updated": float},
        pk="name",
        not_null={"value", "updated"},
        if_not_exists=True,
    )


MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (_v1_outbox, _v2_state)
SCHEMA_VERSION = len(MIGRATIONS)


def meta_get(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def meta_set(conn: sqlite3.Connection, key: str, value: object) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, str(value)),
    )


def _version(conn: sqlite3.Connection) -> int:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not exists:
        return 0
    value = meta_get(conn, "schema_version")
    return int(value) if value is not None else 0


def _refuse_newer(found: int) -> None:
    """A downgrade must not guess at rows written by a newer gateway."""
    if found > SCHEMA_VERSION:
        raise SchemaError(
            f"buffer database schema v{found} is newer than this gateway understands "
            f"(v{SCHEMA_VERSION}): upgrade the gateway or move the database aside"
        )


def migrate(conn: sqlite3.Connection, upto: int = SCHEMA_VERSION) -> int:
    """Bring the database to schema `upto`; returns the version found before.

    Refuses a database written by a newer gateway: a downgrade must not guess at its rows.
    """
    found = _version(conn)
    _refuse_newer(found)
    if found == upto:
        return found
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    for version in range(found + 1, upto + 1):
        MIGRATIONS[version - 1](db)
        with conn:
            meta_set(conn, "schema_version", version)
    return found


def migrate_in_child(conn: sqlite3.Connection, path: Path) -> int:
    """`migrate`, run by a child process when there is anything to do; returns the version found.

    `conn` (the caller's, open on `path`) only reads the version; the child takes the write
    lock, runs the steps and exits. A child that fails is a SchemaError with its report.
    """
    found = _version(conn)
    _refuse_newer(found)
    if found == SCHEMA_VERSION:
        return found
    try:
        done = subprocess.run(
            [sys.executable, "-m", __name__, str(path)],
            capture_output=True, text=True, timeout=300, check=False, env=python_child_env(),
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SchemaError(
            f"buffer database {path}: the schema migration did not run: {exc}"
        ) from None
    if done.returncode != 0 or _version(conn) != SCHEMA_VERSION:
        raise SchemaError(
            f"buffer database {path}: the schema migration failed "
            f"(exit status {done.returncode}): {done.stderr.strip()[-2000:]}"
        )
    return found


def main(argv: list[str] | None = None) -> int:
    """The child: `python -m gateway.outbox.schema DB` brings DB to the current schema."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m gateway.outbox.schema DATABASE", file=sys.stderr)
        return 2
    conn = sqlite3.connect(args[0], isolation_level=None, timeout=30)
    try:
        migrate(conn)
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
