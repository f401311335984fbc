"""Table tests of the config's value types, the unit table and the key locator."""

from __future__ import annotations

import json
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from drivers.fields import (
    Duration,
    Name,
    Size,
    format_duration,
    parse_duration,
    parse_size,
)
from gateway.config.load import KeyLocator, format_path
from gateway.energy import units


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("1s", 1.0),
        ("15m", 900.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("2d12h", 216000.0),
        (" 30s ", 30.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5 minutes", "15", "m", "", "1h 30m", "15M", "1w", "s1", "-1s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.5, "500ms"),
        (1, "1s"),
        (900, "15m"),
        (5400, "1h30m"),
        (86400, "1d"),
        (90061.5, "1d1h1m1s500ms"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(
    st.integers(min_value=0, max_value=400),
    st.integers(min_value=0, max_value=23),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=999),
)
def test_duration_round_trip(days: int, hours: int, minutes: int, secs: int, millis: int) -> None:
    seconds = days * 86400 + hours * 3600 + minutes * 60 + secs + millis / 1000
    if seconds == 0:
        return
    text = format_duration(seconds)
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-9)
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512MB", 512 << 20),
        ("64KB", 64 << 10),
        ("2GB", 2 << 30),
        ("1.5GB", 3 << 29),
        ("100B", 100),
        ("1 GiB", 1 << 30),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "512", "512mb", "MB", "-1MB"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


class _Holder(BaseModel):
    name: Name = "x"
    poll: Duration = 1.0
    size: Size = 1


@pytest.mark.parametrize("name", ["a", "meter-1", "sub_a", "0", "x" * 64])
def test_good_names(name: str) -> None:
    assert _Holder(name=name).name == name


@pytest.mark.parametrize("name", ["", "Meter1", "energy import", "x" * 65, "a.b", "a/b", "ü", 5])
def test_bad_names(name: object) -> None:
    with pytest.raises(ValidationError, match="is not a valid name"):
        _Holder.model_validate({"name": name})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (5, "is not a duration: write it as a string with a unit"),
        ("0s", "must be longer than zero"),
        ("-5s", "must be longer than zero"),
        (True, "is not a duration"),
    ],
)
def test_duration_field_errors(value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _Holder.model_validate({"poll": value})


def test_size_field_accepts_bytes() -> None:
    assert _Holder(size=4096).size == 4096
    assert _Holder.model_validate({"size": "4KB"}).size == 4096
    with pytest.raises(ValidationError, match="must be larger than zero"):
        _Holder(size=0)


# -- units -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "target", "factor"),
    [
        ("Wh", "kWh", 1e-3),
        ("MWh", "kWh", 1e3),
        ("kWh", "Wh", 1e3),
        ("W", "kW", 1e-3),
        ("m3/s", "m3/h", 3600.0),
        ("kg/h", "t/h", 1e-3),
        ("L/min", "m3/h", 0.06),
        ("MJ", "GJ", 1e-3),
        ("kWh", "m3", None),
        ("kW", "kWh", None),
        ("nope", "kWh", None),
    ],
)
def test_conversion_factor(source: str, target: str, factor: float | None) -> None:
    result = units.conversion_factor(source, target)
    if factor is None:
        assert result is None
    else:
        assert result == pytest.approx(factor)


@pytest.mark.parametrize(
    ("rate", "amount", "dimension"),
    [
        ("kW", "kWh", "energy"),
        ("W", "Wh", "energy"),
        ("MW", "MWh", "energy"),  # the readings are integrated as they are: MW x h = MWh
        ("m3/h", "m3", "volume"),
        ("Nm3/h", "Nm3", "volume"),
        ("m3/s", None, "volume"),  # 3600 m3 per unit: no name, yet a volume all the same
        ("t/h", "t", "mass"),
        ("kg/h", "kg", "mass"),
        ("GJ/h", "GJ", "heat"),
        ("kvar", "kvarh", "reactive_energy"),
        ("kVA", "kVAh", "apparent_energy"),
        ("V", None, None),
        ("kWh", None, None),
        ("bogus", None, None),
    ],
)
def test_integral_unit(rate: str, amount: str | None, dimension: str | None) -> None:
    assert units.integral_unit(rate) == amount
    assert units.integral_dimension(rate) == dimension


