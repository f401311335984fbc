"""Loopback ports for the simulated plant, the tests and the benches (never a fixed port)."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the kernel picks it; it may be taken by
    the time it is bound, which a loopback test machine makes rare enough)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
