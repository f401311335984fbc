"""The kernel snapshot file: replaced whole or not at all."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.energy.snapshot_file import SNAPSHOT_NAME, read_snapshot, write_snapshot


def test_written_in_parts_read_whole_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / SNAPSHOT_NAME
    assert read_snapshot(path) is None
    write_snapshot(path, [b"IWA", b"\x00" * 100_000, b"[]"])
    assert read_snapshot(path) == b"IWA" + b"\x00" * 100_000 + b"[]"
    write_snapshot(path, (b"short",))
    assert read_snapshot(path) == b"short"
    assert os.stat(path).st_mode & 0o777 == 0o600  # energy data of the plant: the service's own
    assert sorted(p.name for p in tmp_path.iterdir()) == [SNAPSHOT_NAME]


def test_a_write_that_fails_midway_leaves_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / SNAPSHOT_NAME
    write_snapshot(path, [b"before"])

    def parts() -> Iterator[bytes]:
        yield b"half of the new"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_snapshot(path, parts())
    assert read_snapshot(path) == b"before"
    assert sorted(p.name for p in tmp_path.iterdir()) == [SNAPSHOT_NAME]  # no temp file left


def test_an_unwritable_place_raises_and_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / SNAPSHOT_NAME
    write_snapshot(path, [b"before"])
    (tmp_path / (SNAPSHOT_NAME + ".tmp")).mkdir()  # in the way, as a full or broken disk would be
    with pytest.raises(IsADirectoryError):
        write_snapshot(path, [b"after"])
    assert read_snapshot(path) == b"before"
