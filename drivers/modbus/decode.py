"""Decoding of whole register blocks into sample batches: types, byte/word orders, scale, sentinels.

A block is unpacked by a few precompiled `struct` formats (one per byte/word order present),
then scaled point by point; "not available" sentinels, NaN and infinities become bad samples.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from drivers.modbus.points import BIT_FUNCTIONS, REGISTER_WORDS, PointSpec
from gateway.samples import QUALITY_BAD, QUALITY_GOOD, SampleBatch

__all__ = [
    "BlockDecoder",
    "decode_value",
    "emit_bad",
    "encode_value",
    "is_sentinel",
    "registers_to_bytes",
]

_CODES = {
    "bool": "H",
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}
# Each order is one of the two byte images of the block read with one struct endianness:
#   "be" = the wire bytes, "sw" = every register's two bytes swapped.
#   ABCD: be, big.  DCBA: be, little (whole value reversed).
#   CDAB: sw, little (low word first, bytes within a word big-endian).  BADC: sw, big.
_ORDER_VIEW = {"ABCD": ("be", ">"), "DCBA": ("be", "<"), "CDAB": ("sw", "<"), "BADC": ("sw", ">")}

_PLAIN, _FLOAT, _INT, _BIT, _BOOL = range(5)


def _sentinels(type_: str) -> tuple[int, int] | None:
    """Values meters use for "not available" (mbmd, SunSpec, ABB and Schneider manuals).

    Unsigned: all bits set. Signed: the maximum (ABB: 0x7FFF...) and the minimum
    (SunSpec/Schneider: 0x8000..., e.g. INT64 energy on PM5xxx). A real reading at the very
    end of a register's range is already a saturated one, so nothing true is lost.
    """
    if type_ in ("uint16", "uint32", "uint64"):
        bits = 16 * REGISTER_WORDS[type_]
        top = (1 << bits) - 1
        return top, top
    if type_ in ("int16", "int32", "int64"):
        bits = 16 * REGISTER_WORDS[type_]
        return (1 << (bits - 1)) - 1, -(1 << (bits - 1))
    return None


def is_sentinel(type_: str, raw: float) -> bool:
    """Whether a decoded raw value means "not available" for this type."""
    if type_ in ("float32", "float64"):
        return not math.isfinite(raw)
    s = _sentinels(type_)
    return s is not None and (raw == s[0] or raw == s[1])


def registers_to_bytes(registers: Sequence[int]) -> tuple[bytes, bytes]:
    """The block as wire bytes and as byte-swapped registers, each without a Python loop."""
    regs = array("H", registers)
    if sys.byteorder == "little":
        swapped = regs.tobytes()
        regs.byteswap()
        return regs.tobytes(), swapped
    wire = regs.tobytes()
    regs.byteswap()
    return wire, regs.tobytes()


@dataclass(slots=True)
class _Lane:
    """One struct format over one byte image; points whose bytes do not overlap."""

    view: str
    endian: str
    codes: list[str]
    offsets: list[int]  # byte offset of each member
    members: list[int]  # index into the decoder's specs
    compiled: struct.Struct | None = None

    def compile(self) -> None:
        fmt = [self.endian]
        pos = 0
        for code, off in zip(self.codes, self.offsets, strict=True):
            if off > pos:
                fmt.append(f"{off - pos}x")
            fmt.append(code)
            pos = off + struct.calcsize("<" + code)
        self.compiled = struct.Struct("".join(fmt))


class BlockDecoder:
    """Decodes one planned block (registers or bits) for a fixed list of points.

    Compiled once per plan; `decode` appends one sample per point to a batch, with the given
    timestamp, bad quality for sentinels and non-finite values.
    """

    __slots__ = ("_bits", "_lanes", "_meta", "count", "function", "pids", "specs", "start")

    def __init__(
        self, function: str, start: int, count: int, specs: Sequence[PointSpec], pids: Sequence[int]
    ) -> None:
        self.function = function
        self.start = start
        self.count = count
        self.specs = list(specs)
        self.pids = array("i", pids)
        self._bits = function in BIT_FUNCTIONS
        # Per point: (how to check, sentinel a, sentinel b or bit, scale, offset).
        self._meta: list[tuple[int, int, int, float, float]] = []
        for spec in self.specs:
            sentinels = _sentinels(spec.type)
            if self._bits or (spec.type == "bool" and spec.bit is None):
                meta = (_BOOL, 0, 0, 1.0, 0.0)
            elif spec.bit is not None:
                meta = (_BIT, 0, spec.bit, spec.scale, spec.offset)
            elif spec.type in ("float32", "float64"):
                meta = (_FLOAT, 0, 0, spec.scale, spec.offset)
            elif sentinels is not None:
                meta = (_INT, sentinels[0], sentinels[1], spec.scale, spec.offset)
            else:
                meta = (_PLAIN, 0, 0, spec.scale, spec.offset)
            self._meta.append(meta)
        self._lanes: list[_Lane] = [] if self._bits else self._build_lanes()

    def _build_lanes(self) -> list[_Lane]:
        lanes: list[_Lane] = []
        ends: list[int] = []  # byte end of the last member of each lane
        order = sorted(range(len(self.specs)), key=lambda i: self.specs[i].address)
        for i in order:
            spec = self.specs[i]
            view, endian = _ORDER_VIEW[spec.order]
            off = 2 * (spec.address - self.start)
            if off < 0 or off + 2 * REGISTER_WORDS[spec.type] > 2 * self.count:
                raise ValueError(f"point {spec.key} at {spec.address} lies outside its block")
            for lane, end in zip(lanes, ends, strict=True):
                if lane.view == view and lane.endian == endian and end <= off:
                    target = lane
                    break
            else:
                target = _Lane(view, endian, [], [], [])
                lanes.append(target)
                ends.append(0)
            target.codes.append(_CODES[spec.type])
            target.offsets.append(off)
            target.members.append(i)
            ends[lanes.index(target)] = off + 2 * REGISTER_WORDS[spec.type]
        for lane in lanes:
            lane.compile()
        return lanes

    def raw_values(self, data: Sequence[int] | Sequence[bool]) -> list[float]:
        """The decoded raw value of each point, in spec order (before scale and checks)."""
        out: list[float] = [0.0] * len(self.specs)
        if self._bits:
            for i, spec in enumerate(self.specs):
                out[i] = float(bool(data[spec.address - self.start]))
            return out
        images = dict(zip(("be", "sw"), registers_to_bytes(data), strict=True))
        for lane in self._lanes:
            assert lane.compiled is not None
            values = lane.compiled.unpack_from(images[lane.view])
            for i, v in zip(lane.members, values, strict=True):
                out[i] = v
        return out

    def decode(self, data: Sequence[int] | Sequence[bool], ts: float, batch: SampleBatch) -> int:
        """Append one sample per point to `batch`; returns how many were bad."""
        raws = self.raw_values(data)
        values: list[float] = []
        quality: list[int] = []
        bad = 0
        nan = math.nan
        isfinite = math.isfinite
        for raw, (how, a, b, scale, offset) in zip(raws, self._meta, strict=True):
            if how == _FLOAT:
                if isfinite(raw):
                    values.append(raw * scale + offset)
                    quality.append(QUALITY_GOOD)
                    continue
            elif how == _INT:
                if raw != a and raw != b:
                    values.append(raw * scale + offset)
                    quality.append(QUALITY_GOOD)
                    continue
            elif how == _BIT:
                values.append(((int(raw) >> b) & 1) * scale + offset)
                quality.append(QUALITY_GOOD)
                continue
            elif how == _BOOL:
                values.append(1.0 if raw else 0.0)
                quality.append(QUALITY_GOOD)
                continue
            else:
                values.append(raw * scale + offset)
                quality.append(QUALITY_GOOD)
                continue
            values.append(nan)
            quality.append(QUALITY_BAD)
            bad += 1
        n = len(values)
        batch.point.extend(self.pids)
        batch.ts.extend(array("d", [ts]) * n)
        batch.value.extend(array("d", values))
        batch.quality.extend(array("B", quality))
        return bad

    def bad(self, ts: float, batch: SampleBatch) -> None:
        """Append a bad-quality sample per point: the block could not be read."""
        emit_bad(self.pids, ts, batch)


def emit_bad(pids: array[int], ts: float, batch: SampleBatch) -> None:
    """Append a bad-quality sample (value NaN) for each point id: nothing was read."""
    n = len(pids)
    if n:
        batch.point.extend(pids)
        batch.ts.extend(array("d", [ts]) * n)
        batch.value.extend(array("d", [math.nan]) * n)
        batch.quality.extend(array("B", [QUALITY_BAD]) * n)


def decode_value(registers: Sequence[int], type_: str, order: str = "ABCD") -> float:
    """One raw value from the first registers of `registers` (for tools and tests)."""
    view, endian = _ORDER_VIEW[order]
    be, sw = registers_to_bytes(registers[: REGISTER_WORDS[type_]])
    value: float = struct.unpack_from(endian + _CODES[type_], be if view == "be" else sw)[0]
    return value


def encode_value(value: float, type_: str, order: str = "ABCD") -> list[int]:
    """The registers a device would hold for `value` (the inverse of decode_value)."""
    view, endian = _ORDER_VIEW[order]
    code = _CODES[type_]
    packed = struct.pack(endian + code, value if code in "fd" else int(value))
    regs = array("H")
    regs.frombytes(packed)
    # `regs` now holds the image as native words; bring it back to register values.
    if (view == "be") == (sys.byteorder == "little"):
        regs.byteswap()
    return regs.tolist()
