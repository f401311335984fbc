"""What a value from the server is worth: its node's DataType, its status, and what is wrong now.

Pure (no asyncua import): `expect_for_datatype` and `decode` judge one value; `PointProblems`
remembers each point's current problem, so a point logs its fall and its return, not every sample
(and a flapping point says so once, then is counted until it holds steady).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from drivers.base import DeviceEvent, DeviceSink

__all__ = ["ANY", "Expect", "PointProblems", "decode", "describe_value", "expect_for_datatype"]

log = logging.getLogger("ironwatt.opcua")

Kind = Literal["number", "bool", "any", "other"]


@dataclass(frozen=True, slots=True)
class Expect:
    """What the node's DataType lets through: numbers, Booleans, either, or nothing we can sum."""

    kind: Kind
    name: str  # the DataType's name, as a technician sees it in a browser
    fast: type | None = None  # the Python type the hot path takes without a second look


ANY = Expect("any", "a number or Boolean")

# Namespace-0 DataTypes (Part 6 A.1 / NodeIds.csv). Subtypes of Double or Int32 elsewhere
# (enumerations, ns>0 types) stay "any": their values are still checked one by one.
_NUMBERS: dict[int, tuple[str, type | None]] = {
    2: ("SByte", int),
    3: ("Byte", int),
    4: ("Int16", int),
    5: ("UInt16", int),
    6: ("Int32", int),
    7: ("UInt32", int),
    8: ("Int64", int),
    9: ("UInt64", int),
    10: ("Float", float),
    11: ("Double", float),
    26: ("Number", None),
    27: ("Integer", int),
    28: ("UInteger", int),
    290: ("Duration", float),
}
_NOT_NUMBERS = {
    12: "String",
    13: "DateTime",
    14: "Guid",
    15: "ByteString",
    16: "XmlElement",
    17: "NodeId",
    18: "ExpandedNodeId",
    19: "StatusCode",
    20: "QualifiedName",
    21: "LocalizedText",
    22: "Structure",
    23: "DataValue",
    25: "DiagnosticInfo",
    294: "UtcTime",
    295: "LocaleId",
}


def expect_for_datatype(namespace: int, identifier: object) -> Expect:
    """The expectation for a node whose DataType attribute is ns=`namespace`;i=`identifier`."""
    if namespace != 0 or type(identifier) is not int:
        return ANY
    if identifier == 1:
        return Expect("bool", "Boolean", bool)
    number = _NUMBERS.get(identifier)
    if number is not None:
        return Expect("number", number[0], number[1])
    other = _NOT_NUMBERS.get(identifier)
    if other is not None:
        return Expect("other", other)
    return ANY


def describe_value(variant: Any) -> str:
    """A received Variant as a technician reads it: `String 'abc'`, `an array of 3 Double`."""
    if variant is None or variant.Value is None:
        return "an empty value (Null)"
    v = variant.Value
    vtype = getattr(getattr(variant, "VariantType", None), "name", type(v).__name__)
    if isinstance(v, list | tuple) or getattr(variant, "is_array", False):
        return f"an array of {len(v)} {vtype}" if isinstance(v, list | tuple) else f"{vtype} array"
    if isinstance(v, bytes | bytearray):
        return f"{vtype} of {len(v)} bytes"
    return f"{vtype} {v!r:.40}"


def decode(variant: Any, expect: Expect) -> tuple[float, str | None, str]:
    """The value as float64, or NaN with a problem key and what to tell the technician.

    The key names the kind of problem (`type:String`, `nonfinite:nan`), not the value itself, so
    a string that changes its text is still one problem, logged once.
    """
    if expect.kind == "other":
        return math.nan, f"datatype:{expect.name}", datatype_message(expect)
    v: Any = variant.Value if variant is not None else None
    t = type(v)
    if t is float or t is int:
        if expect.kind != "bool":
            value = float(v)
            if value - value == 0.0:
                return value, None, ""
            text = "NaN" if value != value else ("+Inf" if value > 0 else "-Inf")
            return (
                math.nan,
                f"nonfinite:{text}",
                f"the server sent {text} with a good status, never a reading: bad until a "
                "finite value comes back",
            )
    elif t is bool and expect.kind != "number":
        return float(v), None, ""
    received = describe_value(variant)
    vtype = getattr(getattr(variant, "VariantType", None), "name", "Null")
    array = isinstance(v, list | tuple) or bool(getattr(variant, "is_array", False))
    if expect.kind == "any":
        what = f"the server sent {received}, expected a number or Boolean: bad until it sends one"
    else:
        what = (
            f"the server sent {received}, expected {expect.name} (the node's DataType): bad "
            f"until it sends {expect.name} again"
        )
    return math.nan, f"type:{'array:' if array else ''}{vtype}", what


def datatype_message(expect: Expect) -> str:
    return (
        f"the node's DataType is {expect.name}, not a number or Boolean; only numeric scalars "
        "can be aggregated"
    )


