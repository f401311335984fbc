"""Hard cases: SIGKILL mid-flight, TLS and mutual TLS, refused credentials, a silent broker."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from gateway.outbox import Message, Outbox
from gateway.sim.ports import free_port
from gateway.uplink import Uplink
from tests.outbox.helpers import uplink_settings as settings
from tests.outbox.silent_broker import SilentBroker
from tests.support.mosquitto import Collector, Mosquitto
from tests.support.waiting import wait, wait_until

MakeOutbox = Callable[..., Outbox]
TOPIC = "ironwatt/plant1/gw1/energy/1m/m1"
PROC = Path(__file__).with_name("gateway_proc.py")


def seqs(got: list[tuple[str, bytes, bool]]) -> list[int]:
    return [json.loads(p)["seq"] for t, p, _ in got if t == TOPIC]


class Lines:
    """Reads a subprocess's stdout in a thread; keeps the last `stored N`."""

    def __init__(self, stream: IO[str]) -> None:
        self.last_stored = 0
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        with stream:  # closed at EOF: when the process is gone
            self._lines(stream)

    def _lines(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.strip())
            if line.startswith("stored "):
                self.last_stored = int(line.split()[1])


def spawn(db: Path, url: str, count: int, rate: float) -> tuple[subprocess.Popen[str], Lines]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    proc = subprocess.Popen(
        [sys.executable, str(PROC), str(db), url, str(count), str(rate)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    return proc, Lines(proc.stdout)


def test_sigkill_with_broker_down_loses_nothing(broker: Mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    collector = Collector(broker, TOPIC)
    proc, out = spawn(db, broker.url, 100_000, 400.0)
    try:
        assert wait(lambda: len(seqs(collector.snapshot())) > 100, 15)
        broker.stop()  # messages in flight never get their PUBACK
        stored_at_outage = out.last_stored
        assert wait(lambda: out.last_stored > stored_at_outage + 50, 10)  # still storing
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    last = out.last_stored
    broker.start()
    again, _ = spawn(db, broker.url, 0, 1.0)  # the restarted gateway only drains
    try:
        got = collector.wait_for(lambda g: set(range(1, last + 1)) <= set(seqs(g)), 20)
    finally:
        again.kill()
        again.wait()
        collector.close()
    received = seqs(got)
    top = max(received)
    assert top >= last
    assert set(received) == set(range(1, top + 1))  # no hole
    dups = len(received) - len(set(received))
    assert dups <= 20  # only the in-flight window can come twice


def test_mutual_tls(make_outbox: MakeOutbox, tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "mtls", tls=True, require_certificate=True) as broker:
        assert broker.ca is not None
        collector = Collector(broker, TOPIC, use_tls=True)
        outbox = make_outbox()
        outbox.enqueue([Message(TOPIC, {"n": i}) for i in range(5)])
        good = settings(
            broker.tls_url,
            ca_file=broker.ca.ca_file,
            cert_file=broker.ca.client_cert,
            key_file=broker.ca.client_key,
        )
        up = Uplink(good, outbox)
        up.start()
        got = collector.wait_for(lambda g: len(seqs(g)) == 5, 10)
        up.stop()
        collector.close()
        assert sorted(seqs(got)) == [1, 2, 3, 4, 5]
        # Without a client certificate the broker refuses the handshake: retried, reported.
        outbox.enqueue([Message(TOPIC, {"n": 9})])
        bare = Uplink(settings(broker.tls_url, ca_file=broker.ca.ca_file), outbox)
        bare.start()
        assert wait(lambda: bare.status().last_error is not None, 10)
        bare.stop()
        assert bare.status().connects == 0
        error = bare.status().last_error or ""
        assert "mqtt.cert_file" in error or "TLS handshake" in error


def test_tls_checks_the_broker_certificate(make_outbox: MakeOutbox, tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "tls", tls=True) as broker:
        assert broker.ca is not None
        outbox = make_outbox()
        outbox.enqueue([Message(TOPIC, {"n": 1})])
        up = Uplink(settings(broker.tls_url, ca_file=broker.ca.ca_file), outbox)
        up.start()
        assert wait(lambda: outbox.stats().backlog == 0, 10)
        up.stop()
        last_ack = up.status().last_ack
        assert last_ack is not None
        assert abs(time.time() - last_ack) < 60
        # A CA that did not sign the broker: refused with a message that says what to check.
        other = Mosquitto(tmp_path / "other", tls=True)
        assert other.ca is not None
        outbox.enqueue([Message(TOPIC, {"n": 2})])
        wrong = Uplink(settings(broker.tls_url, ca_file=other.ca.ca_file), outbox)
        wrong.start()
        assert wait(lambda: wrong.status().last_error is not None, 10)
        wrong.stop()
        error = wrong.status().last_error or ""
        assert "TLS handshake" in error
        assert "mqtt.ca_file" in error
        assert outbox.stats().backlog == 1  # kept for later


def test_wrong_password_is_clear_retried_and_never_logged(
    make_outbox: MakeOutbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Wr0ng-s3cret-XYZ"
    caplog.set_level(logging.DEBUG)
    with Mosquitto(tmp_path / "auth", users={"gw1": "right-pass"}) as broker:
        outbox = make_outbox()
        outbox.enqueue([Message(TOPIC, {"n": 1})])
        for protocol in ("5", "3.1.1"):
            cfg = settings(broker.url, username="gw1", password=secret, protocol=protocol)
            assert secret not in repr(cfg)
            up = Uplink(cfg, outbox)
            up.start()
            assert wait(lambda: up.status().refusals >= 2, 10)  # noqa: B023 - retried
            st = up.status()
            up.stop()
            assert st.state == "refused"
            assert not st.connected
            assert "refused the connection" in (st.last_error or "")
            assert "mqtt.username" in (st.last_error or "")
        assert outbox.stats().backlog == 1
        assert "refused the connection" in caplog.text
        assert secret not in caplog.text
        collector = Collector(broker, TOPIC, username="gw1", password="right-pass")
        ok = Uplink(settings(broker.url, username="gw1", password="right-pass"), outbox)
        ok.start()
        got = collector.wait_for(lambda g: seqs(g) == [1], 10)
        ok.stop()
        collector.close()
        assert seqs(got) == [1]


def test_broker_that_never_acks_bounded_memory_no_loss(
    make_outbox: MakeOutbox, tmp_path: Path
) -> None:
    port = free_port()
    real = Mosquitto(tmp_path / "real", port=port)
    real.start()
    Collector(real, TOPIC).close()  # a persistent session: the broker keeps what comes
    real.stop()
    silent = SilentBroker(port)
    silent.start()
    outbox = make_outbox()
    n = 3000
    outbox.enqueue([Message(TOPIC, {"n": i}) for i in range(n)])
    up = Uplink(settings(real.url, protocol="3.1.1", max_inflight=20), outbox)
    up.start()
    try:
        assert wait(lambda: len(silent.publishes) >= 20, 10)
        outbox.enqueue([Message(TOPIC, {"n": i}) for i in range(n, 2 * n)])  # more keeps coming
        n *= 2
        wait_until(lambda: up.status().backlog == n, 5, f"a backlog of {n}")
        # The point is that nothing more goes out: no condition to wait for, only a while in
        # which the uplink, with 6000 messages waiting and a free socket, must send none.
        time.sleep(0.5)
        data = [t for t in silent.publishes if t == TOPIC]
        assert len(data) == 20  # the window, and not one message more
        st = up.status()
        assert st.inflight == 20
        assert st.published == 20
        assert st.backlog == n
        assert st.connected
        assert st.last_ack is None  # nothing acknowledged, nothing deleted
    finally:
        silent.stop()
    real.start()
    collector = Collector(real, TOPIC)
    try:
        got = collector.wait_for(lambda g: set(seqs(g)) == set(range(1, n + 1)), 20)
    finally:
        up.stop()
        collector.close()
        real.stop()
    assert set(seqs(got)) == set(range(1, n + 1))
    assert wait(lambda: outbox.stats().backlog == 0, 5)


def test_missing_ca_file_is_reported_not_fatal(make_outbox: MakeOutbox, tmp_path: Path) -> None:
    outbox = make_outbox()
    up = Uplink(
        settings(f"mqtts://127.0.0.1:{free_port()}", ca_file=tmp_path / "no-ca.pem"), outbox
    )
    up.start()
    try:
        assert wait(lambda: "TLS setup" in (up.status().last_error or ""), 5)
        assert "mqtt.ca_file" in (up.status().last_error or "")
        assert up._thread is not None
        assert up._thread.is_alive()  # retrying, not dead
    finally:
        up.stop()


def test_a_topic_the_acl_denies_is_kept_retried_and_logged_once(
    make_outbox: MakeOutbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # MQTT 5 brokers answer a denied publish with PUBACK "Not authorized": the row must stay.
    acl = "user gw1\ntopic readwrite ironwatt/plant1/gw1/status\n"
    caplog.set_level(logging.INFO)
    with Mosquitto(tmp_path / "acl", users={"gw1": "pw"}, acl=acl) as broker:
        outbox = make_outbox()
        outbox.enqueue([Message(TOPIC, {"n": 1})])
        up = Uplink(settings(broker.url, username="gw1", password="pw", protocol="5"), outbox)
        up.start()
        try:
            assert wait(lambda: up.status().refusals >= 3, 10)
            st = up.status()
        finally:
            up.stop()
    assert outbox.stats().backlog == 1  # never deleted on a refusing PUBACK
    assert "ACL" in (st.last_error or "")
    refused = [r for r in caplog.records if "refused a message" in r.getMessage()]
    assert len(refused) == 1  # the same refusal at every reconnect is not logged again
