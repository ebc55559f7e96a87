"""The identify queue: a pluggable protocol, and an in-memory implementation for one process.

Discord allows one Identify per `shard_id % max_concurrency` bucket every 5 s, and a daily budget of
session starts. A cluster supervisor can implement `Queue` to coordinate Identifies across processes.

The 5 s are counted from when an Identify is *sent*, not from when its turn was granted: a shard connects
after its grant, and a slow connect or a late Hello must not let the bucket's next Identify overtake it.
So a grant holds its bucket until the shard reports `sent` (the window starts then), gives the turn back,
or `hold_timeout` passes; the driver sends Identify within `Config.connect_timeout` of the grant or never.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Queue", "InMemoryQueue", "IDENTIFY_INTERVAL", "LIMIT_PERIOD", "HOLD_TIMEOUT"]

IDENTIFY_INTERVAL = 5.0
LIMIT_PERIOD = 86400.0
HOLD_TIMEOUT = 15.0


@runtime_checkable
class Queue(Protocol):
    async def enqueue(self, shard_id: int) -> None:
        """Return when shard `shard_id` may send Identify (cancel-safe)."""

    def identified(self, shard_id: int, ready: bool) -> None:
        """The shard's Identify ended: READY (True) or INVALID_SESSION/close before READY (False). Also called
        with False when a granted turn went unused (the connection failed before Identify was sent)."""

    # Optional: `sent(shard_id)` is called right after the granted shard wrote its Identify, so a queue can
    # start the bucket's window then (see InMemoryQueue.sent). Optional: `unused(shard_id)` is called (after
    # `identified(shard_id, False)`) when the shard gave a granted turn back without sending Identify, so
    # a queue may refund it (see InMemoryQueue.unused). Optional: `not_before(shard_id) -> float` is called
    # right after `enqueue` returned: a queue that grants a turn early (so that connecting and Hello overlap the
    # bucket's window) returns the `time.monotonic()` before which the Identify must not be sent, else 0.


class _Bucket:
    __slots__ = ("lock", "next_at", "last", "holder", "held_until", "changed")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.next_at = 0.0
        self.last: tuple[int, float] | None = None  # (shard granted last, next_at before that grant)
        self.holder: int | None = None  # granted, Identify not sent yet: the window has not started
        self.held_until = 0.0
        self.changed = asyncio.Event()  # the holder reported


class InMemoryQueue:
    """Identify queue for the shards of one process (one event loop).

    - `max_concurrency`: buckets; shard `n` uses bucket `n % max_concurrency`. Each bucket grants at most
      one Identify per `interval` seconds (Discord: 5 s), first come first served, counted from when the
      previous Identify was sent (`sent`). 0 disables all limits.
    - `hold_timeout`: seconds a grant holds its bucket while its Identify is not sent yet (the shard is
      connecting); after that the bucket's next turn comes `interval` later. Keep it above every shard's
      `connect_timeout`, within which a shard sends Identify after its grant or gives the turn back.
    - `remaining`, `total`, `reset_after`: the daily session-start budget from `GET /gateway/bot`.
      `reset_after` is in **seconds** (Discord sends milliseconds: divide by 1000). When the budget is used
      up, `enqueue` waits for the reset instead of spending sessions that would get the token reset.
    """

    def __init__(self, max_concurrency: int = 1, remaining: int = 1000, reset_after: float = LIMIT_PERIOD,
                 total: int = 1000, interval: float = IDENTIFY_INTERVAL, *,
                 hold_timeout: float = HOLD_TIMEOUT, clock: Callable[[], float] = time.monotonic) -> None:
        if remaining > total:
            raise ValueError("remaining must not exceed total")
        if max_concurrency < 0 or remaining < 0 or reset_after < 0 or interval < 0 or hold_timeout < 0:
            raise ValueError("queue parameters must not be negative")
        self.hold_timeout = hold_timeout
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
                if bucket.holder is not None:
                    if now < bucket.held_until:  # the previous grant's Identify is not sent yet
                        bucket.changed.clear()
                        try:
                            async with asyncio.timeout(bucket.held_until - now):
                                await bucket.changed.wait()
                        except TimeoutError:
                            pass
                        continue
                    bucket.holder = None  # it never reported: its window counts from the hold's end
                    bucket.next_at = max(bucket.next_at, bucket.held_until + self.interval)
                    continue
                if now < bucket.next_at:
                    await asyncio.sleep(bucket.next_at - now)
                    continue
                self._remaining -= 1
                bucket.last = (shard_id, bucket.next_at)
                bucket.next_at = now + self.interval
                bucket.holder, bucket.held_until = shard_id, now + self.hold_timeout
                self.granted += 1
                return

    def sent(self, shard_id: int) -> None:
        """The granted shard wrote its Identify: its bucket's next turn comes `interval` from now."""
        self._release(shard_id)

    def _release(self, shard_id: int) -> None:
        bucket = self._buckets.get(shard_id % self.max_concurrency) if self.max_concurrency else None
        if bucket is None or bucket.holder != shard_id:
            return
        bucket.holder = None
        bucket.next_at = max(bucket.next_at, self._clock() + self.interval)
        bucket.changed.set()

    def identified(self, shard_id: int, ready: bool) -> None:
        """Record the outcome. A grant still held (no `sent` came: a driver that does not report it) ends
        here, and the bucket's next turn comes `interval` from now."""
        self.outcomes[shard_id] = ready
        self._release(shard_id)

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
        if bucket.holder == shard_id:
            bucket.holder = None
        bucket.changed.set()
        self._remaining = min(self.total, self._remaining + 1)

    def __repr__(self) -> str:
        return (f"InMemoryQueue(max_concurrency={self.max_concurrency}, remaining={self._remaining}, "
                f"total={self.total}, interval={self.interval})")
