"""The identify coordination interface: what the supervisor needs from whoever grants identify slots.

One cluster-wide authority decides which shard may send Identify when (one slot per rate-limit
bucket ``shard % max_concurrency``, ``window`` seconds apart) and guards the daily session budget.
Today it lives in the supervisor's process (:mod:`cluster.coordination.local`); a backend shared by
several hosts (Redis, say) implements the same :class:`Coordination` in one new module.

Only the supervisor's identify pump calls the awaitable methods (:meth:`~Coordination.report`,
:meth:`~Coordination.decide`, :meth:`~Coordination.refresh_budget`), so only the pump would ever
wait on a network; the packet callback queues the workers' identify reports for it. The plain
methods are cheap local reads for observers (``/status``, ``/metrics``, the health loop).

The contract of a decision is :class:`Grant`, :class:`Refuse` or :class:`Defer`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cluster.snapshot import CoordinationStats
from ipc.protocol import IdentifyCancel, IdentifyDone, IdentifyRequest, IdentifyStarted, IdentifyUnused

__all__ = ["Coordination", "CoordinationFactory", "CoordinationSetup", "CoordinationStats", "Decision", "Defer",
           "Grant", "IdentifyEvent", "Refuse"]


@dataclass(frozen=True, slots=True)
class Grant:
    """The shard may identify; it waited ``waited`` seconds in the queue. A grant given early (the shard
    connects while the bucket's window ends) carries ``not_before``: the monotonic time before which its
    Identify must not be sent (0: at once)."""

    shard_id: int
    waited: float
    reason: str
    not_before: float = 0.0


@dataclass(frozen=True, slots=True)
class Refuse:
    """The shard must not identify (the budget's safety margin); ``message`` says why."""

    shard_id: int
    message: str


@dataclass(frozen=True, slots=True)
class Defer:
    """Identifies are held back until ``until`` to protect the budget (log it as a warning)."""

    until: float
    message: str


Decision = Grant | Refuse | Defer

IdentifyEvent = IdentifyRequest | IdentifyStarted | IdentifyDone | IdentifyCancel | IdentifyUnused
"""A worker's identify report (or the supervisor's own cancel for a shard whose worker is gone)."""


@dataclass(frozen=True, slots=True)
class CoordinationSetup:
    """What a coordination backend is built from, once ``GET /gateway/bot`` has answered.

    ``reset_after`` is in seconds; ``now`` is the supervisor's monotonic clock at that answer."""

    max_concurrency: int
    total: int
    remaining: int
    reset_after: float
    reserve: int
    pace_below: int | None
    window: float
    hold_timeout: float
    now: float


@runtime_checkable
class Coordination(Protocol):
    """Grants identify slots across every worker of a cluster and guards the session budget."""

    async def report(self, events: Sequence[tuple[float, IdentifyEvent]]) -> None:
        """Apply the workers' identify reports, each with the monotonic time it arrived."""

    async def decide(self, now: float) -> list[Decision]:
        """Every slot that is free at ``now``; call again at :meth:`next_deadline` or after a report."""

    def next_deadline(self, now: float) -> float | None:
        """The earliest time :meth:`decide` could do something new, or None if idle."""

    async def refresh_budget(self, total: int, remaining: int, reset_after: float, now: float) -> None:
        """Adopt fresh ``session_start_limit`` numbers (``reset_after`` in seconds)."""

    def busy(self) -> set[int]:
        """The shards waiting for a slot or holding one."""

    def stats(self, now: float) -> CoordinationStats:
        """The numbers ``/status`` and ``/metrics`` show."""


CoordinationFactory = Callable[[CoordinationSetup], Coordination]
"""Builds the backend once the shard count and budget are known (the supervisor's ``coordination``)."""
