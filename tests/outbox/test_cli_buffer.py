"""`ironwatt buffer stats|export|verify` on a real outbox database."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.cli.outbox import (
    buffer_export,
    buffer_stats,
    buffer_verify,
    parse_since,
    register,
)
from gateway.outbox import Message, MessageClass, Outbox

MakeOutbox = Callable[..., Outbox]
TOPIC = "ironwatt/plant1/gw1/energy/1m/m1"
SIZE_64MB = 64 << 20  # the config reads sizes in binary multiples


def filled(make_outbox: MakeOutbox) -> Outbox:
    outbox = make_outbox()
    outbox.enqueue(
        [Message(TOPIC, {"n": i}) for i in range(4)]
        + [
            Message(
                "ironwatt/plant1/gw1/telemetry/m1", {"p": 1.5}, qos=0, cls=MessageClass.TELEMETRY
            )
        ]
    )
    return outbox


def test_stats_text_and_json(make_outbox: MakeOutbox) -> None:
    outbox = filled(make_outbox)  # still open: the CLI reads beside a running gateway
    out = io.StringIO()
    assert buffer_stats(outbox.settings, out) == 0
    text = out.getvalue()
    assert "messages    5 (telemetry 1, window 4)" in text
    assert "seq         1 .. 4 (next 5)" in text
    out = io.StringIO()
    assert buffer_stats(outbox.settings, out, as_json=True) == 0
    s = json.loads(out.getvalue())
    assert s["messages"] == 5
    assert s["stream"] == outbox.stream
    assert s["dropped_total"] == 0
    assert s["oldest_age_s"] < 60


def test_export_jsonl_and_csv(make_outbox: MakeOutbox) -> None:
    outbox = filled(make_outbox)
    out = io.StringIO()
    assert buffer_export(outbox.settings, out, "jsonl") == 0
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["payload"].get("seq") for x in lines] == [1, 2, 3, 4, None]
    assert all(x["payload"]["sent"].endswith("Z") for x in lines)
    assert lines[0]["payload"]["replayed"] is True
    assert lines[0]["topic"] == TOPIC
    out = io.StringIO()
    assert buffer_export(outbox.settings, out, "csv") == 0
    table = list(csv.reader(io.StringIO(out.getvalue())))
    assert table[0] == ["topic", "seq", "qos", "class", "created", "payload"]
    assert len(table) == 6
    assert json.loads(table[1][5])["n"] == 0
    out = io.StringIO()
    assert buffer_export(outbox.settings, out, "jsonl", since=time.time() + 60) == 0
    assert out.getvalue() == ""


def test_verify_ok_and_damaged(make_outbox: MakeOutbox, tmp_path: Path) -> None:
    outbox = filled(make_outbox)
    out = io.StringIO()
    assert buffer_verify(outbox.settings, out) == 0
    assert out.getvalue().endswith(": ok\n")
    outbox.close()
    conn = sqlite3.connect(outbox.settings.path, isolation_level=None)
    conn.execute("UPDATE outbox SET seq = 1 WHERE seq = 2")
    conn.close()
    out = io.StringIO()
    assert buffer_verify(outbox.settings, out) == 1
    assert "seq 1 is stored twice" in out.getvalue()


def test_missing_database_says_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.outbox import OutboxSettings

    settings = OutboxSettings(path=tmp_path / "none" / "ironwatt.db", gw_id="g", site="s")
    assert buffer_stats(settings, io.StringIO()) == 1
    assert "gateway.data_dir" in capsys.readouterr().err


def test_since_parses_ages_and_times() -> None:
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("2026-11-29T06:00:00Z") == parse_since("2026-11-29T14:00:00+08:00")
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_since("yesterday")
    with pytest.raises(ValueError, match="time zone"):
        parse_since("2026-11-29T06:00:00")


def test_argparse_wiring_with_a_real_config(
    make_outbox: MakeOutbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    outbox = make_outbox(path=data_dir / "ironwatt.db")
    outbox.enqueue([Message(TOPIC, {"n": 1})])
    config = tmp_path / "ironwatt.toml"
    config.write_text(
        f'[gateway]\nid = "gw1"\nsite = "plant1"\ndata_dir = "{data_dir}"\n'
        '[mqtt]\nurl = "mqtt://127.0.0.1:1"\n'
        '[buffer]\nmax_size = "64MB"\n'
    )
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["buffer", "stats", "-c", str(config), "--json"])
    assert args.func(args) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["messages"] == 1
    assert s["max_size_bytes"] == SIZE_64MB
    # A technician's typo is one line and exit status 2, not a traceback.
    args = parser.parse_args(["buffer", "export", "-c", str(config), "--since", "yesterday"])
    assert args.func(args) == 2
    assert "RFC 3339" in capsys.readouterr().err
    args = parser.parse_args(["buffer", "export", "-c", str(config), "-o", str(tmp_path / "no/x")])
    assert args.func(args) == 1
    assert "cannot write" in capsys.readouterr().err
