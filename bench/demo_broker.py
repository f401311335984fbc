"""The demo's embedded broker (amqtt) against Mosquitto: start-up, QoS 1 throughput, memory.

The demo publishes a few messages a second (and replays a backlog of a few hundred after its
outage); this measures how far from that the embedded broker is, with Mosquitto as the
baseline in the same run. Each broker runs as the demo runs it (gateway.sim.broker), a paho
publisher sends N QoS 1 messages of a window's size and a paho subscriber counts them in.

    python bench/demo_broker.py [--messages 3000] [--runs 3]

Ends with `RESULT amqtt_msgs_per_s=... mosquitto_msgs_per_s=... ratio=... amqtt_rss_mb=...`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.sim.broker import DemoBroker, EmbeddedBroker

PAYLOAD = b'{"v":1,"seq":1,"points":{' + b'"p":{"delta":1.0,"first":2.0,"last":3.0},' * 14 + b"}}"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_run(broker: DemoBroker, messages: int) -> tuple[float, float, float]:
    """(seconds to listen, messages per second end to end, broker RSS MB after)."""
    started = time.monotonic()
    broker.start()
    listening = time.monotonic() - started
    got = threading.Event()
    count = 0

    def on_message(client: object, userdata: object, msg: object) -> None:
        nonlocal count
        count += 1
        if count == messages:
            got.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub")
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    sub.subscribe("bench/#", qos=1)
    subscribed.wait(10)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=mqtt.MQTTv311)
    pub.max_inflight_messages_set(20)  # the gateway's default window
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    t0 = time.monotonic()
    for i in range(messages):
        pub.publish(f"bench/{i % 10}", PAYLOAD, qos=1)
    ok = got.wait(120)
    elapsed = time.monotonic() - t0
    assert broker.proc is not None
    rss = _rss_mb(broker.proc.pid)
    pub.loop_stop()
    pub.disconnect()
    sub.loop_stop()
    sub.disconnect()
    broker.stop()
    if not ok:
        raise SystemExit(f"{broker.name}: {count} of {messages} messages arrived in 120 s")
    return listening, messages / elapsed, rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    results: dict[str, list[tuple[float, float, float]]] = {"mosquitto": [], "amqtt": []}
    for _ in range(args.runs):
        for name in results:
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                broker = DemoBroker(work, exe) if name == "mosquitto" else EmbeddedBroker(work)
                results[name].append(one_run(broker, args.messages))
    med = {
        name: [statistics.median(r[i] for r in runs) for i in range(3)]
        for name, runs in results.items()
    }
    for name, (listen, rate, rss) in med.items():
        print(f"{name:<9}: listening after {listen:.2f} s, {rate:,.0f} QoS 1 messages/s end to "
              f"end, {rss:.1f} MB RSS after {args.messages} (medians of {args.runs})")  # fmt: skip
    ratio = med["amqtt"][1] / med["mosquitto"][1]
    print(
        f"RESULT amqtt_msgs_per_s={med['amqtt'][1]:.0f} mosquitto_msgs_per_s="
        f"{med['mosquitto'][1]:.0f} ratio={ratio:.3f} amqtt_start_s={med['amqtt'][0]:.2f} "
        f"amqtt_rss_mb={med['amqtt'][2]:.1f} mosquitto_rss_mb={med['mosquitto'][2]:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
