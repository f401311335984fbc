"""The SQLite outbox on its own: seq and stream, restarts, migrations, size cap, disk full."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.errors import SchemaError
from gateway.outbox import Message, MessageClass, Outbox, OutboxSettings, compose
from gateway.outbox.rows import PAGE_SIZE  # inside: the page size of a new database
from gateway.outbox.schema import meta_get, meta_set, migrate  # inside: the migrations
from tests.support.waiting import wait, wait_until

MakeOutbox = Callable[..., Outbox]


def windows(n: int, size: int = 300) -> list[Message]:
    return [
        Message("ironwatt/plant1/gw1/energy/1m/m1", {"i": i, "pad": "x" * size}) for i in range(n)
    ]


def rows(outbox: Outbox) -> list[tuple[int | None, int, dict[str, object]]]:
    reader = outbox.reader()
    got = [(r.seq, r.cls, json.loads(compose(r, b"t", False))) for r in reader.fetch(0, 10**6)]
    reader.close()
    return got


def test_seq_increases_across_batches_and_skips_telemetry(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox()
    first = outbox.enqueue(
        [
            Message("a", {"x": 1}),
            Message("t", {"y": 2}, qos=0, cls=MessageClass.TELEMETRY),
            Message("e", b'{"type":"device_up"}', cls=MessageClass.EVENT),
        ]
    )
    second = outbox.enqueue(windows(3))
    assert first == [1, None, 2]
    assert second == [3, 4, 5]
    got = rows(outbox)
    assert [g[0] for g in got] == [1, None, 2, 3, 4, 5]
    body = got[0][2]
    assert body == {
        "v": 1,
        "stream": outbox.stream,
        "seq": 1,
        "gw": "gw1",
        "site": "plant1",
        "sent": "t",
        "replayed": False,
        "x": 1,
    }
    assert "seq" not in got[1][2]
    assert "replayed" not in got[1][2]
    assert got[2][2]["type"] == "device_up"


def test_common_fields_in_the_callers_body_are_ignored(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox()
    outbox.enqueue([Message("a", {"seq": 999, "v": 7, "stream": "x", "value": 3})])
    body = rows(outbox)[0][2]
    assert body["seq"] == 1
    assert body["v"] == 1
    assert body["value"] == 3


def test_qos0_window_is_refused(make_outbox: MakeOutbox) -> None:
    with pytest.raises(ValueError, match="QoS 1"):
        make_outbox().submit([Message("a", {}, qos=0)])


def test_restart_continues_seq_without_hole(make_outbox: MakeOutbox, tmp_path: Path) -> None:
    outbox = make_outbox(durability="normal")
    outbox.enqueue(windows(5))
    stream = outbox.stream
    outbox.close()
    again = make_outbox(durability="normal")
    assert again.stream == stream
    assert again.enqueue(windows(1)) == [6]


def test_acked_rows_leave_and_seq_is_never_reused(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox()
    outbox.enqueue(windows(4))
    reader = outbox.reader()
    outbox.ack(r.id for r in reader.fetch(0, 100))
    outbox.flush()
    assert outbox.stats().backlog == 0
    outbox.close()
    again = make_outbox()
    assert again.enqueue(windows(1)) == [5]


def test_unclean_stop_under_normal_jumps_past_the_reserved_block(
    make_outbox: MakeOutbox, tmp_path: Path
) -> None:
    outbox = make_outbox(durability="normal", seq_block=100)
    outbox.enqueue(windows(3))
    outbox.close()
    # What a power cut leaves behind: no clean mark, another boot.
    conn = sqlite3.connect(tmp_path / "ironwatt.db", isolation_level=None)
    meta_set(conn, "clean", 0)
    meta_set(conn, "boot_id", "another-boot")
    conn.close()
    again = make_outbox(durability="normal", seq_block=100)
    assert again.enqueue(windows(1)) == [101]  # 0 + 100 were reserved at the last open


def test_process_crash_same_boot_keeps_seq_dense(make_outbox: MakeOutbox, tmp_path: Path) -> None:
    outbox = make_outbox(durability="normal", seq_block=100)
    outbox.enqueue(windows(3))
    outbox.close()
    conn = sqlite3.connect(tmp_path / "ironwatt.db", isolation_level=None)
    meta_set(conn, "clean", 0)  # killed, but the OS kept the WAL: nothing was lost
    conn.close()
    again = make_outbox(durability="normal", seq_block=100)
    assert again.enqueue(windows(1)) == [4]


def test_new_database_is_a_new_stream(make_outbox: MakeOutbox, tmp_path: Path) -> None:
    a = make_outbox(path=tmp_path / "a.db")
    b = make_outbox(path=tmp_path / "b.db")
    assert a.stream != b.stream
    assert len(a.stream) == 8
    assert b.enqueue(windows(1)) == [1]


def test_migrates_a_v1_database(make_outbox: MakeOutbox, tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, upto=1)
    conn.execute(
        "INSERT INTO outbox VALUES (1, 1, 'a', CAST('{\"v\":1}' AS BLOB), 6, 1, 1, 0.0, 0)"
    )
    meta_set(conn, "last_seq", 1)
    meta_set(conn, "clean", 1)
    conn.close()
    outbox = make_outbox(path=path)
    assert outbox.stats().backlog == 1
    assert outbox.enqueue(windows(1)) == [2]


def test_the_daemon_migrates_in_a_child_and_never_loads_sqlite_utils(tmp_path: Path) -> None:
    """A new database and a v1 one, opened as the daemon opens them, in a fresh interpreter."""
    old = tmp_path / "v1.db"
    conn = sqlite3.connect(old, isolation_level=None)
    migrate(conn, upto=1)
    conn.close()
    script = f"""