def test_every_dimension_has_one_canonical_unit() -> None:
    for unit in units.UNITS.values():
        canonical = units.canonical(unit.name)
        assert units.UNITS[canonical].factor == 1.0
        assert units.UNITS[canonical].dimension == unit.dimension


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("kwh", "kWh"), ("KWH", "kWh"), ("m³", "m3"), ("m3/hr", "m3/h"), ("xyz", None)],
)
def test_unit_suggestions(typed: str, meant: str | None) -> None:
    assert units.suggest(typed) == meant


def test_default_carriers_have_known_units_and_sources() -> None:
    from gateway.energy.carriers import DEFAULT_CARRIERS

    for name, carrier in DEFAULT_CARRIERS.items():
        assert units.lookup(carrier.unit) is not None, name
        assert carrier.source, name


# -- the key locator -------------------------------------------------------------------------

LOCATOR_TEXT = '''\
# a comment with = and [brackets]
title = "a # is not a comment [x]"   # but this is
[gateway]
id = "gw1"
"quoted key" = 1
site.name = "dotted"

[[devices]]
name = "d0"
  [[devices.points]]
  name = "p0"
  [[devices.points]]
  name = "p1"
  [devices.options]
  k = 1

[[devices]]
name = "d1"
  [[devices.points]]
  name = "q0"
  members = [
    "a",  # ] [ { inside a comment
    "b"
  ]

[tariff]
periods = [
  { name = "peak", price = 1.0, hours = ["08:00-11:00", "18:00-23:00"] },
  { name = "flat", price = 0.5 }, { name = "x", sub = [
    { k = 1 },
    { k = 2 }] },
]
text = """multi
line = 1
[not.a.table]"""
literal = 'C:\\path\\'
escaped = "quote \\" # still a string"
after = 3
'''

LOCATOR_LINES = {
    "title": 2,
    "gateway": 3,
    "gateway.id": 4,
    "gateway.quoted key": 5,
    "gateway.site": 6,
    "gateway.site.name": 6,
    "devices": 8,
    "devices[0]": 8,
    "devices[0].name": 9,
    "devices[0].points[0]": 10,
    "devices[0].points[0].name": 11,
    "devices[0].points[1]": 12,
    "devices[0].points[1].name": 13,
    "devices[0].options": 14,
    "devices[0].options.k": 15,
    "devices[1]": 17,
    "devices[1].points[0]": 19,
    "devices[1].points[0].name": 20,
    "devices[1].points[0].members": 21,
    "devices[1].points[0].members[0]": 22,
    "devices[1].points[0].members[1]": 23,
    "tariff.periods": 27,
    "tariff.periods[0]": 28,
    "tariff.periods[0].hours[1]": 28,
    "tariff.periods[1].price": 29,
    "tariff.periods[2].name": 29,
    "tariff.periods[2].sub[0].k": 30,
    "tariff.periods[2].sub[1]": 31,
    "tariff.text": 33,
    "tariff.literal": 36,
    "tariff.escaped": 37,
    "tariff.after": 38,
}


def test_locator_text_is_valid_toml() -> None:
    document = tomllib.loads(LOCATOR_TEXT)
    assert document["tariff"]["escaped"] == 'quote " # still a string'
    assert len(document["devices"][0]["points"]) == 2


@pytest.mark.parametrize(("path", "line"), sorted(LOCATOR_LINES.items()))
def test_locator_lines(path: str, line: int) -> None:
    assert KeyLocator(LOCATOR_TEXT).lines.get(path) == line


def test_locator_finds_no_keys_inside_strings() -> None:
    lines = KeyLocator(LOCATOR_TEXT).lines
    assert not any(k.startswith(("not", "tariff.line", "tariff.not")) for k in lines)
    assert "line" not in lines


