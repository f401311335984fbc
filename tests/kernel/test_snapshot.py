"""The binary snapshot (version 2): its documented layout, round trips, twins, corruption.

`decode`/`encode` below are written from the layout table in docs/kernel.md, independently of
either kernel: the bytes both kernels write must be exactly what the table says.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import struct
import zlib
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kernel.conftest import (
    DAY0,
    NO_EXT,
    batch,
    build,
    feed,
    kernel,
    load,
    records,
    rows_of,
    streams,
)

pytestmark = pytest.mark.twin

PROP = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# ---- the documented layout ------------------------------------------------------------------

HEAD = struct.Struct("<3sBIHHI")  # magic, version, CRC-32 of data[8:], intervals, periods, points
STATE = (("tseen", "based", "t0", "v0", "cstart", "pend_bad", "pend_t"), struct.Struct("<dBdddid"))
CELL = (
    (
        "delta", "covered", "vmin", "vmax", "first", "last",
        "samples", "bad", "rollovers", "resets", "estimated",
    ),
    struct.Struct("<6d4iB"),
)  # fmt: skip
ACC = (
    (
        "start", "delta", "covered", "vmin", "vmax", "first", "last",
        "samples", "bad", "rollovers", "resets", "estimated", "peak", "peak_at",
    ),
    struct.Struct("<7d4iB2d"),
)  # fmt: skip
REC = (
    (
        "interval", "kind", "revision", "estimated", "start", "end", "delta", "first", "last",
        "mean", "min", "max", "rollovers", "resets", "samples", "bad", "coverage", "peak",
        "peak_at", "gap",
    ),
    struct.Struct("<BBiB8d4i3dB"),
)  # fmt: skip
BLOCK = (("start", "end", "demand", "coverage"), struct.Struct("<4d"))
LISTS = (("queue", REC), ("blocks", BLOCK), ("revisable", REC))


def decode(data: bytes) -> dict[str, Any]:
    """A snapshot as {"intervals", "periods", "points": {key: {...}}}, by the docs' table."""
    magic, version, crc, nk, nper, count = HEAD.unpack_from(data)
    assert (magic, version) == (b"IWK", 2)
    assert crc == zlib.crc32(data[8:])
    pos = HEAD.size

    def take(spec: tuple[tuple[str, ...], struct.Struct], periods: int) -> dict[str, Any]:
        nonlocal pos
        names, fmt = spec
        out: dict[str, Any] = dict(zip(names, fmt.unpack_from(data, pos), strict=True))
        pos += fmt.size
        if periods >= 0:
            out["periods"] = list(struct.unpack_from(f"<{periods}d", data, pos))
            pos += 8 * periods
        return out

    points: dict[str, Any] = {}
    for _ in range(count):
        (klen,) = struct.unpack_from("<H", data, pos)
        key = data[pos + 2 : pos + 2 + klen].decode()
        pos += 2 + klen
        item: dict[str, Any] = {"kind": data[pos]}
        pos += 1
        item["state"] = take(STATE, -1)
        item["cell"] = take(CELL, -1)
        item["wins"] = [take(ACC, nper) for _ in range(nk)]
        for name, spec in LISTS:
            (m,) = struct.unpack_from("<I", data, pos)
            pos += 4
            item[name] = [take(spec, nper if spec is REC else -1) for _ in range(m)]
        assert key not in points
        points[key] = item
    assert pos == len(data)
    return {"intervals": nk, "periods": nper, "points": points}


def encode(doc: dict[str, Any]) -> bytes:
    """The inverse of decode, checksum included."""
    nk, nper = doc["intervals"], doc["periods"]

    def put(spec: tuple[tuple[str, ...], struct.Struct], vals: dict[str, Any]) -> bytes:
        names, fmt = spec
        out = fmt.pack(*(vals[n] for n in names))
        if "periods" in vals:
            out += struct.pack(f"<{nper}d", *vals["periods"])
        return out

    body = bytearray(struct.pack("<HHI", nk, nper, len(doc["points"])))
    for key, item in doc["points"].items():
        raw = key.encode()
        body += struct.pack("<H", len(raw)) + raw + bytes([item["kind"]])
        body += put(STATE, item["state"]) + put(CELL, item["cell"])
        for w in item["wins"]:
            body += put(ACC, w)
        for name, spec in LISTS:
            body += struct.pack("<I", len(item[name]))
            for x in item[name]:
                body += put(spec, x)
    return b"IWK\x02" + struct.pack("<I", zlib.crc32(body)) + bytes(body)


