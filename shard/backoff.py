"""Reconnect backoff: exponential with jitter, reset once a connection becomes Active."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """Delay before reconnect attempt `attempts` (consecutive failures so far).

    0 failures: no delay (a healthy connection that was told to reconnect goes straight back).
    n failures: `min(cap, base * 2**(n-1))` scaled by a random factor in [0.5, 1.0).
    """

    __slots__ = ("base", "cap", "_rand")

    def __init__(self, base: float = 1.0, cap: float = 60.0, rand: Callable[[], float] = random.random) -> None:
        self.base = base
        self.cap = cap
        self._rand = rand

    def delay(self, attempts: int) -> float:
        if attempts <= 0:
            return 0.0
        ceiling = min(self.cap, self.base * 2.0 ** min(attempts - 1, 30))
        return ceiling * (0.5 + 0.5 * self._rand())