import sys
from pathlib import Path
from gateway.outbox import Outbox, OutboxSettings
from gateway.outbox.schema import SCHEMA_VERSION, meta_get
from tests.outbox.test_outbox import windows
for path in (Path({str(tmp_path / "new.db")!r}), Path({str(old)!r})):
    box = Outbox(OutboxSettings(path=path, gw_id="g", site="s", migrate_in_child=True))
    assert box.enqueue(windows(2)) == [1, 2], path
    version = box.call(lambda c: meta_get(c, "schema_version")).result(5)
    assert version == str(SCHEMA_VERSION), version
    box.close()
assert "sqlite_utils" not in sys.modules, "sqlite-utils loaded in the daemon"
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok", done.stderr


def test_a_migration_child_that_fails_is_a_schema_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")  # a child that cannot run at all
    with pytest.raises(SchemaError, match=r"migration failed \(exit status 1\)"):
        Outbox(OutboxSettings(path=tmp_path / "x.db", gw_id="g", site="s", migrate_in_child=True))


def test_sync_commits_with_an_fsync_then_goes_back_to_normal(make_outbox: MakeOutbox) -> None:
    """What the daemon calls before a snapshot under durability = "normal"."""
    outbox = make_outbox(durability="normal")
    outbox.enqueue(windows(2))
    before = time.time()
    outbox.sync()

    def probe(conn: sqlite3.Connection) -> tuple[str | None, int]:
        return meta_get(conn, "synced_at"), conn.execute("PRAGMA synchronous").fetchone()[0]

    synced_at, synchronous = outbox.call(probe).result(5)
    assert synced_at is not None
    assert float(synced_at) >= before
    assert synchronous == 1  # NORMAL again for the next batches


def test_refuses_a_newer_schema(make_outbox: MakeOutbox, tmp_path: Path) -> None:
    make_outbox().close()
    conn = sqlite3.connect(tmp_path / "ironwatt.db", isolation_level=None)
    meta_set(conn, "schema_version", 99)
    conn.close()
    with pytest.raises(SchemaError, match="newer than this gateway"):
        Outbox(OutboxSettings(path=tmp_path / "ironwatt.db", gw_id="gw1", site="plant1"))


