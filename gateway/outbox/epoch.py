"""The uplink's connection epoch, stored with every row: it decides a message's `replayed`.

Owned by the Outbox (the uplink sets it), read by the writer thread for every batch it stores.
"""

from __future__ import annotations

__all__ = ["LinkEpoch"]


class LinkEpoch:
    """`session << 32 | transitions`: changes at every connect and disconnect of the uplink
    (connected while `transitions` is odd) and at every process start (the session)."""

    __slots__ = ("_session", "_transitions", "live", "value")

    def __init__(self, session: int) -> None:
        self._session = session
        self._transitions = 0
        self.value = session << 32
        # The epoch of rows stored while connected, -1 (no row's) while disconnected: the uplink
        # tells a live message from a replayed one with one comparison per message.
        self.live = -1

    @property
    def up(self) -> bool:
        return self._transitions % 2 == 1

    def set(self, up: bool) -> None:
        if up != self.up:
            self._transitions += 1
            self.value = (self._session << 32) | self._transitions
            self.live = self.value if up else -1
