"""When a shard last showed life, for the supervisor's zombie check (``shard_stuck_timeout``, :mod:`cluster.loops`).

A healthy shard shows life two ways: its consumer takes an event, or, while the consumer waits for the next one
(it is caught up), the gateway ACKs a heartbeat. The ACK counts whatever the shard's ``event_types`` filter keeps:
a quiet shard that filters ACKs out is alive. A connection gone silent (no events, no ACKs) shows none, nor does a
consumer wedged in its handler, however healthy the connection. The clock starts with the shard (a restart makes a
new one) and again each time it becomes Active, so neither a wait for an identify slot nor a reconnect counts as
silence. No I/O: the worker feeds it what it sees.
"""

from __future__ import annotations

__all__ = ["Liveness"]


class Liveness:
    """One shard's signs of life. The worker's consumer sets :attr:`waiting` around each ``next_event`` and
    :attr:`taken` when it got one (two stores per event); :meth:`age` is read at each status report."""

    __slots__ = ("taken", "waiting", "_active")

    def __init__(self, now: float) -> None:
        self.taken = now
        """When the consumer last took an event (at first: when the shard started)."""
        self.waiting = True
        """The consumer waits for the next event (rather than handling one)."""
        self._active = False

    def age(self, now: float, active: bool, ack: float | None) -> float:
        """Seconds since the last sign of life: ``active`` says whether the shard is Active now (becoming Active is
        a sign of life), ``ack`` when its connection's last heartbeat ACK came (None: none yet)."""
        if active and not self._active:
            self.taken = max(self.taken, now)
        self._active = active
        last = self.taken
        if self.waiting and ack is not None and ack > last:
            last = ack
        return max(0.0, now - last)
