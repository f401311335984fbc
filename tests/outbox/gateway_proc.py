"""A minimal gateway process for the SIGKILL test: enqueue messages and publish them.

Usage: gateway_proc.py DB URL COUNT RATE. Prints `stored <last seq>` after every commit.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from gateway.outbox import Message, Outbox, OutboxSettings
from gateway.uplink import Uplink, UplinkSettings


def main() -> None:
    db, url, count, rate = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    outbox = Outbox(OutboxSettings(path=db, gw_id="gw1", site="plant1", durability="normal"))
    uplink = Uplink(
        UplinkSettings(
            url=url,
            client_id="gw-proc",
            site="plant1",
            gw_id="gw1",
            reconnect_min_s=0.1,
            reconnect_max_s=0.3,
        ),
        outbox,
    )
    uplink.start()
    print("ready", flush=True)
    batch = 5
    for i in range(0, count, batch):
        seqs = outbox.enqueue(
            [Message("ironwatt/plant1/gw1/energy/1m/m1", {"i": i + k}) for k in range(batch)]
        )
        print(f"stored {seqs[-1]}", flush=True)
        time.sleep(batch / rate)
    print("done", flush=True)
    while True:  # keep draining until killed
        time.sleep(1)


if __name__ == "__main__":
    main()
