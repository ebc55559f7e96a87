"""IPC heartbeat bookkeeping (sans-I/O): ping ids, round-trip times, missed beats."""

from __future__ import annotations

import itertools

__all__ = ["HeartbeatMonitor"]


class HeartbeatMonitor:
    """Tracks pings sent to one peer and the pongs that came back.

    The caller sends a ``Ping(monitor.ping(now))`` every ``interval`` seconds and feeds
    each ``Pong`` to :meth:`pong`. The peer is :meth:`dead` once ``missed_limit``
    intervals pass without any pong (a blocked or hung event loop).
    """

    def __init__(self, interval: float = 1.0, missed_limit: int = 10, *, now: float = 0.0) -> None:
        if interval <= 0 or missed_limit < 1:
            raise ValueError("interval must be > 0 and missed_limit >= 1")
        self.interval = interval
        self.missed_limit = missed_limit
        self._nonces = itertools.count(1)
        self._outstanding: dict[int, float] = {}
        self.last_pong = now
        self.rtt: float | None = None

    def ping(self, now: float) -> int:
        """Record a ping sent at ``now``; return its nonce."""
        nonce = next(self._nonces)
        self._outstanding[nonce] = now
        if len(self._outstanding) > 4 * self.missed_limit:  # bound memory for a silent peer
            del self._outstanding[min(self._outstanding)]
        return nonce

    def pong(self, nonce: int, now: float) -> float | None:
        """Record a pong; return the round-trip time, or None for an unknown nonce."""
        sent = self._outstanding.pop(nonce, None)
        if sent is None:
            return None
        for stale in [n for n in self._outstanding if n < nonce]:
            del self._outstanding[stale]
        self.last_pong = now
        self.rtt = now - sent
        return self.rtt

    def silence(self, now: float) -> float:
        """Seconds since the last pong (or since creation)."""
        return now - self.last_pong

    def missed(self, now: float) -> int:
        """Whole intervals elapsed without a pong."""
        return int(self.silence(now) / self.interval)

    def dead(self, now: float) -> bool:
        """True once ``missed_limit`` intervals have passed without a pong."""
        return self.silence(now) >= self.interval * self.missed_limit

    def excuse(self, seconds: float, now: float) -> None:
        """Do not count ``seconds`` of the caller's own stall as the peer's silence (its event
        loop was blocked: it could neither send pings nor read pongs meanwhile)."""
        if seconds > 0:
            self.last_pong = min(now, self.last_pong + seconds)
