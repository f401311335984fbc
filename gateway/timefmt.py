"""How ironwatt writes an instant: RFC 3339 UTC with milliseconds and a `Z` (spec/mqtt.md)."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["utc_iso"]


def utc_iso(t: float) -> str:
    """RFC 3339 UTC with milliseconds and a Z, as every payload time is written."""
    stamp = datetime.fromtimestamp(t, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
