"""How values are written back to a technician: as in TOML (`quote`), durations as in the config,
and why something failed (`error_text`).

Stdlib only, importing nothing of the project: the config loader, the protocol checks, the
drivers, the daemon and the CLI word values and failures alike.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import urlsplit

__all__ = ["error_text", "format_duration", "number", "plural", "quote", "without_password"]


def number(x: float) -> str:
    """1.0 -> "1", 0.5 -> "0.5": a number as the technician would type it."""
    return str(int(x)) if float(x).is_integer() else str(x)


def quote(value: Any) -> str:
    """A value as the technician would write it in TOML: "text" in double quotes, 1.5, true."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return number(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(quote(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {quote(v)}" for k, v in value.items()) + "}"
    return str(value)


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration: 900 -> '15m', 0.5 -> '500ms', 5400 -> '1h30m'."""
    if seconds <= 0 or not math.isfinite(seconds):
        raise ValueError(f"{seconds!r} is not a positive duration")
    millis = round(seconds * 1000)
    if abs(millis - seconds * 1000) > 1e-6 * max(1.0, seconds * 1000):
        return f"{seconds!r}s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    if millis:
        parts.append(f"{millis}ms")
    return "".join(parts)


def plural(n: int, word: str) -> str:
    """3 points, 1 point."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def without_password(url: str) -> str | None:
    """The URL with its password masked when it carries one (mqtt://user:pw@host), else None:
    a password is never written in the config, nor echoed back into a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return None
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def error_text(exc: BaseException) -> str:
    """Why an operation failed, as the technician reads it after "cannot open X: ".

    An OSError's strerror ("Permission denied": its "[Errno 13]" and file name say nothing the
    message does not), a KeyError's message without the quotes str() puts around it, else the
    exception's own text, else the name of its type (a bare TimeoutError has no text).
    """
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(getattr(exc, "strerror", None) or exc) or type(exc).__name__