# A point that reports more than FLAP_FALLS problems within FLAP_WINDOW_S is flapping (a sensor
# alternating NaN and good every poll): one line and event say so, then its falls and returns
# are counted, not reported, until it has held one state for STEADY_S.
FLAP_FALLS = 5
FLAP_WINDOW_S = 600.0
STEADY_S = 600.0


@dataclass(slots=True)
class _Flap:
    last: float  # monotonic: its last fall or return
    falls: int = 0  # problems since then, counted and not reported


class PointProblems:
    """The current problem of each point of one device (None: fine) and its message.

    Every change is logged once (warning; the return at info) and a new problem also becomes a
    `point_error` event on the sink, so a point stuck at Bad reports its fall and its return.
    A flapping point (more than FLAP_FALLS problems in FLAP_WINDOW_S) reports that once and is
    then only counted until it holds steady for STEADY_S (`settle`, or its next change, says
    so). `clock` is monotonic; tests pass their own.
    """

    def __init__(
        self,
        device: str,
        points: Sequence[Any],
        sink: DeviceSink,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device = device
        self.points = points
        self.sink = sink
        self.clock = clock
        self.keys: list[str | None] = [None] * len(points)
        self.messages: list[str | None] = [None] * len(points)
        self._falls: dict[int, deque[float]] = {}  # slot -> monotonic times of recent problems
        self._flapping: dict[int, _Flap] = {}

    def message(self, slot: int, what: str) -> str:
        point = self.points[slot]
        return f"device {self.device} point {point.name} node {point.node!r}: {what}"

    def set(self, slot: int, key: str, what: str, at: float) -> bool:
        """Record `key` as the point's problem; True (logged, event sent) if it is a new one.

        `at` is the event's wall-clock time; flapping is judged on the monotonic clock.
        """
        if self.keys[slot] == key:
            return False
        now = self.clock()
        self._settle(slot, now, None)
        message = self.message(slot, what)
        self.keys[slot] = key
        self.messages[slot] = message
        flap = self._flapping.get(slot)
        if flap is not None:
            flap.falls += 1
            flap.last = now
            return False
        falls = self._falls.setdefault(slot, deque())
        while falls and now - falls[0] > FLAP_WINDOW_S:
            falls.popleft()
        falls.append(now)
        if len(falls) > FLAP_FALLS:
            del self._falls[slot]
            self._flapping[slot] = _Flap(now)
            message = self.message(
                slot,
                f"flapping: {len(falls)} problems within {FLAP_WINDOW_S / 60:g} min, the last: "
                f"{what}; its falls and returns are counted, not reported, until it holds "
                f"steady for {STEADY_S / 60:g} min",
            )
        log.warning("%s", message)
        self.sink.add_event(
            DeviceEvent("point_error", self.device, message, at, point=self.points[slot].name)
        )
        return True

    def clear(self, slot: int) -> bool:
        """The point is fine again; True (logged once) if it had a problem and is not flapping."""
        if self.keys[slot] is None:
            return False
        now = self.clock()
        self._settle(slot, now, None)
        was = self.messages[slot] or ""
        self.keys[slot] = None
        self.messages[slot] = None
        flap = self._flapping.get(slot)
        if flap is not None:
            flap.last = now
            return False
        point = self.points[slot]
        prefix = self.message(slot, "")
        log.info(
            "device %s point %s node %r: good again (was: %s)",
            self.device,
            point.name,
            point.node,
            was.removeprefix(prefix),
        )
        return True

    def settle(self, at: float | None = None) -> None:
        """End the flapping of points that held one state for STEADY_S (cheap when none flap).

        The driver calls this every flush; `at` (wall clock) stamps an event, now by default.
        """
        if self._flapping:
            now = self.clock()
            for slot in list(self._flapping):
                self._settle(slot, now, time.time() if at is None else at)

    def _settle(self, slot: int, now: float, at: float | None) -> None:
        """End the slot's flapping if it held one state for STEADY_S, and say so once.

        `at` None: a change is about to be reported anyway, so one info line only; else the
        state it holds is reported (a warning and an event if bad, at `at`).
        """
        flap = self._flapping.get(slot)
        if flap is None or now - flap.last < STEADY_S:
            return
        del self._flapping[slot]
        steady = (
            f"steady for {(now - flap.last) / 60:.0f} min after flapping ({flap.falls} more "
            "problems counted, not reported)"
        )
        current = self.messages[slot]
        if at is None:
            log.info("%s", self.message(slot, f"no longer flapping: {steady}"))
            return
        if current is None:
            log.info("%s", self.message(slot, f"{steady}; good now"))
            return
        message = self.message(
            slot, f"{steady}; bad now: {current.removeprefix(self.message(slot, ''))}"
        )
        log.warning("%s", message)
        self.sink.add_event(
            DeviceEvent("point_error", self.device, message, at, point=self.points[slot].name)
        )

    def flapping(self) -> dict[str, int]:
        """Point name -> problems counted since it was found flapping, for `status()`."""
        return {self.points[s].name: f.falls for s, f in self._flapping.items()}

    def current(self) -> dict[str, str]:
        """Point name -> message, for `status()["point_errors"]`."""
        return {self.points[s].name: m for s, m in enumerate(self.messages) if m is not None}
