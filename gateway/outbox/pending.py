"""The bounded queue between the outbox's callers and its writer thread: batches to store,
acknowledged ids to delete, calls to run on the writer's connection.

Producers block (or get OutboxBusy) while `max_pending` batches wait: backpressure, not memory.
"""

from __future__ import annotations

import concurrent.futures
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import OutboxBusy, OutboxClosed

__all__ = ["Call", "Item", "PendingPut", "WriteQueue"]

Item = tuple[str, bytes, int, int]  # topic, encoded rest of the body, qos, cls
Call = tuple[Callable[[sqlite3.Connection], Any], concurrent.futures.Future[Any]]


@dataclass(slots=True)
class PendingPut:
    items: list[Item]
    future: concurrent.futures.Future[list[int | None]]


class WriteQueue:
    """What waits for the writer. The writer (the one consumer) reads the fields under `cv`."""

    def __init__(self, path: Path, max_pending: int) -> None:
        self.cv = threading.Condition()
        self.puts: deque[PendingPut] = deque()  # popped by the writer once stored
        self.acks: list[int] = []
        self.calls: deque[Call] = deque()
        self.closing = False
        self._path = path
        self._max_pending = max_pending

    def __len__(self) -> int:
        """Batches waiting (or being stored)."""
        return len(self.puts)

    def put(
        self, items: list[Item], block: bool, timeout: float | None
    ) -> concurrent.futures.Future[list[int | None]]:
        fut: concurrent.futures.Future[list[int | None]] = concurrent.futures.Future()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cv:
            while len(self.puts) >= self._max_pending and not self.closing:
                if not block:
                    raise OutboxBusy(f"buffer {self._path}: writer queue full")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise OutboxBusy(f"buffer {self._path}: writer queue full")
                self.cv.wait(left)
            if self.closing:
                raise OutboxClosed(f"outbox {self._path} is closed")
            self.puts.append(PendingPut(items, fut))
            self.cv.notify_all()
        return fut

    def ack(self, ids: Iterable[int]) -> None:
        with self.cv:
            self.acks.extend(ids)
            self.cv.notify_all()

    def call(
        self, fn: Callable[[sqlite3.Connection], Any], writer_alive: bool
    ) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self.cv:
            if self.closing or not writer_alive:
                fut.set_exception(OutboxClosed(f"outbox {self._path} is closed"))
                return fut
            self.calls.append((fn, fut))
            self.cv.notify_all()
        return fut

    def close(self) -> bool:
        """Refuse new batches and wake the writer; False if it was closed already."""
        with self.cv:
            if self.closing:
                return False
            self.closing = True
            self.cv.notify_all()
        return True

    def stored(self, count: int) -> None:
        """The writer stored the oldest `count` batches: make room for blocked producers."""
        with self.cv:
            for _ in range(count):
                self.puts.popleft()
            self.cv.notify_all()
