"""The kernel's constants and binary snapshot layout, shared by the compiled kernel and its twin.

One definition of the point kinds, the output columns, the limits and the snapshot format
(docs/kernel.md), with the header checks: both kernels and both snapshot codecs read them here.
"""

from __future__ import annotations

import zlib
from struct import Struct

__all__ = [
    "ACC",
    "ACC_FIELDS",
    "BLOCK",
    "BLOCK_COLUMNS",
    "COUNT",
    "COUNTER",
    "CRC",
    "CRC_AT",
    "CRC_END",
    "CSTART_AT",
    "F64",
    "GAUGE",
    "HEAD",
    "HOLD",
    "KERNEL_SNAPSHOT_VERSION",
    "KEY_LEN",
    "MAGIC",
    "MAX_KEY_BYTES",
    "MAX_PERIODS",
    "MAX_REVISABLE",
    "POINT",
    "RATE",
    "REC",
    "TRAPEZOID",
    "WINDOW_COLUMNS",
    "check_header",
    "corrupt",
    "snapshot_structs",
]

# Point kinds and integrations, as configure_point takes them and the snapshot stores the kind.
COUNTER = 0
RATE = 1
GAUGE = 2
TRAPEZOID = 0
HOLD = 1

# Column name and array typecode of every closed-window record, in order. `periods` (TOU split,
# n_periods doubles per record) comes as one extra flat column.
WINDOW_COLUMNS: tuple[tuple[str, str], ...] = (
    ("point", "i"),
    ("interval", "b"),
    ("kind", "B"),
    ("revision", "i"),
    ("estimated", "B"),
    ("start", "d"),
    ("end", "d"),
    ("delta", "d"),
    ("first", "d"),
    ("last", "d"),
    ("mean", "d"),
    ("min", "d"),
    ("max", "d"),
    ("rollovers", "i"),
    ("resets", "i"),
    ("samples", "i"),
    ("bad", "i"),
    ("coverage", "d"),
    ("peak", "d"),
    ("peak_at", "d"),
    ("gap", "B"),  # 1: closed during a counter gap, may be published again with revision + 1
)
# The columns of Kernel.due_keys: which window a due row is, and whether a first publication.
KEY_COLUMNS: tuple[str, ...] = ("point", "interval", "start", "revision")
BLOCK_COLUMNS: tuple[tuple[str, str], ...] = (
    ("point", "i"),
    ("start", "d"),
    ("end", "d"),
    ("demand", "d"),
    ("coverage", "d"),
)

# Windows closed during one point's gap that a later reading may still revise, at most.
MAX_REVISABLE = 4096
MAX_KEY_BYTES = 0xFFFF  # a key's length is a u16 in the snapshot
MAX_PERIODS = 0x7FFF  # TOU periods are shorts in the grid, their count a u16 in the header

# ---- the kernel snapshot (docs/kernel.md, "Snapshot format") ---------------------------------

# The version of this binary format. Version 1 was JSON; the aggregator's envelope around it
# (gateway/energy/aggregate.py) has a version of its own.
KERNEL_SNAPSHOT_VERSION = 2
MAGIC = b"IWK"

# Little-endian and packed. Header: magic, version, CRC-32 of every byte after the CRC field,
# intervals, periods, points.
HEAD = Struct("<3sBIHHI")
CRC = Struct("<I")
CRC_AT = 4  # where the checksum sits in the header
CRC_END = 8  # the checksum covers data[CRC_END:]
KEY_LEN = Struct("<H")
COUNT = Struct("<I")
F64 = Struct("<d")
# The fields of a window accumulator, in snapshot order (then its n_periods TOU sums).
ACC_FIELDS = (
    "start", "delta", "covered", "vmin", "vmax", "first", "last",
    "samples", "bad", "rollovers", "resets", "estimated", "peak", "peak_at",
)  # fmt: skip
# Per point after its key: kind, state (tseen, based, t0, v0, cstart, pend_bad, pend_t), the
# open cell (delta, covered, vmin, vmax, first, last, samples, bad, rollovers, resets,
# estimated), then per interval the window accumulator in ACC_FIELDS order and its periods.
_POINT_FMT = "B" + "dBdddid" + "6d4iB"
_ACC_FMT = "7d4iB2d"
# A closed window without its point id (WINDOW_COLUMNS[1:] in order), then its periods.
_REC_FMT = "BBiB8d4i3dB"
POINT = Struct("<" + _POINT_FMT)  # a point's part after its key, without its windows
ACC = Struct("<" + _ACC_FMT)  # one window accumulator without its periods
REC = Struct("<" + _REC_FMT)  # one window record without its periods
BLOCK = Struct("<4d")  # a demand block: start, end, demand, coverage
CSTART_AT = 1 + 8 + 1 + 8 + 8  # offset of cstart from the kind byte


def corrupt(what: str) -> ValueError:
    """The error for a snapshot that fails a structure check: what failed, and what to do."""
    return ValueError(
        f"kernel snapshot is truncated or corrupt ({what}); the open windows cannot be resumed: "
        "move the state file aside and restart"
    )


def check_header(data: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """Check magic, version, length and checksum; returns (intervals, periods, points)."""
    if len(data) < 4 or data[:3] != MAGIC:
        raise ValueError("not an ironwatt kernel snapshot (bad magic); delete the state file")
    version = data[3]
    if version != KERNEL_SNAPSHOT_VERSION:
        raise ValueError(
            f"kernel snapshot version {version} is not supported by this build (it reads "
            f"version {KERNEL_SNAPSHOT_VERSION}); the open windows cannot be resumed: move the "
            "state file aside and restart"
        )
    if len(data) < HEAD.size:
        raise corrupt("shorter than its header")
    _, _, crc, nk, nper, count = HEAD.unpack_from(data)
    # A binary snapshot has no syntax to break: without the checksum a flipped bit would
    # resume as a wrong energy figure instead of being refused.
    with memoryview(data) as view:
        if zlib.crc32(view[CRC_END:]) != crc:
            raise corrupt("checksum mismatch")
    return nk, nper, count


def snapshot_structs(nk: int, nper: int) -> tuple[Struct, Struct]:
    """(point part after the key, window record) of a kernel with nk intervals, nper periods."""
    point = Struct("<" + _POINT_FMT + (_ACC_FMT + f"{nper}d") * nk)
    rec = Struct(f"<{_REC_FMT}{nper}d")
    return point, rec
