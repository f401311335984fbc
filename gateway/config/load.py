"""Load ironwatt.toml into a validated `Config`, or refuse it with every problem and its line.

Problems read `FILE:LINE: devices[2].points[0].address: 70000 is out of range (0..65535)`;
tomllib keeps no positions, so `KeyLocator` maps key paths back to lines by a light scan.
"""

from __future__ import annotations

import copy
import difflib
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from drivers.plugin import Finding, Loc
from drivers.registry import PLUGINS
from drivers.wording import error_text, quote
from gateway.config.base import DEFAULT_PATH
from gateway.config.checks import check_config
from gateway.config.locator import KeyLocator, format_path
from gateway.config.model import Config, Device, MqttConfig
from gateway.errors import ConfigError, Problem

__all__ = [
    "DEFAULT_PATH",
    "Config",
    "ConfigError",
    "Device",
    "KeyLocator",
    "Problem",
    "load_config",
    "parse_config",
    "validate_document",
]

# Pydantic names the branch of a union in an error's location: a type, or a driver's tag.
_BRANCH = re.compile(
    r"^(?:[a-z-]+\[.*\]|\[key\]|float|int|str|bool|none|"
    + "|".join(re.escape(name) for name in PLUGINS)
    + r")$"
)
_DRIVERS = " or ".join(f'"{name}"' for name in PLUGINS)


def _device_models() -> dict[str, type[BaseModel]]:
    """Per driver name, its device model (the registry's order)."""
    return {name: p.config().device_model for name, p in PLUGINS.items()}


def _pydantic_problems(exc: ValidationError, document: dict[str, Any]) -> list[Finding]:
    problems: list[Finding] = []
    for error in exc.errors(include_url=False):
        loc = _file_loc(error["loc"])
        kind = error["type"]
        value = error.get("input")
        ctx = error.get("ctx", {})
        if kind == "extra_forbidden":
            loc, message = _unknown_key(loc, document)
        elif kind == "missing":
            message = _missing(loc, document)
        elif kind == "driver":
            driver = value.get("driver") if isinstance(value, dict) else None
            loc = (*loc, "driver")
            message = (
                f"required key is missing (driver = {_DRIVERS})"
                if driver is None
                else f"{quote(driver)} is not a known driver (expected {_DRIVERS})"
            )
        elif kind == "literal_error":
            expected = ctx.get("expected", "")
            message = (
                f"{quote(value)} is not allowed ({_did_you_mean(value, expected)}expected "
                f"{_or_list(expected)})"
            )
        elif kind in ("int_type", "int_parsing", "int_from_float"):
            message = f"{quote(value)} is not a whole number" + _unquote_hint(value)
        elif kind in ("float_type", "float_parsing", "finite_number"):
            message = f"{quote(value)} is not a number" + _unquote_hint(value)
        elif kind in ("bool_type", "bool_parsing"):
            message = f"{quote(value)} is not true or false" + _unquote_hint(value)
        elif kind == "string_type":
            message = f"{quote(value)} is not a string (put it in quotes)"
        elif kind in ("dict_type", "model_type", "model_attributes_type"):
            message = f"expected a table, got {_toml_type(value)} {quote(value)}"
        elif kind in ("tuple_type", "list_type"):
            message = _not_an_array(loc, value)
        elif kind.startswith("date"):
            message = f"{quote(value)} is not a date (expected YYYY-MM-DD, e.g. 2026-10-01)"
        elif kind == "path_type":
            message = f"{quote(value)} is not a file path (put it in quotes)"
        else:
            message = error["msg"]
        problems.append((loc, message))
    return _dedupe(_merge_typos(problems))


def _merge_typos(problems: list[Finding]) -> list[Finding]:
    """`adress = 72` gives "unknown key, did you mean address?" and "address is missing":
    the second says nothing new, so keep one problem, on the line the typo is on."""
    suggested = {
        (*loc[:-1], match.group(1))
        for loc, message in problems
        if (match := re.fullmatch(r"unknown key \(did you mean (\S+)\?\)", message))
    }
    return [
        (loc, message)
        for loc, message in problems
        if not (loc in suggested and message.startswith("required "))
    ]


def _file_loc(raw: tuple[str | int, ...]) -> Loc:
    """Pydantic's error location as a key path of the file: union branch names dropped."""
    return tuple(p for p in raw if not (isinstance(p, str) and _BRANCH.match(p)))


