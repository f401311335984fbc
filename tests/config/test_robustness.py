"""Whatever a technician writes, the loader answers with a Config or a ConfigError, never a crash.

Hypothesis replaces or deletes random keys of the documented example with values of any TOML
type and checks the outcome, including the second pass that finds cross-key problems despite
shape errors.
"""

from __future__ import annotations

import copy
import datetime
import tomllib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config.load import ConfigError, validate_document
from tests.config.support import REPO

EXAMPLE = REPO / "docs" / "config.example.toml"
DOCUMENT = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*prefix, key))
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.append((*prefix, index))
            out += _paths(value, (*prefix, index))
    return out


PATHS = _paths(DOCUMENT)
_SCALAR = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(
        ["", "auto", "15m", "-1s", "modbus", "opcua", "None", "a.b", "UTC", "00:00-24:00"]
    ),
    st.dates(min_value=datetime.date(1, 1, 1)),
)
_VALUE = st.one_of(
    st.none(),  # None: delete the key
    _SCALAR,
    st.lists(_SCALAR, max_size=3),
    st.dictionaries(
        st.sampled_from(["name", "unit", "x", "driver", "months"]), _SCALAR, max_size=3
    ),
)


def _set(document: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = document
    for part in path[:-1]:
        node = node[part]
    if value is None:
        if isinstance(node, dict):
            del node[path[-1]]
        else:
            node.pop(path[-1])
    else:
        node[path[-1]] = value


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(PATHS), _VALUE), min_size=1, max_size=4))
def test_any_mutation_is_a_config_or_a_report(changes: list[tuple[tuple[Any, ...], Any]]) -> None:
    document = copy.deepcopy(DOCUMENT)
    for path, value in changes:
        try:
            _set(document, path, value)
        except (KeyError, IndexError, TypeError, AttributeError):
            continue  # an earlier change removed or replaced this key's parent (by a scalar)
    refusal = _refusal(document)
    if refusal is None:
        return  # the changes left a valid config
    assert refusal.problems
    for problem in refusal.problems:
        assert problem.message
        assert problem.line is not None
    assert "Traceback" not in refusal.report()


def _refusal(document: dict[str, Any]) -> ConfigError | None:
    """The ConfigError validating `document` raises, None when it is valid; anything else
    escapes and fails the test."""
    try:
        validate_document(document, str(EXAMPLE))
    except ConfigError as exc:
        return exc
    return None
