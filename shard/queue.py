"""The identify queue: a pluggable protocol, and an in-memory implementation for one process.

Discord allows one Identify per `shard_id % max_concurrency` bucket every 5 s, and a daily budget of
session starts. A cluster supervisor can implement `Queue` to coordinate Identifies across processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Queue", "InMemoryQueue", "IDENTIFY_INTERVAL", "LIMIT_PERIOD"]

IDENTIFY_INTERVAL = 5.0
LIMIT_PERIOD = 86400.0


@runtime_checkable
class Queue(Protocol):
    async def enqueue(self, shard_id: int) -> None:
        """Return when shard `shard_id` may send Identify (cancel-safe)."""

    def identified(self, shard_id: int, ready: bool) -> None:
        """The shard's Identify ended: READY (True) or INVALID_SESSION/close before READY (False). Also called
        with False when a granted turn went unused (the connection failed before Identify was sent)."""

    # Optional: `unused(shard_id)` is called (after `identified(shard_id, False)`) when the shard gave a
    # granted turn back without sending Identify, so a queue may refund it (see InMemoryQueue.unused).


class _Bucket:
    __slots__ = ("lock", "next_at", "last")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.next_at = 0.0
        self.last: tuple[int, float] | None = None  # (shard granted last, next_at before that grant)


class InMemoryQueue:
    """Identify queue for the shards of one process (one event loop).

    - `max_concurrency`: buckets; shard `n` uses bucket `n % max_concurrency`. Each bucket grants at most
      one Identify per `interval` seconds (Discord: 5 s), first come first served. 0 disables all limits.
    - `remaining`, `total`, `reset_after`: the daily session-start budget from `GET /gateway/bot`.
      `reset_after` is in **seconds** (Discord sends milliseconds: divide by 1000). When the budget is used
      up, `enqueue` waits for the reset instead of spending sessions that would get the token reset.
    """

    def __init__(self, max_concurrency: int = 1, remaining: int = 1000, reset_after: float = LIMIT_PERIOD,
                 total: int = 1000, interval: float = IDENTIFY_INTERVAL, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if remaining > total:
            raise ValueError("remaining must not exceed total")
        if max_concurrency < 0 or remaining < 0 or reset_after < 0 or interval < 0:
            raise ValueError("queue parameters must not be negative")
        self._clock = clock
        self.max_concurrency = max_concurrency
        self.total = total
        self._remaining = remaining
        self._reset_at = clock() + reset_after
        self.interval = interval
        self._buckets: dict[int, _Bucket] = {}
        self.granted = 0
        self.unused_grants = 0
        self.outcomes: dict[int, bool] = {}

    # -- budget -------------------------------------------------------------------------------------
    @property
    def remaining(self) -> int:
        """Session starts left in the current window."""
        self._refill(self._clock())
        return self._remaining

    @property
    def reset_after(self) -> float:
        """Seconds until the budget resets."""
        return max(0.0, self._reset_at - self._clock())

    def _refill(self, now: float) -> None:
        if now >= self._reset_at:
            self._remaining = self.total
            self._reset_at = now + LIMIT_PERIOD

    def update(self, max_concurrency: int, remaining: int, reset_after: float, total: int) -> None:
        """Re-apply fresh `/gateway/bot` values (reset_after in seconds). Waiters keep their places."""
        self.max_concurrency = max_concurrency
        self.total = total
        self._remaining = remaining
        self._reset_at = self._clock() + reset_after

    # -- Queue protocol -----------------------------------------------------------------------------
    async def enqueue(self, shard_id: int) -> None:
        """Wait until shard `shard_id` may identify. Cancelling while waiting uses up nothing."""
        if self.max_concurrency == 0:
            self.granted += 1
            return
        key = shard_id % self.max_concurrency
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket()
        async with bucket.lock:  # FIFO per bucket
            while True:
                now = self._clock()
                self._refill(now)
                if self._remaining <= 0:
                    await asyncio.sleep(max(0.0, self._reset_at - now) + 0.001)
                    continue
                if now < bucket.next_at:
                    await asyncio.sleep(bucket.next_at - now)
                    continue
                self._remaining -= 1
                bucket.last = (shard_id, bucket.next_at)
                bucket.next_at = now + self.interval
                self.granted += 1
                return

    def identified(self, shard_id: int, ready: bool) -> None:
        """Record the outcome; the in-memory queue needs nothing else (the 5 s spacing already applies)."""
        self.outcomes[shard_id] = ready

    def unused(self, shard_id: int) -> None:
        """The shard's last grant was given back without an Identify (its connection failed first): refund
        the session start, and if it was its bucket's latest grant, free the bucket's window again (Discord
        never saw an Identify), so a failed connect costs neither budget nor a 5 s turn."""
        self.unused_grants += 1
        if self.max_concurrency == 0:
            return
        bucket = self._buckets.get(shard_id % self.max_concurrency)
        if bucket is None or bucket.last is None or bucket.last[0] != shard_id:
            return
        bucket.next_at = bucket.last[1]
        bucket.last = None
        self._remaining = min(self.total, self._remaining + 1)

    def __repr__(self) -> str:
        return (f"InMemoryQueue(max_concurrency={self.max_concurrency}, remaining={self._remaining}, "
                f"total={self.total}, interval={self.interval})")
