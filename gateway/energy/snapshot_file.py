"""The kernel snapshot on disk: one file in data_dir, replaced atomically at every window close.

Why a file and not a row of the buffer database (where it lived first): the snapshot is a few MB
rewritten at every close, and through SQLite each write cost a transient ~8 MB inside SQLite
(resident afterwards in the writer thread's heap: the daemon's memory budget is 60 MB) and went
to disk twice (the WAL, then the checkpoint). A file written in place of the old one costs the
bytes once, and either the old or the new file is there after a power cut, never half of one.
The bytes are the aggregator's snapshot (AGGREGATOR_SNAPSHOT_VERSION, gateway/energy/aggregate.py)
around the kernel's (KERNEL_SNAPSHOT_VERSION, ext/_layout.py); this module has no format of its own.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["SNAPSHOT_NAME", "read_snapshot", "write_snapshot"]

SNAPSHOT_NAME = "kernel.snapshot"


def write_snapshot(path: Path, parts: Iterable[bytes]) -> None:
    """Write `parts` (concatenated) to `path` atomically and durably (fsync, rename, fsync dir).

    OSError (disk full, read-only, permissions) leaves the previous file as it was.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with open(fd, "wb", closefd=True) as out:
            for part in parts:
                out.write(part)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename itself must survive a power cut too.
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_snapshot(path: Path) -> bytes | None:
    """The last snapshot written, or None when there is none."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
