"""The status listener: /healthz, /status JSON, /metrics as valid Prometheus text."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from gateway.daemon.health import HealthServer, Metric, parse_listen, render_metrics

# Prometheus text format 0.0.4, checked line by line (prometheus_client is not a dependency).
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(
    rf"^(?P<name>{_NAME})(?:\{{(?:{_LABEL}(?:,{_LABEL})*)?\}})? "
    r"(?P<value>[-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|NaN|Inf))(?: -?[0-9]+)?$"
)


def parse_prometheus(text: str) -> dict[str, list[str]]:
    """Family name -> sample lines; raises AssertionError on any malformed line."""
    assert text.endswith("\n")
    families: dict[str, list[str]] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            assert re.match(rf"^# HELP {_NAME} ", line + " "), line
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, f"TYPE twice for {name}"
            types[name] = kind
            families[name] = []
        elif line.startswith("#") or not line:
            continue
        else:
            match = _SAMPLE.match(line)
            assert match, f"bad sample line: {line!r}"
            name = match["name"]
            base = re.sub(r"_(sum|count|bucket)$", "", name)
            if name not in types and types.get(base) in ("summary", "histogram"):
                name = base  # a part of a summary or histogram
            assert name in types, f"sample before its TYPE: {line!r}"
            families[name].append(line)
    return families


def test_render_metrics_escapes_and_formats() -> None:
    text = render_metrics(
        [
            Metric("ironwatt_device_up", "gauge", "1 when up").add(1, device='we"ird\\name'),
            Metric("ironwatt_polls_total", "counter", "polls")
            .add(12, device="m1")
            .add(None, device="m2"),
            Metric("ironwatt_lag_seconds", "gauge", "lag").add(0.25).add(float("nan"), which="x"),
        ]
    )
    families = parse_prometheus(text)
    assert families["ironwatt_polls_total"] == ['ironwatt_polls_total{device="m1"} 12']
    assert 'device="we\\"ird\\\\name"' in text
    assert "ironwatt_lag_seconds 0.25" in text


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9108") == ("127.0.0.1", 9108)
    assert parse_listen("[::1]:9108") == ("::1", 9108)
    with pytest.raises(ValueError, match=r"http\.listen '9108': expected host:port"):
        parse_listen("9108")


async def _get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert int(headers["Content-Length"]) == len(body)
    return int(lines[0].split()[1]), headers, body


@pytest.mark.asyncio
async def test_health_server_routes() -> None:
    healthy = [True]
    server = HealthServer(
        "127.0.0.1:0",
        healthz=lambda: (healthy[0], "ok" if healthy[0] else "database not writable"),
        status=lambda: {"devices": {"m1": {"state": "up"}}},
        metrics=lambda: [Metric("ironwatt_loop_alive", "gauge", "loop alive").add(1)],
    )
    await server.start()
    try:
        assert (await _get(server.port, "/healthz"))[0] == 200
        healthy[0] = False
        status, _, body = await _get(server.port, "/healthz")
        assert status == 503
        assert b"database" in body
        status, headers, body = await _get(server.port, "/status")
        assert status == 200
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body)["devices"]["m1"]["state"] == "up"
        status, headers, body = await _get(server.port, "/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert parse_prometheus(body.decode())["ironwatt_loop_alive"] == ["ironwatt_loop_alive 1"]
        assert (await _get(server.port, "/nope"))[0] == 404
        assert (await _get(server.port, "/status", "POST"))[0] == 405
        status, _, body = await _get(server.port, "/status", "HEAD")
        # HEAD: headers only (Content-Length of the empty body we send).
        assert status == 200
        assert body == b""
    finally:
        await server.stop()
