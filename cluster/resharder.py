"""Live resharding, the driver: runs a :class:`~cluster.reshard.Reshard` with real workers (single host).

The new set gets its own :class:`~cluster.runtime.Runtime` (its workers, shard views and sessions), sharing the
supervisor's identify queue, coordinator, counters and tasks; its shard ids use another key range in the
identify coordinator (:attr:`Runtime.id_base`), so both sets' shard 3 never meet there. Its own
:class:`~cluster.workers.Workers` and :class:`~cluster.routing.Router` start and route it. At the switch the new
set's layout becomes the supervisor's (workers, shards, sessions, shard total) and the old workers are drained
with close code 1000.

With a coordinator (several hosts with static ranges), each host runs its own part the same way, but the steps that
concern the whole cluster follow the reshard record in Redis (:mod:`cluster.reshard_plan`,
:mod:`cluster.reshard_store`): a host reports its part warm and its old shards passed, and cuts, switches or rolls
back when the record says so; the host that began the reshard (the leader) moves the record on, and the others roll it
back if the leader is gone.

With ``--assign auto`` (block leases, :mod:`cluster.blocks`) every live host takes part, with the shards of the blocks
it holds as its old part (none moves meanwhile: its keeper is frozen) and its share of the new layout's blocks as its
new part (:func:`cluster.reshard_plan.new_blocks`), whose leases it claims before starting their workers; a second
keeper renews them (and fences the new workers) until the switch, when it becomes the host's keeper and the old one
releases the old layout's leases. A rollback releases the new leases.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

import msgspec

from cluster.config import ClusterConfig
from cluster.cutover import FANOUT_SKEW, GO_GRACE
from cluster.discord_api import fetch_gateway_bot
from cluster.error import ConfigError, CoordinatorUnavailable
from cluster.exitcodes import ClusterExit, ExitCode, for_close_code
from cluster.hosts import HostRecord, host_ordinal, read_hosts
from cluster.layout import round_up, split_range
from cluster.loops import Loops
from cluster.restart import RestartPolicy
from cluster.reshard import (Action, Phase, Reshard, ReshardRefused, auto_target, check_start, cut_late_reason,
                             warm_timeout)
from cluster.leases import blocks
from cluster.reshard_plan import (ClusterPhase, ClusterReshard, Step, check_hosts, check_leased, follower_step,
                                  leader_step, new_blocks, new_part)
from cluster.routing import Router
from cluster.runtime import Runtime, ShardView, WorkerHandle, WorkerState
from cluster.snapshot import ReshardSnapshot
from cluster.workers import Workers
from ipc import ChannelClosed, HeartbeatMonitor
from ipc.protocol import CutLate, CutMark, Cutover, CutoverEnd, CutPassed, Flushed, Packet, Regate, ShardWarm

__all__ = ["CUT_LEAD", "Resharder"]

log = logging.getLogger("cluster")

CUT_LEAD = 0.5
"""Seconds between sending the cut and the cut itself: every worker must have it before it is due."""
CLUSTER_CUT_LEAD = 1.5
"""With a coordinator: seconds between the leader writing the cut time and the cut (every host reads the record
every :data:`CLUSTER_POLL` seconds, then tells its workers)."""
CLUSTER_POLL = 0.1
"""Seconds between reads of the reshard record while this host takes part in one."""
CLUSTER_IDLE_POLL = 2.0
"""Seconds between reads of the record's epoch otherwise (how soon a host joins a reshard another host began; one
command per host per poll)."""
_SHARED = ("identify_events", "wake", "identifies", "restarts", "identify_waits", "errors", "loop_lags",
           "listeners", "tasks", "coordinator", "max_concurrency", "gateway_url")
"""What the new set's runtime shares with the supervisor's."""


class Host(Protocol):
    """What the driver needs of the supervisor (:class:`cluster.supervisor.Supervisor`): its parts, which it
    replaces with the new set's at the switch."""

    config: ClusterConfig
    handler: Any
    supervisor_handler: Any
    _rt: Runtime
    _workers: Workers
    _router: Router
    _loops: Loops
    _redis: Any
    _ns: str
    _cross: Any
    host: HostRecord | None
    blocks: Any

    @property
    def mp(self) -> Any: ...

    @property
    def shard_options(self) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...

    def _policy(self, wid: int) -> RestartPolicy: ...

    def keep_registered(self) -> None: ...

    def block_keeper(self, rt: Runtime, workers: Workers) -> Any: ...


