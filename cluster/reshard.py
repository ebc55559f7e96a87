"""Live resharding, the decisions: whether a reshard may start, its phases, and what to do at each report.

Sans-I/O: :class:`Reshard` is fed what happened (a new shard warm, an old shard past the cut, a new shard
lost, a deadline, a stop) with the time, and answers with an :class:`Action` for the driver
(:mod:`cluster.resharder`) to carry out. The procedure:

1. *starting*: the new set's workers start beside the old set; *warming*: its shards identify through the same
   identify coordinator and deliver nothing (:class:`cluster.cutover.NewGate`).
2. Once every new shard is READY with all its guilds, :attr:`Action.CUT`: the cut time is sent to both sets
   (*cutting over*, :mod:`cluster.cutover`). Once every new shard passed its marker, :attr:`Action.MARK`: the old set
   sends the heartbeats that mark it (so every new marker precedes every old one).
3. Once every old shard passed the cut (or ``cut_timeout`` passed, logged), :attr:`Action.GO`: the new set
   delivers, the old set drops; *closing old*: the old sessions are closed with 1000 and their workers retired.
   There is no rollback after GO. A new set not past its markers by ``cut_timeout`` rolls back instead (the old set
   was never marked: it delivered everything).
4. Before GO, a new shard closed fatally, a new worker lost, the warm-up deadline, a too-late cut or a stop
   roll back (:attr:`Action.ROLL_BACK`): the new set is closed; the old set never stopped.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from cluster.error import ReshardRefused

__all__ = ["Action", "Phase", "Reshard", "ReshardRefused", "auto_target", "check_start", "cut_late_reason",
           "warm_timeout"]


class Phase(enum.StrEnum):
    """Where a reshard is (``/status``'s ``reshard.phase`` and the ``cluster_reshard_phase`` metric)."""

    IDLE = "idle"
    STARTING = "starting"
    WARMING = "warming"
    CUTTING_OVER = "cutting_over"
    CLOSING_OLD = "closing_old"
    DONE = "done"
    ROLLED_BACK = "rolled_back"


RUNNING = frozenset({Phase.STARTING, Phase.WARMING, Phase.CUTTING_OVER, Phase.CLOSING_OLD})


class Action(enum.Enum):
    NONE = "none"
    CUT = "cut"
    MARK = "mark"
    GO = "go"
    ROLL_BACK = "roll_back"


def check_start(*, current: int, target: int, max_concurrency: int, remaining: int, reserve: int,
                pace_below: int, running: bool, partial: bool = False,
                filtered_out: frozenset[str] = frozenset()) -> None:
    """Raise :class:`ReshardRefused` unless a reshard from ``current`` to ``target`` shards may start now.

    The new set spends ``target`` identifies: after them the budget must keep its safety margin (``reserve``)
    and stay above ``pace_below``, where identifies would be paced out until the daily reset and the new set
    would never warm up. Fewer shards are refused: Discord never asks for fewer, and a reshard costs a full set of
    identifies. ``filtered_out``: the events among READY and GUILD_CREATE the shards' ``event_types`` drop (the new
    set could never tell that it is warm)."""
    if filtered_out:
        raise ReshardRefused(f"the shards' event_types filter drops {' and '.join(sorted(filtered_out))}, which live "
                             "resharding needs to tell when the new shards are ready: add them to event_types")
    if partial:
        raise ReshardRefused("this host runs only part of the shards (--shard-range or --host-index) without a "
                             "--coordinator: live resharding needs the whole cluster on one host, or every host on "
                             "one coordinator")
    if running:
        raise ReshardRefused("a reshard is already running (or a rolling restart)")
    if target < 1 or target % max_concurrency:
        raise ReshardRefused(f"the shard count must be a positive multiple of max_concurrency "
                             f"{max_concurrency}, got {target}")
    if target <= current:
        raise ReshardRefused(f"the cluster runs {current} shards; a reshard only grows it (asked for {target})")
    floor = max(reserve, pace_below)
    if remaining - target < floor:
        which = "safety margin" if reserve >= pace_below else "pacing threshold"
        raise ReshardRefused(f"session start budget too low: {remaining} identifies left, {target} new shards "
                             f"would leave {remaining - target}, below the {which} of {floor}")


def auto_target(current: int, recommended: int, max_concurrency: int, *, margin: float,
                sharding_required: bool) -> int | None:
    """The shard count ``--auto-reshard`` moves to, or None to stay.

    Periodically: Discord's recommendation (rounded up to a multiple of ``max_concurrency``) once it exceeds
    ``current`` by more than ``margin`` (a fraction). After a 4011 (``sharding_required``): the recommendation if
    it grows the cluster, else twice the current count (a shard is over the guild limit now)."""
    rec = math.ceil(max(recommended, 1) / max_concurrency) * max_concurrency
    if sharding_required:
        return rec if rec > current else math.ceil(2 * current / max_concurrency) * max_concurrency
    return rec if rec > current * (1 + margin) else None


def cut_late_reason(shard_id: int, ahead: float, lead: float = 0.5) -> str:
    """Why a reshard rolled back when new shard ``shard_id`` had already received a message created ``ahead`` seconds
    after the cut, which was sent ``lead`` seconds before it was due: this host's clock is behind Discord's."""
    return (f"new shard {shard_id} got the cut too late: it had already received a message created {ahead:.3f} s "
            f"after the cut time, which was set {lead:g} s ahead on this host's clock; this host's clock is probably "
            f"behind Discord's by more than that (synchronise it, e.g. with NTP)")


def warm_timeout(new_total: int, max_concurrency: int, window: float) -> float:
    """Seconds the new set may take to warm up: four times its identify schedule, plus a minute."""
    return 4 * math.ceil(new_total / max_concurrency) * window + 60.0


@dataclass
class Reshard:
    """One reshard from ``old_total`` to ``new_total`` shards, started at ``started`` (monotonic seconds)."""

    old_total: int
    new_total: int
    started: float
    warm_deadline: float
    cut_timeout: float = 10.0
    phase: Phase = Phase.STARTING
    warm: set[int] = field(default_factory=set)
    passed: set[int] = field(default_factory=set)
    new_passed: set[int] = field(default_factory=set)
    """The new shards past their markers."""
    cut_at: float | None = None  # wall clock (Unix seconds) of the cut
    go_deadline: float = math.inf
    switched_at: float | None = None
    finished_at: float | None = None
    reason: str = ""
    """Why it rolled back, or what the GO was forced by."""
    forced: str = ""
    """Why this host forced the GO at its cut timeout (kept when the cluster's record switches, :meth:`cluster_go`)."""
    new_shards: range | None = None
    """This host's part of the new set (multi-host, :mod:`cluster.reshard_plan`); None: all ``new_total``."""
    old_shards: Sequence[int] | None = None
    """This host's part of the old set (with ``--assign auto``, the shards of the blocks it holds, in any order);
    None: all ``old_total``."""

    @property
    def mine_new(self) -> range:
        return range(self.new_total) if self.new_shards is None else self.new_shards

    @property
    def mine_old(self) -> Sequence[int]:
        return range(self.old_total) if self.old_shards is None else self.old_shards

    @property
    def running(self) -> bool:
        return self.phase in RUNNING

    def workers_started(self) -> None:
        if self.phase is Phase.STARTING:
            self.phase = Phase.WARMING

    def shard_warm(self, shard_id: int) -> Action:
        """A new shard is READY with all its guilds."""
        if self.phase not in (Phase.STARTING, Phase.WARMING) or shard_id not in self.mine_new:
            return Action.NONE
        self.warm.add(shard_id)
        if self.phase is Phase.WARMING and len(self.warm) == len(self.mine_new):
            return Action.CUT
        return Action.NONE

    def shard_cold(self, shard_id: int) -> Action:
        """A warm new shard lost its session (it re-identifies; or its worker was restarted): before the cut it
        must warm up again; after it, its guilds' events until its new READY reach neither set: roll back."""
        if self.phase is Phase.CUTTING_OVER and shard_id in self.warm:
            return self.new_lost(f"new shard {shard_id} lost its session during the cutover")
        if self.phase in (Phase.STARTING, Phase.WARMING):
            self.warm.discard(shard_id)
        return Action.NONE

    def cut_sent(self, cut_at: float, now: float, *, lead: float = 0.0) -> None:
        """The cut at wall time ``cut_at`` was sent at ``now``, ``lead`` seconds before it: the cut timeout runs from
        the cut (as the cluster's record's ``go_deadline``)."""
        self.phase, self.cut_at, self.go_deadline = Phase.CUTTING_OVER, cut_at, now + lead + self.cut_timeout

    @property
    def new_marked(self) -> bool:
        """Every new shard of this host passed its marker: its old shards may mark."""
        return self.cut_at is not None and len(self.new_passed) == len(self.mine_new)

    def new_shard_passed(self, shard_id: int) -> Action:
        """A new shard passed its marker: :attr:`Action.MARK` once every one did."""
        if self.phase is not Phase.CUTTING_OVER or shard_id not in self.mine_new or shard_id in self.new_passed:
            return Action.NONE
        self.new_passed.add(shard_id)
        return Action.MARK if self.new_marked else Action.NONE

    @property
    def old_all_passed(self) -> bool:
        """In the cutover, every old shard of this host passed the cut (or is gone)."""
        return self.phase is Phase.CUTTING_OVER and len(self.passed) == len(self.mine_old)

    def old_passed(self, shard_id: int) -> Action:
        """An old shard passed the cut (or is gone for good: it delivers nothing more)."""
        if shard_id not in self.mine_old:
            return Action.NONE
        self.passed.add(shard_id)
        return Action.GO if self.old_all_passed else Action.NONE

    def new_lost(self, what: str) -> Action:
        """A new shard closed fatally, a new worker gave up, a cut came too late: roll back before GO."""
        if self.phase in (Phase.STARTING, Phase.WARMING, Phase.CUTTING_OVER):
            self.reason = what
            return Action.ROLL_BACK
        return Action.NONE

    def tick(self, now: float) -> Action:
        """A deadline may have passed."""
        if self.phase in (Phase.STARTING, Phase.WARMING) and now >= self.warm_deadline:
            self.reason = (f"the new set did not warm up in time ({len(self.warm)}/{len(self.mine_new)} shards ready "
                           f"after {now - self.started:.0f} s)")
            return Action.ROLL_BACK
        if self.phase is Phase.CUTTING_OVER and now >= self.go_deadline and not self.new_marked:
            missing = sorted(set(self.mine_new) - self.new_passed)
            self.reason = (f"new shards {_ids(missing)} did not pass their cutover marker within {self.cut_timeout:g} "
                           "s (the old set was never marked and delivered everything)")
            return Action.ROLL_BACK
        if self.phase is Phase.CUTTING_OVER and now >= self.go_deadline:
            missing = sorted(set(self.mine_old) - self.passed)
            self.reason = self.forced = (f"old shards {_ids(missing)} did not pass the cut within "
                                         f"{self.cut_timeout:g} s; switching anyway (their guilds may see an event "
                                         "twice or not at all)")
            return Action.GO
        return Action.NONE

    def cluster_go(self, why: str) -> None:
        """The cluster's record says go, forced for ``why`` or not (""): the reason names that and this host's own
        forced switch, if it forced one."""
        self.reason = "; ".join(x for x in (self.forced, why) if x)

    def next_deadline(self) -> float:
        if self.phase in (Phase.STARTING, Phase.WARMING):
            return self.warm_deadline
        if self.phase is Phase.CUTTING_OVER:
            return self.go_deadline
        return math.inf

    def switched(self, now: float) -> None:
        self.phase, self.switched_at = Phase.CLOSING_OLD, now

    def finished(self, now: float) -> None:
        self.phase, self.finished_at = Phase.DONE, now

    def rolled_back(self, now: float) -> None:
        self.phase, self.finished_at = Phase.ROLLED_BACK, now


def _ids(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:8]))
    return shown + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
