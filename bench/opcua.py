"""OPC UA intake: 2,000 monitored items at 100 ms, a bare asyncua client against the gateway driver.

The simulated PLC runs in its own process; each client run is a fresh process (alternating
bare / gateway) that measures notifications received and its own CPU over a steady window.
The gateway run includes the driver's sink feeding the aggregation kernel (`ext.kernel`).
Each value encodes its server tick, so a run also reports the share of the values the server
wrote that reached the client (queue size 1: a value overwritten before a publish is lost,
whether the server or the client was slow; equal shares mean the client lost nothing more).
Last line: `RESULT notifications_per_s=<gateway median> cpu_ratio_vs_bare=<ratio of medians>`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ITEMS = 2000
INTERVAL = 0.1
WARMUP = 1.5
WINDOW = 5.0
RUNS = 3  # per client kind, alternating
NSU = "nsu=urn:plant1:bf2;s="
KINDS = ("bare", "gateway", "floor")


# -- client processes ----------------------------------------------------------------------------


def completeness(values: Sequence[float]) -> float:
    """Received / produced for the values of a window: item k's value is tick * 10,000 + k.

    Per item, every tick between the first and the last one seen was written by the server;
    with a queue of 1 a client too slow to take them loses some, and this ratio shows it.
    """
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    seen: dict[int, int] = {}
    for v in values:
        tick, k = divmod(int(v), 10_000)
        first.setdefault(k, tick)
        last[k] = tick
        seen[k] = seen.get(k, 0) + 1
    produced = sum(last[k] - first[k] + 1 for k in first)
    return sum(seen.values()) / produced if produced else 0.0


async def measure(
    count: Any, tick: asyncio.Event, values: Callable[[], Sequence[float]]
) -> dict[str, float]:
    """Warm up, then count and time a window whose both edges fall right after a delivery.

    The server publishes whole cycles (2,000 values) at once, and a starved server does so
    less often than every 100 ms: edges aligned on deliveries count whole cycles, where a
    fixed window would be off by up to a cycle at each end.
    """
    await asyncio.wait_for(tick.wait(), 30)
    await asyncio.sleep(WARMUP)

    async def after_delivery() -> tuple[int, float, float]:
        tick.clear()
        await asyncio.wait_for(tick.wait(), 30)
        return count(), time.process_time(), time.monotonic()

    n0, c0, t0 = await after_delivery()
    await asyncio.sleep(WINDOW)
    n1, c1, t1 = await after_delivery()
    # Outside the measured window: what arrived in it, checked against what the server wrote.
    complete = completeness(values()[n0:n1])
    return {"notifications": n1 - n0, "seconds": t1 - t0, "cpu": c1 - c0, "complete": complete}


async def run_bare(endpoint: str, ns: int) -> dict[str, float]:
    """asyncua's documented way: a handler with datachange_notification, items at 100 ms."""
    from asyncua.client.client import Client

    from drivers.opcua.security import ua_module

    ua = ua_module()
    tick = asyncio.Event()

    class Handler:
        values: list[float] = []  # noqa: RUF012 (one handler per process)

        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            Handler.values.append(val)
            tick.set()

    client = Client(endpoint, timeout=30, watchdog_intervall=30)
    await client.connect()
    try:
        sub: Any = await client.create_subscription(INTERVAL * 1000, Handler())
        nodes = [client.get_node(ua.NodeId(f"Bench.Item{i:04d}", ns)) for i in range(ITEMS)]
        await sub.subscribe_data_change(nodes, queuesize=1, sampling_interval=INTERVAL * 1000)
        return await measure(lambda: len(Handler.values), tick, lambda: Handler.values)
    finally:
        await client.disconnect()


async def run_floor(endpoint: str, ns: int) -> dict[str, float]:
    """The least a client can do: a raw publish callback that only counts the items."""
    from asyncua.client.client import Client

    from drivers.opcua.security import ua_module
    from drivers.opcua.subscription import make_subscription

    ua = ua_module()
    tick = asyncio.Event()
    total = [0]
    kept: list[Any] = []

    def on_publish(result: Any) -> None:
        for notif in result.NotificationMessage.NotificationData or ():
            items = getattr(notif, "MonitoredItems", None)
            if items:
                total[0] += len(items)
                kept.append(items)
                tick.set()

    def values() -> list[float]:
        return [item.Value.Value.Value for items in kept for item in items]

    client = Client(endpoint, timeout=30, watchdog_intervall=30)
    await client.connect()
    try:
        sub = await make_subscription(client, INTERVAL * 1000, on_publish)
        nodes = [client.get_node(ua.NodeId(f"Bench.Item{i:04d}", ns)) for i in range(ITEMS)]
        await sub.subscribe_data_change(nodes, queuesize=1, sampling_interval=INTERVAL * 1000)
        return await measure(lambda: total[0], tick, values)
    finally:
        await client.disconnect()


class KernelSink:
    """The daemon's path from a driver to the aggregation kernel: batches in, windows out."""

    def __init__(self, point_count: int) -> None:
        from zoneinfo import ZoneInfo

        from ext import kernel as mod
        from gateway.energy.windows import edges_between

        now = time.time()
        tz = ZoneInfo("UTC")
        edges = [edges_between(tz, s, now - 3600, now + 7200) for s in (60, 900)]
        self.mod = mod
        self.kernel = mod.Kernel(2)
        self.kernel.extend_grid(*mod.build_grid(edges))
        for pid in range(point_count):
            self.kernel.configure_point(pid, f"bench.item{pid}", mod.GAUGE, since=now, max_gap=5.0)
        self.samples = 0
        self.windows = 0
        self.events = 0
        self.tick = asyncio.Event()
        self.kept: list[Any] = []  # the value arrays, for the completeness check afterwards

    def add_samples(self, batch: Any) -> None:
        self.kernel.ingest(batch.point, batch.ts, batch.value, batch.quality)
        self.samples += len(batch)
        self.kept.append(batch.value)
        self.tick.set()

    def values(self) -> list[float]:
        return [v for arr in self.kept for v in arr]

    def add_event(self, event: Any) -> None:
        self.events += 1

    def close(self) -> None:
        windows, _blocks = self.kernel.close_until(time.time())
        self.windows += len(windows["point"])


