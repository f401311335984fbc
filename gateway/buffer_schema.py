"""Schema of the outbox database and its migrations: an upgraded gateway opens its old buffer.

Every step is idempotent (IF NOT EXISTS): a step interrupted by a power cut is simply run again.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Imported by migrate() only when there is something to migrate: a database already at
    # the current schema (every start but the first) never loads sqlite-utils (~3.5 MB).
    import sqlite_utils

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "meta_get", "meta_set", "migrate"]


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
            "cls": int,  # buffer_policy.MessageClass
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


def migrate(conn: sqlite3.Connection, upto: int = SCHEMA_VERSION) -> int:
    """Bring the database to schema `upto`; returns the version found before.

    Refuses a database written by a newer gateway: a downgrade must not guess at its rows.
    """
    found = _version(conn)
    if found > SCHEMA_VERSION:
        raise RuntimeError(
            f"buffer database schema v{found} is newer than this gateway understands "
            f"(v{SCHEMA_VERSION}): upgrade the gateway or move the database aside"
        )
    if found == upto:
        return found
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    for version in range(found + 1, upto + 1):
        MIGRATIONS[version - 1](db)
        with conn:
            meta_set(conn, "schema_version", version)
    return found
