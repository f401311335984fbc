"""Decoding: every type and order round-trips through a real pymodbus server; sentinels are bad."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.decode import BlockDecoder, decode_value, encode_value, is_sentinel
from drivers.modbus.device import DeviceRunner
from drivers.modbus.link import Link, settings_of
from drivers.modbus.points import PointSpec
from drivers.samples import QUALITY_BAD, QUALITY_GOOD, PointIndex, SampleBatch

TYPES = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"]
SAMPLE = {
    "int16": -12345,
    "uint16": 54321,
    "int32": -123456789,
    "uint32": 3_000_000_001,
    "int64": -(2**40) - 12345,
    "uint64": 2**63 + 987654321,
    "float32": -1234.5,
    "float64": 98765.4321,
}


def test_known_layouts() -> None:
    """The four orders of 0x01020304 as a meter would hold them, and decode back."""
    assert encode_value(0x01020304, "uint32", "ABCD") == [0x0102, 0x0304]
    assert encode_value(0x01020304, "uint32", "CDAB") == [0x0304, 0x0102]
    assert encode_value(0x01020304, "uint32", "BADC") == [0x0201, 0x0403]
    assert encode_value(0x01020304, "uint32", "DCBA") == [0x0403, 0x0201]
    assert decode_value([0x4348, 0x0000], "float32") == 200.0
    assert decode_value([0x0000, 0x4348], "float32", "CDAB") == 200.0
    regs = [0x0102, 0x0304, 0x0506, 0x0708]
    assert decode_value(regs, "uint64", "ABCD") == 0x0102030405060708
    assert decode_value(regs, "uint64", "CDAB") == 0x0708050603040102
    assert decode_value(regs, "uint64", "DCBA") == 0x0807060504030201


def spec(name: str, address: int, type_: str, order: str = "ABCD", **kw: object) -> PointSpec:
    base: dict[str, object] = dict(
        key=f"d.{name}",
        name=name,
        function="holding",
        address=address,
        type=type_,
        order=order,
        scale=1.0,
        offset=0.0,
        unit="",
        kind="gauge",
        carrier=None,
        bit=None,
    )
    base.update(kw)
    return PointSpec(**base)  # type: ignore[arg-type]


def test_block_decode_scale_offset_bits_and_sentinels() -> None:
    specs = [
        spec("p", 0, "float32", scale=0.001),  # W -> kW
        spec("t", 2, "int16", scale=0.1, offset=-40.0),
        spec("b3", 3, "uint16", bit=3),
        spec("b0", 3, "uint16", bit=0),
        spec("word", 3, "uint16"),
        spec("u16_na", 4, "uint16"),
        spec("i32_na", 5, "int32"),
        spec("i64_na", 7, "int64"),
        spec("f_nan", 11, "float32"),
        spec("f_inf", 13, "float64", order="DCBA"),
        spec("cd", 17, "int32", order="CDAB", scale=2.0),
    ]
    regs = [0] * 19
    regs[0:2] = encode_value(1500.0, "float32")
    regs[2] = encode_value(650, "int16")[0]
    regs[3] = 0b1000
    regs[4] = 0xFFFF
    regs[5:7] = [0x7FFF, 0xFFFF]
    regs[7:11] = [0x8000, 0, 0, 0]
    regs[11:13] = [0x7FC0, 0]
    regs[13:17] = encode_value(math.inf, "float64", "DCBA")
    regs[17:19] = encode_value(-21, "int32", "CDAB")
    dec = BlockDecoder("holding", 0, 19, specs, list(range(len(specs))))
    batch = SampleBatch()
    bad = dec.decode(regs, 1000.0, batch)
    got = {specs[p].name: (v, q) for p, _, v, q in batch}
    assert got["p"] == (pytest.approx(1.5), QUALITY_GOOD)
    assert got["t"] == (pytest.approx(25.0), QUALITY_GOOD)
    assert got["b3"] == (1.0, QUALITY_GOOD)
    assert got["b0"] == (0.0, QUALITY_GOOD)
    assert got["word"] == (8.0, QUALITY_GOOD)
    for name in ("u16_na", "i32_na", "i64_na", "f_nan", "f_inf"):
        assert got[name][1] == QUALITY_BAD, name
        assert math.isnan(got[name][0]), name
    assert got["cd"] == (-42.0, QUALITY_GOOD)
    assert bad == 5
    assert set(batch.ts) == {1000.0}


def test_decode_uses_few_struct_calls() -> None:
    """A block of 40 floats of one order compiles to a single struct format."""
    specs = [spec(f"f{i}", 2 * i, "float32") for i in range(40)]
    dec = BlockDecoder("holding", 0, 80, specs, list(range(40)))
    assert len(dec._lanes) == 1
    regs = [w for i in range(40) for w in encode_value(float(i), "float32")]
    assert dec.raw_values(regs) == [float(i) for i in range(40)]
    assert struct.calcsize(dec._lanes[0].compiled.format) == 160  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_every_type_and_order_round_trips_through_a_server(
    plant, sink, device_factory
) -> None:  # type: ignore[no-untyped-def]
    meter = plant.meter(2)
    points = []
    address = 0
    expected: dict[str, float] = {}
    for t in TYPES:
        for o in ORDERS:
            name = f"{t}_{o.lower()}"
            meter.set_value("holding", address, SAMPLE[t], t, o)
            points.append({"name": name, "address": address, "type": t, "order": o})
            expected[name] = (
                float(struct.unpack("f", struct.pack("f", SAMPLE[t]))[0])
                if t == "float32"
                else float(SAMPLE[t])
            )
            address += {"int16": 1, "uint16": 1}.get(t, 2 if t.endswith("32") else 4)
    # Coils, discrete inputs, input registers and a bit field on the same server.
    meter.set_registers("coil", 7, [1, 0, 1])
    meter.set_registers("discrete", 3, [1])
    meter.set_value("input", 100, 4242, "uint16")
    points += [
        {"name": "coil7", "function": "coil", "address": 7, "type": "bool"},
        {"name": "coil8", "function": "coil", "address": 8, "type": "bool"},
        {"name": "di3", "function": "discrete", "address": 3, "type": "bool"},
        {"name": "ir100", "function": "input", "address": 100, "type": "uint16", "scale": 0.5},
        {"name": "ir100_bit1", "function": "input", "address": 100, "type": "uint16", "bit": 1},
    ]
    expected.update(coil7=1.0, coil8=0.0, di3=1.0, ir100=2121.0, ir100_bit1=float((4242 >> 1) & 1))
    device = device_factory("all", port=plant.port, unit=2, points=points)
    index = PointIndex()
    runner = DeviceRunner(device, Link(settings_of(device)), index, sink)
    batch = await runner.poll_once()
    runner.link.close()
    got = {index.key(p).split(".", 1)[1]: (v, q) for p, _, v, q in batch}
    assert {k: v for k, (v, q) in got.items()} == expected
    assert all(q == QUALITY_GOOD for _, q in got.values())
    assert runner.plan.requests == 4  # holding, input, coil, discrete: one block each


@st.composite
def blocks_of_points(draw):  # type: ignore[no-untyped-def]
    """Random points packed into one block, with random raw registers (sentinels included)."""
    specs, regs, address = [], [], 0
    for i in range(draw(st.integers(1, 12))):
        t = draw(st.sampled_from(TYPES))
        words = {"int16": 1, "uint16": 1}.get(t, 2 if t.endswith("32") else 4)
        address += draw(st.integers(0, 3))
        bit = draw(st.none() | st.integers(0, 15)) if t in ("int16", "uint16") else None
        specs.append(
            spec(f"p{i}", address, t, draw(st.sampled_from(ORDERS)),
                 scale=draw(st.sampled_from([1.0, 0.1, 0.001, 20.0])),
                 offset=draw(st.sampled_from([0.0, -40.0])), bit=bit)
        )  # fmt: skip
        address += words
    regs = draw(
        st.lists(
            st.sampled_from([0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x7FC0, 0x4348])
            | st.integers(0, 0xFFFF),
            min_size=address,
            max_size=address,
        )
    )
    return specs, regs


@settings(max_examples=150, deadline=None)
@given(blocks_of_points())
def test_block_decode_matches_point_by_point_decoding(case) -> None:  # type: ignore[no-untyped-def]
    specs, regs = case
    dec = BlockDecoder("holding", 0, len(regs), specs, list(range(len(specs))))
    batch = SampleBatch()
    bad = dec.decode(regs, 5.0, batch)
    got = {p: (v, q) for p, _, v, q in batch}
    assert sorted(got) == list(range(len(specs)))
    expected_bad = 0
    for i, s in enumerate(specs):
        raw = decode_value(regs[s.address :], s.type, s.order)
        value, quality = got[i]
        if s.bit is not None:
            assert (value, quality) == (
                ((int(raw) >> s.bit) & 1) * s.scale + s.offset,
                QUALITY_GOOD,
            )
        elif is_sentinel(s.type, raw) or not math.isfinite(raw * s.scale + s.offset):
            # Scaled out of the float range (a float64 near its top, times 20) is no reading.
            expected_bad += 1
            assert quality == QUALITY_BAD
            assert math.isnan(value)
        else:
            assert quality == QUALITY_GOOD
            assert value == pytest.approx(raw * s.scale + s.offset, rel=1e-12, abs=1e-12)
    assert bad == expected_bad
