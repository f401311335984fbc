"""How ironwatt writes an instant: RFC 3339 UTC with milliseconds and a `Z` (spec/mqtt.md)."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["ago", "utc_iso"]


def utc_iso(t: float) -> str:
    """RFC 3339 UTC with milliseconds and a Z, as every payload time is written."""
    stamp = datetime.fromtimestamp(t, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def ago(ts: object, now: float) -> str:
    """ "12s ago" for a Unix time `ts` (None or not a number: "never"), for status tables."""
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        return "never"
    return f"{max(0.0, now - ts):.0f}s ago"
