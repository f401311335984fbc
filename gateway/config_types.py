"""Value types of the config file: durations, sizes, names, ranges, with technician-worded errors.

Each is an `Annotated` pydantic type whose failure message says what is wrong and what was
expected, so `config.py` can print it after `file:line: key.path:` unchanged.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator
from pydantic_core import PydanticCustomError

__all__ = [
    "Duration",
    "Name",
    "Size",
    "in_range",
    "parse_duration",
    "parse_size",
]

NAME_RE = re.compile(r"[a-z0-9_-]{1,64}")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)")
# K/M/G are binary, as SQLite pages and disks are counted; KiB/MiB/GiB are accepted as synonyms.
_SIZE_UNITS = {
    "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40,
    "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
}


def parse_duration(text: str) -> float:
    """'500ms', '1s', '15m', '1h', '1d', '1h30m' -> seconds. ValueError with the accepted forms."""
    pos, total = 0, 0.0
    stripped = text.strip()
    for match in _DURATION_PART.finditer(stripped):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(stripped):
        raise ValueError(f"{text!r} is not a duration (expected e.g. \"500ms\", \"1s\", \"15m\", \"1h\", \"1d\")")
    return total


def parse_size(text: str) -> int:
    """'512MB' -> bytes (binary multiples). ValueError with the accepted forms."""
    match = _SIZE_RE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a size (expected e.g. \"64MB\", \"512MB\", \"2GB\")")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def _duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str):
        raise PydanticCustomError(
            "duration",
            "{value} is not a duration: write it as a string with a unit (e.g. \"1s\", \"15m\")",
            {"value": repr(value)},
        )
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise PydanticCustomError("duration", str(exc)) from None
    if seconds <= 0:
        raise PydanticCustomError(
            "duration", "{value!r} must be longer than zero", {"value": value}
        )
    return seconds


def _size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PydanticCustomError(
            "size", "{value} is not a size (expected e.g. \"512MB\")", {"value": repr(value)}
        )
    if isinstance(value, int):
        return value
    try:
        return parse_size(value)
    except ValueError as exc:
        raise PydanticCustomError("size", str(exc)) from None


def _name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise PydanticCustomError(
            "name",
            "{value} is not a valid name (expected 1 to 64 of a-z, 0-9, _ and -: lowercase, "
            "no spaces, so it can be an MQTT topic level)",
            {"value": repr(value)},
        )
    return value


Duration = Annotated[float, BeforeValidator(_duration)]
Size = Annotated[int, BeforeValidator(_size)]
Name = Annotated[str, BeforeValidator(_name)]


def in_range(low: float, high: float) -> AfterValidator:
    """Range check worded as `70000 is out of range (0..65535)`."""

    def check(value: Any) -> Any:
        if not low <= value <= high:
            raise PydanticCustomError(
                "range",
                "{value} is out of range ({low}..{high})",
                {"value": value, "low": _num(low), "high": _num(high)},
            )
        return value

    return AfterValidator(check)


def positive(value: float) -> float:
    if value <= 0:
        raise PydanticCustomError("positive", "{value} must be greater than 0", {"value": value})
    return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