def with_crc(data: bytes | bytearray) -> bytes:
    """The same bytes with a checksum that matches them (to reach the structure checks)."""
    return bytes(data[:4]) + struct.pack("<I", zlib.crc32(data[8:])) + bytes(data[8:])


def f64(hexbits: str) -> float:
    return float(struct.unpack("<d", bytes.fromhex(hexbits))[0])


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def block_rows(blocks: dict[str, Any]) -> list[dict[str, Any]]:
    """Demand-block columns as one dict per block."""
    return [{name: blocks[name][i] for name in blocks} for i in range(len(blocks["point"]))]


# ---- a snapshot with every part filled ------------------------------------------------------

KEYS = {"m.energy": 0, "m.power": 1, "m.temp": 2, "m.température": 3}


def rich_kernel(mod: ModuleType) -> Any:
    """build()'s three points plus a gauge with a non-ASCII key that reads inf."""
    k = build(mod)
    k.configure_point(3, "m.température", mod.GAUGE, since=DAY0, max_gap=60.0)
    return k


def rich_rows(lo: float, hi: float) -> list[tuple[int, float, float, int]]:
    rows = []
    t = lo
    while t < hi:
        i = int((t - DAY0) // 10)
        if t < DAY0 + 300.0:  # then the meter falls silent: its windows close in a gap
            rows.append((0, t, (990.0 + 0.9 * i) % 1000.0, 0))
        rows.append((1, t + 0.1, 100.0 + i % 17, 0))
        rows.append((2, t + 0.2, 20.0 + i % 5, 0))
        rows.append((3, t + 0.3, math.inf if i % 7 == 3 else 60.0 + i % 3, 0))
        t += 10.0
    return rows


def rich(mod: ModuleType) -> Any:
    """Open cells and windows, TOU periods, inf, windows a gap may revise, and (closed just
    after the 15-minute edge, within grace) windows and a demand block still pending."""
    k = rich_kernel(mod)
    for m in range(15):
        feed(k, rich_rows(DAY0 + 5.0 + 60.0 * m, DAY0 + 5.0 + 60.0 * (m + 1)))
        k.close_until(DAY0 + 60.0 * (m + 1) - 0.5)
    feed(k, rich_rows(DAY0 + 905.0, DAY0 + 906.0))
    k.close_until(DAY0 + 900.5)
    return k


@functools.lru_cache(maxsize=4)
def rich_snapshot(name: str) -> bytes:
    data: bytes = rich(load(name)).snapshot()
    return data


def name_of(km: ModuleType) -> str:
    return "pure" if km.__name__.endswith("_py") else "compiled"


def impls(km: ModuleType) -> list[ModuleType]:
    """Both kernels, or the twin alone under IRONWATT_NO_EXTENSIONS=1."""
    return [load("pure")] if NO_EXT else [load("compiled"), load("pure")]


def outcome(k: Any, data: bytes, ids: dict[str, int] = KEYS) -> tuple[str, Any]:
    """What restore made of `data`: ("error", message) or ("ok", keys, snapshot after)."""
    before = k.snapshot()
    try:
        keys = k.restore(data, ids)
    except ValueError as exc:
        assert k.snapshot() == before  # a refused snapshot changes nothing
        return ("error", str(exc))
    return ("ok", (keys, k.snapshot()))


# ---- layout and round trips -----------------------------------------------------------------


def test_layout_is_the_documented_one(km: ModuleType) -> None:
    data = rich_snapshot(name_of(km))
    doc = decode(data)
    assert encode(doc) == data
    assert (doc["intervals"], doc["periods"]) == (3, 2)
    pts = doc["points"]
    assert list(pts) == list(KEYS)  # in id order
    assert [p["kind"] for p in pts.values()] == [km.COUNTER, km.RATE, km.GAUGE, km.GAUGE]
    # every part is filled somewhere: pending windows, a demand block, revisable gap windows
    assert [len(p["queue"]) for p in pts.values()] == [0, 2, 2, 2]
    assert [len(p["blocks"]) for p in pts.values()] == [0, 1, 0, 0]
    assert len(pts["m.energy"]["revisable"]) > 0
    assert all(r["gap"] == 1 and r["interval"] == 0 for r in pts["m.energy"]["revisable"])
    power = pts["m.power"]
    assert {r["end"] for r in power["queue"]} == {DAY0 + 900.0}
    assert power["blocks"][0]["end"] == DAY0 + 900.0
    assert power["state"]["cstart"] == DAY0 + 900.0
    assert power["wins"][2]["start"] == DAY0  # the hour still open
    assert power["wins"][2]["periods"][0] > 0.0  # its TOU split
    hot = pts["m.température"]
    assert hot["wins"][2]["vmax"] == math.inf


@pytest.mark.skipif(NO_EXT, reason="IRONWATT_NO_EXTENSIONS=1: no compiled kernel to compare")
def test_twins_write_the_same_bytes() -> None:
    assert rich_snapshot("compiled") == rich_snapshot("pure")


def test_restore_then_snapshot_gives_the_same_bytes_on_either_kernel(km: ModuleType) -> None:
    data = rich_snapshot(name_of(km))
    for mod in impls(km):
        k = rich_kernel(mod)
        assert k.restore(data, KEYS) == list(KEYS)
        assert k.snapshot() == data


def test_nan_and_inf_survive_bit_exactly(km: ModuleType) -> None:
    doc = decode(rich_snapshot(name_of(km)))
    odd = {
        "nan_payload": f64("efbeadde0000f87f"),  # quiet NaN, payload 0xdeadbeef
        "neg_nan": f64("010000000000f8ff"),
        "inf": math.inf,
        "neg_inf": -math.inf,
        "neg_zero": -0.0,
        "tiny": 5e-324,
    }
    power = doc["points"]["m.power"]
    power["wins"][0]["delta"] = odd["nan_payload"]
    power["wins"][1]["periods"][1] = odd["neg_nan"]
    power["cell"]["vmax"] = odd["inf"]
    power["state"]["pend_t"] = odd["neg_inf"]
    power["queue"][0]["mean"] = odd["neg_zero"]
    power["blocks"][0]["demand"] = odd["nan_payload"]
    doc["points"]["m.energy"]["revisable"][0]["first"] = odd["tiny"]
    data = encode(doc)
    for mod in impls(km):
        k = rich_kernel(mod)
        assert k.restore(data, KEYS) == list(KEYS)
        again = k.snapshot()
        assert again == data
        back = decode(again)["points"]["m.power"]
        assert bits(back["wins"][0]["delta"]) == bits(odd["nan_payload"])
        assert bits(back["wins"][1]["periods"][1]) == bits(odd["neg_nan"])
        assert bits(back["queue"][0]["mean"]) == bits(odd["neg_zero"])
        # and they leave in the closed windows as they were
        wins, blocks = k.close_until(DAY0 + 901.5)
        recs = records(wins, 2)
        queued = [r for r in recs if r["point"] == 1 and r["interval"] == 0]
        assert bits(queued[0]["mean"]) == bits(-0.0)
        assert bits(blocks["demand"][0]) == bits(odd["nan_payload"])


def test_version_1_json_snapshot_is_refused(km: ModuleType) -> None:
    old = b"IWK\x01" + json.dumps({"intervals": 3, "periods": 2, "points": {}}).encode()
    k = rich(km)
    before = k.snapshot()
    with pytest.raises(ValueError, match=r"version 1 is not supported .*reads version 2"):
        k.restore(old, KEYS)
    assert k.snapshot() == before


def test_other_intervals_or_periods_restore_nothing(km: ModuleType) -> None:
    data = rich_snapshot(name_of(km))
    other = kernel(km, (60, 900), hours=5.0)
    other.configure_point(1, "m.power", km.RATE, since=DAY0)
    assert other.restore(data, KEYS) == []
    fewer = kernel(km, (60, 900, 3600), hours=5.0, n_periods=1)
    fewer.configure_point(1, "m.power", km.RATE, since=DAY0)
    assert fewer.restore(data, KEYS) == []


def test_many_points_renumbered_resume_their_own_windows(km: ModuleType) -> None:
    """Pending windows of many points interleave in the queue; each must go back to its key,
    whatever id the key has now (the grouping by point, and restore's one-pass replace)."""
    n = 60

    def make(ids: list[int]) -> Any:
        k = kernel(km, (60, 900), hours=2.0, demand_interval=1)
        for key_no, pid in enumerate(ids):
            k.configure_point(pid, f"m{key_no}.p", km.RATE, since=DAY0, demand=key_no % 2 == 0)
        return k

    def rows(ids: list[int], lo: int, hi: int) -> list[tuple[int, float, float, int]]:
        return [
            (pid, DAY0 + 10.0 * i + 0.01 * key_no, float(key_no * 100 + i % 13), 0)
            for i in range(lo, hi)
            for key_no, pid in enumerate(ids)
        ]

    ids = list(range(n))
    moved = [(7 * i + 3) % 101 for i in range(n)]  # other ids, other order of ids
    first = make(ids)
    feed(first, rows(ids, 0, 91))  # past the 15-minute edge: windows and blocks pending
    first.close_until(DAY0 + 900.5)
    data = first.snapshot()
    assert sum(len(p["queue"]) for p in decode(data)["points"].values()) == 2 * n
    second = make(moved)
    assert sorted(second.restore(data, {f"m{i}.p": pid for i, pid in enumerate(moved)})) == sorted(
        f"m{i}.p" for i in range(n)
    )
    feed(first, rows(ids, 91, 400))
    feed(second, rows(moved, 91, 400))
    a_wins, a_blocks = first.close_until(DAY0 + 7200.0)
    b_wins, b_blocks = second.close_until(DAY0 + 7200.0)
    renum = dict(zip(moved, ids, strict=True))

    def canon(recs: list[dict[str, Any]], remap: dict[int, int] | None) -> list[str]:
        out = []
        for r in recs:
            r = dict(r, point=remap[r["point"]] if remap else r["point"])
            out.append(repr(sorted(r.items())))
        return sorted(out)

    assert canon(records(a_wins), None) == canon(records(b_wins), renum)
    assert canon(block_rows(a_blocks), None) == canon(block_rows(b_blocks), renum)


# ---- a snapshot taken anywhere resumes exactly, on either kernel ----------------------------


def outputs(k: Any, rows: list[Any], until: float) -> tuple[list[str], list[str]]:
    """Windows and blocks closed after feeding `rows`, bit-exact (repr), in a canonical order:
    windows pending at the snapshot come back grouped by point, not in completion order."""
    if rows:
        k.ingest(*batch(rows))
    wins, blocks = k.close_until(until)
    recs = [repr(sorted(r.items())) for r in records(wins, 2)]
    blks = [repr(sorted(b.items())) for b in block_rows(blocks)]
    return sorted(recs), sorted(blks)


@PROP
@given(streams, st.integers(0, 400), st.booleans())
def test_restored_kernel_continues_as_the_original(
    km: ModuleType, streams_: Any, cut: int, close_first: bool
) -> None:
    rows = rows_of(streams_)
    cut = min(cut, len(rows))
    end = DAY0 + 5 * 3600.0 + 10.0
    original = build(km)
    if cut:
        original.ingest(*batch(rows[:cut]))
        if close_first:
            original.close_until(rows[cut - 1][1])
    data = original.snapshot()
    expected = outputs(original, rows[cut:], end)
    final = original.snapshot()
    restored = []
    for mod in impls(km):
        k = build(mod)
        assert sorted(k.restore(data, {"m.energy": 0, "m.power": 1, "m.temp": 2})) == [
            "m.energy",
            "m.power",
            "m.temp",
        ]
        assert k.snapshot() == data
        got = outputs(k, rows[cut:], end)
        assert got == expected
        assert k.snapshot() == final
        restored.append(got)
    assert all(r == restored[0] for r in restored)


# ---- truncated and corrupt snapshots ----------------------------------------------------------


def target(mod: ModuleType) -> Any:
    """A kernel with state of its own, so a half-done restore would show."""
    k = rich_kernel(mod)
    feed(k, rich_rows(DAY0 + 3.0, DAY0 + 400.0))
    k.close_until(DAY0 + 130.0)
    return k


def test_every_truncation_is_refused(km: ModuleType) -> None:
    data = rich_snapshot(name_of(km))
    k = target(km)
    before = k.snapshot()
    for cut in range(len(data)):
        with pytest.raises(ValueError, match="kernel snapshot"):
            k.restore(data[:cut], KEYS)
        if cut >= 8:  # with a checksum that matches, the structure checks must catch it
            with pytest.raises(ValueError, match="truncated or corrupt"):
                k.restore(with_crc(data[:cut]), KEYS)
    assert k.snapshot() == before
    assert k.restore(data, KEYS) == list(KEYS)


def test_short_and_foreign_data_is_refused(km: ModuleType) -> None:
    k = target(km)
    for data, match in (
        (b"", "bad magic"),
        (b"IWK", "bad magic"),
        (b"IWA\x02", "bad magic"),
        (b"IWK\x02", "shorter than its header"),
        (b"IWK\x02" + bytes(11), "shorter than its header"),
        (b"IWK\x02" + bytes(12), "checksum mismatch"),
        (with_crc(b"IWK\x02" + bytes(4) + struct.pack("<HHI", 3, 2, 1)), "point 1 of 1 ends"),
        (with_crc(b"IWK\x02" + bytes(4) + struct.pack("<HHI", 3, 2, 0) + b"x"), "1 bytes after"),
    ):
        with pytest.raises(ValueError, match=match):
            k.restore(data, KEYS)


def test_structure_errors_name_what_is_wrong(km: ModuleType) -> None:
    doc = decode(rich_snapshot(name_of(km)))
    k = target(km)
    before = k.snapshot()
    bad_kind = copy.deepcopy(doc)
    bad_kind["points"]["m.temp"]["kind"] = 7
    with pytest.raises(ValueError, match=r"point 3 of 4 \('m.temp'\): unknown kind 7"):
        k.restore(encode(bad_kind), KEYS)
    bad_interval = copy.deepcopy(doc)
    bad_interval["points"]["m.energy"]["revisable"][-1]["interval"] = 3
    with pytest.raises(ValueError, match=r"\('m.energy'\): a window of interval 3 of 3"):
        k.restore(encode(bad_interval), KEYS)
    bad_utf8 = bytearray(encode(doc))
    bad_utf8[bad_utf8.index(b"m.energy")] = 0xFF
    with pytest.raises(ValueError, match=r"point 1 of 4: its key is not UTF-8"):
        k.restore(with_crc(bad_utf8), KEYS)
    assert k.snapshot() == before


def test_a_key_twice_is_refused(km: ModuleType) -> None:
    doc = decode(rich_snapshot(name_of(km)))
    k = target(km)
    before = k.snapshot()
    items = list(doc["points"].items())
    body = bytearray(struct.pack("<HHI", 3, 2, 2))
    for key, item in (items[1], items[1]):  # m.power twice
        body += encode({"intervals": 3, "periods": 2, "points": {key: item}})[16:]
    data = b"IWK\x02" + struct.pack("<I", zlib.crc32(body)) + bytes(body)
    with pytest.raises(ValueError, match=r"point 2 of 2: key 'm.power' appears twice"):
        k.restore(data, KEYS)
    assert k.snapshot() == before


@PROP
@given(st.data())
def test_flipped_bytes_are_refused(km: ModuleType, data: st.DataObject) -> None:
    snap = rich_snapshot(name_of(km))
    at = data.draw(st.integers(0, len(snap) - 1), label="at")
    flip = data.draw(st.integers(1, 255), label="xor")
    bad = bytearray(snap)
    bad[at] ^= flip
    k = target(km)
    kind, what = outcome(k, bytes(bad))
    assert kind == "error"  # the checksum (or magic, version) catches every single flip
    assert isinstance(what, str)
    assert "kernel snapshot" in what


@PROP
@given(st.data())
def test_flipped_bytes_behind_a_matching_checksum_never_crash(
    km: ModuleType, data: st.DataObject
) -> None:
    """Past the checksum, a structure check refuses the data or it restores as valid values:
    nothing is read out of bounds, both kernels decide alike, and work goes on."""
    snap = rich_snapshot(name_of(km))
    at = data.draw(st.integers(8, len(snap) - 1), label="at")
    flip = data.draw(st.integers(1, 255), label="xor")
    bad = bytearray(snap)
    bad[at] ^= flip
    fixed = with_crc(bad)
    results = []
    later = rich_rows(DAY0 + 906.0, DAY0 + 1400.0)
    for mod in impls(km):
        k = target(mod)
        result = outcome(k, fixed)
        try:
            after: Any = outputs(k, later, DAY0 + 5 * 3600.0)
        except ArithmeticError:
            # the twin divides in Python: a corrupt length of 0 raises where C gives inf
            assert not mod.__name__.endswith("_kernel")
            after = None
        results.append((result, after))
    first = results[0]
    for other in results[1:]:
        assert other[0] == first[0]
        if other[1] is not None and first[1] is not None:
            assert repr(other[1]) == repr(first[1])
