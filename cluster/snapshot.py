"""What observers see of a cluster: a frozen, typed :class:`ClusterSnapshot`, copied from the supervisor at one
moment on its event loop. ``/status``, ``/healthz``, ``/readyz``, ``/metrics`` and the status line read
only snapshots, so that a scrape never changes the supervisor; :meth:`ClusterSnapshot.status` is the JSON of
``/status`` (and of a worker's :class:`~cluster.handler.ClusterStatus` call).

This module imports nothing else of the cluster.
"""

from __future__ import annotations

import bisect
import enum
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BlockSnapshot", "ClusterSnapshot", "CoordinationStats", "ReshardSnapshot", "ShardPhase", "ShardSnapshot",
           "WAIT_BUCKETS", "WaitHistogram", "WorkerSnapshot", "WorkerState"]

WAIT_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""The upper bounds (seconds) of the identify-wait histogram's buckets."""


class WorkerState(enum.Enum):
    """A worker process's place in its lifecycle."""

    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    EXITED = "exited"


class ShardPhase(enum.StrEnum):
    """A shard's state as its worker last reported it (or as the supervisor knows it: PENDING before its worker
    runs, STARTING once assigned, WORKER_DOWN once its worker died). The values are the names ``/status`` and
    ``cluster_shard_state`` show."""

    PENDING = "PENDING"
    STARTING = "STARTING"
    QUEUED = "QUEUED"
    IDENTIFYING = "IDENTIFYING"
    RESUMING = "RESUMING"
    ACTIVE = "ACTIVE"
    DISCONNECTED = "DISCONNECTED"
    FATALLY_CLOSED = "FATALLY_CLOSED"
    WORKER_DOWN = "WORKER_DOWN"
    UNKNOWN = "UNKNOWN"
    """A name this supervisor does not know (a newer worker); never one of the metric's states."""

    @classmethod
    def _missing_(cls, value: object) -> ShardPhase:
        return cls.UNKNOWN


