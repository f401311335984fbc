"""Load ironwatt.toml into a validated `Config`, or refuse it with every problem and its line.

Problems read `FILE:LINE: devices[2].points[0].address: 70000 is out of range (0..65535)`;
tomllib keeps no positions, so `KeyLocator` maps key paths back to lines by a light scan.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.config_checks import check_config
from gateway.config_model import (
    Config,
    Device,
    ModbusDevice,
    ModbusPoint,
    MqttConfig,
    OpcuaDevice,
    OpcuaPoint,
)

__all__ = [
    "DEFAULT_PATH",
    "Config",
    "ConfigError",
    "Device",
    "KeyLocator",
    "ModbusDevice",
    "ModbusPoint",
    "OpcuaDevice",
    "OpcuaPoint",
    "load_config",
    "parse_config",
]

DEFAULT_PATH = Path("/etc/ironwatt/ironwatt.toml")

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    line: int | None
    path: str
    message: str


class ConfigError(Exception):
    """The config was refused; `problems` lists each one, `str()` is the full report."""

    def __init__(self, file: str, problems: Sequence[Problem]) -> None:
        self.file = file
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.path))
        super().__init__(self.report())

    def report(self) -> str:
        lines = []
        for p in self.problems:
            where = f"{self.file}:{p.line}" if p.line else self.file
            lines.append(f"{where}: {p.path}: {p.message}" if p.path else f"{where}: {p.message}")
        count = len(self.problems)
        lines.append(f"{count} problem{'s' if count != 1 else ''}: the configuration was refused")
        return "\n".join(lines)


def format_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_.\- ]+?)\s*=""")


class KeyLocator:
    """Line numbers of keys and tables, from a scan of the TOML text (not a second parser).

    Understands table headers, arrays of tables (counting their elements per parent) and
    multi-line arrays of inline tables (one `{` per element, as people write tariff periods).
    """

    def __init__(self, text: str) -> None:
        self.lines: dict[str, int] = {}
        table: Loc = ()
        counters: dict[str, int] = {}
        array_key: Loc | None = None
        array_index = 0
        depth = 0
        for number, raw in enumerate(text.splitlines(), start=1):
            line = _strip_comment(raw)
            if array_key is not None:
                for char in line:
                    if char == "{":
                        self._put((*array_key, array_index), number)
                        elem_keys = re.findall(r"([A-Za-z0-9_\-]+)\s*=", line)
                        for k in elem_keys:
                            self._put((*array_key, array_index, k), number)
                        array_index += 1
                        break
                depth += line.count("[") - line.count("]")
                if depth <= 0:
                    array_key = None
                continue
            header = _HEADER.match(line)
            if header:
                parts = tuple(_unquote(p) for p in _split_dotted(header.group(2)))
                if header.group(1) == "[[":
                    parent = _table_path(table, parts[:-1])
                    counter_key = format_path((*parent, parts[-1]))
                    index = counters.get(counter_key, -1) + 1
                    counters[counter_key] = index
                    # A new element resets the counters of arrays nested below it.
                    for k in [k for k in counters if k.startswith(counter_key + "[")]:
                        del counters[k]
                    table = (*parent, parts[-1], index)
                else:
                    table = _table_path(table, parts)
                self._put(table, number)
                continue
            key = _KEY.match(line)
            if key:
                parts = tuple(_unquote(p) for p in _split_dotted(key.group(1)))
                loc = (*table, *parts)
                self._put(loc, number)
                value = line[key.end():]
                depth = value.count("[") - value.count("]")
                if value.strip().startswith("[") and depth > 0:
                    array_key, array_index = loc, 0
                    if "{" in value:  # first element on the same line as the key
                        self._put((*loc, 0), number)
                        array_index = 1

    def _put(self, loc: Loc, line: int) -> None:
        self.lines.setdefault(format_path(loc), line)

    def line_of(self, loc: Loc) -> int | None:
        """The line of the key, else of the nearest enclosing key or table that has one."""
        for end in range(len(loc), 0, -1):
            found = self.lines.get(format_path(loc[:end]))
            if found is not None:
                return found
        return None


def _strip_comment(line: str) -> str:
    out, quote = [], ""
    for char in line:
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#":
            break
        out.append(char)
    return "".join(out)


