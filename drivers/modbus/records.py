"""What the daemon's config records of Modbus points can answer beyond their fields.

Stdlib only: mixed into the record classes by gateway/config/records.py (no pydantic there).
"""

from __future__ import annotations

from drivers.modbus.points import REGISTER_WORDS

__all__ = ["ModbusPointRecord"]


class ModbusPointRecord:
    __slots__ = ()
    type: str

    @property
    def words(self) -> int:
        """Registers the point occupies (as `ModbusPoint.words`)."""
        return REGISTER_WORDS[self.type]
