"""The daemon: the composition root, the only package that imports all the others.

`lifecycle` (the Gateway: start, run, stop), `pipeline` (the data path), `reload` (the plan of
a reload, a pure function), `status` (/status, /metrics, STATUS=), `devices` (the driver
supervisor), `energy_stage`, `telemetry`, `uplink_thread`, and the systemd-facing `notify`,
`health`, `reload_control`, `logs`, `clock`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.lazyface import lazy_face

__all__ = ["Gateway", "run_gateway"]

if TYPE_CHECKING:
    from gateway.daemon.lifecycle import Gateway, run_gateway

# Lazy: `ironwatt status` and `ironwatt reload` import gateway.daemon.status and
# reload_control without the drivers, the outbox and the kernel.
__getattr__, __dir__ = lazy_face(__name__, dict.fromkeys(__all__, "lifecycle"), globals())