def _dedupe(problems: list[Finding]) -> list[Finding]:
    """Keep one problem per key: a union (`x | None`, `float | "auto"`) fails once per branch."""
    seen: set[Loc] = set()
    out: list[Finding] = []
    for loc, message in problems:
        if loc in seen:
            continue
        seen.add(loc)
        out.append((loc, message))
    return out


def _unknown_key(loc: Loc, document: dict[str, Any]) -> Finding:
    key = str(loc[-1])
    if key == "password":
        return loc, (
            "a password is never written in the config: put it in a file readable only by "
            "ironwatt (password_file, chmod 600) or name an environment variable (password_env)"
        )
    known = _known_keys(loc[:-1], document)
    models = _models_at(loc[:-1], document)
    devices = _device_models()
    for name, mine in devices.items():
        for driver, other in devices.items():
            if other is not mine and models == [other] and key in mine.model_fields:
                return (
                    loc,
                    f'unknown key: {key} is a {name} key, and this device has driver = "{driver}"',
                )
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return loc, f"unknown key (did you mean {close[0]}?)"
    if known:
        return loc, f"unknown key (known keys here: {', '.join(known)})"
    return loc, "unknown key"


def _missing(loc: Loc, document: dict[str, Any]) -> str:
    for model in _models_at(loc[:-1], document):
        field = model.model_fields.get(str(loc[-1]))
        if field is None:
            continue
        if _models_in(field.annotation) and not field.description:
            return f"required table [{format_path(loc)}] is missing"
        if field.description:
            return f"required key is missing ({field.description})"
    return "required key is missing"


def _not_an_array(loc: Loc, value: Any) -> str:
    key = format_path(tuple(p for p in loc if isinstance(p, str)))
    if isinstance(value, dict):
        # `[devices]` where `[[devices]]` was meant: the classic single/double bracket slip.
        return (
            f"[{key}] is a single table here: write [[{key}]] (double brackets), "
            "once for each element"
        )
    return f"expected an array, got {_toml_type(value)}: {loc[-1]} = [{quote(value)}]"


def _unquote_hint(value: Any) -> str:
    """A number or boolean in quotes is the likely mistake; say so only when it is one."""
    if not isinstance(value, str):
        return ""
    if value.strip().lower() in ("true", "false"):
        return " (write true and false without quotes)"
    try:
        float(value)
    except ValueError:
        return ""
    return " (write numbers without quotes)"


def _did_you_mean(value: Any, expected: str) -> str:
    """ "did you mean "float32" or "float64"? " for a value close to allowed ones ("float"),
    else nothing. The allowed values come as pydantic's "'a', 'b' or 'c'"."""
    if not isinstance(value, str):
        return ""
    allowed = re.findall(r"'([^']*)'", expected)
    scored = sorted(
        ((difflib.SequenceMatcher(None, value.lower(), a.lower()).ratio(), a) for a in allowed),
        reverse=True,
    )
    if not scored or scored[0][0] < 0.6:
        return ""
    best = [a for score, a in scored if score == scored[0][0]]
    best.sort(key=allowed.index)
    return "did you mean " + " or ".join(f'"{a}"' for a in best[:3]) + "? "


def _or_list(expected: str) -> str:
    """pydantic's "'a', 'b' or 'c'" with TOML's double quotes."""
    return expected.replace("'", '"')


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _known_keys(loc: Loc, document: dict[str, Any]) -> list[str]:
    """The keys the table at `loc` may hold (both drivers' when a device has no valid driver)."""
    models = _models_at(loc, document)
    return sorted({name for model in models for name in model.model_fields} - {"path"})


def _models_at(loc: Loc, document: dict[str, Any]) -> list[type[BaseModel]]:
    """The model(s) describing the table at `loc`, following the document for device drivers."""
    models: list[type[BaseModel]] = [Config]
    node: Any = document
    keyed = False  # the last key was a table of named tables ([energy.carriers.NAME])
    for part in loc:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else {}
            models = _pick_driver(models, node)
            continue
        node = node.get(part, {}) if isinstance(node, dict) else {}
        if keyed:
            keyed = False
            continue
        found: list[type[BaseModel]] = []
        for model in models:
            field = model.model_fields.get(part)
            if field is not None:
                found += _models_in(field.annotation)
                keyed = keyed or _is_mapping(field.annotation)
        models = _pick_driver(found, node)
        if not models:
            return []
    return models