async def run_gateway(endpoint: str, ns: int) -> dict[str, float]:
    import tempfile

    from drivers.opcua.driver import OpcuaDriver
    from drivers.samples import PointIndex
    from gateway.config.model import OpcuaDevice

    device = OpcuaDevice.model_validate(
        {
            "name": "bench",
            "driver": "opcua",
            "endpoint": endpoint,
            "interval": f"{int(INTERVAL * 1000)}ms",
            "timeout": "30s",
            "points": [
                {"name": f"item{i}", "node": f"{NSU}Bench.Item{i:04d}"} for i in range(ITEMS)
            ],
        }
    )
    index = PointIndex()
    sink = KernelSink(ITEMS)
    driver = OpcuaDriver(device, index, sink, Path(tempfile.mkdtemp()), "bench", "bench")

    async def closer() -> None:
        while True:
            await asyncio.sleep(1.0)
            sink.close()

    task = asyncio.create_task(driver.run())
    closing = asyncio.create_task(closer())
    try:
        result = await measure(lambda: sink.samples, sink.tick, sink.values)
        result["kernel_dropped"] = sum(sink.kernel.stats().values())
        return result
    finally:
        for t in (task, closing):
            t.cancel()
        await asyncio.gather(task, closing, return_exceptions=True)


def client_main(kind: str, endpoint: str, ns: int) -> None:
    runner = {"bare": run_bare, "gateway": run_gateway, "floor": run_floor}[kind]
    print(json.dumps(asyncio.run(runner(endpoint, ns))), flush=True)


# -- orchestration -------------------------------------------------------------------------------


def start_server() -> tuple[subprocess.Popen[str], str, int]:
    from gateway.sim.ports import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "gateway.sim.opcua_plc", "--port", str(port), "--static"]
    cmd += ["--bench-items", str(ITEMS), "--bench-interval", str(INTERVAL)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        raise SystemExit(f"simulated PLC did not start: {line!r}")
    return proc, f"opc.tcp://127.0.0.1:{port}", int(line.rsplit("ns=", 1)[1])


def one_run(kind: str, endpoint: str, ns: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--client", kind, "--endpoint", endpoint, "--ns", str(ns)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"{kind} client failed:\n{out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--client", choices=KINDS)
    parser.add_argument("--endpoint")
    parser.add_argument("--ns", type=int, default=2)
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args()
    if args.client:
        client_main(args.client, args.endpoint, args.ns)
        return

    server, endpoint, ns = start_server()
    results: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
    try:
        print(f"{ITEMS} items at {INTERVAL * 1000:.0f} ms from a simulated PLC at {endpoint}")
        print(f"each run: {WARMUP:g} s warm-up, {WINDOW:g} s measured, fresh client process")
        for run in range(args.runs):
            for kind in KINDS:
                r = one_run(kind, endpoint, ns)
                results[kind].append(r)
                rate = r["notifications"] / r["seconds"]
                cpu = r["cpu"] / max(r["notifications"], 1) * 10_000
                load = r["cpu"] / r["seconds"]
                print(f"  run {run + 1} {kind:8s} {rate:9.0f} notifications/s  "
                      f"{cpu * 1000:7.1f} ms CPU per 10,000  ({load:.0%} of a core)  "
                      f"{r['complete']:.2%} of the server's values")  # fmt: skip
    finally:
        server.terminate()
        server.wait(10)

    def med(kind: str, f: Callable[[dict[str, float]], float]) -> float:
        return statistics.median(f(r) for r in results[kind])

    rates = {k: med(k, lambda r: r["notifications"] / r["seconds"]) for k in KINDS}
    cpus = {k: med(k, lambda r: r["cpu"] / max(r["notifications"], 1) * 10_000) for k in KINDS}
    complete = {k: med(k, lambda r: r["complete"]) for k in KINDS}
    print("medians:")
    for k in KINDS:
        print(f"  {k:8s} {rates[k]:9.0f} notifications/s  {cpus[k] * 1000:7.1f} ms CPU per 10,000  "
              f"{complete[k]:.2%} of the server's values")  # fmt: skip
    print(f"of the values the server wrote, {complete['gateway']:.2%} reached the gateway, "
          f"{complete['bare']:.2%} the bare client, {complete['floor']:.2%} the floor (the rest "
          "were overwritten in the server's queue of 1 between publishes); the rate is the "
          "server's and varies with the machine's load")  # fmt: skip
    print(f"gateway receives {rates['gateway'] / rates['bare']:.1%} of the bare client "
          f"at {cpus['gateway'] / cpus['bare']:.2f}x its CPU per notification "
          f"({cpus['gateway'] / cpus['floor']:.2f}x the count-only floor)")  # fmt: skip
    print(
        f"RESULT notifications_per_s={rates['gateway']:.0f} "
        f"cpu_ratio_vs_bare={cpus['gateway'] / cpus['bare']:.2f}"
    )


if __name__ == "__main__":
    main()
