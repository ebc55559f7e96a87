"""Command ratelimiter: 120 sends per 60 s per connection, with a reserve kept for heartbeats."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

__all__ = ["CommandRatelimiter", "PERIOD", "LIMIT", "MAX_PAYLOAD"]

PERIOD = 60.0
LIMIT = 120
MAX_PAYLOAD = 4096


def usable_permits(heartbeat_interval: float) -> int:
    """Permits left for non-heartbeat sends: 120 minus the beats one period can hold, minus one more
    (117 for the usual 41.25 s interval). Always at least 1, so a shard can still identify."""
    beats = math.ceil(PERIOD / heartbeat_interval) + 1
    return max(LIMIT - beats, 1)


class CommandRatelimiter:
    """Sliding-window log of the sends (Identify, Resume, commands) of one connection.

    Heartbeats and close frames do not take permits; the reserve keeps room for them.
    """

    __slots__ = ("_max", "_log", "_clock")

    def __init__(self, heartbeat_interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._max = usable_permits(heartbeat_interval)
        self._log: deque[float] = deque()
        self._clock = clock

    def _expire(self, now: float) -> None:
        log = self._log
        while log and log[0] <= now - PERIOD:
            log.popleft()

    @property
    def max(self) -> int:
        """Permits per 60 s available to commands."""
        return self._max

    def available(self) -> int:
        """Permits that can be used right now."""
        self._expire(self._clock())
        return self._max - len(self._log)

    def next_available(self) -> float:
        """Seconds until a permit is available (0 if one is now)."""
        now = self._clock()
        self._expire(now)
        if len(self._log) < self._max:
            return 0.0
        return max(0.0, self._log[0] + PERIOD - now)

    def try_acquire(self) -> bool:
        """Take a permit if one is available now."""
        now = self._clock()
        self._expire(now)
        if len(self._log) < self._max:
            self._log.append(now)
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a permit and take it (cancel-safe: nothing is taken if cancelled while waiting)."""
        while not self.try_acquire():  # noqa: ASYNC110 - sleeps until the next permit frees, no event to await
            await asyncio.sleep(self.next_available() + 0.001)

    def __repr__(self) -> str:
        return f"CommandRatelimiter(available={self.available()}, max={self._max})"
