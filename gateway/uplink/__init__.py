"""The uplink: the outbox's rows to an MQTT broker, in order, at least once (paho in a thread).

The face is lazy: settings and URL checks are there without paho, which only the process that
runs the uplink loads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["Uplink", "UplinkSettings", "UplinkStatus", "parse_url"]

if TYPE_CHECKING:
    from gateway.uplink.client import Uplink
    from gateway.uplink.settings import UplinkSettings, parse_url
    from gateway.uplink.status import UplinkStatus

_HOME = {
    "Uplink": "client",
    "UplinkSettings": "settings",
    "UplinkStatus": "status",
    "parse_url": "settings",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # found once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
