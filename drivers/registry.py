"""Every protocol the gateway speaks: one plugin per `driver = "..."`, looked up by name.

Adding a protocol is one package under drivers/ and one line here. Importing this module is
cheap (the plugins are stdlib-only); each plugin imports its library when it is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drivers.modbus.plugin import MODBUS
from drivers.opcua.plugin import OPCUA
from drivers.plugin import DriverPlugin

__all__ = ["PLUGINS", "names", "plugin", "plugin_of"]

# The order is the order of `driver` choices in messages and in the config's JSON Schema.
PLUGINS: Mapping[str, DriverPlugin] = {p.name: p for p in (MODBUS, OPCUA)}


def names() -> tuple[str, ...]:
    return tuple(PLUGINS)


def plugin(name: str) -> DriverPlugin:
    """The plugin of `driver = name`; KeyError naming the known drivers."""
    try:
        return PLUGINS[name]
    except KeyError:
        raise KeyError(f"no driver {name!r} (known: {', '.join(PLUGINS)})") from None


def plugin_of(device: Any) -> DriverPlugin:
    """The plugin of a validated device (model or record)."""
    return plugin(device.driver)
