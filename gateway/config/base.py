"""What every reader of ironwatt.toml shares, without pydantic: the default path, the problem
report, secrets.

The daemon imports only this side of the config package (see gateway/config/records.py); the
validating side (config.py, config_model.py) imports pydantic.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_PATH", "ConfigError", "Problem", "device_named", "read_secret"]

DEFAULT_PATH = Path("/etc/ironwatt/ironwatt.toml")


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


def read_secret(path: Path | str | None, env: str | None) -> str | None:
    """The secret from its file (trailing newline stripped) or environment variable."""
    if path is not None:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    if env is not None:
        return os.environ.get(env)
    return None


def device_named(devices: Iterable[Any], name: str, path: Path) -> Any:
    """The device called `name` (Config.device, for the models and the daemon's records)."""
    for dev in devices:
        if dev.name == name:
            return dev
    raise KeyError(f"no device named {name!r} in {path}")
