"""Value types of the config file: durations, sizes, names, ranges, with technician-worded errors.

Each is an `Annotated` pydantic type whose failure message says what is wrong and what was
expected, so the loader (gateway/config/load.py) prints it after `file:line: key.path:` unchanged.
Here, with the drivers, because each protocol's config model is built from them; only the
validating side imports this module (pydantic), never the daemon.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Strict,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

# Wording is shared with the protocol checks in drivers/ (the lowest layer): defined there.
from drivers.wording import format_duration, quote
from drivers.wording import number as _num

__all__ = [
    "NAME_RE",
    "Bool",
    "Duration",
    "Float",
    "Int",
    "Name",
    "Rollover",
    "Size",
    "format_duration",
    "in_range",
    "parse_duration",
    "parse_size",
    "positive",
    "quote",
]

NAME_RE = re.compile(r"[a-z0-9_-]{1,64}")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)")
# K/M/G are binary, as SQLite pages and disks are counted; KiB/MiB/GiB are accepted as synonyms.
_SIZE_UNITS = {
    "B": 1,
    "KB": 1 << 10,
    "MB": 1 << 20,
    "GB": 1 << 30,
    "TB": 1 << 40,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "TiB": 1 << 40,
}
_DURATION_FORMS = 'expected a number and a unit: "500ms", "1s", "15m", "1h", "1d" or "1h30m"'
_SIZE_FORMS = 'expected a number and a unit: "64MB", "512MB", "2GB"; 1 MB = 1024 KB'


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
        raise ValueError(f"{quote(text)} is not a duration ({_DURATION_FORMS})")
    return total


def parse_size(text: str) -> int:
    """'512MB' -> bytes (binary multiples). ValueError with the accepted forms."""
    match = _SIZE_RE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{quote(text)} is not a size ({_SIZE_FORMS})")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def _duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str):
        raise PydanticCustomError(
            "duration",
            "{value} is not a duration: write it as a string with a unit "
            '(e.g. "1s", "500ms", "15m")',
            {"value": quote(value)},
        )
    try:
        seconds = parse_duration(value.lstrip("-") if value.strip().startswith("-") else value)
    except ValueError as exc:
        raise PydanticCustomError("duration", str(exc)) from None
    if seconds <= 0 or value.strip().startswith("-"):
        raise PydanticCustomError(
            "duration", "{value} must be longer than zero", {"value": quote(value)}
        )
    return seconds


def _size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PydanticCustomError(
            "size", "{value} is not a size (" + _SIZE_FORMS + ")", {"value": quote(value)}
        )
    if isinstance(value, int):
        if value <= 0:
            raise PydanticCustomError("size", "{value} must be larger than zero", {"value": value})
        return value
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise PydanticCustomError("size", str(exc)) from None
    if size <= 0:
        raise PydanticCustomError(
            "size", "{value} must be larger than zero", {"value": quote(value)}
        )
    return size


def _name(value: Any, info: ValidationInfo) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        if isinstance(value, str) and value and _repairing(info):
            return value  # the second pass that finds cross-key problems keeps names as written
        raise PydanticCustomError(
            "name",
            "{value} is not a valid name (expected 1 to 64 of a-z, 0-9, _ and -: lowercase, "
            "no spaces, so it can be an MQTT topic level)",
            {"value": quote(value)},
        )
    return value


def _repairing(info: ValidationInfo) -> bool:
    """Whether this is the loader's second pass over a document already known to be wrong."""
    return isinstance(info.context, dict) and bool(info.context.get("repair"))


def _rollover(value: Any) -> float | str:
    """One clear problem for `float | "auto"` instead of one per branch of the union."""
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise PydanticCustomError(
            "rollover",
            "{value} is not a rollover (expected the modulus as a number greater than 0, "
            'e.g. 100000000, or "auto")',
            {"value": quote(value)},
        )
    return float(value)


_DURATION_SCHEMA = {
    "type": "string",
    "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$",
    "description": 'duration: "500ms", "1s", "15m", "1h", "1d"',
}
_SIZE_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$"},
        {"type": "integer", "minimum": 1},
    ],
    "description": 'size: "64MB", "512MB", "2GB", or bytes',
}

# TOML has real numbers and booleans: "502" in quotes is a mistake worth reporting, not coercing.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # accepts whole numbers too (TOML `port = 1` vs `scale = 1`)
Bool = Annotated[bool, Strict()]

Duration = Annotated[float, BeforeValidator(_duration), WithJsonSchema(_DURATION_SCHEMA)]
Size = Annotated[int, BeforeValidator(_size), WithJsonSchema(_SIZE_SCHEMA)]
Name = Annotated[
    str,
    BeforeValidator(_name),
    WithJsonSchema({"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"}),
]
Rollover = Annotated[
    float | Literal["auto"],
    BeforeValidator(_rollover),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"const": "auto"}]}),
]


@dataclass(frozen=True, slots=True)
class _Range:
    """A range check worded as `70000 is out of range (0..65535)`, with minimum/maximum in the
    JSON Schema so editors flag it too."""

    low: float
    high: float

    def check(self, value: Any) -> Any:
        if not self.low <= value <= self.high:
            if self.high >= 1e9:  # "no upper bound" in practice: say only what matters
                raise PydanticCustomError(
                    "range",
                    "{value} is out of range (must be {low} or more)",
                    {"value": quote(value), "low": _num(self.low)},
                )
            raise PydanticCustomError(
                "range",
                "{value} is out of range ({low}..{high})",
                {"value": quote(value), "low": _num(self.low), "high": _num(self.high)},
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out.update(minimum=self.low, maximum=self.high)
        return out


def in_range(low: float, high: float) -> _Range:
    """Range check worded as `70000 is out of range (0..65535)`."""
    return _Range(low, high)


def positive(value: float) -> float:
    if value <= 0:
        raise PydanticCustomError(
            "positive", "{value} must be greater than 0", {"value": _num(value)}
        )
    return value