def test_cap_drops_telemetry_then_windows_never_events_first(make_outbox: MakeOutbox) -> None:
    cap = 600_000  # the first 720 messages take ~430 kB with 16 KiB pages
    outbox = make_outbox(max_size_bytes=cap)
    tele = [Message("t", {"pad": "t" * 300}, qos=0, cls=MessageClass.TELEMETRY) for _ in range(100)]
    events = [
        Message("e", {"type": "device_down", "n": i}, cls=MessageClass.EVENT) for i in range(20)
    ]
    outbox.enqueue(tele + events)
    outbox.enqueue(windows(600))
    assert outbox.stats().dropped_total == 0
    outbox.enqueue(windows(900))  # past the cap
    st = outbox.stats()
    assert st.used_bytes <= cap
    got = rows(outbox)
    classes = [c for _, c, _ in got]
    assert MessageClass.TELEMETRY not in classes  # went first
    assert classes.count(MessageClass.EVENT) >= 20  # events outlive windows
    gaps = [b for _, c, b in got if c == MessageClass.GAP]
    assert len(gaps) == 1
    gap = gaps[0]
    assert gap["type"] == "gap"
    assert gap["reason"] == "max_size"
    assert gap["by_class"]["telemetry"] == 100
    assert gap["messages"] == st.dropped_total == 100 + gap["by_class"]["window"]
    # The dropped windows are the oldest: every surviving window is newer than the gap range.
    surviving = [s for s, c, _ in got if c == MessageClass.WINDOW]
    assert gap["first_seq"] == 21
    assert gap["last_seq"] < min(surviving)
    assert gap["last_seq"] - gap["first_seq"] + 1 == gap["by_class"]["window"]


