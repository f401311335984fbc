"""Waiting for a condition in tests against real servers: wait on state, never sleep blindly.

`wait` answers whether it came (for tests that assert on the answer with their own message);
`wait_until` and `await_until` fail the test, naming what never came.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

__all__ = ["await_until", "wait", "wait_until"]

# What never came: a text, or a function that describes it when the wait failed (the state then).
What = str | Callable[[], str]


def wait(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """True as soon as `pred()` holds, False once `timeout` seconds passed without it."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def _timed_out(timeout: float, what: What) -> AssertionError:
    text = what() if callable(what) else what
    return AssertionError(f"timed out after {timeout} s waiting for {text}")


def wait_until(pred: Callable[[], Any], timeout: float, what: What, interval: float = 0.05) -> None:
    """Return once `pred()` holds; fail the test after `timeout` s, naming `what`."""
    if not wait(pred, timeout, interval):
        raise _timed_out(timeout, what)


# The deadline is a parameter, not asyncio.timeout at the caller: the failure names it and
# what never came, and a test reads as one line (what it waits for, how long at most).
async def await_until(
    pred: Callable[[], Any],
    timeout: float,  # noqa: ASYNC109 - the deadline is part of the failure message
    what: What,
    interval: float = 0.05,
) -> None:
    """`wait_until` on a running event loop (the servers and drivers keep running); `pred` may
    be a coroutine function (a read from a server, say)."""
    deadline = time.monotonic() + timeout
    while True:
        held = pred()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what)
        await asyncio.sleep(interval)
