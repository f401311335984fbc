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
from dataclasses import dataclass, field

from drivers.modbus.points import BIT_FUNCTIONS, REGISTER_WORDS, PointSpec
from drivers.samples import QUALITY_BAD, QUALITY_GOOD, SampleBatch

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

# The largest magnitude a raw value of each type can have: a lane whose scale and offset could
# take one past the float range must check its scaled values too.
_TOP = {
    "bool": 65535.0,
    "int16": 32768.0,
    "uint16": 65535.0,
    "int32": 2.0**31,
    "uint32": 2.0**32,
    "int64": 2.0**63,
    "uint64": 2.0**64,
    "float32": 3.4028234663852886e38,
    "float64": sys.float_info.max,
}


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


_Meta = tuple[
    int, int, int, float, float
]  # how to check, sentinel a, sentinel b or bit, scale, offset


@dataclass(slots=True)
class _Lane:
    """One struct format over one byte image: points of one order and one check whose bytes
    do not overlap. A lane whose values are all plausible takes the fast path (no per-value
    branches): one `sum` or two `in` tests decide it."""

    view: str
    endian: str
    check: int  # _FLOAT or _INT: fast path possible; anything else: per value
    a: int = 0
    b: int = 0
    codes: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)  # byte offset of each member
    members: list[int] = field(default_factory=list)  # index into the decoder's specs
    meta: list[_Meta] = field(default_factory=list)
    compiled: struct.Struct | None = None
    pids: array[int] = field(default_factory=lambda: array("i"))
    scales: list[float] = field(default_factory=list)
    shifts: list[float] = field(default_factory=list)
    identity: bool = True
    risky: bool = False  # raw * scale + offset may overflow to inf for some raw value
    tops: list[float] = field(default_factory=list)
    zeros: array[int] = field(default_factory=lambda: array("B"))

    def compile(self, pids: Sequence[int]) -> None:
        fmt = [self.endian]
        pos = 0
        for code, off in zip(self.codes, self.offsets, strict=True):
            if off > pos:
                fmt.append(f"{off - pos}x")
            fmt.append(code)
            pos = off + struct.calcsize("<" + code)
        self.compiled = struct.Struct("".join(fmt))
        self.pids = array("i", [pids[i] for i in self.members])
        self.scales = [m[3] for m in self.meta]
        self.shifts = [m[4] for m in self.meta]
        self.identity = all(sc == 1.0 for sc in self.scales) and not any(self.shifts)
        # Float arithmetic is monotonic: a finite bound proves every scaled value finite.
        self.risky = not all(
            math.isfinite(top * abs(sc) + abs(sh))
            for top, sc, sh in zip(self.tops, self.scales, self.shifts, strict=True)
        )
        self.zeros = array("B", bytes(len(self.members)))


def _meta_of(spec: PointSpec, bits: bool) -> _Meta:
    if bits or (spec.type == "bool" and spec.bit is None):
        return (_BOOL, 0, 0, 1.0, 0.0)
    if spec.bit is not None:
        return (_BIT, 0, spec.bit, spec.scale, spec.offset)
    if spec.type in ("float32", "float64"):
        return (_FLOAT, 0, 0, spec.scale, spec.offset)
    sentinels = _sentinels(spec.type)
    if sentinels is not None:
        return (_INT, sentinels[0], sentinels[1], spec.scale, spec.offset)
    return (_PLAIN, 0, 0, spec.scale, spec.offset)


