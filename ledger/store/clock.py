"""The ledger's own clock: the times it witnesses messages and commits entries at.

Those times are the ledger's testimony (authority is judged at the witnessed time), so the
clock never goes back, and a jump of the host's clock, forward or back, is reported rather
than silently absorbed: between two readings the wall clock must advance as the monotonic
clock does, within :data:`JUMP_TOLERANCE`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["JUMP_TOLERANCE_US", "LedgerClock"]

JUMP_TOLERANCE_US = 1_000_000
"""How far the wall clock may drift from the monotonic clock between two readings (1 s:
NTP slews far more gently) before it counts as a jump."""


class LedgerClock:
    """Microseconds since the epoch, never decreasing; ``on_jump`` hears of each jump (its
    size in µs: positive forward, negative back)."""

    def __init__(
        self,
        on_jump: Callable[[int], None] | None = None,
        wall_ns: Callable[[], int] = time.time_ns,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._on_jump = on_jump
        self._wall_ns = wall_ns
        self._monotonic_ns = monotonic_ns
        self._last: tuple[int, int] | None = None  # (wall, monotonic) of the last reading
        self._given = 0  # the last time returned
        self.jumps = 0

    def now_us(self, floor_us: int = 0) -> int:
        """The time now, or ``floor_us`` or the last time given, whichever is latest."""
        wall, monotonic = self._wall_ns() // 1000, self._monotonic_ns() // 1000
        if self._last is not None:
            jump = (wall - self._last[0]) - (monotonic - self._last[1])
            if abs(jump) > JUMP_TOLERANCE_US:
                self.jumps += 1
                if self._on_jump is not None:
                    self._on_jump(jump)
        self._last = (wall, monotonic)
        self._given = max(wall, floor_us, self._given)
        return self._given
