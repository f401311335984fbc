"""The demo's MQTT broker when Mosquitto is not installed: amqtt (pure Python, from PyPI).

Run as its own process (`python -m gateway.sim.embedded_broker PORT LOG`), like Mosquitto: its
work stays off the demo's event loop (which serves the simulated meters), and the demo can
start and stop it the same way. Anonymous, loopback only, MQTT 3.1.1 (what the gateway speaks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

__all__ = ["broker_config", "main"]


def broker_config(port: int) -> dict[str, Any]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        # No $SYS publisher, no per-packet logger: a demo's broker, not a monitored one.
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


async def _serve(port: int) -> None:
    from amqtt.broker import Broker

    broker = Broker(broker_config(port))
    await broker.start()
    print(f"amqtt listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    with contextlib.suppress(Exception):  # stopping: a client's half-closed socket is no news
        await broker.shutdown()


def main(argv: list[str]) -> int:
    port, log = int(argv[0]), argv[1]
    logging.basicConfig(filename=log, level=logging.WARNING, format="%(asctime)s %(message)s")
    asyncio.run(_serve(port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
