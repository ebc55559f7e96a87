"""``--assign auto``: the supervisor's side of the block leases (:mod:`cluster.leases`), one worker per block.

:class:`BlockKeeper` renews this host's leases every ``lease_ttl / 3`` and tells each block's worker its new
deadline (:class:`~ipc.protocol.LeaseDeadline`, which the worker's :class:`~cluster.fence.Fence` enforces); it
claims the free blocks of its fair share at once (a new cluster, or a dead host's expired leases: a *failover*)
and starts a worker for each that resumes the sessions found in Redis; a claimed block stays marked *starting*
(renewed with its lease) until all its shards are active; and it hands off one block at a time when another host
has fewer than its share and no block in the cluster is starting (drain resumably, save the sessions under the
block's epoch, release the lease; the other host claims it and resumes); :mod:`cluster.leases` says why the
moves are paced so. A block whose lease is lost or whose deadline passes (Redis unreachable for
``lease_ttl - margin``) has its worker killed at once (no frame: the sessions stay resumable) and is never
restarted here. On a clean stop every block is drained, saved and released, so that the other
hosts take them over with a resume and no identify.

During a live reshard (:mod:`cluster.resharder`) a host has two keepers: this one, *frozen* (it hands nothing
off: the reshard counts on its old shards), and one for its share of the new layout's blocks, which it claims at
once (:meth:`BlockKeeper.reserve`) and renews without planning while the new set warms up. At the switch the new
keeper takes over and plans (:meth:`BlockKeeper.adopt`) and the old one releases its leases without saving
anything (:meth:`BlockKeeper.retire`: the old layout's sessions went with it); a rollback retires the new one.
A host that took no part (it joined meanwhile) keeps its old keeper until it sees the new layout: its claims are
refused from the switch on (:class:`~cluster.leases.LayoutMoved`). Leases held under the keys of an earlier version
(a host of it started after this one) stop this host's claims and handoffs while they are held (:meth:`tick`).

Every move is one log line ``lease <event> block=<b> shards=<a>-<z> epoch=<e> reason=<r>`` and is counted in
:attr:`BlockKeeper.moves` (``(event, reason)``), which ``/metrics`` exports.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from cluster.hosts import HOST_RENEW_INTERVAL, read_hosts
from cluster.coordination.redis_conn import keep_trying, on_trouble
from cluster.error import ReshardRefused
from cluster.leases import (START_TIMEOUT, LayoutMoved, Lease, LeaseStore, Renewal, Takeover, blocks, deadline_after,
                            lease_key, lease_value, legacy_leases, plan, renew_interval)
from cluster.reshard_plan import CLUSTER_RUNNING, reshard_key
from cluster.restart import RestartPolicy
from cluster.runtime import Runtime, ShardView, WorkerHandle
from cluster.snapshot import BlockSnapshot
from cluster.workers import Workers
from ipc import ChannelClosed
from ipc.protocol import LeaseDeadline, SessionInfo

__all__ = ["BlockKeeper"]

log = logging.getLogger("cluster")

GUARD_EVERY = 0.1
"""Seconds between two checks of the blocks' deadlines in the supervisor."""
RETRY_EVERY = 0.2
"""Seconds before a lease tick that failed (Redis unreachable) is tried again."""
FRESH_HOST = 2.5 * HOST_RENEW_INTERVAL
"""A host whose registry record was renewed within this many seconds counts as live for the fair shares: a
killed or frozen host drops out after it, long before its record expires, so that the survivors' shares grow
and they claim its blocks as soon as its leases expire (and hand nothing to a host that cannot take it)."""


LEGACY_LOG_EVERY = 60.0
"""Seconds between two error lines about leases held by hosts of an earlier version (:meth:`BlockKeeper.tick`)."""


