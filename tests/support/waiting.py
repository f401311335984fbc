"""Polling for a condition in tests against real servers: wait on state, never sleep blindly."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["wait"]


def wait(pred: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """True as soon as `pred()` holds, False once `timeout` seconds passed without it."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
