"""The root of ironwatt's exception tree, here because the drivers are the lowest layer.

Every layer may raise and catch these; the whole tree is drawn in `gateway/errors.py`.
"""

from __future__ import annotations

__all__ = ["DriverError", "IronwattError"]


class IronwattError(Exception):
    """Base of every exception ironwatt raises on purpose."""


class DriverError(IronwattError):
    """A device or its link failed a request; the message names the device and what came back."""
