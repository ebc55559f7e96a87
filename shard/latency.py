"""Heartbeat latency: average, the five most recent, and when the last beat was sent and acknowledged."""

from __future__ import annotations

from collections import deque

__all__ = ["Latency"]


class Latency:
    """Round-trip times of heartbeats (seconds), measured on the event loop's monotonic clock."""

    __slots__ = ("_recent", "_total", "_periods", "_sent", "_received")

    def __init__(self) -> None:
        self._recent: deque[float] = deque(maxlen=5)
        self._total = 0.0
        self._periods = 0
        self._sent: float | None = None
        self._received: float | None = None

    def record_sent(self, now: float) -> None:
        self._sent = now

    def record_received(self, now: float) -> None:
        """An ACK arrived; if it answers an outstanding beat, record the round trip."""
        self._received = now
        if self._sent is not None:
            rtt = max(0.0, now - self._sent)
            self._recent.appendleft(rtt)
            self._total += rtt
            self._periods += 1

    @property
    def average(self) -> float | None:
        """Mean round trip over all acknowledged beats of this connection, or None before the first."""
        return self._total / self._periods if self._periods else None

    @property
    def periods(self) -> int:
        """How many beats were acknowledged."""
        return self._periods

    @property
    def recent(self) -> tuple[float, ...]:
        """Up to five most recent round trips, newest first."""
        return tuple(self._recent)

    @property
    def sent(self) -> float | None:
        """Monotonic time the last heartbeat was sent."""
        return self._sent

    @property
    def received(self) -> float | None:
        """Monotonic time the last ACK was received."""
        return self._received

    def __repr__(self) -> str:
        avg = f"{self.average * 1000:.1f}ms" if self.average is not None else None
        return f"Latency(average={avg}, periods={self._periods})"