class Resharder:
    """Starts and runs live reshards of one supervisor, one at a time; :attr:`last` is the latest."""

    def __init__(self, sup: Host) -> None:
        self.sup = sup
        self.last: Reshard | None = None
        self.child: Runtime | None = None
        self.workers: Workers | None = None  # the new set's, until the switch
        self.router: Router | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._actions: list[Action] = []
        self._gone_old: set[int] = set()  # old shards closed fatally: they deliver nothing more
        self._old_fatal: dict[int, int | None] = {}  # their close codes: the cluster stops with one after a rollback
        self._sharding_required = False  # a 4011 with --auto-reshard, not acted on yet
        self._warm_by: dict[int, WorkerHandle] = {}  # the new worker each warm shard was warm in
        self._old_digests: list[int] = []  # what the old set delivered without a creation id while gated
        self._marks: dict[int, tuple[int | None, list[int]]] = {}  # new shards' marker_seq and dropped digests
        self._unflushed: dict[int, int | None] = {}  # after go: new shards not done with what they held: marker_seq
        self._regate_with: tuple[float, list[int]] = (0.0, [])  # ... and the cut and the old set's digests
        self._mark_at: float | None = None  # when the old set sends its marker heartbeats (every new shard passed)
        self._auto_pending = False
        self.record: ClusterReshard | None = None  # with a coordinator: the cluster's record of the running reshard
        self._seen = ""  # the identity (epoch/id) of the latest record this host joined or passed over
        self._seen_epoch = 0  # and its epoch (for the snapshot)
        self._leader: str | None = None  # the latest cluster reshard's leader (for the snapshot)
        self._reported: set[str] = set()  # "warm", "passed": what this host told the record
        self._store_: Any = None
        self._new_blocks: range | None = None  # --assign auto: this host's blocks of the new layout
        self.keeper: Any = None  # --assign auto: the new layout's BlockKeeper, until the switch

    @property
    def _store(self) -> Any:
        """The reshard record in Redis (:class:`cluster.reshard_store.ReshardStore`), or None without a coordinator."""
        sup = self.sup
        if self._store_ is None and sup._redis is not None and sup.host is not None:
            from cluster.reshard_store import ReshardStore  # noqa: PLC0415 - needs the redis package
            self._store_ = ReshardStore(sup._redis, sup.config.coordinator or "", sup._ns, sup.host.host_id)
        return self._store_

    @property
    def running(self) -> bool:
        return self.last is not None and self.last.running

    # --- starting ----------------------------------------------------------------------------

    async def start(self, target: int | None = None) -> Reshard:
        """Start a reshard to ``target`` shards (None: Discord's recommendation, rounded up to a multiple of
        max_concurrency). Raises :class:`ReshardRefused` with the reason, before anything starts."""
        sup, rt = self.sup, self.sup._rt
        if rt.stopping or rt.coordinator is None or not rt.shard_total:
            raise ReshardRefused("the cluster is not running (starting up or stopping)")
        if target is None and not self.running:
            try:
                info = await fetch_gateway_bot(sup.config.api_url, rt.token())
            except ClusterExit as exc:
                raise ReshardRefused(f"cannot ask Discord for the recommended shard count: {exc}") from None
            target = round_up(info.shards, rt.max_concurrency)
        now = time.monotonic()
        stats = rt.coordinator.stats(now)
        cfg = sup.config
        pace_below = cfg.budget_pace_below if cfg.budget_pace_below is not None else 2 * stats.budget_reserve
        store = self._store
        # the same rules for this host's budget now and, across hosts, for the shared budget in the leader's begin
        check = partial(check_start, current=rt.shard_total, target=target or 0, max_concurrency=rt.max_concurrency,
                        reserve=stats.budget_reserve, pace_below=pace_below)
        check(remaining=stats.budget_remaining, running=self.running or rt.rolling,
              partial=store is None and len(rt.shards) != rt.shard_total, filtered_out=self._filtered_out())
        assert target is not None
        if store is not None:
            return await self._begin(store, target, max(stats.budget_reserve, pace_below),
                                     lambda remaining: check(remaining=remaining, running=False))
        self.last = Reshard(rt.shard_total, target, now,
                            warm_deadline=now + warm_timeout(target, rt.max_concurrency, cfg.identify_window),
                            cut_timeout=cfg.reshard_cut_timeout)
        self._actions.clear()
        log.info("resharding live from %d to %d shards (session budget %d left)", rt.shard_total, target,
                 stats.budget_remaining)
        rt.emit("reshard_started", old=rt.shard_total, new=target)
        self._task = rt.spawn_task(self._run(self.last), "reshard")
        return self.last

    def _filtered_out(self) -> frozenset[str]:
        from shard import EventTypeFlags  # noqa: PLC0415 - the supervisor imports the shard package lazily

        flags = self.sup.shard_options.get("event_types")
        if flags is None:
            return frozenset()
        return frozenset(n for n in ("GUILD_CREATE", "READY") if not flags & EventTypeFlags[n])

    # --- across hosts (with a coordinator) -------------------------------------------------------

    async def _begin(self, store: Any, target: int, floor: int, budget_check: Callable[[int], None]) -> Reshard:
        """Begin a reshard of the whole cluster as its leader: every live host takes part (their ranges must cover
        the shards), the record is written unless another reshard runs or the cluster's shared session budget is
        short, below ``floor`` after the new set (``budget_check(remaining)`` raises the refusal); then this host joins
        it."""
        sup, rt, cfg = self.sup, self.sup._rt, self.sup.config
        try:
            live = await read_hosts(sup._redis, sup._ns)
            if sup.blocks is None:
                hosts = check_hosts(live, rt.shard_total)
            else:
                if sup.blocks.moving is not None:
                    raise ReshardRefused(f"block {sup.blocks.moving} is being handed to another host: try again once "
                                         "it runs there")
                leases = await sup.blocks.leases.read(len(sup.blocks.ranges))
                hosts = check_leased(live, leases, rt.shard_total, len(sup.blocks.ranges))
            deadline = time.time() + warm_timeout(target, rt.max_concurrency, cfg.identify_window)
            epoch, remaining = await store.begin(rt.shard_total, target, rt.max_concurrency, hosts,
                                                 warm_deadline=deadline, cut_timeout=cfg.reshard_cut_timeout,
                                                 budget_floor=floor)
            if remaining is not None:
                budget_check(remaining)  # raises the refusal with the cluster's numbers
                raise ReshardRefused(f"session start budget too low: {remaining} identifies left in the cluster")
            record = await store.read()
        except CoordinatorUnavailable as exc:
            raise ReshardRefused(str(exc)) from None
        if record is None or record.epoch != epoch:
            raise ReshardRefused("the reshard record vanished from Redis as it was written (a flushed Redis?)")
        log.info("resharding the cluster's %d hosts live from %d to %d shards (epoch %d, this host leads)",
                 len(hosts), rt.shard_total, target, epoch)
        try:
            return self._join(record)
        except ReshardRefused as exc:
            await store.roll_back(record, f"host {store.host}: {exc}")
            raise

    def _join(self, record: ClusterReshard) -> Reshard:
        """Start this host's part of the cluster's reshard ``record``: its static range for the new count."""
        sup, rt, cfg = self.sup, self.sup._rt, self.sup.config
        self._seen, self._seen_epoch = record.identity, record.epoch
        host = sup.host
        if self.running or rt.rolling or rt.stopping or host is None:
            raise ReshardRefused("this host is busy (a reshard, a rolling restart, or stopping)")
        if record.old_total != rt.shard_total:
            raise ReshardRefused(f"this host runs {rt.shard_total} shards, the reshard starts from {record.old_total}")
        old: Sequence[int] = host.shards
        self._new_blocks = None
        if sup.blocks is not None:  # --assign auto: the blocks it holds, and its share of the new layout's
            if sup.blocks.moving is not None:
                raise ReshardRefused(f"block {sup.blocks.moving} is being handed to another host")
            old = tuple(sorted(rt.shards))
            ranges = blocks(record.new_total, cfg.shards_per_worker)
            mine = self._new_blocks = new_blocks(host.host_id, record.hosts, len(ranges))
            new = range(ranges[mine[0]].start, ranges[mine[-1]].stop) if mine else range(0)
            sup.blocks.frozen = True  # no handoff until the reshard ends: its old part must stay
        else:
            try:
                index = host_ordinal() if cfg.host_index == "auto" else cfg.host_index
                new = new_part(host.shards, record.old_total, record.new_total, host_count=cfg.host_count,
                               host_index=None if index is None else int(index))
            except ConfigError as exc:
                raise ReshardRefused(str(exc)) from None
        now = time.monotonic()
        self.record, self._reported, self._leader = record, set(), record.leader
        self.last = Reshard(record.old_total, record.new_total, now,
                            warm_deadline=now + max(0.0, record.warm_deadline - time.time()),
                            cut_timeout=record.cut_timeout, new_shards=new, old_shards=old)
        self._actions.clear()
        log.info("reshard epoch %d: this host runs shards %d-%d of %d next (now %d of %d)", record.epoch,
                 new.start, new.stop - 1, record.new_total, len(old), record.old_total)
        rt.emit("reshard_started", old=record.old_total, new=record.new_total)
        self._task = rt.spawn_task(self._run(self.last), "reshard")
        return self.last

    async def follow(self) -> None:
        """With a coordinator: join the reshards other hosts begin (read the record's epoch every
        :data:`CLUSTER_IDLE_POLL` seconds, the record when it is new; while one runs, :meth:`_procedure` reads it).
        With ``--assign auto``, also follow a reshard this host took no part in (:meth:`_follow_layout`)."""
        while True:
            await asyncio.sleep(CLUSTER_IDLE_POLL)
            store = self._store
            if store is None or self.running:
                continue
            try:
                if self.sup.blocks is not None:
                    await self._follow_layout(store)
                # another record than the last seen, not a higher epoch: a Redis that lost its data counts from 1
                identity = await store.identity()
                record = await store.read() if identity and identity != self._seen else None
            except CoordinatorUnavailable:
                continue  # the coordinator's own loops say so
            if record is None or record.identity == self._seen:
                continue
            if record.phase is not ClusterPhase.WARMING or store.host not in record.hosts:
                self._seen = record.identity  # not ours (over, or begun before this host joined the cluster)
                continue
            try:
                self._join(record)
            except ReshardRefused as exc:
                log.error("cannot take part in the cluster's reshard to %d shards: %s", record.new_total, exc)
                await store.roll_back(record, f"host {store.host}: {exc}")

    async def _follow_layout(self, store: Any) -> None:
        """``--assign auto``: the cluster's layout in Redis is not this host's (it joined the cluster while a reshard
        ran, and took no part in it): stop and release the old layout's blocks it holds (none, unless it took one
        over during the reshard) and plan the new layout's from now on (it gets blocks by rebalancing)."""
        sup, rt = self.sup, self.sup._rt
        total = await store.layout_total()
        if total is None or total == rt.shard_total or rt.stopping or self.running:
            return
        log.warning("the cluster resharded from %d to %d shards without this host (it joined during the reshard): "
                    "leasing blocks of the %d-shard layout from now on", rt.shard_total, total, total)
        await sup.blocks.retire(stop=True)
        rt.shard_total = total
        rt.sessions_version += 1
        keeper = sup.blocks = sup.block_keeper(rt, sup._workers)
        sup._cross.sessions.fence = keeper.fence
        keeper.start()
        await self._move_host(total, None)

    async def _cluster_step(self, r: Reshard, actions: list[Action]) -> tuple[Action, str]:
        """Follow the record one step: report this host's progress, lead if this host began it, and say what to
        do here (CUT: the record has the cut time; GO; ROLL_BACK) with the reason."""
        store, record = self._store, self.record
        assert store is not None and record is not None
        try:
            latest = await store.read()
        except CoordinatorUnavailable:
            latest = record  # keep waiting: the deadlines still hold
        if latest is None or latest.identity != record.identity:
            if await self._switched(record):
                return Action.GO, (f"the reshard record left Redis, but the cluster had switched to "
                                   f"{record.new_total} shards; switching too")
            r.new_lost("the cluster's reshard record left Redis")
            return Action.ROLL_BACK, ""
        self.record = record = latest
        if record.phase is ClusterPhase.ROLLED_BACK:
            r.new_lost(f"rolled back by the cluster: {record.reason}")
            return Action.ROLL_BACK, ""
        if record.phase is ClusterPhase.GO:
            return Action.GO, record.reason
        if Action.ROLL_BACK in actions:  # a failure on this host: the whole cluster rolls back, unless it switched
            if await self._tell_roll_back(r):
                return Action.ROLL_BACK, ""
            return Action.GO, self.record.reason or f"{r.reason}; but the cluster had switched: switching too"
        try:
            if ("warm" not in self._reported and r.phase is Phase.WARMING and len(r.warm) == len(r.mine_new)
                    and self.child is not None
                    and all(h.state == WorkerState.RUNNING for h in self.child.workers.values())
                    and await store.report(record, "warm")):
                self._reported.add("warm")
                log.info("reshard epoch %d: this host's %d new shards are ready", record.epoch, len(r.warm))
            if record.phase is ClusterPhase.CUTTING_OVER and r.phase is Phase.WARMING:
                return Action.CUT, ""
            if r.new_marked and "marked" not in self._reported and await store.report(record, "marked"):
                self._reported.add("marked")
            if record.all_marked:
                self._mark()  # the cluster's every new shard passed: this host's old set marks
            # from the state, not only the one-time GO action: a report that failed is made again at the next step
            if ((Action.GO in actions or r.old_all_passed) and "passed" not in self._reported
                    and await store.report(record, "passed", self._old_digests)):
                self._reported.add("passed")
            live = [h.host_id for h in await read_hosts(self.sup._redis, self.sup._ns)]
            lead = record.leader == store.host
            step, why = (leader_step if lead else follower_step)(record, live, time.time())
            if step is Step.CUT:
                await store.cut(record, time.time() + CLUSTER_CUT_LEAD)
            elif step is Step.GO and await store.go(record, self.sup._rt.max_concurrency, why):
                return Action.GO, why
            elif step is Step.ROLL_BACK:
                log.error("reshard epoch %d: %s; rolling the cluster back", record.epoch, why)
                await store.roll_back(record, why)
        except CoordinatorUnavailable as exc:
            log.debug("reshard: %s", exc)
        return Action.NONE, ""

    async def _cluster_running(self) -> bool:
        """Whether a reshard of the whole cluster runs (another host began it: this host joins it)."""
        if self.running or self._store is None:
            return self.running
        try:
            record = await self._store.read()
        except CoordinatorUnavailable:
            return False
        return record is not None and record.running

    async def _tell_roll_back(self, r: Reshard) -> bool:
        """Roll the cluster's reshard back for this host's reason (best effort); False if it had switched (the record
        says go, or it left Redis, or cannot be written, and :meth:`_switched` says so)."""
        store, record = self._store, self.record
        if store is None or record is None:
            return True
        try:
            async with asyncio.timeout(2.0):
                if await store.roll_back(record, f"host {store.host}: {r.reason}"):
                    return True
                latest = await store.read()
        except (CoordinatorUnavailable, TimeoutError) as exc:
            if await self._switched(record):
                return False
            log.error("could not tell the other hosts that the reshard rolls back (%s); their deadlines will", exc)
            return True
        if latest is not None and latest.identity == record.identity:
            self.record = latest
            return latest.phase is not ClusterPhase.GO
        return not await self._switched(record)

    async def _switched(self, record: ClusterReshard) -> bool:
        """Whether the cluster switched to ``record``'s new count although this host cannot see its go (the record
        left Redis, or cannot be written): then it must switch too, never roll back alone (split layouts). False if
        Redis cannot say."""
        store = self._store
        try:
            async with asyncio.timeout(2.0):
                return store is not None and await store.switched(record)
        except (CoordinatorUnavailable, TimeoutError):
            return False

    async def auto(self, *, sharding_required: bool) -> None:
        """``--auto-reshard``: reshard if Discord recommends more shards (after a 4011: always grow)."""
        rt, cfg = self.sup._rt, self.sup.config
        if self.running or self._auto_pending:
            return  # a 4011 meanwhile is kept in _sharding_required: the check under way acts on it
        self._auto_pending = True
        required = sharding_required or self._sharding_required
        try:
            info = await fetch_gateway_bot(cfg.api_url, rt.token())
            required = required or self._sharding_required
            target = auto_target(rt.shard_total, info.shards, rt.max_concurrency, margin=cfg.auto_reshard_margin,
                                 sharding_required=required)
            if target is None:
                log.debug("auto-reshard: %d shards recommended, %d running: staying", info.shards, rt.shard_total)
                return
            await self.start(target)
        except ReshardRefused as exc:
            if required and await self._cluster_running():
                log.warning("sharding required (4011): %s; this host takes part in it", exc)
            elif required:
                rt.stop(ExitCode.SHARDING_REJECTED, f"sharding required (4011) and the reshard was refused: {exc}")
            else:
                log.warning("auto-reshard refused: %s", exc)
        except Exception as exc:
            if not required:
                raise
            rt.stop(ExitCode.SHARDING_REJECTED, f"sharding required (4011) and the reshard could not start: "
                                                f"{type(exc).__name__}: {exc}")
        finally:
            self._auto_pending = False
            if required:
                self._sharding_required = False
            elif self._sharding_required and not self.running and not rt.stopping:
                rt.spawn_task(self.auto(sharding_required=True), "auto_reshard")  # a 4011 came during this check

    async def watch(self) -> None:
        """The ``--auto-reshard`` loop: ask Discord's recommendation every ``auto_reshard_interval`` seconds."""
        while True:
            await asyncio.sleep(self.sup.config.auto_reshard_interval)
            try:
                await self.auto(sharding_required=False)
            except Exception as exc:  # noqa: BLE001 - Discord unreachable, say: next time
                self.sup._rt.failed("auto_reshard", exc, "the auto-reshard check failed", "trying again later")

    # --- reports (from both sets' routers) ---------------------------------------------------------

    def on_old_fatal(self, shard_id: int, code: int | None) -> bool:
        """An old shard closed fatally. During a reshard it is simply gone (True: the cluster goes on); with
        ``--auto-reshard``, a 4011 starts one."""
        if self.running:
            self._gone_old.add(shard_id)
            self._old_fatal[shard_id] = code
            log.warning("shard %d of the old set closed fatally (%s) during the reshard", shard_id, code)
            self._act(self.last.old_passed(shard_id) if self.last else Action.NONE)
            return True
        if code == 4011 and self.sup.config.auto_reshard:
            log.warning("shard %d: sharding required (4011); resharding automatically", shard_id)
            self._gone_old.add(shard_id)
            self._old_fatal[shard_id] = code
            self._sharding_required = True
            self.sup._rt.spawn_task(self.auto(sharding_required=True), "auto_reshard")
            return True
        return False

    def on_new_fatal(self, shard_id: int, code: int | None) -> bool:
        if self.last is not None:
            self._act(self.last.new_lost(f"new shard {shard_id} closed fatally (close code {code})"))
        return True

    def on_new_stop(self, code: int, message: str) -> None:
        """The new set's runtime asked to stop (a crash-looping worker): roll back, never stop the cluster."""
        if self.last is not None:
            self._act(self.last.new_lost(message or f"the new set failed ({getattr(code, 'name', code)})"))

    def on_refused(self, key: int, message: str) -> bool:
        """A refused identify (the budget guard). A new shard's: roll back, the cluster goes on."""
        child = self.child
        if child is None or not self.running or not child.id_base <= key < child.id_base + self._span():
            return False
        self._act(self.last.new_lost(f"the session budget refused new shard {key - child.id_base}: {message}"))  # type: ignore[union-attr]
        return True

    def on_packet(self, handle: WorkerHandle, packet: Packet) -> None:
        r = self.last
        if r is None:
            return
        match packet:
            case ShardWarm(shard_id=shard_id, warm=True) if handle.id_base == self._new_base():
                self._warm_by[shard_id] = handle
                self._act(r.shard_warm(shard_id))
            case ShardWarm(shard_id=shard_id, warm=False) if handle.id_base == self._new_base():
                self._act(r.shard_cold(shard_id))
            case CutPassed(shard_id=shard_id, digests=dropped, marker_seq=marker_seq) if (
                    handle.id_base == (self._new_base() if self.child is not None else self.sup._rt.id_base)):
                self._marks[shard_id] = (marker_seq, dropped)  # to gate a restart of its worker after go
                if shard_id in self._unflushed:  # after go (a forced switch)
                    self._unflushed[shard_id] = marker_seq
                self._act(r.new_shard_passed(shard_id))
            case Flushed(shard_id=shard_id) if self.child is None and handle.id_base == self.sup._rt.id_base:
                self._flushed(shard_id)
            case CutPassed(shard_id=shard_id, digests=digests) if handle.id_base != self._new_base():
                self._old_digests += digests
                self._act(r.old_passed(shard_id))
            case CutLate(shard_id=shard_id, ahead=ahead):
                self._act(r.new_lost(cut_late_reason(shard_id, ahead, CUT_LEAD)))

    def _act(self, action: Action) -> None:
        if action is not Action.NONE:
            self._actions.append(action)
            self._wake.set()

    def _new_base(self) -> int:
        return self.child.id_base if self.child is not None else -1

    def _span(self) -> int:
        return self.sup._rt.max_concurrency << 20

    # --- identify routing -----------------------------------------------------------------------

    def send_identify(self, key: int, packet: Packet) -> bool:
        """Send an identify decision for coordinator key ``key`` to the set whose key range holds it."""
        rt, child = self.sup._rt, self.child
        span = self._span()
        base = key - key % span
        if base == rt.id_base:
            router: Router | None = self.sup._router
        elif child is not None and base == child.id_base and self.router is not None:
            router = self.router
        else:
            return False
        shard_id = key - base
        return router.send_to_shard(shard_id, msgspec.structs.replace(packet, shard_id=shard_id))  # type: ignore[union-attr]

    # --- the procedure -------------------------------------------------------------------------

    async def _run(self, r: Reshard) -> None:
        try:
            await self._procedure(r)
        except asyncio.CancelledError:
            if r.phase in (Phase.STARTING, Phase.WARMING, Phase.CUTTING_OVER):
                r.new_lost("the supervisor is stopping")
                await asyncio.shield(self._tell_roll_back(r))
                await asyncio.shield(self._roll_back(r))
            raise
        except Exception as exc:
            if r.new_lost(f"{type(exc).__name__}: {exc}") is Action.ROLL_BACK:
                await asyncio.shield(self._tell_roll_back(r))
                await self._roll_back(r)
            elif r.running:  # after the switch: the new set runs; what failed was closing the old one
                r.reason = f"closing the old set failed: {type(exc).__name__}: {exc}"
                r.finished(time.monotonic())
            raise
        finally:
            self._gone_old.clear()
            self._warm_by.clear()
            self._old_digests = []
            self._marks = {}
            self._mark_at = None
            self._old_fatal.clear()
            self.record = None

    async def _procedure(self, r: Reshard) -> None:
        sup, rt = self.sup, self.sup._rt
        if self._unflushed:
            log.warning("reshard: new shards %s of the last reshard never delivered what they held; a restart of their "
                        "worker is no longer gated", sorted(self._unflushed))
            self._forget_regate()
        child = self._child_runtime(r.new_total)
        router = Router(child, status=sup.status, supervisor_handler=sup.supervisor_handler)
        router.on_cutover, router.on_fatal = self.on_packet, self.on_new_fatal
        workers = Workers(child, sup.mp, handler=sup.handler, shard_options=sup.shard_options,
                          on_packet=router.on_packet)
        workers.hold = True
        self.child, self.router, self.workers = child, router, workers
        ranges = list(enumerate(split_range(r.mine_new, shards_per_worker=sup.config.shards_per_worker,
                                            workers=sup.config.workers)))
        if self._new_blocks is not None:  # --assign auto: one worker a block, its id the block's, once leased
            self.keeper = sup.block_keeper(child, workers)
            ranges = [(b, self.keeper.ranges[b]) for b in self._new_blocks]
            await self.keeper.reserve(self._new_blocks)
            self.keeper.start()
        for wid, shards in ranges:
            for s in shards:
                child.shards[s] = ShardView(s, wid)
        # in shard order, a few at a time: the first buckets' shards can identify while later workers start, instead
        # of every worker starting slowly at once on a busy machine (the old set runs on)
        starting = asyncio.Semaphore(max(1, os.cpu_count() or 1))

        async def bring_up(wid: int, shards: range) -> None:
            async with starting:
                await workers.bring_up(wid, shards, sup._policy(wid))

        for wid, shards in ranges:
            child.spawn_task(bring_up(wid, shards), "reshard_bring_up", f"reshard_bring_up worker {wid}")
        r.workers_started()
        rt.emit("reshard_phase", phase=r.phase.value)
        cut_workers: list[WorkerHandle] = []
        while True:
            now = time.monotonic()
            actions, self._actions = self._actions, []
            if rt.stopping:  # the supervisor stops (stop()): roll back, unless the cluster switched (across hosts)
                actions.append(r.new_lost("the supervisor is stopping"))
            actions.append(r.tick(now))
            for s, h in list(self._warm_by.items()):  # a restarted worker's shards warm up again (or resume)
                if child.workers.get(h.worker_id) is not h or h.exited.done():
                    del self._warm_by[s]
                    actions.append(r.shard_cold(s))
            if r.phase is Phase.CUTTING_OVER:
                actions += self._watch_cutover(r, cut_workers)
            if self.record is not None:  # across hosts: the record decides
                step, why = await self._cluster_step(r, actions)
                if step is Action.CUT and self.record.cut_at is not None:
                    cut_workers = self._cut(r, self.record.cut_at)
                    continue
                if step is Action.GO and r.phase is Phase.WARMING and self.record.cut_at is not None:
                    cut_workers = self._cut(r, self.record.cut_at)  # the cut passed unseen: cut, then switch at once
                actions = [step]
                if step is Action.GO:
                    r.cluster_go(why)
                    if r.phase is not Phase.CUTTING_OVER:
                        actions = [r.new_lost("the cluster switched before this host saw the cut")]
            if Action.MARK in actions and self.record is None:
                self._mark()
            if Action.ROLL_BACK in actions:
                await self._roll_back(r)
                return
            if Action.GO in actions and r.phase is Phase.CUTTING_OVER:
                await self._go(r)
                return
            if self.record is None and r.phase is Phase.WARMING and len(r.warm) == r.new_total and all(
                    h.state == WorkerState.RUNNING for h in child.workers.values()):
                cut_workers = self._cut(r)  # every new shard warm, and no new worker restarting (it would miss the cut)
            self._wake.clear()
            if self._actions:
                continue
            timeout = min(r.next_deadline() - now, 0.1 if r.phase is Phase.CUTTING_OVER else 1.0)
            if self.record is not None:
                timeout = min(timeout, CLUSTER_POLL)
            try:
                async with asyncio.timeout(max(0.0, timeout)):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _child_runtime(self, total: int) -> Runtime:
        rt = self.sup._rt
        child = self._side_runtime()
        child.stop = self.on_new_stop
        child.shard_total = total
        child.id_base = self._span() if rt.id_base == 0 else 0
        return child

    def _side_runtime(self) -> Runtime:
        """A runtime of its own workers, shards and sessions that shares the supervisor's identify queue, coordinator,
        counters and tasks: the new set's until the switch, and the old set's after it (its identify reports still
        reach the coordinator, under its key range; its last sessions and shard states land nowhere)."""
        rt = self.sup._rt
        retired = Runtime(rt.config, stop=lambda code, message: None, token=rt.token)
        for name in _SHARED:
            setattr(retired, name, getattr(rt, name))
        return retired

    def _cut(self, r: Reshard, at: float | None = None) -> list[WorkerHandle]:
        """Every new shard is warm: send the cut (at wall time ``at``, default :data:`CUT_LEAD` from now) to both
        sets."""
        rt, child = self.sup._rt, self.child
        assert child is not None
        at = time.time() + CUT_LEAD if at is None else at
        # an old worker (re)started during the cutover is gated too: it gets the cut right after its Assign
        def gate(handle: WorkerHandle) -> None:
            self._send(handle, Cutover(at, True))
            if self._mark_at is not None:
                self._send(handle, CutMark(self._mark_at))

        self.sup._workers.after_assign = gate
        r.cut_sent(at, time.monotonic(), lead=max(0.0, at - time.time()))
        log.info("reshard: all %d new shards are ready; cutting over at %.3f", r.new_total, at)
        rt.emit("reshard_phase", phase=r.phase.value)
        sent = [h for h in child.workers.values() if self._send(h, Cutover(at, False))]
        for h in rt.workers.values():  # an old worker restarting meanwhile gets it after its Assign
            self._send(h, Cutover(at, True))
        for s in self._gone_old:
            self._act(r.old_passed(s))
        if not r.mine_old:  # a host that held no block of the old layout: nothing of it to pass
            self._act(Action.GO)
        return sent

    def _mark(self) -> None:
        """Every new shard passed its marker (on every host): the old set sends its marker heartbeats, after
        :data:`~cluster.cutover.FANOUT_SKEW`. An old worker restarted from now on gets the mark after its cut."""
        if self._mark_at is not None:
            return
        self._mark_at = at = time.time() + FANOUT_SKEW
        log.info("reshard: every new shard passed its marker; the old set marks at %.3f", at)
        for h in self.sup._rt.workers.values():
            self._send(h, CutMark(at))

    def _watch_cutover(self, r: Reshard, handles: list[WorkerHandle]) -> list[Action]:
        """A new worker lost during the cutover (its held events with it): roll back. An old one is restarted as
        always, gated with the same cut (``after_assign``), and its shards pass when it resumed past the cut (or
        the cut timeout forces the switch)."""
        return [r.new_lost(f"new worker {h.worker_id} exited during the cutover") for h in handles if h.exited.done()]

    async def _go(self, r: Reshard) -> None:
        """The switch: the new set delivers, the old set drops; the new layout becomes the cluster's; the old
        sessions are closed with 1000 and their workers retired. A new worker restarted from now on, before its shards
        delivered what they held, resumes their sessions before it and gates the replay again (:class:`Regate`), until
        each shard says it is done (:class:`Flushed`)."""
        sup, rt, child = self.sup, self.sup._rt, self.child
        assert child is not None and self.workers is not None and self.router is not None
        if r.cut_at is not None:  # old shards that are gone pass at once: still, the new set takes over at the cut
            await asyncio.sleep(max(0.0, r.cut_at - time.time()))
        await asyncio.sleep(GO_GRACE)  # pre-cut creation ids that reach the old set late are still delivered
        if r.reason:
            log.warning("reshard: %s", r.reason)
        old_workers = sup._workers
        old_workers.after_assign = None
        old_handles = [h for h in rt.workers.values()]
        for h in old_handles:
            self._send(h, CutoverEnd(True))
        digests = await self._cluster_digests()
        for h in child.workers.values():  # the new set drops what the old one delivered between the two markers
            self._send(h, CutoverEnd(True, digests))
        now = time.monotonic()
        # the old workers' last reports (sessions, shard states) must not land on the new set's shards of the same ids
        retired = sup._router.rt = self._side_runtime()
        retired.workers = dict(rt.workers)  # the old keeper renews (fences) the old workers there until drained
        # the new layout becomes the cluster's
        rt.workers, rt.shards, rt.sessions = child.workers, child.shards, child.sessions
        rt.shard_total, rt.id_base = child.shard_total, child.id_base
        rt.sessions_version += 1
        self.workers.rt = rt
        self.workers.hold = False
        self.router.rt = rt
        self.router.on_fatal, self.router.host, self.router.remote = (sup._router.on_fatal, sup._router.host,
                                                                      sup._router.remote)
        sup._workers, sup._router = self.workers, self.router
        # a new worker restarted before its shards delivered what they held resumes before it, behind rebuilt gates
        assert r.cut_at is not None
        self._unflushed = {s: self._marks.get(s, (None, []))[0] for s in r.mine_new}
        self._regate_with = (r.cut_at, list(digests))
        self.workers.after_assign = self._regate_worker
        for h in rt.workers.values():  # the supervisor did not ping the new set before: its silence starts now
            h.heartbeat = HeartbeatMonitor(rt.config.ipc_heartbeat_interval, rt.config.ipc_heartbeat_missed, now=now)
        old_keeper = sup.blocks
        if self.keeper is not None:  # --assign auto: the new layout's leases are the host's, planned from now on
            # the old layout's keeper renews its leases until its workers are drained, and claims nothing more (the
            # other hosts release theirs once switched); it tracks its workers apart from the new ones of the same ids
            old_keeper.rt, old_keeper.planning = retired, False
            self.keeper.adopt(rt)
            sup.blocks = self.keeper
            sup._cross.sessions.fence = self.keeper.fence
        self.child = self.workers = self.router = self.keeper = None
        r.switched(now)
        if r.new_shards is not None:
            await self._move_host(r.new_total, r.new_shards)
        log.info("reshard: switched to %d shards %.1f s after the start; closing the %d old sessions", r.new_total,
                 now - r.started, r.old_total)
        rt.emit("reshard_phase", phase=r.phase.value)
        await asyncio.shield(asyncio.gather(*(old_workers.drain(h, resumable=False) for h in old_handles
                                              if not h.exited.done())))
        if old_keeper is not None and old_keeper is not sup.blocks:
            await asyncio.shield(old_keeper.retire())  # the old layout's leases go (their sessions went at go)
        r.finished(time.monotonic())
        log.info("reshard done: %d shards, the old set's workers retired", r.new_total)
        rt.emit("reshard_phase", phase=r.phase.value)
        await sup._loops.save_state()

    def _regate_worker(self, handle: WorkerHandle) -> None:
        """Right after a new-set worker's Assign (restarted after go): gate its shards that had not delivered all they
        held (:class:`cluster.cutover.ResumedGate`)."""
        marks = {s: m for s, m in self._unflushed.items() if s in handle.shard_ids}
        if marks:
            log.info("worker %d: shards %s resume what they held at the switch, gated", handle.worker_id, sorted(marks))
            dropped = {s: self._marks[s][1] for s in marks if s in self._marks}
            self._send(handle, Regate(self._regate_with[0], marks, self._regate_with[1], dropped))

    def _flushed(self, shard_id: int) -> None:
        """A new shard delivered what it held after go: a restart of its worker needs no gate for it any more."""
        if shard_id in self._unflushed:
            del self._unflushed[shard_id]
            if not self._unflushed:
                self._forget_regate()

    def _forget_regate(self) -> None:
        self._unflushed = {}
        if self.sup._workers.after_assign == self._regate_worker:
            self.sup._workers.after_assign = None

    async def _cluster_digests(self) -> list[int]:
        """What the old set delivered without a creation id while gated: across hosts, every host's (a guild's old
        and new shards may run on two hosts), else (or if Redis cannot say) this host's."""
        store = self._store
        if self.record is None or store is None:
            return self._old_digests
        try:
            async with asyncio.timeout(2.0):
                return list(await store.digests())
        except (CoordinatorUnavailable, TimeoutError) as exc:
            log.warning("reshard: the other hosts' old-set digests could not be read (%s): events without a creation "
                        "id delivered by another host's old shard at the cut may reach a handler twice", exc)
            return self._old_digests

    async def _move_host(self, total: int, shards: range | None) -> None:
        """Across hosts: this host's registry record names its new layout (and new shards) from now on."""
        sup, store = self.sup, self._store
        if store is None or sup.host is None:
            return
        if sup.blocks is not None or shards is None:  # --assign auto: no range in the registry, only the layout
            sup.host = msgspec.structs.replace(sup.host, shard_total=total)
        else:
            sup.host = msgspec.structs.replace(sup.host, first=shards.start, last=shards.stop - 1, shard_total=total)
        try:
            await store.move_host(sup.host, sup.config.host_ttl)
        except CoordinatorUnavailable as exc:
            log.warning("could not write this host's new shards to the registry: %s", exc)
        sup.keep_registered()  # renews (and, if Redis lost it, rewrites) the new record from now on

    async def _roll_back(self, r: Reshard) -> None:
        """Close the new set (never resumed again); the old set goes on, delivering what it held."""
        rt, child, workers = self.sup._rt, self.child, self.workers
        log.error("reshard to %d shards rolled back: %s", r.new_total, r.reason)
        if r.cut_at is not None:
            for h in rt.workers.values():
                self._send(h, CutoverEnd(False))
        self.sup._workers.after_assign = None  # an old worker restarted from now on serves ungated
        if child is not None and workers is not None:
            child.stopping = True  # no new worker is (re)started
            await workers.drain_all(resumable=False)
        if self.keeper is not None:  # --assign auto: the new layout's leases go; the old blocks move again
            await self.keeper.retire()
        if self.sup.blocks is not None:
            self.sup.blocks.frozen = False
        self.child = self.workers = self.router = self.keeper = None
        r.rolled_back(time.monotonic())
        rt.emit("reshard_phase", phase=r.phase.value)
        if self._old_fatal:  # the old set serves on, without these shards: what a fatal close always does
            shard_id, code = next(iter(self._old_fatal.items()))
            exit_code, text = for_close_code(code)
            rt.stop(exit_code, f"shard {shard_id}: {text} (closed during the reshard, which rolled back)")

    async def stop(self) -> None:
        """The supervisor stops (``rt.stopping``): roll a reshard back before the switch (across hosts: switch if the
        cluster did), or finish closing the old set after it.

        The procedure sees the stop at its next step and rolls back itself; its task is not cancelled: a Redis call
        can swallow a cancel (Python 3.11's ``wait_for`` in redis-py returns its result instead), and a reshard that
        missed it went on to switch while its host stopped. If it is still running after the wait, the supervisor's
        shutdown cancels it with its other tasks (:meth:`_run` rolls back then)."""
        task = self._task
        if task is None or task.done():
            return
        self._wake.set()
        await asyncio.wait([task], timeout=2 * self.sup.config.shutdown_timeout)

    def _send(self, handle: WorkerHandle, packet: Packet) -> bool:
        if handle.state != WorkerState.RUNNING or handle.channel is None or handle.channel.closed:
            return False
        try:
            handle.channel.send(packet)
        except ChannelClosed:
            return False
        return True

    def snapshot(self) -> ReshardSnapshot | None:
        r = self.last
        if r is None:
            return None
        now = time.monotonic()
        end = r.finished_at if r.finished_at is not None else now
        part = r.new_shards
        return ReshardSnapshot(r.phase.value, r.old_total, r.new_total, len(r.warm), len(r.passed), end - r.started,
                               None if r.switched_at is None else r.switched_at - r.started, r.reason,
                               shards=None if part is None else (part.start, part.stop - 1),
                               epoch=self._seen_epoch if part is not None else None,
                               leader=self._leader if part is not None else None,
                               unmarked=tuple(sorted(set(r.mine_new) - r.new_passed))
                               if r.phase is Phase.CUTTING_OVER else ())
