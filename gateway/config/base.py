"""What every reader of ironwatt.toml shares, without pydantic: the default path, the problem
report, secrets.

The daemon imports only this side of the config package (see gateway/config/records.py); the
validating side (config.py, config_model.py) imports pydantic.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from drivers.secrets import read_secret

__all__ = ["DEFAULT_PATH", "device_named", "read_secret"]

DEFAULT_PATH = Path("/etc/ironwatt/ironwatt.toml")


def device_named(devices: Iterable[Any], name: str, path: Path) -> Any:
    """The device called `name` (Config.device, for the models and the daemon's records)."""
    for dev in devices:
        if dev.name == name:
            return dev
    raise KeyError(f"no device named {name!r} in {path}")
