"""The in-process identify coordination: today's one implementation of
:class:`~cluster.coordination.base.Coordination`.

:class:`IdentifyCoordinator` is sans-I/O (every method takes ``now``). One slot per rate-limit
bucket ``shard % max_concurrency``. The granted shard *holds* its bucket's slot until it reports READY or
INVALID_SESSION (or ``hold_timeout`` passes), and the
bucket's next grant comes ``window`` seconds after the *latest* of: the grant, the moment the
worker said the Identify was written (:meth:`started`; after connecting and Hello, which the
shard bounds by its ``connect_timeout``: ``hold_timeout`` must be longer), and the moment its outcome arrived
(:meth:`done`). The gateway has certainly processed an Identify once its READY arrived, so
neither IPC latency nor a gateway slow to read its socket can make two Identifies of one
bucket land closer than the window. A window that only a grant or a send started (no READY: the hold
expired, the worker died, an Identify written late, a close or INVALID_SESSION) gets ``slack`` on top, for the
Identify's way to the gateway; one a READY proved needs none, so the usual cadence is exactly ``window``
after each READY.
A grant comes up to ``lead`` seconds before the bucket's window ends, carrying the window's end as its
``not_before``: the shard connects meanwhile and holds its Identify until then, so connecting and Hello
overlap the window instead of adding to each step (the Identify's send is what Discord counts).
Every grant spends from the
:class:`SessionBudget`, which may defer or refuse it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from cluster.coordination.base import (CoordinationSetup, CoordinationStats, Decision, Defer, Grant, IdentifyEvent,
                                       Refuse)
from ipc.protocol import IdentifyCancel, IdentifyDone, IdentifyRequest, IdentifyStarted, IdentifyUnused

__all__ = ["LEAD", "BudgetDecision", "IdentifyCoordinator", "SessionBudget", "local_coordination"]

LEAD = 0.5
"""Seconds before a bucket's window ends that its next shard is granted (to connect and await Hello meanwhile;
its Identify waits for the window's end): more than a connect and Hello take, well within ``connect_timeout``.
A coordinator uses at most half its ``hold_timeout``."""


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



@dataclass(slots=True)
class _Bucket:
    queue: list[int] = field(default_factory=list)  # waiting shard ids, sorted
    holder: int | None = None
    held_until: float = 0.0
    window_start: float = -math.inf
    proven: bool = False  # window_start is an outcome's arrival (the gateway had processed the Identify)
    late_until: float = -math.inf  # no grant before this: an Identify written after its hold expired
    last_grant: int | None = None  # the latest grant, with the window it replaced (for `unused`)
    window_before_grant: tuple[float, bool] = (-math.inf, False)

    def next_at(self, window: float, slack: float) -> float:
        """When the bucket's next grant may come (its holder aside)."""
        return max(self.window_start + (window if self.proven else window + slack), self.late_until)