def _checked(raws: Sequence[float], metas: Sequence[_Meta]) -> tuple[list[float], list[int], int]:
    """Values and qualities one by one: bits, booleans, and lanes holding a sentinel/NaN."""
    values: list[float] = []
    quality: list[int] = []
    bad = 0
    for raw, (how, a, b, scale, offset) in zip(raws, metas, strict=True):
        if how == _FLOAT:
            good = math.isfinite(raw)
        elif how == _INT:
            good = raw != a and raw != b
        elif how == _BIT:
            raw, good = float((int(raw) >> b) & 1), True
        elif how == _BOOL:
            raw, scale, offset, good = (1.0 if raw else 0.0), 1.0, 0.0, True
        else:
            good = True
        value = raw * scale + offset if good else math.nan
        if good and math.isfinite(value):
            values.append(value)
            quality.append(QUALITY_GOOD)
        else:
            values.append(math.nan)
            quality.append(QUALITY_BAD)
            bad += 1
    return values, quality, bad


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
        self._meta: list[_Meta] = [_meta_of(spec, self._bits) for spec in self.specs]
        self._lanes: list[_Lane] = [] if self._bits else self._build_lanes()

    def _build_lanes(self) -> list[_Lane]:
        lanes: list[_Lane] = []
        ends: list[int] = []  # byte end of the last member of each lane
        order = sorted(range(len(self.specs)), key=lambda i: self.specs[i].address)
        for i in order:
            spec, meta = self.specs[i], self._meta[i]
            view, endian = _ORDER_VIEW[spec.order]
            # Integer lanes hold one type, so one pair of sentinels tests the whole lane.
            check = meta[0] if meta[0] in (_FLOAT, _INT) else _PLAIN
            a, b = (meta[1], meta[2]) if check == _INT else (0, 0)
            off = 2 * (spec.address - self.start)
            if off < 0 or off + 2 * REGISTER_WORDS[spec.type] > 2 * self.count:
                raise ValueError(f"point {spec.key} at {spec.address} lies outside its block")
            for k, lane in enumerate(lanes):
                if (lane.view, lane.endian, lane.check, lane.a, lane.b) == (
                    view, endian, check, a, b
                ) and ends[k] <= off:  # fmt: skip
                    target = lane
                    break
            else:
                target = _Lane(view, endian, check, a, b)
                lanes.append(target)
                ends.append(0)
            target.codes.append(_CODES[spec.type])
            target.offsets.append(off)
            target.members.append(i)
            target.meta.append(meta)
            target.tops.append(_TOP[spec.type])
            ends[lanes.index(target)] = off + 2 * REGISTER_WORDS[spec.type]
        for lane in lanes:
            lane.compile(self.pids)
        return lanes

    def raw_values(self, data: Sequence[int] | Sequence[bool]) -> list[float]:
        """The decoded raw value of each point, in spec order (before scale and checks)."""
        out: list[float] = [0.0] * len(self.specs)
        if self._bits:
            for i, spec in enumerate(self.specs):
                out[i] = float(bool(data[spec.address - self.start]))
            return out
        be, sw = registers_to_bytes(data)
        for lane in self._lanes:
            assert lane.compiled is not None
            values = lane.compiled.unpack_from(be if lane.view == "be" else sw)
            for i, v in zip(lane.members, values, strict=True):
                out[i] = v
        return out

    def decode(self, data: Sequence[int] | Sequence[bool], ts: float, batch: SampleBatch) -> int:
        """Append one sample per point to `batch` (lane by lane); returns how many were bad.

        `data` must be the whole block (`count` registers or bits); anything else is not this
        block's answer and gives a bad sample per point.
        """
        if len(data) != self.count:
            self.bad(ts, batch)
            return len(self.specs)
        stamp = array("d", [ts])
        if self._bits:
            values, quality, bad = _checked(self.raw_values(data), self._meta)
            batch.point.extend(self.pids)
            batch.ts.extend(stamp * len(values))
            batch.value.extend(array("d", values))
            batch.quality.extend(array("B", quality))
            return bad
        be, sw = registers_to_bytes(data)
        bad = 0
        isfinite = math.isfinite
        for lane in self._lanes:
            raws = lane.compiled.unpack_from(be if lane.view == "be" else sw)  # type: ignore[union-attr]
            batch.point.extend(lane.pids)
            batch.ts.extend(stamp * len(raws))
            if lane.check == _FLOAT:
                fast = isfinite(sum(raws))  # any NaN or inf makes the sum non-finite
            elif lane.check == _INT:
                fast = lane.a not in raws and lane.b not in raws
            else:
                fast = False
            if fast and lane.identity:
                batch.value.extend(array("d", raws))
                batch.quality.extend(lane.zeros)
                continue
            if fast:
                scaled = [v * s + o for v, s, o in zip(raws, lane.scales, lane.shifts, strict=True)]
                if not lane.risky or isfinite(sum(scaled)):
                    batch.value.extend(array("d", scaled))
                    batch.quality.extend(lane.zeros)
                    continue
            values, quality, nbad = _checked(raws, lane.meta)
            batch.value.extend(array("d", values))
            batch.quality.extend(array("B", quality))
            bad += nbad
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