def _split_dotted(text: str) -> list[str]:
    return [p.strip() for p in re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', text)]


def _unquote(part: str) -> str:
    return part[1:-1] if part[:1] in "\"'" and part[-1:] == part[:1] else part


def _table_path(current: Loc, parts: tuple[str, ...]) -> Loc:
    """Resolve `[devices.points]`-style names against the array elements opened so far."""
    resolved: list[str | int] = []
    for part in parts:
        resolved.append(part)
        # If the current table sits inside an array element with this prefix, keep its index.
        prefix_len = len(resolved)
        if len(current) > prefix_len and isinstance(current[prefix_len], int):
            if tuple(current[:prefix_len]) == tuple(resolved):
                resolved.append(current[prefix_len])
    return tuple(resolved)


def _pydantic_problems(exc: ValidationError, document: dict[str, Any]) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    for error in exc.errors(include_url=False):
        loc = tuple(p for p in error["loc"] if p not in ("modbus", "opcua"))
        kind = error["type"]
        value = error.get("input")
        if kind == "extra_forbidden":
            key = str(loc[-1])
            if key == "password":
                message = (
                    "a password is never written in the config: put it in a file "
                    "(password_file, mode 600) or an environment variable (password_env)"
                )
            else:
                known = _known_keys(loc[:-1], document)
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
                message = f"unknown key (a typo? {hint})"
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "literal_error":
            expected = error.get("ctx", {}).get("expected", "")
            message = f"{value!r} is not allowed (expected {expected})"
        elif kind in ("int_type", "int_parsing", "int_from_float"):
            message = f"{value!r} is not a whole number"
        elif kind in ("float_type", "float_parsing"):
            message = f"{value!r} is not a number"
        elif kind in ("bool_type", "bool_parsing"):
            message = f"{value!r} is not true or false"
        elif kind in ("string_type",):
            message = f"{value!r} is not a string (put it in quotes)"
        elif kind in ("dict_type", "model_type", "model_attributes_type"):
            message = f"expected a table, got {type(value).__name__} {value!r}"
        elif kind in ("tuple_type", "list_type"):
            message = f"expected an array, got {value!r}"
        else:
            message = error["msg"]
        problems.append((loc, message))
    return _dedupe_unions(problems)


def _dedupe_unions(problems: list[tuple[Loc, str]]) -> list[tuple[Loc, str]]:
    """`x | None` and `float | "auto"` unions report one problem per branch: keep the first."""
    seen: set[Loc] = set()
    out: list[tuple[Loc, str]] = []
    for loc, message in problems:
        trimmed = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in (
            "float", "int", "str", "literal['auto']", "function-after[positive(), float]",
        ))))
        if trimmed in seen:
            continue
        seen.add(trimmed)
        out.append((trimmed, message))
    return out


def _known_keys(loc: Loc, document: dict[str, Any]) -> list[str]:
    model: type[BaseModel] | None = Config
    node: Any = document
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else {}
            continue
        field = model.model_fields.get(part)
        node = node.get(part, {}) if isinstance(node, dict) else {}
        if field is None:
            return []
        model = _model_of(field.annotation, node)
    return sorted(model.model_fields) if model else []


def _model_of(annotation: Any, node: Any) -> type[BaseModel] | None:
    if isinstance(node, list):
        node = node[0] if node else {}
    if isinstance(node, dict) and node.get("driver") in ("modbus", "opcua"):
        return ModbusDevice if node["driver"] == "modbus" else OpcuaDevice
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    for candidate in candidates:
        for inner in (candidate, *getattr(candidate, "__args__", ())):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def parse_config(text: str, file: str = "<config>") -> Config:
    """Validate TOML text; ConfigError with every problem, each with its line."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line = int(match.group(1)) if match else None
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        col = f" (column {match.group(2)})" if match else ""
        raise ConfigError(file, [Problem(line, "", f"not valid TOML: {reason}{col}")]) from None
    locator = KeyLocator(text)
    _anchor_paths(document, Path(file).parent)
    try:
        config = Config.model_validate({**document, "path": Path(file)})
    except ValidationError as exc:
        found = _pydantic_problems(exc, document)
        raise ConfigError(
            file, [Problem(locator.line_of(loc), format_path(loc), msg) for loc, msg in found]
        ) from None
    problems = check_config(config)
    if problems:
        raise ConfigError(
            file, [Problem(locator.line_of(loc), format_path(loc), msg) for loc, msg in problems]
        )
    if config.mqtt.client_id is None:
        mqtt = config.mqtt.model_copy(update={"client_id": config.mqtt_client_id})
        config = config.model_copy(update={"mqtt": mqtt})
    return config


_PATH_KEYS = {
    "gateway": ("data_dir",),
    "mqtt": ("password_file", "ca_file", "cert_file", "key_file"),
}
_DEVICE_PATH_KEYS = ("password_file", "server_certificate", "user_certificate", "user_key")


def _anchor_paths(document: dict[str, Any], base: Path) -> None:
    """Relative paths in the file are relative to the file's folder, not to the working dir."""

    def anchor(table: Any, keys: tuple[str, ...]) -> None:
        if not isinstance(table, dict):
            return
        for key in keys:
            value = table.get(key)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                table[key] = str(base / value)

    for section, keys in _PATH_KEYS.items():
        anchor(document.get(section), keys)
    devices = document.get("devices")
    if isinstance(devices, list):
        for device in devices:
            anchor(device, _DEVICE_PATH_KEYS)


def load_config(path: str | Path = DEFAULT_PATH) -> Config:
    """Read and validate the file; ConfigError (exit 2 in the CLI) when it cannot be used."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, [Problem(None, "", f"cannot read the file: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(file, [Problem(None, "", "the file is not UTF-8 text")]) from None
    return parse_config(text, file)


# Re-exported for callers that build settings from the MQTT section.
MqttSection = MqttConfig
