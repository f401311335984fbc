"""The uplink: the outbox's rows to an MQTT broker, in order, at least once (paho in a thread).

The face is lazy: settings and URL checks are there without paho, which only the process that
runs the uplink loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.lazyface import lazy_face

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


__getattr__, __dir__ = lazy_face(__name__, _HOME, globals())
