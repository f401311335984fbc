"""Fixtures of the outbox tests: an outbox in a temp dir (the broker is tests/conftest.py's)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.outbox import Outbox, OutboxSettings


@pytest.fixture
def make_outbox(tmp_path: Path) -> Iterator[Callable[..., Outbox]]:
    opened: list[Outbox] = []

    def make(**kw: Any) -> Outbox:
        settings = OutboxSettings(
            path=kw.pop("path", tmp_path / "ironwatt.db"),
            gw_id=kw.pop("gw_id", "gw1"),
            site=kw.pop("site", "plant1"),
            **kw,
        )
        outbox = Outbox(settings)
        opened.append(outbox)
        return outbox

    yield make
    for outbox in opened:
        outbox.close()
