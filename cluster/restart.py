"""Restart policy for workers: exponential backoff with jitter behind a crash-loop breaker."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff", "GiveUp", "Restart", "RestartPolicy"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """``base * factor**attempt`` capped at ``cap``, with "equal jitter" (half fixed, half random)."""

    base: float = 1.0
    cap: float = 60.0
    factor: float = 2.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        d = min(self.cap, self.base * self.factor ** max(0, attempt))
        return d / 2 + (rng or random).random() * d / 2


@dataclass(frozen=True, slots=True)
class Restart:
    """Restart after ``delay`` seconds; ``attempt`` counts consecutive quick failures."""

    delay: float
    attempt: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The circuit breaker is open: stop restarting, and say why."""

    message: str


class RestartPolicy:
    """Decides what to do when one worker exits.

    A worker that ran at least ``min_alive`` seconds resets the breaker and restarts at
    once (after a short jittered delay). Quicker deaths back off exponentially; after
    ``max_failures`` of them in a row the breaker opens and the supervisor gives up.
    """

    def __init__(self, name: str, *, min_alive: float = 30.0, max_failures: int = 5,
                 backoff: Backoff = Backoff(), rng: random.Random | None = None) -> None:
        self.name = name
        self.min_alive = min_alive
        self.max_failures = max_failures
        self.backoff = backoff
        self.rng = rng or random.Random()
        self.failures = 0
        self.started_at: float | None = None

    def started(self, now: float) -> None:
        self.started_at = now

    def exited(self, now: float, reason: str) -> Restart | GiveUp:
        alive = now - self.started_at if self.started_at is not None else 0.0
        if alive >= self.min_alive:
            self.failures = 0
            return Restart(self.backoff.delay(0, self.rng) * 0.1, 0)
        self.failures += 1
        if self.failures >= self.max_failures:
            return GiveUp(
                f"{self.name} failed {self.failures} times in a row, each within "
                f"{self.min_alive:g} s of starting (last: {reason}); giving up (crash loop)")
        return Restart(self.backoff.delay(self.failures - 1, self.rng), self.failures)