class IdentifyCoordinator:
    """Grants identify slots across every worker of a cluster."""

    def __init__(self, max_concurrency: int, budget: SessionBudget, *, window: float = 5.0,
                 hold_timeout: float = 15.0, slack: float = 0.05, lead: float = LEAD) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.max_concurrency = max_concurrency
        self.budget = budget
        self.window = window
        self.slack = slack
        self.lead = min(lead, hold_timeout / 2)  # the hold must outlast the early grant's wait, connect and Hello
        self.hold_timeout = hold_timeout
        self._buckets = [_Bucket() for _ in range(max_concurrency)]
        self._waiting: dict[int, tuple[float, str]] = {}  # shard -> (enqueued at, reason)
        self._deferred_until = -math.inf
        self.expired_holds = 0
        self.late_starts = 0  # Identifies written after their hold expired (hold_timeout is too short)
        self._unstarted: set[int] = set()  # granted shards whose Identify is not written yet
        self.unused_grants = 0

    def _bucket(self, shard_id: int) -> _Bucket:
        return self._buckets[shard_id % self.max_concurrency]

    @property
    def depth(self) -> int:
        """Shards waiting for a slot."""
        return len(self._waiting)

    def waiting(self) -> list[int]:
        """Shards waiting for a slot, in no particular order."""
        return list(self._waiting)

    def holders(self) -> list[int]:
        return [b.holder for b in self._buckets if b.holder is not None]

    # --- events from workers -------------------------------------------------------------

    def request(self, shard_id: int, now: float, reason: str = "initial") -> None:
        """A shard asks for a slot (a repeated request while waiting is ignored)."""
        b = self._bucket(shard_id)
        if b.holder == shard_id:  # it is identifying again: its previous attempt ended
            self.done(shard_id, False, now)
        if shard_id not in self._waiting:
            self._waiting[shard_id] = (now, reason)
            bisect.insort(b.queue, shard_id)

    def started(self, shard_id: int, now: float) -> None:
        """The granted shard wrote its Identify: its bucket's window starts now. Also after its hold
        expired (the Identify came late), so that at least the grants after it keep their distance."""
        b = self._bucket(shard_id)
        if shard_id not in self._unstarted and b.holder != shard_id:
            return
        self._unstarted.discard(shard_id)
        if b.holder != shard_id:
            self.late_starts += 1
            b.late_until = max(b.late_until, now + self.window + self.slack)
        elif now > b.window_start:
            b.window_start, b.proven = now, False

    def done(self, shard_id: int, ready: bool, now: float) -> None:
        """The shard's Identify ended with READY (``ready``) or INVALID_SESSION/close.

        The window restarts here. READY proves the gateway had processed the Identify (no slack needed); a
        close does not (a gateway may still read an Identify its client closed the connection after).
        """
        b = self._bucket(shard_id)
        self._unstarted.discard(shard_id)
        if b.holder == shard_id:
            b.holder = None
            if ready and now >= b.window_start:  # its grant and send came before: READY proves the window
                b.window_start, b.proven = now, True
            elif now > b.window_start:
                b.window_start, b.proven = now, False

    def cancel(self, shard_id: int) -> None:
        """The shard no longer wants a slot (its worker died or it was closed)."""
        b = self._bucket(shard_id)
        self._unstarted.discard(shard_id)
        if self._waiting.pop(shard_id, None) is not None:
            b.queue.remove(shard_id)
        if b.holder == shard_id:
            b.holder = None  # the window stays: the Identify may have gone out

    def unused(self, shard_id: int) -> None:
        """The shard's latest grant was given back without an Identify (its connection failed first):
        Discord never saw it, so refund the session start and, if no later grant used the bucket, its window."""
        b = self._bucket(shard_id)
        if b.last_grant != shard_id:
            return
        self._unstarted.discard(shard_id)
        b.last_grant = None
        if b.holder == shard_id:
            b.holder = None
        b.window_start, b.proven = b.window_before_grant
        self.budget.refund()
        self.unused_grants += 1

    # --- decisions ------------------------------------------------------------------------

    def poll(self, now: float) -> list[Decision]:
        """Grant every slot that is free at ``now``; call again at :meth:`next_deadline`."""
        out: list[Decision] = []
        for b in self._buckets:
            if b.holder is not None and now >= b.held_until:
                b.holder = None
                self.expired_holds += 1
            due = b.next_at(self.window, self.slack)
            if b.holder is not None or not b.queue or now < due - self.lead:
                continue
            if now < self._deferred_until:
                continue
            verdict = self.budget.check(now)
            if verdict.refused:
                for shard_id in b.queue:
                    self._waiting.pop(shard_id, None)
                    out.append(Refuse(shard_id, verdict.reason))
                b.queue.clear()
                continue
            if not verdict.allowed:
                self._deferred_until = verdict.not_before
                out.append(Defer(verdict.not_before, verdict.reason))
                continue
            shard_id = b.queue.pop(0)
            enqueued, reason = self._waiting.pop(shard_id)
            b.last_grant, b.window_before_grant = shard_id, (b.window_start, b.proven)
            not_before = due if due > now else 0.0  # granted early: its Identify waits for the window's end
            b.holder, b.held_until, b.proven = shard_id, now + self.hold_timeout, False
            b.window_start = max(now, due)
            self._unstarted.add(shard_id)
            self.budget.spend(now)
            out.append(Grant(shard_id, now - enqueued, reason, not_before))
        return out

    def next_deadline(self, now: float) -> float | None:
        """The earliest time :meth:`poll` could do something new, or None if idle."""
        times = []
        for b in self._buckets:
            if b.holder is not None:
                times.append(b.held_until)
            elif b.queue:
                times.append(max(b.next_at(self.window, self.slack) - self.lead, self._deferred_until))
        return min(times) if times else None

    # --- the Coordination interface (the supervisor's identify pump) ----------------------

    async def report(self, events: Sequence[tuple[float, IdentifyEvent]]) -> None:
        for now, event in events:
            match event:
                case IdentifyRequest(shard_id=shard_id, reason=reason):
                    self.request(shard_id, now, reason)
                case IdentifyStarted(shard_id=shard_id):
                    self.started(shard_id, now)
                case IdentifyDone(shard_id=shard_id, ready=ready):
                    self.done(shard_id, ready, now)
                case IdentifyCancel(shard_id=shard_id):
                    self.cancel(shard_id)
                case IdentifyUnused(shard_id=shard_id):
                    self.unused(shard_id)

    async def decide(self, now: float) -> list[Decision]:
        return self.poll(now)

    async def refresh_budget(self, total: int, remaining: int, reset_after: float, now: float) -> None:
        self.budget.refresh(total, remaining, reset_after, now)

    def busy(self) -> set[int]:
        return set(self._waiting) | set(self.holders())

    def stats(self, now: float) -> CoordinationStats:
        budget = self.budget
        return CoordinationStats(self.depth, budget.available(now), budget.total, budget.reserve, budget.reset_in(now),
                                 self.late_starts, self.unused_grants, self.expired_holds)


def local_coordination(setup: CoordinationSetup) -> IdentifyCoordinator:
    """The default :data:`~cluster.coordination.base.CoordinationFactory`: this process coordinates."""
    budget = SessionBudget(setup.total, setup.remaining, setup.reset_after, now=setup.now, reserve=setup.reserve,
                           pace_below=setup.pace_below)
    return IdentifyCoordinator(setup.max_concurrency, budget, window=setup.window, hold_timeout=setup.hold_timeout)
