"""The MQTT topic tree of spec/mqtt.md, in one place: `{prefix}/{site}/{gateway}/...`.

Every publisher (outbox events, the uplink's status, the energy stage, telemetry) and
`ironwatt check`'s description of what will be published take their topics from here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Topics"]


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one gateway; `base` is `{prefix}/{site}/{gateway id}`."""

    prefix: str
    site: str
    gateway: str

    @classmethod
    def of(cls, cfg: object) -> Topics:
        """From a config (model or records): mqtt.topic_prefix, gateway.site, gateway.id."""
        mqtt, gw = getattr(cfg, "mqtt"), getattr(cfg, "gateway")  # noqa: B009
        return cls(str(mqtt.topic_prefix), str(gw.site), str(gw.id))

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.gateway}"

    @property
    def status(self) -> str:
        """Retained, QoS 1: online/offline (the Last Will), backlog and lag."""
        return f"{self.base}/status"

    @property
    def event(self) -> str:
        """QoS 1: device up/down, gaps, outbox drops, reloads, clock steps."""
        return f"{self.base}/event"

    def energy(self, interval: str, device: str) -> str:
        return f"{self.base}/energy/{interval}/{device}"

    def group(self, interval: str, group: str) -> str:
        return f"{self.base}/group/{interval}/{group}"

    def telemetry(self, device: str) -> str:
        return f"{self.base}/telemetry/{device}"

    @property
    def subscription(self) -> str:
        """What a subscriber to everything this gateway publishes subscribes to."""
        return f"{self.base}/#"