class BlockKeeper:
    """Holds, renews, claims and hands off this host's blocks (see the module docstring).

    ``load(shards)`` returns the sessions to resume for ``shards`` (the Redis session store); ``save(sessions)``
    writes sessions (fenced by :meth:`fence`); ``policy(block)`` is a new restart policy for a block's worker."""

    def __init__(self, rt: Runtime, workers: Workers, leases: LeaseStore, *, client: Any, ns: str,
                 host_ttl: float, shards_per_worker: int | None,
                 load: Callable[[range], Awaitable[dict[int, SessionInfo]]],
                 save: Callable[[list[SessionInfo]], Awaitable[None]],
                 policy: Callable[[int], RestartPolicy]) -> None:
        self.rt, self.workers, self.leases = rt, workers, leases
        self.client, self.ns, self.me, self.ttl, self.host_ttl = client, ns, leases.owner, leases.ttl, host_ttl
        self.ranges = blocks(rt.shard_total, shards_per_worker)
        self.planning = True  # False: a reshard's new layout before the switch (renewed, not planned)
        self.frozen = False  # a reshard runs on this host: no handoff
        self._loops: list[asyncio.Task[Any]] = []
        self.load, self.save, self.policy = load, save, policy
        self.held: dict[int, int] = {}  # block -> epoch
        self.deadline: dict[int, float] = {}  # block -> monotonic time it must be stopped by
        self.starting: dict[int, float] = {}  # block -> when it was claimed, until all its shards are active
        self.moving: int | None = None  # the block being handed off (one at a time)
        self.moves: Counter[tuple[str, str]] = Counter()  # (claim|loss|handoff, reason)
        self.view: tuple[BlockSnapshot, ...] = ()  # the blocks as last read, for /status
        self.leaving = False
        self.layout_moved = False  # a claim was refused: the cluster's layout is another (a reshard switched)
        self.legacy = 0  # leases held under the keys before layouts by hosts of an earlier version, as last read
        self._legacy_logged = (0, -LEGACY_LOG_EVERY)  # (count, when) last logged
        self._moving_task: asyncio.Future[None] | None = None  # not cancelled at shutdown: a handoff completes
        self._ticking: asyncio.Future[None] | None = None  # the tick under way
        self._run_id: str | None = None  # the Redis server's run_id: a new one is a restart, maybe without data
        self._grace_until = 0.0  # after a Redis restart, no claims until every owner could write its leases back
        workers.before_assign = self.send_deadline
        workers.may_run = self.may_run

    # --- hooks --------------------------------------------------------------------------------

    def may_run(self, worker_id: int) -> bool:
        """A block's worker may be (re)started only while its lease is held and its deadline is ahead."""
        return worker_id in self.held and time.monotonic() < self.deadline.get(worker_id, 0.0)

    def send_deadline(self, handle: WorkerHandle) -> None:
        """Tell a block's worker its deadline (before its Assign, and after every renewal)."""
        deadline = self.deadline.get(handle.worker_id)
        if deadline is None or handle.channel is None or handle.channel.closed:
            return
        try:
            handle.channel.send(LeaseDeadline(deadline))
        except ChannelClosed:
            pass

    def fence(self, shard_id: int) -> tuple[str, str]:
        """The lease a session write for ``shard_id`` is checked against (never matching if the block is not ours)."""
        block = self._block_of(shard_id)
        epoch = self.held.get(block)
        return lease_key(self.leases.ns, block), lease_value(epoch, self.me) if epoch is not None else "-"

    def _block_of(self, shard_id: int) -> int:
        for b, r in enumerate(self.ranges):
            if shard_id in r:
                return b
        return -1

    # --- loops ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Run :meth:`run` and :meth:`guard` as supervisor loops until :meth:`retire` (or the supervisor stops)."""
        self._loops = [self.rt.spawn_loop("leases", self.run), self.rt.spawn_loop("lease_guard", self.guard)]

    async def run(self) -> None:
        """Renew, claim and hand off for as long as the host runs (Redis trouble is waited out)."""
        while not self.leaving:
            self._ticking = asyncio.ensure_future(self.tick())  # a stop waits for it: never a claim cut in half
            with on_trouble() as caught:
                await asyncio.shield(self._ticking)
            if caught.exc is not None:
                self.rt.errors[("leases", type(caught.exc).__name__)] += 1
                await asyncio.sleep(RETRY_EVERY)  # the deadlines are near: try again soon, not a tick later
                continue
            await asyncio.sleep(renew_interval(self.ttl))

    async def guard(self) -> None:
        """Stop every block whose deadline passed (its renewals failed): the supervisor's side of the fence."""
        while True:
            now = time.monotonic()
            for block, deadline in list(self.deadline.items()):
                if now >= deadline:
                    await self._lose(block, "expired")
            await asyncio.sleep(GUARD_EVERY)

    async def tick(self) -> None:
        await self.renew()
        if self.leaving or not self.planning:
            return
        hosts = await self.live_hosts()
        leases = await self.leases.read(len(self.ranges))
        run_id = (await self.client.info("server")).get("run_id")
        if self._run_id is not None and run_id != self._run_id:  # read after the leases: they may be from it
            self._grace_until = time.monotonic() + self.ttl
            log.warning("the coordinator's Redis restarted (run_id changed): claiming nothing for %g s, while the "
                        "hosts write back the leases it lost", self.ttl)
        self._run_id = run_id
        self._show(leases)
        if time.monotonic() < self._grace_until or await self._legacy_held():
            return
        # no handoff while a reshard runs in the cluster, on any host: not only on those taking part once they
        # joined it (frozen), but before (a host joins at its next poll) and on one that joined the cluster meanwhile
        # (an old block handed to it would run past the switch, until it follows the new layout)
        phase = await self.client.hget(reshard_key(self.ns), "phase")
        frozen = self.frozen or (phase is not None and phase.decode() in CLUSTER_RUNNING)
        moves = plan(self.me, hosts, leases, len(self.ranges), handing_off=self.moving is not None or frozen)
        try:
            for block in moves.claim:
                await self._claim(block)
        except LayoutMoved as exc:  # the resharder follows the new layout (a poll away): until then, nothing moves
            if not self.layout_moved:
                log.warning("lease claims refused: %s, not %d shards (this host follows it shortly)", exc,
                            self.rt.shard_total)
            self.layout_moved = True
            return
        if moves.claim:
            self._show(leases | {b: Lease(b, self.me, e, self.ttl) for b, e in self.held.items()})
        if moves.hand_off is not None and moves.hand_off in self.held and not self.leaving:
            self.moving = moves.hand_off
            self._moving_task = asyncio.ensure_future(self._hand_off(moves.hand_off, "rebalance"))
            self._moving_task.add_done_callback(self._handed_off)

    async def _legacy_held(self) -> bool:
        """Whether hosts of an earlier version hold leases under the keys before layouts (started after this host:
        the start's check cannot see them). They and this version would run the same blocks: this host keeps what
        it runs but claims and hands off nothing until they are gone, and says so (an error log when the count
        changes and once a minute, ``/status``'s ``legacy_leases`` and the ``cluster_legacy_leases`` gauge)."""
        self.legacy = await legacy_leases(self.client, self.ns, len(self.ranges))
        now = time.monotonic()
        if self.legacy and (self.legacy != self._legacy_logged[0] or now - self._legacy_logged[1] >= LEGACY_LOG_EVERY):
            log.error("%d block lease(s) under %slease:<block> are held by hosts of an earlier shardstack version "
                      "(started after this one): they may run blocks this version runs too; stop them (this host "
                      "claims and hands off nothing until they are gone)", self.legacy, self.ns)
            self._legacy_logged = (self.legacy, now)
        elif not self.legacy:
            self._legacy_logged = (0, -LEGACY_LOG_EVERY)
        return self.legacy > 0

    def _show(self, leases: dict[int, Lease]) -> None:
        self.view = tuple(
            BlockSnapshot(b, r.start, r.stop - 1, le.owner if le else None, le.epoch if le else None,
                          le.age(self.ttl) if le else None, b in self.held)
            for b, r in enumerate(self.ranges) for le in (leases.get(b),))

    async def live_hosts(self) -> list[str]:
        """The ids of the hosts whose record was renewed within :data:`FRESH_HOST` seconds."""
        return sorted(r.host_id for r in await read_hosts(self.client, self.ns, renewed_within=FRESH_HOST,
                                                          ttl=self.host_ttl))

    def _still_starting(self) -> set[int]:
        """The blocks claimed whose shards are not all active yet (for at most :data:`START_TIMEOUT`)."""
        now = time.monotonic()
        for block, since in list(self.starting.items()):
            if block not in self.held or now - since > START_TIMEOUT or self.workers.all_active(self.ranges[block]):
                del self.starting[block]
        return set(self.starting)

    async def _started(self, block: int, epoch: int) -> None:
        """Once the block's shards are all active, say so in Redis at once (the next renewal would say it too, up
        to a renewal interval later): a rebalance waiting for it moves its next block sooner."""
        await self.workers.wait_active(self.ranges[block], START_TIMEOUT)
        if self.held.get(block) != epoch:
            return
        self.starting.pop(block, None)
        with on_trouble():  # on trouble the next renewal clears the mark
            await self.leases.started(block, epoch)

    async def renew(self) -> None:
        sent = time.monotonic()
        # not a block past its deadline: the guard stops it, and this host writes nothing more for it (a renewal
        # now would extend its lease, or write back one that expired, after the host let the block go)
        held = {b: e for b, e in self.held.items() if sent < self.deadline.get(b, 0.0)}
        if not held:
            return
        async with asyncio.timeout(renew_interval(self.ttl)):
            results = await self.leases.renew(held, self._still_starting())
        for block, result in results.items():
            if self.held.get(block) != held[block]:
                continue  # released or lost meanwhile
            if result == Renewal.LOST:
                await self._lose(block, "taken")
                continue
            if result == Renewal.RESTORED:
                log.warning("lease restored block=%d epoch=%d reason=redis_lost_it", block, held[block])
            self.deadline[block] = deadline_after(sent, self.ttl)
            handle = self.rt.workers.get(block)
            if handle is not None:
                self.send_deadline(handle)

    # --- moves -----------------------------------------------------------------------------------

    async def _claim(self, block: int) -> None:
        sent = time.monotonic()
        got = await self.leases.claim(block)
        if got is None:
            return  # another host was faster
        epoch, how = got
        if self.leaving:  # the stop began while the claim was on its way: give it straight back
            await self.leases.release(block, epoch)
            return
        self.held[block], self.deadline[block] = epoch, deadline_after(sent, self.ttl)
        self.starting[block] = sent
        self._moved("claim", block, epoch, how.value)
        if how == Takeover.FAILOVER:
            self.moves[("failover", "lease_expired")] += 1
        shards = self.ranges[block]
        try:
            sessions = await self.load(shards)
        except BaseException:  # no sessions to resume: give the block back (or let its lease expire), retry later
            self.held.pop(block, None)
            self.deadline.pop(block, None)
            await asyncio.shield(self.leases.release(block, epoch))
            raise
        if self.held.get(block) != epoch:
            return  # handed over (the host is leaving) or lost while the sessions loaded
        self.rt.sessions.update(sessions)
        for s in shards:
            self.rt.shards[s] = ShardView(s, block)
        self.rt.spawn_task(self.workers.bring_up(block, shards, self.policy(block)), "leases",
                           f"bring_up block {block}")
        self.rt.spawn_task(self._started(block, epoch), "leases", f"started block {block}")

    async def reserve(self, blocks: range) -> None:
        """A reshard's new layout: claim ``blocks`` (this host's share, free until now), whose workers the resharder
        starts; they are renewed (and marked starting until their shards are active) but nothing is planned until
        :meth:`adopt`. ReshardRefused if one is leased already (a leftover of an earlier try: it rolls back)."""
        self.planning = False
        for block in blocks:
            sent = time.monotonic()
            got = await self.leases.claim(block, reshard=True)
            if got is None:
                raise ReshardRefused(f"block {block} of the new {self.rt.shard_total}-shard layout is leased already")
            epoch = got[0]
            self.held[block], self.deadline[block] = epoch, deadline_after(sent, self.ttl)
            self.starting[block] = sent
            self._moved("claim", block, epoch, "reshard")

    def adopt(self, rt: Runtime) -> None:
        """The switch: this layout is the host's (``rt`` its runtime now); plan it from the next tick on."""
        self.rt, self.planning = rt, True

    async def retire(self, *, stop: bool = False) -> None:
        """The end of this layout on this host (the reshard switched away from it, or rolled back from it): stop
        renewing and release every lease held, saving nothing (its sessions went with the old layout, or were
        never saved). The resharder drained the workers; with ``stop`` (the cluster resharded without this host)
        they are killed here first."""
        self.planning = False
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._ticking is not None:  # shielded: a claim or renewal under way lands first
            await asyncio.wait([self._ticking], timeout=2 * renew_interval(self.ttl))
        held, self.held = dict(self.held), {}
        self.deadline.clear()
        for block in sorted(held) if stop else ():
            handle = self.rt.workers.get(block)
            self._forget(block)
            if handle is not None:
                handle.retiring = True
                await self.workers.kill(handle, "the cluster resharded")
        for block, epoch in sorted(held.items()):
            with on_trouble():  # Redis away: the lease expires by itself
                await self.leases.release(block, epoch)
            self._moved("release", block, epoch, "resharded")
        with on_trouble():  # the last host to let the layout go drops its epoch counters and markers
            if await self.leases.forget(len(self.ranges)):
                log.info("lease counters and markers under %s deleted (the cluster's layout is another, and no lease "
                         "of this one is left)", self.leases.ns)

    async def _hand_off(self, block: int, reason: str) -> None:
        """Drain the block resumably, save its sessions under its epoch, release its lease."""
        try:
            epoch = self.held.get(block)
            if epoch is None:
                return
            handle = self.rt.workers.get(block)
            if handle is not None:
                await self.workers.drain(handle)
            shards = self.ranges[block]
            if self.held.get(block) != epoch:
                return  # lost while draining
            try:
                await self.save([s for s in self.rt.sessions.values() if s.shard_id in shards])
            except OSError as exc:
                log.warning("block %d: its sessions could not be saved before the handoff (%s); the next owner "
                            "resumes from the last saved ones", block, exc)
            self._forget(block)
            self.held.pop(block, None)
            self.deadline.pop(block, None)
            await self.leases.release(block, epoch)
            self._moved("handoff", block, epoch, reason)
        finally:
            if self.moving == block:
                self.moving = None

    def _handed_off(self, task: asyncio.Future[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.rt.failed("leases", exc, "a block handoff failed", "its lease expires by itself")

    async def leave(self) -> None:
        """A clean stop: hand every block over (drained together, then saved and released)."""
        self.leaving = True
        renewing = asyncio.ensure_future(keep_trying(self.renew, renew_interval(self.ttl)))
        try:
            if self._ticking is not None:  # its claims land in held (or are given back at once)
                await asyncio.wait([self._ticking], timeout=2 * renew_interval(self.ttl))
            if self._moving_task is not None:
                await asyncio.gather(self._moving_task, return_exceptions=True)
            results = await asyncio.gather(*(self._hand_off(b, "leaving") for b in sorted(self.held)
                                             if b != self.moving), return_exceptions=True)
            for exc in results:
                if isinstance(exc, Exception):
                    self.rt.failed("leases", exc, "a block could not be handed over", "its lease expires by itself")
        finally:
            renewing.cancel()

    async def _lose(self, block: int, reason: str) -> None:
        """Stop a block at once: its lease is another host's, or may be soon."""
        epoch = self.held.pop(block, None)
        self.deadline.pop(block, None)
        if epoch is None:
            return
        handle = self.rt.workers.get(block)
        self._forget(block)
        self._moved("loss", block, epoch, reason)
        if handle is not None:
            handle.retiring = True
            await self.workers.kill(handle, f"lease {reason}")

    def _forget(self, block: int) -> None:
        self.rt.workers.pop(block, None)
        for s in self.ranges[block]:
            self.rt.shards.pop(s, None)
            self.rt.sessions.pop(s, None)

    def _moved(self, event: str, block: int, epoch: int, reason: str) -> None:
        self.moves[(event, reason)] += 1
        r = self.ranges[block]
        level = logging.WARNING if event == "loss" else logging.INFO
        log.log(level, "lease %s block=%d shards=%d-%d epoch=%d reason=%s host=%s", event, block, r.start,
                r.stop - 1, epoch, reason, self.me)
        self.rt.emit(f"lease_{event}", block=block, epoch=epoch, reason=reason)