class WaitHistogram:
    """The identify-wait histogram, cumulative since the start (recorded at each grant, never reset)."""

    def __init__(self) -> None:
        self.counts = [0] * (len(WAIT_BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0

    def record(self, wait: float) -> None:
        self.sum += wait
        self.counts[bisect.bisect_left(WAIT_BUCKETS, wait)] += 1

    def buckets(self) -> tuple[tuple[str, float], ...]:
        """``(le, cumulative count)`` pairs, ``+Inf`` last."""
        return tuple(zip([*map(str, WAIT_BUCKETS), "+Inf"], itertools.accumulate(self.counts), strict=True))


@dataclass(frozen=True, slots=True)
class CoordinationStats:
    """The identify coordinator's numbers, copied at one moment."""

    queue_depth: int
    budget_remaining: int
    budget_total: int
    budget_reserve: int
    budget_reset_in: float
    late_starts: int
    """Identifies written after their hold expired (``identify_hold_timeout`` too short for the connects)."""
    unused_grants: int
    expired_holds: int
    coordinator_up: bool = True
    """False while a shared coordinator (Redis) cannot be reached: identifies wait, running shards go on."""
    coordinator_errors: int = 0
    """Failed attempts to reach the shared coordinator since the start."""


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    worker_id: int
    pid: int | None
    state: WorkerState
    generation: int
    shards: range
    rss: int
    ipc_rtt: float | None
    loop_lag: float
    blocked: int
    handler_errors: int
    consumer_errors: int
    restarts: int

    @property
    def up(self) -> bool:
        return self.state is WorkerState.RUNNING


@dataclass(frozen=True, slots=True)
class ShardSnapshot:
    shard_id: int
    worker_id: int
    state: ShardPhase
    latency: float | None
    last_event_age: float | None
    session: bool
    events: Mapping[str, int]
    """Gateway events received, by type, since the supervisor started."""

    @property
    def resumes(self) -> int:
        return self.events.get("RESUMED", 0)


@dataclass(frozen=True, slots=True)
class BlockSnapshot:
    """One block of shards (``--assign auto``) as this host last read its lease: its owner (None: free), the
    lease's fencing epoch and seconds since it was last claimed or renewed, and whether this host holds it."""

    block: int
    first: int
    last: int
    owner: str | None
    epoch: int | None
    lease_age: float | None
    mine: bool


@dataclass(frozen=True, slots=True)
class ReshardSnapshot:
    """The latest live reshard (:mod:`cluster.reshard`): its phase (a :class:`~cluster.reshard.Phase` value), the
    shard counts, new shards warm (READY with all their guilds) and old shards past the cut, seconds since it
    started (until it ended), seconds from the start to the switch (None before), and why it rolled back or
    switched without every old shard. Across hosts (:mod:`cluster.reshard_plan`): this host's part of the new set
    (first and last shard; ``ready`` counts its shards only), the reshard's epoch and the host that leads it. In the
    cutover, ``unmarked``: the new shards (of this host) not past their cutover markers yet."""

    phase: str
    old_total: int
    new_total: int
    ready: int
    passed: int
    elapsed: float
    switch_after: float | None
    reason: str
    shards: tuple[int, int] | None = None
    epoch: int | None = None
    leader: str | None = None
    unmarked: tuple[int, ...] = ()

    def status(self) -> dict[str, Any]:
        out = {"phase": self.phase, "from": self.old_total, "to": self.new_total, "ready": self.ready,
               "passed": self.passed, "elapsed": self.elapsed, "switch_after": self.switch_after,
               "reason": self.reason}
        if self.phase == "cutting_over":
            out["unmarked"] = list(self.unmarked)
        if self.shards is not None:  # an empty part (no block of the new layout): []
            out |= {"shards": list(self.shards) if self.shards[1] >= self.shards[0] else [], "epoch": self.epoch,
                    "leader": self.leader}
        return out


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """The whole cluster at one moment (``uptime`` seconds after the supervisor started)."""

    shard_total: int
    max_concurrency: int
    uptime: float
    rolling: bool
    stopping: bool
    coordination: CoordinationStats | None
    identifies: Mapping[str, int]
    identify_waits: tuple[tuple[str, float], ...]
    identify_wait_sum: float
    restarts: Mapping[tuple[int, str], int]
    errors: Mapping[tuple[str, str], int]
    loop_lag: float
    """The worst lag of the supervisor's event loop over its last 64 IPC heartbeat ticks."""
    problems: tuple[str, ...]
    """Why the cluster is unhealthy (empty when healthy), as ``/healthz`` says it."""
    workers: tuple[WorkerSnapshot, ...]
    shards: tuple[ShardSnapshot, ...]
    hosts: tuple[Mapping[str, Any], ...] | None = None
    """Every host of the bot as last published to the coordinator (``/status``'s ``hosts``); None without one."""
    blocks: tuple[BlockSnapshot, ...] | None = None
    """Every block and its lease (``--assign auto``); None with a static assignment."""
    lease_moves: Mapping[tuple[str, str], int] | None = None
    """This host's lease moves since it started, by (``claim``/``loss``/``handoff``/``failover``/``release``,
    reason)."""
    legacy_leases: int = 0
    """Block leases held by hosts of an earlier version under the keys before layouts, as this host last read them
    (``--assign auto``; :meth:`cluster.blocks.BlockKeeper.tick`): while any is, this host claims and hands off
    nothing."""
    reshard: ReshardSnapshot | None = None
    """The latest live reshard since the start; None if there was none (``/status`` then says phase ``idle``)."""

    @property
    def active(self) -> int:
        return sum(1 for s in self.shards if s.state is ShardPhase.ACTIVE)

    @property
    def ready(self) -> bool:
        return ((bool(self.shards) or self.blocks is not None) and self.active == len(self.shards) and not self.stopping
                and self.coordinator_up)

    @property
    def coordinator_up(self) -> bool:
        """False while the shared coordinator cannot be reached (never for the in-process one)."""
        return self.coordination is None or self.coordination.coordinator_up

    def status(self) -> dict[str, Any]:
        """The JSON-able ``/status``: workers, shards, identify queue and budget."""
        coord = self.coordination
        return {
            "shard_total": self.shard_total,
            "active": self.active,
            "max_concurrency": self.max_concurrency,
            "uptime": self.uptime,
            "rolling": self.rolling,
            "stopping": self.stopping,
            "identify_queue": coord.queue_depth if coord else 0,
            "session_budget": ({"remaining": coord.budget_remaining, "total": coord.budget_total,
                                "reserve": coord.budget_reserve, "reset_in": coord.budget_reset_in}
                               if coord else None),
            "late_starts": coord.late_starts if coord else 0,
            "coordinator_up": self.coordinator_up,
            "identifies": dict(self.identifies),
            "workers": [{"id": w.worker_id, "pid": w.pid, "state": w.state.value, "generation": w.generation,
                         "shards": [w.shards.start, w.shards.stop - 1], "rss": w.rss, "ipc_rtt": w.ipc_rtt,
                         "loop_lag": w.loop_lag, "blocked": w.blocked, "handler_errors": w.handler_errors,
                         "consumer_errors": w.consumer_errors, "restarts": w.restarts}
                        for w in self.workers],
            "shards": [{"id": s.shard_id, "worker": s.worker_id, "state": s.state.value, "latency": s.latency,
                        "last_event_age": s.last_event_age, "session": s.session, "resumes": s.resumes}
                       for s in self.shards],
            "reshard": self.reshard.status() if self.reshard is not None else {"phase": "idle"},
        } | ({} if self.hosts is None else {"hosts": [dict(h) for h in self.hosts]}) | ({} if self.blocks is None else {
            "blocks": [{"block": b.block, "shards": [b.first, b.last], "owner": b.owner, "epoch": b.epoch,
                        "lease_age": b.lease_age, "mine": b.mine} for b in self.blocks],
            "lease_moves": [{"event": e, "reason": r, "count": n}
                            for (e, r), n in sorted((self.lease_moves or {}).items())],
            "legacy_leases": self.legacy_leases})
