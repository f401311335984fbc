"""sd_notify without libsystemd: READY=1, RELOADING=1, WATCHDOG=1, STATUS=..., STOPPING=1.

A datagram on an AF_UNIX socket is the whole protocol; outside systemd (no NOTIFY_SOCKET) every
call is a no-op, so the daemon code never asks where it runs.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["Notifier", "watchdog_interval"]


class Notifier:
    """One connected datagram socket to the service manager, or nothing when not under one."""

    def __init__(self, address: str | None = None) -> None:
        address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self._sock: socket.socket | None = None
        if not address:
            return
        # A leading '@' names a socket in the abstract namespace (a NUL byte on the wire).
        target = "\0" + address[1:] if address.startswith("@") else address
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(target)
        except OSError:
            sock.close()
            return
        # Never block the event loop: a manager that stops reading (a full queue) costs a
        # lost ping, not a stalled gateway.
        sock.setblocking(False)
        self._sock = sock

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` lines in one datagram; False when nobody listens (never raises)."""
        if self._sock is None:
            return False
        try:
            self._sock.send("\n".join(fields).encode())
        except OSError:
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1: at start, and at the end of every reload (applied or refused)."""
        return self.send("READY=1", *_status(status))

    def reloading(self, status: str | None = None) -> bool:
        """RELOADING=1 with the CLOCK_MONOTONIC time, as Type=notify-reload (systemd 253+)
        requires; older managers take RELOADING=1 alone and ignore MONOTONIC_USEC."""
        usec = time.monotonic_ns() // 1000  # CPython's monotonic clock is CLOCK_MONOTONIC
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(*_status(text)) if text else self.send("STATUS=")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str | None) -> list[str]:
    # One line per STATUS: a newline would start a new (bogus) assignment.
    return ["STATUS=" + text.replace("\n", " ")] if text else []


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when none is expected."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None
