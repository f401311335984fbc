"""A real kernel seen through, for tests that must know how much it queued at once."""

from __future__ import annotations

from typing import Any


class WatchedKernel:
    """Delegates everything to `kernel`; `most` is the most rows due_keys ever named (what was
    queued, due, at once)."""

    def __init__(self, kernel: Any) -> None:
        self._kernel = kernel
        self.most = 0

    def due_keys(self, t: float, force: bool = True) -> Any:
        keys = self._kernel.due_keys(t, force)
        self.most = max(self.most, len(keys["point"]))
        return keys

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kernel, name)
