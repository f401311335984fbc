"""Shared by the uplink tests: settings of a test gateway with short reconnect delays."""

from __future__ import annotations

from typing import Any

from gateway.uplink import UplinkSettings

__all__ = ["uplink_settings"]


def uplink_settings(url: str, **kw: Any) -> UplinkSettings:
    base: dict[str, Any] = dict(
        url=url,
        client_id="gw-test",
        site="plant1",
        gw_id="gw1",
        reconnect_min_s=0.1,
        reconnect_max_s=0.4,
    )
    base.update(kw)
    return UplinkSettings(**base)