def test_consecutive_drops_merge_into_one_gap_until_it_is_read(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(max_size_bytes=300_000)
    for _ in range(4):
        outbox.enqueue(windows(400))
    gaps = [b for _, c, b in rows(outbox) if c == MessageClass.GAP]  # rows() reads = hands out
    assert len(gaps) == 1
    first = gaps[0]
    outbox.enqueue(windows(400))
    gaps = [b for _, c, b in rows(outbox) if c == MessageClass.GAP]
    assert len(gaps) == 2  # the first was read by the uplink: never edited after that
    assert gaps[0] == first
    assert gaps[1]["first_seq"] > first["last_seq"]


def test_only_gaps_left_are_kept(make_outbox: MakeOutbox) -> None:
    """A cap below what an empty outbox takes (7 pages of 16 KiB): everything else goes, the
    gap events that record it stay, however far over the cap that leaves the file."""
    outbox = make_outbox(max_size_bytes=60_000)
    outbox.enqueue(windows(400))
    got = rows(outbox)  # a reader: it has now seen gap 401, which can no longer change
    # Every window went; the gap (seq 401) and the near-cap event stored after the drop are left.
    kinds = [(seq, cls) for seq, cls, _ in got]
    assert kinds == [(401, MessageClass.GAP), (402, MessageClass.EVENT)]
    assert _gap_fields(got[0][2]) == {
        "type": "gap", "reason": "max_size", "first_seq": 1, "last_seq": 400, "messages": 400,
        "by_class": {"window": 400},
    }  # fmt: skip
    assert (got[1][2]["type"], got[1][2]["state"]) == ("buffer_pressure", "near_cap")
    # The next batch and that event go too, into a new gap: the one read is left as it was.
    outbox.enqueue(windows(10))
    got = rows(outbox)
    assert [(seq, cls) for seq, cls, _ in got] == [(401, MessageClass.GAP), (413, MessageClass.GAP)]
    assert _gap_fields(got[0][2])["messages"] == 400
    assert _gap_fields(got[1][2]) == {
        "type": "gap", "reason": "max_size", "first_seq": 402, "last_seq": 412, "messages": 11,
        "by_class": {"event": 1, "window": 10},
    }  # fmt: skip
    stats = outbox.stats()
    assert (stats.backlog, stats.dropped_total, stats.gaps_total) == (2, 411, 2)


def _gap_fields(body: dict[str, object]) -> dict[str, object]:
    return {k: body[k] for k in ("type", "reason", "first_seq", "last_seq", "messages", "by_class")}


def test_disk_full_keeps_running_reports_and_recovers(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(max_pending=1000)
    outbox.enqueue(windows(10))
    pages = outbox.stats().used_bytes // PAGE_SIZE + 2
    outbox.limit_pages(pages)
    futures = [outbox.submit(windows(50)) for _ in range(5)]
    wait_until(lambda: outbox.stats().pressure == "disk_full", 10, "disk_full pressure")
    assert not any(f.done() for f in futures[1:])
    outbox.limit_pages(None)
    seqs = [s for f in futures for s in f.result(10)]
    assert seqs == list(range(12, 262))  # 11 is the disk_full event, stored first
    got = rows(outbox)
    events = [b for _, c, b in got if c == MessageClass.EVENT]
    assert [e["state"] for e in events] == ["disk_full", "cleared"]
    assert events[1]["after"] == "disk_full"
    all_seqs = [s for s, _, _ in got]
    assert all_seqs == list(range(1, len(all_seqs) + 1))
    assert outbox.stats().pressure is None


def test_disk_full_with_producers_blocked_drops_with_a_gap(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox(max_pending=2)
    outbox.enqueue(windows(200))
    outbox.limit_pages(outbox.stats().used_bytes // PAGE_SIZE + 1)
    futures = [outbox.submit(windows(50)) for _ in range(2)]
    for f in futures:
        f.result(10)  # room was made by dropping the oldest windows
    got = rows(outbox)
    gaps = [b for _, c, b in got if c == MessageClass.GAP]
    assert gaps
    assert gaps[0]["reason"] == "disk_full"
    assert outbox.stats().dropped_total == gaps[0]["messages"] > 0


def test_aenqueue_does_not_block_the_loop(make_outbox: MakeOutbox) -> None:
    import asyncio

    outbox = make_outbox()

    async def main() -> list[int | None]:
        return await outbox.aenqueue(windows(3))

    assert asyncio.run(main()) == [1, 2, 3]


def test_stats_report_oldest_age_and_seq_range(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox()
    assert outbox.stats().backlog == 0
    assert outbox.stats().oldest_age_s is None
    outbox.enqueue(windows(3))
    st = outbox.stats()
    assert (st.backlog, st.first_seq, st.last_seq, st.next_seq) == (3, 1, 3, 4)
    assert st.oldest_age_s is not None
    assert 0 <= st.oldest_age_s < 5


def test_read_only_database_is_reported_and_recovers(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox()
    outbox.enqueue(windows(2))
    # A read-only remount, as seen by SQLite (root ignores file modes, so say it to SQLite).
    outbox.call(lambda conn: conn.execute("PRAGMA query_only=1")).result(5)
    fut = outbox.submit(windows(3))
    assert wait(lambda: outbox.stats().pressure == "read_only")
    assert not fut.done()
    outbox.call(lambda conn: conn.execute("PRAGMA query_only=0")).result(5)
    assert fut.result(10) == [4, 5, 6]  # 3 is the read_only event, stored first
    states = [b["state"] for _, c, b in rows(outbox) if c == MessageClass.EVENT]
    assert states == ["read_only", "cleared"]


def test_a_gap_row_once_read_is_never_edited(make_outbox: MakeOutbox) -> None:
    import threading

    outbox = make_outbox(max_size_bytes=200_000)
    reader = outbox.reader()
    seen: dict[int, bytes] = {}
    done = threading.Event()

    def read() -> None:  # the uplink's part: read everything, again and again
        while not done.is_set():
            for row in reader.fetch(0, 10_000):
                if row.cls == MessageClass.GAP:
                    seen.setdefault(row.id, row.body)
            time.sleep(0.001)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for _ in range(30):
            outbox.enqueue(windows(100))
    finally:
        done.set()
        thread.join()
    reader.close()
    final = {r.id: r.body for r in outbox.reader().fetch(0, 10**6) if r.cls == MessageClass.GAP}
    # Every gap row a reader saw is still there, unchanged (a deleted one is the defect).
    assert seen  # the reader saw gap rows: the check below is not over nothing
    assert set(seen) <= set(final), sorted(set(seen) - set(final))
    for rid, body in seen.items():
        assert final[rid] == body
    total = sum(
        json.loads(compose(outbox_row, b"t", True))["messages"]
        for outbox_row in outbox.reader().fetch(0, 10**6)
        if outbox_row.cls == MessageClass.GAP
    )
    assert total == outbox.stats().dropped_total


def test_a_second_writer_is_refused(make_outbox: MakeOutbox, tmp_path: Path) -> None:
    import os

    from gateway.errors import OutboxLocked

    first = make_outbox()
    with pytest.raises(OutboxLocked, match=f"pid {os.getpid()}"):
        Outbox(OutboxSettings(path=tmp_path / "ironwatt.db", gw_id="gw1", site="plant1"))
    first.close()
    again = make_outbox()  # released at close
    assert again.enqueue(windows(1)) == [1]


def test_a_burst_reserves_bigger_seq_blocks_within_a_bound(
    make_outbox: MakeOutbox, tmp_path: Path
) -> None:
    # Each reservation is an fsync: a burst that eats blocks fast gets bigger ones (fewer
    # fsyncs), never more than 100 blocks ahead of what was assigned.
    outbox = make_outbox(durability="normal", seq_block=100)
    for _ in range(20):
        outbox.enqueue(windows(100))
    outbox.close()
    conn = sqlite3.connect(tmp_path / "ironwatt.db", isolation_level=None)
    last = int(meta_get(conn, "last_seq") or 0)
    reserved = int(meta_get(conn, "reserved_seq") or 0)
    conn.close()
    assert last == 2000
    assert 2000 + 100 < reserved <= 2000 + 100 * 100


def test_deletes_ride_the_next_insert_in_one_commit(make_outbox: MakeOutbox) -> None:
    outbox = make_outbox()
    outbox.enqueue(windows(5))
    reader = outbox.reader()
    ids = [r.id for r in reader.fetch(0, 10)]
    reader.close()
    commits: list[str] = []
    outbox.call(lambda conn: conn.set_trace_callback(
        lambda sql: commits.append(sql) if sql == "COMMIT" else None
    )).result(5)  # fmt: skip
    # Hold the writer so the acks and the next batch wait for it together.
    release = threading.Event()
    busy = outbox.call(lambda conn: release.wait(5))
    outbox.ack(ids[:3])
    fut = outbox.submit(windows(2))
    release.set()
    busy.result(5)
    assert fut.result(5) == [6, 7]
    outbox.flush()
    assert commits == ["COMMIT"]  # one transaction, one fsync, for both
    assert outbox.stats().backlog == 4
    assert [seq for seq, _, _ in rows(outbox)] == [4, 5, 6, 7]
    outbox.call(lambda conn: conn.set_trace_callback(None)).result(5)


def test_acks_are_deleted_even_when_the_insert_beside_them_is_refused(
    make_outbox: MakeOutbox,
) -> None:
    outbox = make_outbox()
    outbox.enqueue(windows(4, size=2000))
    reader = outbox.reader()
    ids = [r.id for r in reader.fetch(0, 10)]
    reader.close()
    pages = outbox.call(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0]).result(5)
    outbox.limit_pages(pages)  # the file cannot grow: a big insert is refused (disk full)
    release = threading.Event()
    busy = outbox.call(lambda conn: release.wait(5))
    outbox.ack(ids)
    outbox.submit(windows(50, size=8000))
    release.set()
    busy.result(5)
    assert wait(lambda: outbox.stats().backlog == 0, 5)  # the acknowledged rows went anyway
    outbox.limit_pages(None)
    # ... and the batch once there was room, after the pressure events that say so.
    assert wait(lambda: outbox.stats().backlog >= 50, 10)
    stored = rows(outbox)
    assert sum(cls == int(MessageClass.WINDOW) for _, cls, _ in stored) == 50
    assert [body["state"] for _, cls, body in stored if cls == int(MessageClass.EVENT)] == [
        "disk_full",
        "cleared",
    ]
