"""Built-in Modbus register maps of common meters, one TOML data file per model.

Stdlib only (the config validator imports it to check `profile = "..."`); the format is in
docs/design.md (Profiles). Points use canonical names and units (energy_import in kWh, ...).
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["available", "load", "points_of"]


def available() -> list[str]:
    """Names of every built-in profile (file stems), sorted."""
    files = resources.files(__name__)
    return sorted(p.name[: -len(".toml")] for p in files.iterdir() if p.name.endswith(".toml"))


@cache
def load(name: str) -> dict[str, Any]:
    """The parsed profile document; KeyError naming the known profiles when it does not exist."""
    if name not in available():
        raise KeyError(f"unknown profile {name!r} (known: {', '.join(available())})")
    text = resources.files(__name__).joinpath(f"{name}.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def points_of(name: str, overridden: Collection[str] = ()) -> list[dict[str, Any]]:
    """The profile's points as raw tables, its `defaults` applied, without the ones named in
    `overridden` (a device's own points replace the profile's of the same name).

    The one profile merge: the config model validates these, `drivers.modbus.points` reads them.
    """
    document = load(name)
    defaults = document.get("defaults", {})
    return [
        {k: v for k, v in {**defaults, **raw}.items() if k != "note"}
        for raw in document.get("points", ())
        if raw["name"] not in overridden
    ]
