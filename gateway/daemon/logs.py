"""Logging for the daemon: one line per event to stderr (journald), text or JSON.

Under journald each line starts with its syslog priority (`<4>` for a warning), so `journalctl
-p warning` works; elsewhere (a terminal, a file) with the local time.

Repeats of the same message are rate-limited (a dead device logs its fall and its return, not
every poll) and registered secrets are masked in every line, whatever logger printed them.
Transitions and operator actions (`extra=TRANSITION`) are never held back.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, TextIO

__all__ = [
    "TRANSITION",
    "JsonFormatter",
    "LibraryFilter",
    "RepeatFilter",
    "SecretFilter",
    "log_style",
    "register_secret",
    "setup_logging",
]

_MASK = "***"
# Passwords that ride inside a URL (mqtt://user:secret@host) are masked even when unregistered.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+(?P<tail>@)")

# Third-party loggers: their lines are cut to the first one and deduplicated with numbers
# ignored. pymodbus appends hex dumps of its last frames to every error it logs, and a late
# reply ("request ask for id=10 but got id=9") differs from the next only by its ids.
_LIBRARIES = ("pymodbus", "asyncua", "paho")
_DIGITS = re.compile(r"\d+")

# `log.info(..., extra=TRANSITION)`: a change of state or the answer to an operator's action (a
# reload, a start, a stop). Each one is news however recently the same text was logged: a second
# reload refused for the same reason must show in the journal as clearly as the first.
TRANSITION: Final[dict[str, Any]] = {"transition": True}

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask `value` in every log line from now on (passwords read from files or the env)."""
    # Very short values would mask ordinary words; such a secret is not one worth the name.
    if value and len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


def _redact(text: str) -> str:
    text = _URL_PASSWORD.sub(lambda m: m["head"] + _MASK + m["tail"], text)
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


class SecretFilter(logging.Filter):
    """Renders each record's message once and masks secrets in it (and in its traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _redact(record.exc_text)
        record.exc_info = None
        return True


def _library(record: logging.LogRecord) -> bool:
    return record.name.split(".", 1)[0] in _LIBRARIES


class LibraryFilter(logging.Filter):
    """A library's record keeps only its first line (pymodbus's frame dumps go)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _library(record):
            message = record.getMessage()
            if message == "Repeating....":
                return False  # pymodbus's own dedupe marker: says nothing, ours counts repeats
            if "\n" in message:
                record.msg = message.split("\n", 1)[0].rstrip()
                record.args = None
        return True


class RepeatFilter(logging.Filter):
    """Lets a given message through once per `window` seconds; says how many were held back.

    The key is the logger plus the rendered message, so `device x is down: timeout` and
    `device y is down: timeout` are distinct and each gets its line. Records marked with
    `extra=TRANSITION` always pass and do not count as repeats.
    """

    def __init__(self, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self._clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "transition", False):
            return True
        message = record.getMessage()
        if _library(record):
            message = _DIGITS.sub("#", message)
        key = (record.name, record.levelno, message)
        now = self._clock()
        with self._lock:
            first, held = self._seen.get(key, (None, 0))
            if first is not None and now - first < self.window:
                self._seen[key] = (first, held + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 4096:
                # Bounded memory: forget keys that are past their window.
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window}
        if held:
            record.msg = (
                f"{record.getMessage()} (repeated {held} more times in the last {self.window:g}s)"
            )
            record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra` device/point."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("device", "point", "event"):
            value = record.__dict__.get(key)
            if value is not None:
                doc[key] = value
        if record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False)


# syslog priorities (sd-daemon(3)): journald reads a leading "<N>" as the line's priority, so
# `journalctl -p warning` shows warnings and worse, and strips it from the message.
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6}


def _priority(levelno: int) -> int:
    for level, prio in _PRIORITY.items():
        if levelno >= level:
            return prio
    return 7  # debug


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        # Keep one line per event (journald splits on newlines): indent any traceback lines.
        return super().format(record).replace("\n", "\n    ")


class _Styled(logging.Formatter):
    """Wraps a formatter for where the lines go: journald gets the priority prefix on every
    line (it stamps its own time), a terminal or a file gets the local time first (text lines;
    JSON ones have their own `time`), an in-memory stream neither."""

    def __init__(self, inner: logging.Formatter, style: str) -> None:
        super().__init__()
        self.inner = inner
        self.style = style

    def format(self, record: logging.LogRecord) -> str:
        line = self.inner.format(record)
        if self.style == "journal":
            # journald files each line on its own: a traceback's or a report's continuation
            # lines carry the priority too, or `journalctl -p err` would show only the head.
            prefix = f"<{_priority(record.levelno)}>"
            return "\n".join(prefix + part for part in line.split("\n"))
        if self.style == "timestamped" and not isinstance(self.inner, JsonFormatter):
            # (a JSON line has its `time` and must stay one JSON object)
            local = datetime.fromtimestamp(record.created).astimezone()
            return f"{local.isoformat(sep=' ', timespec='milliseconds')} {line}"
        return line


def log_style(stream: TextIO, environ: Mapping[str, str] | None = None) -> str:
    """ "journal" when `stream` is the journal stream systemd handed us ($JOURNAL_STREAM is its
    device:inode), "timestamped" for any other real file (a terminal, a file, a pipe), "plain"
    for an in-memory one."""
    env = os.environ if environ is None else environ
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return "plain"
    journal = env.get("JOURNAL_STREAM", "")
    if journal == f"{st.st_dev}:{st.st_ino}":
        return "journal"
    return "timestamped"


def setup_logging(
    level: str = "info",
    fmt: str = "text",
    stream: TextIO | None = None,
    repeat_window: float = 60.0,
    style: str | None = None,
) -> logging.Handler:
    """Replace the root handlers with one stderr handler; returns it (tests detach it).
    `style`: "journal", "timestamped" or "plain" (None: log_style of the stream)."""
    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)
    inner = JsonFormatter() if fmt == "json" else _TextFormatter()
    handler.setFormatter(_Styled(inner, style or log_style(out)))
    # Order matters: cut library dumps, render and mask, then dedupe on the masked text.
    handler.addFilter(LibraryFilter())
    handler.addFilter(SecretFilter())
    handler.addFilter(RepeatFilter(repeat_window))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # Library chatter (pymodbus logs every failed connect) would drown our own lines.
    for noisy in ("pymodbus", "asyncua", "paho"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return handler