def _is_mapping(annotation: Any) -> bool:
    return getattr(_base_type(annotation), "__origin__", None) is dict


def _pick_driver(models: list[type[BaseModel]], node: Any) -> list[type[BaseModel]]:
    devices = _device_models()
    if isinstance(node, dict) and all(m in models for m in devices.values()):
        driver = node.get("driver")
        chosen = devices.get(driver) if isinstance(driver, str) else None  # `driver = [1]`
        if chosen is not None:
            return [chosen]
    return models


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Every model class inside a type: tuple[Device, ...], X | None, Annotated[...]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    inner = [getattr(annotation, "__origin__", None), *getattr(annotation, "__args__", ())]
    for arg in inner:
        if arg is not None and arg is not annotation:
            for model in _models_in(arg):
                if model not in found:
                    found.append(model)
    return found


def parse_config(text: str, file: str = "<config>") -> Config:
    """Validate TOML text; ConfigError with every problem, each with its line."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, [_toml_problem(exc, text)]) from None
    return validate_document(document, file, text)


def validate_document(document: dict[str, Any], file: str = "<config>", text: str = "") -> Config:
    """Validate a parsed document (`text`, its TOML source, only gives problems their lines).

    Relative paths are anchored to the folder of `file`; `document` is modified in place.
    """
    _anchor_paths(document, Path(file).parent)
    found: list[Finding] = []
    if "path" in document:  # `Config.path` is set by the loader, not a key of the file
        found.append(_unknown_key(("path",), document))
    try:
        config = Config.model_validate({**document, "path": Path(file)})
    except ValidationError as exc:
        found += _pydantic_problems(exc, document)
        found += _checks_despite(found, document, file)
    else:
        found += check_config(config)
    if found:
        locator = KeyLocator(text)  # only a refused file needs line numbers
        raise ConfigError(
            file, [Problem(locator.line_of(loc) or 1, format_path(loc), msg) for loc, msg in found]
        )
    if config.mqtt.client_id is None:
        mqtt = config.mqtt.model_copy(update={"client_id": config.mqtt_client_id})
        config = config.model_copy(update={"mqtt": mqtt})
    return config


_TOML_HINTS = {
    "Invalid value": 'text values need quotes: name = "meter1"',
    "Cannot overwrite a value": "a key is given twice in the same table",
    "Cannot declare": "a table is declared twice",
    "Expected '=' after a key in a key/value pair": "a key needs = and a value",
    "Unclosed array": "an array needs its closing ]",
    "Unterminated string": "a string needs its closing quote",
    "Illegal character": "a string cannot hold this character (newline or control)",
}


def _toml_problem(exc: tomllib.TOMLDecodeError, text: str) -> Problem:
    """tomllib's terse message with the line, the column and what usually causes it."""
    message = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)", message)
    reason = re.sub(r"\s*\(at (?:line \d+, column \d+|end of document)\)", "", message)
    hint = next((h for key, h in _TOML_HINTS.items() if reason.startswith(key)), "")
    detail = reason[0].lower() + reason[1:] if reason else "syntax error"
    if hint:
        detail += f" ({hint})"
    if match is None:
        return Problem(len(text.splitlines()) or 1, "", f"not valid TOML: {detail}")
    line, column = int(match.group(1)), int(match.group(2))
    source = text.splitlines()[line - 1].strip() if line <= len(text.splitlines()) else ""
    if re.search(r"pass|secret|token|://[^/\s]*@", source, re.IGNORECASE):
        source = ""  # never echo what may be a secret into logs
    where = f" in `{source}`" if source else ""
    return Problem(line, "", f"not valid TOML at column {column}{where}: {detail}")


def _checks_despite(problems: list[Finding], document: dict[str, Any], file: str) -> list[Finding]:
    """The cross-key problems of a document that already failed validation.

    Values that failed are replaced by their default or a placeholder in a copy, validated
    again (names kept as written), and the cross-key checks run on the result; problems at or
    below a replaced key are dropped, as the first pass already explained them. Without this a
    technician would fix six problems only to be shown four more.
    """
    doc = copy.deepcopy(document)
    doc.pop("path", None)
    replaced: list[Loc] = [loc for loc, _ in problems]
    for _ in range(6):
        try:
            config = Config.model_validate({**doc, "path": Path(file)}, context={"repair": True})
        except ValidationError as exc:
            if not all(_repair(doc, error, replaced) for error in exc.errors()):
                return []
            continue
        try:
            found = check_config(config)
        except Exception:  # a placeholder may upset a check; the first pass stands
            return []
        return [(loc, msg) for loc, msg in found if not any(loc[: len(r)] == r for r in replaced)]
    return []


