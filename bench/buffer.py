"""Benchmark of the outbox and the uplink: enqueue rate (both durability modes), drain rate to
a local Mosquitto at QoS 1 with PUBACK -> delete, and raw paho's QoS 1 rate as the ceiling.

Run from the repository root: `python bench/buffer.py`. Last line: RESULT ...
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.outbox import Message, Outbox, OutboxSettings
from gateway.uplink import Uplink, UplinkSettings
from tests.support.mosquitto import Mosquitto

RUNS = 3
ENQUEUE_RUNS = 5
ENQUEUE_N = 100_000
BATCH = 1_000
DRAIN_N = 20_000
INFLIGHT = 20
TOPIC = "ironwatt/plant1/gw1/energy/1m/m1"
# The published message is 300 bytes: this body plus the common fields spliced in.
_COMMONS = (
    b'{"v":1,"stream":"9f1c2e7a","seq":18342,"gw":"gw1","site":"plant1",'
    b'"sent":"2026-11-29T06:15:01.204Z","replayed":false,'
)
_PAD = 300 - len(_COMMONS) - len(b'"device":"m1","pad":""}')
BODY = b'{"device":"m1","pad":"' + b"x" * _PAD + b'"}'
PUBLISHED = _COMMONS + BODY[1:]


def settings(path: Path, durability: str) -> OutboxSettings:
    return OutboxSettings(
        path=path,
        gw_id="gw1",
        site="plant1",
        durability=durability,  # type: ignore[arg-type]
        max_size_bytes=4 << 30,
    )


def enqueue_rate(workdir: Path, durability: str, run: int) -> float:
    outbox = Outbox(settings(workdir / f"enq-{durability}-{run}.db", durability))
    batch = [Message(TOPIC, BODY) for _ in range(BATCH)]
    t0 = time.perf_counter()
    futures = [outbox.submit(batch) for _ in range(ENQUEUE_N // BATCH)]
    futures[-1].result()  # resolved after its COMMIT; batches commit in order
    elapsed = time.perf_counter() - t0
    outbox.close()
    return ENQUEUE_N / elapsed


def commit_rate(workdir: Path, durability: str, run: int, commits: int = 1000) -> float:
    """Small batches stored one at a time (10 messages, waiting for each COMMIT): commits/s.

    This is the daemon's real pattern (a few windows per interval edge) and where
    synchronous=FULL pays its fsync per commit.
    """
    outbox = Outbox(settings(workdir / f"commit-{durability}-{run}.db", durability))
    batch = [Message(TOPIC, BODY) for _ in range(10)]
    t0 = time.perf_counter()
    for _ in range(commits):
        outbox.enqueue(batch)
    elapsed = time.perf_counter() - t0
    outbox.close()
    return commits / elapsed


def drain_rate(workdir: Path, broker: Mosquitto, run: int) -> float:
    outbox = Outbox(settings(workdir / f"drain-{run}.db", "normal"))
    for _ in range(DRAIN_N // BATCH):
        outbox.enqueue([Message(TOPIC, BODY) for _ in range(BATCH)])
    up = Uplink(
        UplinkSettings(
            url=broker.url,
            client_id=f"bench-{run}",
            site="plant1",
            gw_id="gw1",
            max_inflight=INFLIGHT,
            drain_rate=0.0,
        ),
        outbox,
    )
    t0 = time.perf_counter()
    up.start()
    while outbox.backlog > 0:  # PUBACK -> delete committed for every message
        time.sleep(0.002)
    elapsed = time.perf_counter() - t0
    up.stop()
    outbox.close()
    return DRAIN_N / elapsed


def paho_rate(broker: Mosquitto, payload: bytes, run: int) -> float:
    acked = 0
    finished = threading.Event()

    def on_publish(
        client: mqtt.Client, userdata: object, mid: int, rc: object, props: object
    ) -> None:
        nonlocal acked
        acked += 1
        if acked == DRAIN_N:
            finished.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"paho-{run}")
    client.max_inflight_messages_set(INFLIGHT)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    t0 = time.perf_counter()
    for _ in range(DRAIN_N):
        client.publish(TOPIC, payload, qos=1)
    finished.wait(60)
    elapsed = time.perf_counter() - t0
    client.disconnect()
    client.loop_stop()
    return DRAIN_N / elapsed


def main() -> None:
    payload = PUBLISHED
    with tempfile.TemporaryDirectory(prefix="ironwatt-bench-") as tmp:
        work = Path(tmp)
        results: dict[str, list[float]] = {
            "normal": [],
            "full": [],
            "drain": [],
            "paho": [],
            "commit_normal": [],
            "commit_full": [],
        }
        # Enqueue runs are short and this machine is shared: more of them, for a steadier median.
        for run in range(ENQUEUE_RUNS):
            for durability in ("normal", "full"):
                results[durability].append(enqueue_rate(work, durability, run))
        for run in range(RUNS):
            for durability in ("normal", "full"):
                results[f"commit_{durability}"].append(commit_rate(work, durability, run))
        with Mosquitto(work / "mosquitto") as broker:
            for run in range(RUNS):
                results["paho"].append(paho_rate(broker, payload, run))
                results["drain"].append(drain_rate(work, broker, run))
        med = {k: statistics.median(v) for k, v in results.items()}
        print(
            f"payload as published: {len(payload)} bytes; median of {ENQUEUE_RUNS} enqueue "
            f"runs and {RUNS} of the others"
        )
        for key, label in (
            ("normal", "enqueue, durability=normal"),
            ("full", "enqueue, durability=full"),
            ("commit_normal", "commits of 10 msgs one at a time, normal"),
            ("commit_full", "commits of 10 msgs one at a time, full"),
            ("drain", "drain to Mosquitto, QoS 1, PUBACK -> delete"),
            ("paho", "raw paho QoS 1 publish (ceiling)"),
        ):
            runs = ", ".join(f"{x:,.0f}" for x in results[key])
            unit = "commit/s" if key.startswith("commit") else "msg/s"
            print(f"  {label:48s} {med[key]:>10,.0f} {unit:8s} [{runs}]")
        print(f"  drain / paho ceiling: {med['drain'] / med['paho']:.0%}")
        print(
            f"RESULT enqueue_per_s={med['normal']:.0f} drain_per_s={med['drain']:.0f} "
            f"paho_ceiling_per_s={med['paho']:.0f}"
        )


if __name__ == "__main__":
    main()
