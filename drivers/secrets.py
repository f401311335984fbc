"""Secrets named by the config (a private file, or an environment variable), read when needed.

Stdlib only: the daemon's records and the validating models read them alike.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["read_secret"]


def read_secret(path: Path | str | None, env: str | None) -> str | None:
    """The secret from its file (trailing newline stripped) or environment variable."""
    if path is not None:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    if env is not None:
        return os.environ.get(env)
    return None
