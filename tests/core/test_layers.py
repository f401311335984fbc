"""The driver side of the layer rules, checked: drivers/ is the lowest layer, and the gateway
reaches a protocol only through the registry (drivers/registry.py)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The technicians' protocol tools and the simulated plant speak one protocol by design.
PROTOCOL_TOOLS = {"gateway/cli/modbus.py", "gateway/cli/opcua.py"}
PROTOCOL_PACKAGES = ("drivers.modbus", "drivers.opcua")


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _modules(folder: str) -> list[Path]:
    found = sorted((REPO / folder).rglob("*.py"))
    assert found, folder  # a rule over no file would check nothing
    return found


def test_drivers_import_nothing_of_the_gateway() -> None:
    bad = [
        (str(p.relative_to(REPO)), name)
        for p in _modules("drivers")
        for name in _imports(p)
        if name == "gateway" or name.startswith("gateway.")
    ]
    assert bad == []


def test_the_gateway_reaches_protocols_through_the_registry() -> None:
    bad = []
    for path in _modules("gateway"):
        where = str(path.relative_to(REPO))
        if where in PROTOCOL_TOOLS or where.startswith("gateway/sim/"):
            continue
        bad += [
            (where, name)
            for name in _imports(path)
            if any(name == p or name.startswith(p + ".") for p in PROTOCOL_PACKAGES)
        ]
    assert bad == []