def test_locator_falls_back_to_the_enclosing_table() -> None:
    locator = KeyLocator(LOCATOR_TEXT)
    assert locator.line_of(("devices", 1, "points", 0, "address")) == 19  # missing key
    assert locator.line_of(("devices", 0, "points", 1, "name")) == 13
    assert locator.line_of(("nothing",)) is None


def test_format_path() -> None:
    assert format_path(("devices", 2, "points", 0, "address")) == "devices[2].points[0].address"
    assert format_path(("mqtt", "url")) == "mqtt.url"


def test_locator_handles_crlf_and_dotted_headers() -> None:
    text = (
        '[energy.carriers.electricity]\r\nunit = "kWh"\r\n\r\n'
        '[ "energy" . carriers.steam ]\r\nunit = "t"\r\n'
    )
    tomllib.loads(text)
    lines = KeyLocator(text).lines
    assert lines["energy.carriers.electricity.unit"] == 2
    assert lines["energy.carriers.steam"] == 4
    assert lines["energy.carriers.steam.unit"] == 5


# A generated document, written in the styles technicians use, must have every key found on
# the line it was written on.

_VALUE = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.booleans(),
    st.text(alphabet="ab #[]={},.'\"\\", max_size=8),
)
_KEY = st.sampled_from(["name", "address", "unit", "scale", "node", "kind", "note"])
_POINT = st.dictionaries(_KEY, _VALUE, min_size=1, max_size=4)
_DEVICE = st.tuples(
    st.dictionaries(st.sampled_from(["name", "host", "port", "poll"]), _VALUE, max_size=3),
    st.lists(_POINT, max_size=3),
    st.sampled_from(["headers", "inline", "one-line"]),
)


def _emit(devices: list[tuple[dict[str, object], list[dict[str, object]], str]], noise: bool):
    lines: list[str] = []
    where: dict[str, int] = {}

    def add(text: str, path: str | None = None) -> None:
        lines.append(text)
        if path is not None:
            where.setdefault(path, len(lines))
        if noise:
            lines.append('# a comment = [with] "brackets" #')

    add("[gateway]", "gateway")
    add('id = "gw1"  # trailing # comment', "gateway.id")
    for d, (fields, points, style) in enumerate(devices):
        add("[[devices]]", f"devices[{d}]")
        for key, value in fields.items():
            add(f"{key} = {json.dumps(value)}", f"devices[{d}].{key}")
        if style == "headers":
            for p, point in enumerate(points):
                add("  [[devices.points]]", f"devices[{d}].points[{p}]")
                for key, value in point.items():
                    add(f"  {key} = {json.dumps(value)}", f"devices[{d}].points[{p}].{key}")
        elif points and style == "inline":
            add("points = [", f"devices[{d}].points")
            for p, point in enumerate(points):
                body = ", ".join(f"{k} = {json.dumps(v)}" for k, v in point.items())
                add(f"  {{ {body} }},", f"devices[{d}].points[{p}]")
                for key in point:
                    where[f"devices[{d}].points[{p}].{key}"] = len(lines) - (1 if noise else 0)
            add("]")
        elif points:
            body = ", ".join(
                "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in point.items()) + " }"
                for point in points
            )
            add(f"points = [{body}]", f"devices[{d}].points")
            for p, point in enumerate(points):
                where[f"devices[{d}].points[{p}]"] = where[f"devices[{d}].points"]
                for key in point:
                    where[f"devices[{d}].points[{p}].{key}"] = where[f"devices[{d}].points"]
    return "\n".join(lines) + "\n", where


@given(st.lists(_DEVICE, min_size=1, max_size=4), st.booleans())
def test_locator_on_generated_documents(
    devices: list[tuple[dict[str, object], list[dict[str, object]], str]], noise: bool
) -> None:
    text, where = _emit(devices, noise)
    document = tomllib.loads(text)  # the emitter writes valid TOML ...
    assert [d.get("points", []) for d in document["devices"]] == [
        p if (p or s == "headers") else [] for _, p, s in devices
    ]
    found = KeyLocator(text).lines  # ... and every key is found where it was written
    assert {path: found.get(path) for path in where} == where
