"""The demo's live view, rendered once into a string at a fixed size, and what feeds it."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.sim.view import Received, format_message, render_text, short_line

NOW = datetime(2026, 12, 3, 8, 0, 5, tzinfo=UTC).timestamp()


def _energy(device: str, start: str, end: str, delta: float, **kw: object) -> dict[str, object]:
    return {
        "seq": kw.pop("seq", 1), "stream": "s1", "device": device, "interval": "10s",
        "start": start, "end": end, "revision": kw.pop("revision", 1),
        "points": {
            "energy_import": {"kind": "counter", "unit": "kWh", "delta": delta, "coverage": 1.0},
            "power_total": {"kind": "rate", "unit": "kW", "peak_demand": 431.5},
        },
        **kw,
    }  # fmt: skip


def _received() -> Received:
    got = Received()
    got.add("energy", _energy("aux-1", "2026-12-03T07:59:50.000Z",
                              "2026-12-03T08:00:00.000Z", 1.2, seq=7), NOW)  # fmt: skip
    # an older window arriving late (a replay) does not replace the newer one
    late = _energy("aux-1", "2026-12-03T07:59:40.000Z", "2026-12-03T07:59:50.000Z", 1.1, seq=5,
                   replayed=True)  # fmt: skip
    got.add("energy", late, NOW)
    got.add("group", {
        "seq": 8, "stream": "s1", "group": "converter-1", "interval": "10s",
        "start": "2026-12-03T07:59:50.000Z", "end": "2026-12-03T08:00:00.000Z", "revision": 1,
        "kgce": -6.2, "kgco2e": -58.1, "intensity_kgce_per_unit": -14.9,
        "cost": {"currency": "CNY", "amount": 0.3, "by_period": {"flat": 0.3, "peak": 0.0}},
        "benchmark": {"process": "bof", "eei": 0.4967,
                      "standing": "between_benchmark_and_baseline"},
    }, NOW)  # fmt: skip
    got.add("telemetry", {"device": "aux-1", "points": {
        "power_total": {"value": 431.2, "unit": "kW", "quality": "good"},
        "voltage_l1": {"value": None, "unit": "V", "quality": "bad"},
    }}, NOW)  # fmt: skip
    got.add("telemetry", {"device": "<b>odd</b>", "points": "not a table"}, NOW)
    got.add("status", {"state": "online"}, NOW)
    got.add("event", "not an object", NOW)
    return got


def test_received_keeps_the_verdict_and_the_view_apart() -> None:
    got = _received()
    assert got.counts == {"energy": 2, "group": 1, "telemetry": 2, "status": 1, "event": 1}
    assert [kind for kind, _ in got.docs] == ["energy", "energy", "group", "status"]
    assert got.replayed == 1
    assert got.windows["aux-1"]["seq"] == 7  # the newest window, not the late replay
    assert got.values["aux-1"]["voltage_l1"]["quality"] == "bad"
    assert "<b>odd</b>" not in got.values


def test_the_live_view_has_every_section_at_a_fixed_size() -> None:
    frame = _received().frame()
    frame.header = "ironwatt demo: 30 of 60 s; the gateway's link to it: CUT (outage on cue)"
    frame.notes = [(NOW, "the network between the gateway and the broker goes down for 13 s")]
    frame.status = {
        "devices": {
            "aux-1": {"state": "up", "last_success": NOW - 1, "polls": 30, "errors": 0},
            "mill-1": {"state": "down", "last_success": NOW - 12, "polls": 20, "errors": 7,
                       "last_error": "no answer within 0.5 s"},
        },
        "buffer": {"backlog": 42, "oldest_age_s": 9.5, "dropped_total": 0},
        "uplink": {"connected": False, "broker": "mqtt://127.0.0.1:1", "acked": 40,
                   "last_ack": NOW - 10, "lag_s": 9.53},
    }  # fmt: skip
    text = render_text(frame, width=120, now=NOW)
    lines = text.splitlines()
    # the outage's story (header, notes, outbox and uplink) comes first: a short terminal
    # crops the bottom
    order = [text.index(s) for s in ("CUT (outage on cue)", "goes down for 13 s",
                                     "outbox and uplink", "devices", "process groups")]  # fmt: skip
    assert order == sorted(order)
    assert max(len(line) for line in lines) <= 120
    for section in ("devices", "latest values", "last closed 10s windows", "process groups",
                    "outbox and uplink", "last messages received upstream"):  # fmt: skip
        assert any(line.strip().startswith(section) or section in line for line in lines), section
    assert "CUT (outage on cue)" in text
    assert "goes down for 13 s" in text
    row = next(line for line in lines if line.strip().startswith("mill-1"))
    assert "down" in row
    assert "12s ago" in row
    assert "no answer within 0.5 s" in row
    assert "voltage_l1 null V (bad)" in text  # a bad value shown as bad
    assert "power_total 431.2 kW" in text
    window = next(line for line in lines if "07:59:50-08:00:00" in line and "aux-1" in line)
    assert "1.200" in window
    assert "431.5" in window
    group = next(line for line in lines if line.strip().startswith("converter-1"))
    assert "-6.2" in group
    assert "-14.9" in group
    assert "0.30 CNY" in group
    assert "0.497" in group
    assert "between benchmark and baseline" in group
    assert "peak 0.00" not in group  # a period without cost is left out
    assert "NOT connected" in text
    assert "42 waiting" in text
    assert "lag 9.5 s" in text
    assert "1 replayed received" in text


def test_the_live_view_says_when_the_gateway_does_not_answer() -> None:
    text = render_text(Received().frame(), width=100, now=NOW)
    assert "does not answer yet" in text


def test_a_window_across_midnight_shows_its_dates() -> None:
    doc = {"interval": "shift", "device": "aux-1", "revision": 1, "seq": 3,
           "start": "2026-12-02T23:00:00.000Z", "end": "2026-12-03T07:00:00.000Z"}  # fmt: skip
    assert short_line("energy", doc) == (
        "energy shift aux-1 12-02 23:00:00-12-03 07:00:00 rev 1 [seq 3]"
    )
    payload = b'{"seq":3,"interval":"1m","device":"aux-1","revision":1,' \
              b'"start":"2026-12-03T07:00:00.000Z","end":"2026-12-03T07:01:00.000Z"}'  # fmt: skip
    assert format_message("ironwatt/s/gw/energy/1m/aux-1", payload).startswith(
        "energy  1m aux-1 07:00:00-07:01:00 rev 1 [seq 3]"
    )