def _repair(doc: dict[str, Any], error: Any, replaced: list[Loc]) -> bool:
    """Make the value at the error's location valid (default, placeholder or removal)."""
    loc = _file_loc(error["loc"])
    kind = error["type"]
    if not loc:
        return False
    parent = _walk(doc, loc[:-1])
    key = loc[-1]
    if kind == "driver":  # nothing of the device can be checked without knowing its kind
        devices = _walk(doc, loc[:-1])
        if not isinstance(devices, list) or not isinstance(key, int):
            return False
        # The first protocol's minimal table: the rest of the file can still be checked.
        stand_in = next(iter(PLUGINS.values())).placeholder
        devices[key] = {"name": f"device-{key}", **stand_in}
        replaced.append(loc)
        return True
    replaced.append(loc)
    if isinstance(parent, dict) and isinstance(key, str):
        if kind == "extra_forbidden" or (key in parent and _has_default(loc, doc)):
            parent.pop(key, None)
            return True
        parent[key] = _placeholder(loc, doc)
        return True
    if isinstance(parent, list) and isinstance(key, int) and 0 <= key < len(parent):
        # An element of an array: take a copy of a sibling that passed (keeps the indices
        # of the elements after it, which later problems are reported with).
        for index, sibling in enumerate(parent):
            if index != key and (*loc[:-1], index) not in replaced:
                parent[key] = copy.deepcopy(sibling)
                return True
        if isinstance(parent[key], dict):
            return False
        parent[key] = {}
        return True
    return False


def _walk(doc: Any, loc: Loc) -> Any:
    node = doc
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return None
    return node


def _field_at(loc: Loc, doc: dict[str, Any]) -> Any:
    for model in _models_at(loc[:-1], doc):
        field = model.model_fields.get(str(loc[-1]))
        if field is not None:
            return field
    return None


def _has_default(loc: Loc, doc: dict[str, Any]) -> bool:
    field = _field_at(loc, doc)
    return field is not None and not field.is_required()


def _placeholder(loc: Loc, doc: dict[str, Any]) -> Any:
    """A value of the right shape for a required key that is missing or wrong."""
    field = _field_at(loc, doc)
    if field is None:
        return "placeholder"
    if _models_in(field.annotation):
        return [] if _is_sequence(field.annotation) else {}
    if _is_sequence(field.annotation):
        return []
    base = _base_type(field.annotation)
    if base is int or base is float:
        low = next((m.low for m in field.metadata if hasattr(m, "low")), 1)
        return base(max(low, 1))
    if base is bool:
        return False
    original = _walk(doc, loc)
    return original if isinstance(original, str) and original else "placeholder"


def _is_sequence(annotation: Any) -> bool:
    return getattr(annotation, "__origin__", None) in (tuple, list)


def _base_type(annotation: Any) -> Any:
    while hasattr(annotation, "__origin__") and getattr(annotation, "__metadata__", None):
        annotation = annotation.__origin__
    return annotation


_PATH_KEYS = {
    "gateway": ("data_dir",),
    "mqtt": ("password_file", "ca_file", "cert_file", "key_file"),
}


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
            plugin = PLUGINS.get(str(device.get("driver"))) if isinstance(device, dict) else None
            if plugin is not None:  # an unknown driver is refused: its paths do not matter
                anchor(device, plugin.file_keys)


def load_config(path: str | Path = DEFAULT_PATH) -> Config:
    """Read and validate the file; ConfigError (exit 2 in the CLI) when it cannot be used."""
    file = str(path)
    try:
        # utf-8-sig: Windows editors (Notepad) may start the file with a byte order mark.
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(
            file, [Problem(None, "", f"cannot read the file: {error_text(exc)}")]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(file, [Problem(None, "", "the file is not UTF-8 text")]) from None
    return parse_config(text, file)


# Re-exported for callers that build settings from the MQTT section.
MqttSection = MqttConfig
