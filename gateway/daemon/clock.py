"""Wall-clock step detection: compares how far the wall clock and the monotonic clock moved.

NTP or an operator can step the wall clock; scheduling runs on the monotonic clock, so a step
shows up as the two disagreeing. energy.md: a backward step of more than a few seconds or a
forward step of more than a window is logged and published as an event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ClockStep", "ClockWatch"]


@dataclass(frozen=True, slots=True)
class ClockStep:
    """A detected step: `offset` seconds (negative = the wall clock went back) at wall time `at`."""

    offset: float
    at: float
    previous_wall: float

    @property
    def direction(self) -> str:
        return "backward" if self.offset < 0 else "forward"

    def reason(self) -> str:
        return (
            f"wall clock stepped {self.direction} by {abs(self.offset):.3f} s; "
            "samples older than their point's last one are dropped and counted"
        )


class ClockWatch:
    """Call `check()` regularly (every second or so); it returns a ClockStep when one happened.

    Slew (NTP's gentle correction, at most 500 ppm) never adds up to a threshold between two
    checks, so only real steps are reported.
    """

    def __init__(
        self,
        forward_threshold: float,
        backward_threshold: float = 3.0,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.forward_threshold = forward_threshold
        self.backward_threshold = backward_threshold
        self._wall = wall
        self._mono = mono
        self._last_wall = wall()
        self._last_mono = mono()
        self.steps = 0

    def check(self) -> ClockStep | None:
        wall, mono = self._wall(), self._mono()
        offset = (wall - self._last_wall) - (mono - self._last_mono)
        previous = self._last_wall
        self._last_wall, self._last_mono = wall, mono
        if offset < -self.backward_threshold or offset > self.forward_threshold:
            self.steps += 1
            return ClockStep(offset=offset, at=wall, previous_wall=previous)
        return None
