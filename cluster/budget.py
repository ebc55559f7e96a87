"""The daily session start budget (``session_start_limit``) and the guard that protects it."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["BudgetDecision", "SessionBudget"]


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    """Whether one more Identify may be spent now: ``allowed``, else wait until ``not_before``
    (deferred) or never before the reset (``refused``), with a human ``reason``."""

    allowed: bool
    not_before: float = 0.0
    refused: bool = False
    reason: str = ""


class SessionBudget:
    """Tracks ``remaining`` identifies out of ``total`` until the budget resets.

    Times are seconds on the caller's monotonic clock. The guard never spends below
    ``reserve`` (the safety margin) and, once ``remaining`` drops to ``pace_below``,
    spaces identifies so that what is left above the reserve lasts until the reset:
    a crash loop then burns time, not the token.
    """

    def __init__(self, total: int = 1000, remaining: int | None = None, reset_after: float = 86400.0,
                 *, now: float = 0.0, reserve: int = 0, pace_below: int | None = None) -> None:
        self.total = total
        self.remaining = total if remaining is None else remaining
        self.reset_at = now + reset_after
        self.reserve = reserve
        self.pace_below = 2 * reserve if pace_below is None else pace_below
        self._last_spent = -math.inf
        self.spent = 0

    def refresh(self, total: int, remaining: int, reset_after: float, now: float) -> None:
        """Adopt fresh numbers from ``GET /gateway/bot`` (``reset_after`` in seconds)."""
        self.total, self.remaining, self.reset_at = total, remaining, now + reset_after

    def _roll(self, now: float) -> None:
        if now >= self.reset_at:
            self.remaining = self.total
            self.reset_at = now + 86400.0

    def available(self, now: float) -> int:
        """Identifies left at ``now`` (the budget refills at its reset)."""
        self._roll(now)
        return self.remaining

    def reset_in(self, now: float) -> float:
        self._roll(now)
        return max(0.0, self.reset_at - now)

    def check(self, now: float) -> BudgetDecision:
        """May one Identify be spent at ``now``?"""
        left = self.available(now)
        if left - 1 < self.reserve:
            hours = self.reset_in(now) / 3600
            return BudgetDecision(False, self.reset_at, True, (
                f"session start budget guarded: {left} of {self.total} identifies left, and one more "
                f"would go below the safety margin of {self.reserve}; refusing to identify until the "
                f"budget resets in {hours:.1f} h (is something crash-looping?)"))
        if left <= self.pace_below:
            spacing = self.reset_in(now) / max(1, left - self.reserve)
            not_before = self._last_spent + spacing
            if now < not_before:
                return BudgetDecision(False, not_before, False, (
                    f"session start budget low ({left} of {self.total} left, safety margin "
                    f"{self.reserve}): pacing identifies to one per {spacing:.0f} s until the reset"))
        return BudgetDecision(True)

    def spend(self, now: float) -> None:
        self._roll(now)
        self.remaining -= 1
        self.spent += 1
        self._last_spent = now

    def refund(self) -> None:
        """Give back the last spend: its grant was returned before any Identify reached Discord."""
        self.remaining = min(self.total, self.remaining + 1)
        self.spent = max(0, self.spent - 1)
