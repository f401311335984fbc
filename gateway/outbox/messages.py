"""Plain value types of the outbox: its settings, a message to store, a stored row, its stats.

Kept apart from the writer so the uplink, the CLI and the daemon share them without the machinery.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from gateway.outbox.policy import MessageClass
from gateway.topics import Topics

__all__ = [
    "COMMON_FIELDS",
    "Message",
    "OutboxSettings",
    "OutboxStats",
    "Row",
    "compose",
    "encode_body",
]

# The fields the outbox (v, stream, seq, gw, site) and the uplink (sent, replayed) own.
COMMON_FIELDS = frozenset({"v", "stream", "seq", "gw", "site", "sent", "replayed"})

Durability = Literal["full", "normal"]


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    """What the outbox needs to know, independent of how the config file spells it."""

    path: Path
    gw_id: str
    site: str
    max_size_bytes: int = 512 << 20
    durability: Durability = "full"
    topic_prefix: str = "ironwatt"
    # Batches waiting for the writer before submit() blocks: backpressure, not memory growth.
    max_pending: int = 64
    # Seq numbers reserved ahead, durably, so a power cut under `normal` never reuses one.
    seq_block: int = 10_000
    # A hard ceiling on the database file in pages (SQLite max_page_count); None = the disk.
    max_page_count: int | None = None
    # Schema migrations in a child process (the daemon: see gateway/outbox/schema.py).
    migrate_in_child: bool = False

    @property
    def event_topic(self) -> str:
        return Topics(self.topic_prefix, self.site, self.gw_id).event

    @classmethod
    def from_config(cls, cfg: Any) -> OutboxSettings:
        """Read the contract's keys (gateway.id/site/data_dir, mqtt.topic_prefix, buffer.*)."""
        return cls(
            path=Path(cfg.gateway.data_dir) / "ironwatt.db",
            gw_id=str(cfg.gateway.id),
            site=str(cfg.gateway.site),
            max_size_bytes=int(cfg.buffer.max_size),
            durability=cfg.buffer.durability,
            topic_prefix=str(cfg.mqtt.topic_prefix),
        )


@dataclass(frozen=True, slots=True)
class Message:
    """One message to store: the body is a dict, or a pre-serialized JSON object (bytes).

    The body carries no common field: the outbox adds v/stream/seq/gw/site, the uplink
    adds sent/replayed. Telemetry gets no seq whatever its QoS.
    """

    topic: str
    body: Mapping[str, Any] | bytes
    qos: int = 1
    cls: MessageClass = MessageClass.WINDOW


def encode_body(body: Mapping[str, Any] | bytes) -> bytes:
    """The caller's part of the JSON, as the text after the common fields: `}` or `,...}`."""
    if type(body) is bytes and body[:1] == b"{" and body[-1:] == b"}":
        raw = body  # the common case, kept cheap: the enqueue hot path
    elif isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body).strip()
        if not raw.startswith(b"{") or not raw.endswith(b"}"):
            raise ValueError("a pre-serialized body must be one JSON object")
    else:
        rest = {k: v for k, v in body.items() if k not in COMMON_FIELDS}
        raw = json.dumps(rest, separators=(",", ":"), ensure_ascii=False).encode()
    inner = raw[1:].lstrip()
    return inner if inner.startswith(b"}") else b"," + inner


class Row(NamedTuple):
    """A stored message as the uplink reads it."""

    id: int
    seq: int | None
    topic: str
    body: bytes
    splice: int
    qos: int
    cls: int
    created: float
    epoch: int


def compose(row: Row, sent: bytes, replayed: bool) -> bytes:
    """The bytes to publish: the stored JSON with `sent` (and `replayed` for QoS-1 streams)."""
    if row.seq is None:
        extra = b',"sent":"' + sent + b'"'
    else:
        extra = b',"sent":"' + sent + (b'","replayed":true' if replayed else b'","replayed":false')
    body = row.body
    return body[: row.splice] + extra + body[row.splice :]


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Counters for `status`, the CLI and /metrics."""

    stream: str
    backlog: int
    used_bytes: int
    max_size_bytes: int
    oldest_created: float | None
    oldest_age_s: float | None
    first_seq: int | None
    last_seq: int | None
    next_seq: int
    dropped_total: int
    gaps_total: int
    pressure: str | None
    pending_batches: int
