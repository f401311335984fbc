"""How soon a Modbus device that stopped answering is tried again: one policy for links and devices.

Pure functions of the devices on a link (no I/O), used by `Link` and `DeviceRunner` alike, so the
daemon's per-link driver and `ModbusDriver` get the same behaviour (see docs/modbus.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from drivers.base import Steps

__all__ = [
    "DEDICATED_RECONNECT_MAX",
    "SHARED_LINK_RETRY_MAX",
    "SHARED_RECONNECT_MAX",
    "Member",
    "Steps",
    "device_steps",
    "link_steps",
    "reconnect_max",
]

# A device alone on its link: nobody else waits while it is tried, so try it often.
DEDICATED_RECONNECT_MAX = 5.0
# A unit on a shared line or gateway: each attempt at a dead one costs its neighbours a timeout.
SHARED_RECONNECT_MAX = 60.0
# The connection of a shared link (every device on it is down while it is): as before.
SHARED_LINK_RETRY_MAX = 30.0
_SHARED_LINK_FIRST = 0.5
_SHARED_DEVICE_FIRST = 0.5
_DEDICATED_FIRST = 1.0


@dataclass(frozen=True, slots=True)
class Member:
    """What the policy needs of one device on a link."""

    poll: float
    reconnect_max: float | None = None  # as configured; None: the default for its link


def reconnect_max(member: Member, shared: bool) -> float:
    """The longest time between two attempts to reach this device."""
    if member.reconnect_max is not None:
        return member.reconnect_max
    return SHARED_RECONNECT_MAX if shared else DEDICATED_RECONNECT_MAX


def _cap(member: Member, shared: bool) -> float:
    # Attempts happen at polls: a retry due d after one attempt is made at the first poll at or
    # after it, at most d + poll later. Capping d at reconnect_max - poll keeps the spacing of
    # attempts within reconnect_max.
    return max(0.0, reconnect_max(member, shared) - member.poll)


def device_steps(member: Member, shared: bool) -> Steps:
    """The backoff of a unit that does not answer (its link is up)."""
    cap = _cap(member, shared)
    first = max(member.poll, _SHARED_DEVICE_FIRST if shared else _DEDICATED_FIRST)
    return Steps(min(first, cap), cap)


def link_steps(members: Iterable[Member]) -> Steps:
    """The backoff of a link's connection, from the devices on it.

    Alone: its device's policy. Shared: slow (at most 30 s), or the tightest reconnect_max a
    device on it sets explicitly. No device (a tool's link): the shared default.
    """
    found = list(members)
    if len(found) == 1:
        only = found[0]
        cap = _cap(only, shared=False)
        return Steps(min(max(only.poll, _DEDICATED_FIRST), cap), cap)
    cap = min(
        [SHARED_LINK_RETRY_MAX]
        + [_cap(m, shared=True) for m in found if m.reconnect_max is not None]
    )
    return Steps(min(_SHARED_LINK_FIRST, cap), cap)
