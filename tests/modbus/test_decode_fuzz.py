"""The block decoder over arbitrary words, bytes and bits, against a reference decoding by `struct`.

Never raises; NaN, infinities, "not available" sentinels and values that scaling takes out of
the float range are bad samples (NaN); everything else equals the reference, for every type,
byte/word order, scale and offset, wherever the points sit in the block (overlaps included).
"""

from __future__ import annotations

import math
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.decode import BlockDecoder
from drivers.modbus.points import PointSpec
from drivers.samples import QUALITY_BAD, QUALITY_GOOD, SampleBatch

WORDS = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}
WORDS.update(int64=4, uint64=4, float64=4)
CODES = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q"}
CODES.update(float32="f", float64="d")
ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"]
# Scales and offsets of real configs, and some that take a float64 past the float range.
SCALES = [1.0, 0.1, 0.001, 20.0, -1.0, 1e-300, 1e300, 0.0]
OFFSETS = [0.0, -40.0, 273.15, 1e308, -1e308]


def reference(words: list[int], type_: str, order: str) -> float:
    """The value as a manual defines the orders: A is the most significant byte."""
    if order == "CDAB":  # low word first
        words = words[::-1]
    wire = b"".join(w.to_bytes(2, "big") for w in words)
    if order == "BADC":  # bytes swapped within each word
        wire = b"".join(w.to_bytes(2, "little") for w in words)
    elif order == "DCBA":  # the whole value reversed
        wire = wire[::-1]
    value: float = struct.unpack(">" + CODES[type_], wire)[0]
    return value


def not_available(type_: str, raw: float) -> bool:
    if type_.startswith("float"):
        return not math.isfinite(raw)
    bits = 16 * WORDS[type_]
    if type_.startswith("u"):
        return raw == (1 << bits) - 1
    return raw in ((1 << (bits - 1)) - 1, -(1 << (bits - 1)))


def spec(i: int, function: str, address: int, type_: str, order: str, **kw: object) -> PointSpec:
    fields: dict[str, object] = dict(
        key=f"d.p{i}", name=f"p{i}", function=function, address=address, type=type_,
        order=order, scale=1.0, offset=0.0, unit="", kind="gauge", carrier=None, bit=None,
    )  # fmt: skip
    fields.update(kw)
    return PointSpec(**fields)  # type: ignore[arg-type]


@st.composite
def register_blocks(draw: st.DrawFn) -> tuple[list[PointSpec], int, list[int]]:
    """Points anywhere in a block (overlapping or not), and the block's words: drawn as words
    or as raw bytes off the wire, with the values meters use for "not available" favoured."""
    count = draw(st.integers(1, 40))
    specs = []
    for i in range(draw(st.integers(1, 10))):
        t = draw(st.sampled_from(sorted(WORDS)).filter(lambda t: WORDS[t] <= count))
        address = draw(st.integers(0, count - WORDS[t]))
        bit = draw(st.none() | st.integers(0, 15)) if WORDS[t] == 1 else None
        specs.append(
            spec(i, "holding", 100 + address, t, draw(st.sampled_from(ORDERS)),
                 scale=draw(st.sampled_from(SCALES)), offset=draw(st.sampled_from(OFFSETS)),
                 bit=bit)
        )  # fmt: skip
    word = st.sampled_from([0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x7FC0, 0x7F80, 0xFF80, 0x7FF0, 0x7FEF])
    if draw(st.booleans()):
        words = draw(st.lists(word | st.integers(0, 0xFFFF), min_size=count, max_size=count))
    else:
        raw = draw(st.binary(min_size=2 * count, max_size=2 * count))
        words = list(struct.unpack(f">{count}H", raw))
    return specs, count, words


@settings(max_examples=400, deadline=None)
@given(register_blocks())
def test_registers_decode_like_struct_and_bad_is_bad(case) -> None:  # type: ignore[no-untyped-def]
    specs, count, words = case
    dec = BlockDecoder("holding", 100, count, specs, list(range(len(specs))))
    batch = SampleBatch()
    bad = dec.decode(words, 7.0, batch)
    got = {p: (v, q) for p, _, v, q in batch}
    assert sorted(got) == list(range(len(specs)))
    assert len(batch) == len(specs)
    assert set(batch.ts) == {7.0}
    expected_bad = 0
    for i, s in enumerate(specs):
        offset = s.address - 100
        raw = reference(words[offset : offset + WORDS[s.type]], s.type, s.order)
        value, quality = got[i]
        if s.bit is not None:
            want = ((int(raw) >> s.bit) & 1) * s.scale + s.offset
        elif not_available(s.type, raw):
            want = math.nan
        else:
            want = raw * s.scale + s.offset
        if math.isfinite(want):
            assert quality == QUALITY_GOOD, (s, raw)
            assert value == want, (s, raw, value, want)
        else:
            expected_bad += 1
            assert quality == QUALITY_BAD, (s, raw, value)
            assert math.isnan(value), (s, raw, value)
    assert bad == expected_bad


@settings(max_examples=200, deadline=None)
@given(register_blocks(), st.integers(0, 80))
def test_an_answer_of_the_wrong_length_is_bad_and_never_raises(case, n) -> None:  # type: ignore[no-untyped-def]
    specs, count, words = case
    data = (words * (n // count + 1))[:n]
    dec = BlockDecoder("holding", 100, count, specs, list(range(len(specs))))
    batch = SampleBatch()
    bad = dec.decode(data, 1.0, batch)
    assert len(batch) == len(specs)
    if n != count:
        assert bad == len(specs)
        assert set(batch.quality) == {QUALITY_BAD}
        assert all(math.isnan(v) for v in batch.value)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_bits_decode_as_they_came(data) -> None:  # type: ignore[no-untyped-def]
    function = data.draw(st.sampled_from(["coil", "discrete"]))
    count = data.draw(st.integers(1, 64))
    addresses = data.draw(st.lists(st.integers(0, count - 1), min_size=1, max_size=12))
    specs = [spec(i, function, 10 + a, "bool", "ABCD") for i, a in enumerate(addresses)]
    n = data.draw(st.sampled_from([count, count, count, 0, count - 1, count + 8]))
    bits = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    dec = BlockDecoder(function, 10, count, specs, list(range(len(specs))))
    batch = SampleBatch()
    dec.decode(bits, 1.0, batch)
    got = {p: (v, q) for p, _, v, q in batch}
    assert len(got) == len(specs)
    for i, a in enumerate(addresses):
        if n == count:
            assert got[i] == (float(bits[a]), QUALITY_GOOD)
        else:
            assert got[i][1] == QUALITY_BAD
            assert math.isnan(got[i][0])
