"""Settings of the MQTT uplink and where they come from in the config (mqtt.*, gateway.*).

Plain values, so the uplink runs (and is tested) without the config module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import gateway
from drivers.base import Backoff
from gateway.errors import UplinkError
from gateway.topics import Topics

__all__ = ["UplinkSettings", "parse_url", "reconnect_backoff"]


def parse_url(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of an `mqtt://` or `mqtts://` URL; UplinkError if it is not one."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise UplinkError(f"mqtt.url {url!r}: the scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise UplinkError(f"mqtt.url {url!r}: no host")
    try:
        port = parts.port
    except ValueError as exc:  # "Port out of range 0-65535", "Port could not be cast..."
        raise UplinkError(f"mqtt.url {url!r}: {exc}") from None
    tls = parts.scheme == "mqtts"
    return parts.hostname, port or (8883 if tls else 1883), tls


def _read_password(mqtt: Any) -> str | None:
    reader = getattr(mqtt, "password", None)
    if callable(reader):
        value = reader()
        return None if value is None else str(value)
    if getattr(mqtt, "password_file", None):
        return Path(mqtt.password_file).read_text().rstrip("\r\n")
    if getattr(mqtt, "password_env", None):
        return os.environ.get(mqtt.password_env)
    return None


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    url: str
    client_id: str
    site: str
    gw_id: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a repr, never logged
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    topic_prefix: str = "ironwatt"
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: float = 30.0
    max_inflight: int = 20
    drain_rate: float = 0.0  # messages/s; 0 = as fast as the broker acknowledges
    version: str = gateway.__version__
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 60.0
    status_interval_s: float = 30.0  # status.backlog/lag_s refreshed at least this often
    ack_timeout_s: float = 120.0  # no PUBACK for this long: reconnect and send again
    connect_timeout_s: float = 10.0

    @property
    def status_topic(self) -> str:
        return Topics(self.topic_prefix, self.site, self.gw_id).status

    @classmethod
    def from_config(cls, cfg: Any) -> UplinkSettings:
        """Read the contract's keys: gateway.id/site and mqtt.* (password read here)."""
        mqtt, gw = cfg.mqtt, cfg.gateway
        parse_url(mqtt.url)
        return cls(
            url=str(mqtt.url),
            client_id=str(mqtt.client_id or f"ironwatt-{gw.site}-{gw.id}"),
            site=str(gw.site),
            gw_id=str(gw.id),
            username=mqtt.username,
            password=_read_password(mqtt),
            ca_file=Path(mqtt.ca_file) if mqtt.ca_file else None,
            cert_file=Path(mqtt.cert_file) if mqtt.cert_file else None,
            key_file=Path(mqtt.key_file) if mqtt.key_file else None,
            topic_prefix=str(mqtt.topic_prefix),
            protocol=mqtt.protocol,
            keepalive_s=float(mqtt.keepalive),
            max_inflight=int(getattr(mqtt, "max_inflight", 20)),
            drain_rate=float(getattr(mqtt, "drain_rate", 0.0)),
        )


def reconnect_backoff(settings: UplinkSettings) -> Backoff:
    """Between connections to the broker: reconnect_min_s doubling up to reconnect_max_s, with
    the jitter every backoff of the gateway has (drivers.base.Backoff: one algorithm)."""
    return Backoff(initial=settings.reconnect_min_s, maximum=settings.reconnect_max_s)
