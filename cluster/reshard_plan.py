"""Live resharding across hosts, the decisions: the cluster-wide reshard record, each host's new part, and what the
leader does next.

Sans-I/O: :class:`ClusterReshard` is the record every host reads from Redis (:mod:`cluster.reshard_store`); the
functions here only look at it. The procedure (each host runs its own :class:`cluster.reshard.Reshard` for its
part, :mod:`cluster.resharder`):

1. One host (the one that got the command, or whose ``--auto-reshard`` fired) begins: the record is written only if
   no reshard is running (so two hosts never start two), naming the live hosts that take part, with phase
   *warming*. That host is the *leader*.
2. Every listed host starts its part of the new set (:func:`new_part`: its static range recomputed for the new
   count; with ``--assign auto``, :func:`new_blocks`: its share of the new layout's blocks, whose leases it claims)
   and reports *warm* once all its new shards are READY with their guilds.
3. All warm: the leader sets the cut time ``T`` (*cutting_over*); every host gates both its sets at ``T``
   (:mod:`cluster.cutover`) and reports *marked* once its new shards passed their markers. All marked: every host's
   old set marks (a new shard's guilds may be an old shard's on another host, so the order is the cluster's), and
   each host reports *passed* once its old shards passed the cut.
4. All passed (or the cut timeout, if all marked; else a rollback): the leader sets *go* and, in the same atomic
   step, the cluster's layout in Redis becomes the new count and the old count's sessions are removed. Every host
   switches and closes its old set (1000); with ``--assign auto`` it releases its old layout's leases and plans the
   new layout's blocks from then on (a dead host's new blocks fail over to the others). There is no rollback after
   *go*.
5. Before *go*, any host may set *rolled_back* (a fatal close, a stop, its deadline); the leader also does when a
   listed host's registry record expired or the warm-up deadline passed, and the others when the leader's did or
   it left the record unmoved past a deadline (:func:`follower_step`). Every host closes its new set (and
   releases its new blocks' leases); the old set never stopped, and the layout stays the old count.

With ``--assign auto`` the hosts that take part are every live host, and every block of the old layout must be
leased by one of them and none be moving (:func:`check_leased`). A host that joins the cluster during a reshard
takes no part in it: it holds no block until the reshard ended (every old block is held, and no host hands one off
meanwhile), then gets blocks of the cluster's layout by the usual rebalancing.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

import msgspec

from cluster.error import ConfigError, ReshardRefused
from cluster.hosts import HostRecord, host_range
from cluster.leases import Lease, quota

__all__ = ["ClusterPhase", "ClusterReshard", "Step", "check_hosts", "check_leased", "follower_step", "leader_step",
           "new_blocks", "new_part"]


class ClusterPhase(enum.StrEnum):
    """The cluster-wide phase in the record (each host's own :class:`cluster.reshard.Phase` follows it)."""

    WARMING = "warming"
    CUTTING_OVER = "cutting_over"
    GO = "go"
    ROLLED_BACK = "rolled_back"


CLUSTER_RUNNING = frozenset({ClusterPhase.WARMING, ClusterPhase.CUTTING_OVER})


def reshard_key(ns: str) -> str:
    """The reshard record of the bot ``ns`` in Redis (a hash; :mod:`cluster.reshard_store`)."""
    return f"{ns}reshard"


class ClusterReshard(msgspec.Struct, frozen=True, kw_only=True):
    """The reshard record in Redis: epoch ``epoch`` (random ``id``) from ``old_total`` to ``new_total`` shards,
    begun by ``leader`` with the hosts ``hosts`` taking part. Times are wall-clock Unix seconds (every host's)."""

    epoch: int
    old_total: int
    new_total: int
    leader: str
    hosts: tuple[str, ...]
    phase: ClusterPhase
    warm_deadline: float
    cut_timeout: float
    cut_at: float | None = None
    go_deadline: float | None = None
    reason: str = ""
    warm: frozenset[str] = frozenset()
    passed: frozenset[str] = frozenset()
    marked: frozenset[str] = frozenset()
    id: str = ""

    @property
    def identity(self) -> str:
        """``epoch/id``: which begin wrote this record. The epoch alone can come back (Redis lost its counter)."""
        return f"{self.epoch}/{self.id}"

    @property
    def all_marked(self) -> bool:
        """Every host's new shards passed their markers: the old sets may mark."""
        return self.phase is ClusterPhase.CUTTING_OVER and self.marked >= set(self.hosts)

    @property
    def running(self) -> bool:
        return self.phase in CLUSTER_RUNNING


class Step(enum.Enum):
    """What the leader writes next."""

    NONE = "none"
    CUT = "cut"
    GO = "go"
    ROLL_BACK = "roll_back"


def new_part(old_part: range, old_total: int, new_total: int, *, host_index: int | None = None,
             host_count: int | None = None) -> range:
    """This host's shards of the new set.

    With ``--host-index/--host-count``: part ``host_index`` of ``host_count`` of the new count. With a
    ``--shard-range`` (or none): the range scaled by ``new_total / old_total`` (rounded down at both ends), so hosts
    whose old ranges tiled the old count tile the new one. ConfigError if it does not fit."""
    if host_count is not None:
        return host_range(new_total, host_index=host_index, host_count=host_count)
    first, stop = old_part.start * new_total // old_total, old_part.stop * new_total // old_total
    if stop <= first:
        raise ConfigError(f"shards {old_part.start}-{old_part.stop - 1} of {old_total} scale to no shard of "
                          f"{new_total}")
    return range(first, stop)


def check_hosts(hosts: Iterable[HostRecord], old_total: int) -> list[str]:
    """The ids of the live hosts that take part in a reshard of ``old_total`` shards (every one). Raise
    :class:`ReshardRefused` unless their ranges cover every shard exactly once: a shard without a live host (one
    stopped, or not back yet) would have no new shard warmed for its guilds."""
    records = sorted(hosts, key=lambda h: h.first)
    covered = 0
    for h in records:
        if h.shard_total != old_total:
            raise ReshardRefused(f"{h.describe()} of a {h.shard_total}-shard layout, not {old_total}: "
                                 "wait until every host runs the cluster's layout")
        if h.first != covered:
            missing = f"shards {covered}-{h.first - 1}" if h.first > covered else f"shard {h.first}"
            raise ReshardRefused(f"{missing} of {old_total} have no live host (or two): every host of the "
                                 "cluster must be up to reshard")
        covered = h.last + 1
    if covered != old_total:
        raise ReshardRefused(f"shards {covered}-{old_total - 1} of {old_total} have no live host: every host of the "
                             "cluster must be up to reshard")
    return [h.host_id for h in records]


def new_blocks(me: str, hosts: Iterable[str], block_count: int) -> range:
    """``--assign auto``: the blocks of the new layout host ``me`` claims in a reshard taken part in by ``hosts``:
    its :func:`~cluster.leases.quota` of ``block_count``, the hosts' shares one after the other in id order (so
    they tile the blocks, and the layout starts at the planning's fixed point: no block moves after the switch)."""
    live = sorted(set(hosts) | {me})
    first = sum(quota(h, live, block_count) for h in live[:live.index(me)])
    return range(first, first + quota(me, live, block_count))


def check_leased(hosts: Iterable[HostRecord], leases: Mapping[int, Lease], old_total: int,
                 block_count: int) -> list[str]:
    """``--assign auto``: the ids of the live hosts that take part in a reshard of ``old_total`` shards (every one).
    Raise :class:`ReshardRefused` unless each runs that layout and every one of its ``block_count`` blocks is
    leased by one of them and running (not starting: a block moving or failing over would be run by no host's old
    set, or by two)."""
    ids = []
    for h in hosts:
        if h.shard_total != old_total:
            raise ReshardRefused(f"{h.describe()} of a {h.shard_total}-shard layout, not {old_total}: "
                                 "wait until every host runs the cluster's layout")
        ids.append(h.host_id)
    free = [b for b in range(block_count) if b not in leases or leases[b].owner not in ids]
    if free:
        raise ReshardRefused(f"{_blocks(free, old_total)} no live owner (a failover is under way): try again once "
                             "every block runs")
    moving = sorted(b for b, lease in leases.items() if b < block_count and lease.starting)
    if moving:
        raise ReshardRefused(f"{_blocks(moving, old_total, 'is', 'are')} still starting on a new owner: try again "
                             "once every block runs")
    return sorted(ids)


def _blocks(ids: list[int], total: int, one: str = "has", many: str = "have") -> str:
    return f"block{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))} of the {total} shards " + (
        many if len(ids) > 1 else one)


def leader_step(record: ClusterReshard, live: Iterable[str], now: float) -> tuple[Step, str]:
    """The leader's next write for ``record`` with the hosts ``live`` in the registry at wall time ``now``, and
    the reason (for a rollback or a forced go)."""
    if not record.running:
        return Step.NONE, ""
    dead = sorted(set(record.hosts) - set(live))
    if dead:
        return Step.ROLL_BACK, f"host {', '.join(dead)} left the registry (its record expired) before the switch"
    if record.phase is ClusterPhase.WARMING:
        if record.warm >= set(record.hosts):
            return Step.CUT, ""
        if now >= record.warm_deadline:
            waiting = sorted(set(record.hosts) - record.warm)
            return Step.ROLL_BACK, f"the new set did not warm up in time on host {', '.join(waiting)}"
        return Step.NONE, ""
    if record.passed >= set(record.hosts):
        return Step.GO, ""
    if record.go_deadline is not None and now >= record.go_deadline and not record.all_marked:
        waiting = sorted(set(record.hosts) - record.marked)
        return Step.ROLL_BACK, (f"the new shards of host {', '.join(waiting)} did not pass their cutover markers "
                                f"within {record.cut_timeout:g} s")
    if record.go_deadline is not None and now >= record.go_deadline:
        waiting = sorted(set(record.hosts) - record.passed)
        return Step.GO, (f"host {', '.join(waiting)} did not report its old shards past the cut within "
                         f"{record.cut_timeout:g} s; switching anyway")
    return Step.NONE, ""


def follower_step(record: ClusterReshard, live: Iterable[str], now: float) -> tuple[Step, str]:
    """What a host that did not begin the reshard writes: a rollback if the leader is gone (its registry record
    expired) or left the record unmoved a whole ``cut_timeout`` past the deadline of its phase, else nothing."""
    if not record.running:
        return Step.NONE, ""
    if record.leader not in set(live):
        return Step.ROLL_BACK, f"the leader, host {record.leader}, left the registry before the switch"
    deadline = record.warm_deadline if record.phase is ClusterPhase.WARMING else record.go_deadline
    if deadline is not None and now >= deadline + record.cut_timeout:
        return Step.ROLL_BACK, f"the leader, host {record.leader}, did not move the reshard on past its deadline"
    return Step.NONE, ""
