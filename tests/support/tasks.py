"""Running a driver's `run()` as a background task for the length of a test block."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol, TypeVar

__all__ = ["running"]


class _Runs(Protocol):
    async def run(self) -> Any: ...


R = TypeVar("R", bound=_Runs)


@contextlib.asynccontextmanager
async def running(driver: R) -> AsyncIterator[R]:
    """The driver's run() as a task for the duration of the block, cancelled after."""
    task = asyncio.create_task(driver.run())
    try:
        yield driver
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
