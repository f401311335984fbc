"""Fixtures every suite shares: the one Mosquitto fixture, in the two scopes the suites need.

`broker` is a test's own (it may stop() and start() it to make an outage); `shared_broker` is
one per module, for tests that only publish and subscribe through it (never stop it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import Mosquitto


def _running(workdir: Path) -> Iterator[Mosquitto]:
    with Mosquitto(workdir) as mosquitto:
        yield mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of this test's own, on a free loopback port."""
    yield from _running(tmp_path / "mosquitto")


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One Mosquitto for a module's tests; a test that stops it takes `broker` instead."""
    yield from _running(tmp_path_factory.mktemp("broker"))
