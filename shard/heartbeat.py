"""Heartbeat schedule and zombie detection, with no I/O: the driver asks what to do at each deadline."""

from __future__ import annotations

import enum
import random
from collections.abc import Callable

__all__ = ["Heartbeater", "Beat"]


class Beat(enum.Enum):
    SEND = "send"        # send op 1 now
    ZOMBIE = "zombie"    # no ACK since the previous beat: drop the connection and resume


class Heartbeater:
    """First beat at `interval * U[0,1)` after Hello, then every `interval`.

    A beat is due at `deadline`. If the previous beat was never acknowledged, `tick()` returns ZOMBIE
    instead of SEND (Discord: "no ACK between two beats"). While `suspended` (the driver stopped reading
    because the consumer is behind) ACKs can be buffered unread, so the check is skipped.
    """

    __slots__ = ("interval", "deadline", "awaiting_ack", "_rand")

    def __init__(self, interval: float, now: float, rand: Callable[[], float] = random.random) -> None:
        if interval <= 0:
            raise ValueError("heartbeat interval must be positive")
        self.interval = interval
        self._rand = rand
        self.deadline = now + interval * rand()
        self.awaiting_ack = False

    def tick(self, now: float, suspended: bool = False) -> Beat:
        """Called at (or after) `deadline`. Advances the deadline by one interval."""
        self.deadline = max(self.deadline + self.interval, now + self.interval * 0.5)
        if self.awaiting_ack and not suspended:
            return Beat.ZOMBIE
        self.awaiting_ack = True
        return Beat.SEND

    def restart(self, now: float) -> None:
        """A beat was sent out of schedule at ``now``: it expects an ACK; the next one is due an interval later."""
        self.deadline = now + self.interval
        self.awaiting_ack = True

    def sent_on_request(self) -> None:
        """A beat was sent because the gateway asked (op 1); it also expects an ACK."""
        self.awaiting_ack = True

    def ack(self) -> bool:
        """An ACK arrived; returns False if none was outstanding (unrequested ACK)."""
        was = self.awaiting_ack
        self.awaiting_ack = False
        return was
