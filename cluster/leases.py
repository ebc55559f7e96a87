"""Block leases for ``--assign auto``: which host runs which block of shards, with fencing.

The shards are cut into blocks of ``--shards-per-worker`` (:func:`blocks`, one worker each). A host runs a
block while it holds the block's lease, ``<ls>lease:<block>`` in Redis, whose value is ``<epoch>:<owner>``
and which expires ``lease_ttl`` seconds after its last renewal. Every key of a block is under its layout's prefix
``<ls> = <ns>shards<N>:`` (:func:`layout_ns`, ``N`` the shard count): a live reshard (:mod:`cluster.resharder`)
leases the new layout's blocks beside the old layout's, and block 0 of 16 shards is another key than block 0 of 8.
The epoch comes from ``<ls>lease-epoch:<block>`` (INCR at each claim), so every tenure of a block has its own,
larger, number: the fencing token. Every write a host makes about a block (a renewal, a release, its shards'
sessions) is a Lua script that first checks that the lease still holds the writer's ``<epoch>:<owner>``, and refuses
otherwise (:func:`fence_check`).

Planning is pure (:func:`quota`, :func:`plan`): from a snapshot of the live hosts and the leases it says which
free blocks this host claims (up to its fair share: ``total blocks / live hosts``, the remainder going to the
first hosts by id) and which one block it hands off (when another host holds less than its share, no block is
free or starting, and this host is the most loaded of those above their share).

Pacing (a deliberate choice, one rule for each kind of move):

* **Rebalancing moves one block at a time in the whole cluster**: the next handoff starts only once the last
  moved block was claimed *and is running again*. A claimed block is *starting* until every one of its shards
  is active on its new owner (or :data:`START_TIMEOUT` passed); its owner keeps ``<ns>lease-starting:<block>``
  (the epoch) meanwhile: set by the claim, refreshed by each renewal, deleted once the shards are active, and
  gone with the lease if the owner dies. Every host sees it in :func:`plan`'s snapshot (:attr:`Lease.starting`).
  So a rebalance never has more than one block reconnecting, and never moves a block whose shards are still
  identifying (a shard moved between its Identify and its saved session would identify again). A host that
  starts alone claims every free block; the hosts that join after it get theirs once its shards are up.
* **Failover claims at once**: a survivor claims every free block of its share in one round and starts them all.
  Those blocks are dark already, every shard in them resumes (a resume needs no identify slot, so nothing limits
  it on Discord's side), and the load is bounded by the host's share of a dead host's blocks, no more than what
  the host started at its own bring-up. One at a time would add a worker start and a resume per further block
  to the dark time (3 hosts x 16 shards in blocks of 4 give each survivor 2 blocks; the benchmark's failover
  median leaves 1.5 s under its target of TTL + 2 s).
* **A live reshard moves no block of the old layout by rebalancing** (a dead host's blocks still fail over) while
  it runs on this host; the hosts taking part claim the new layout's blocks, each its :func:`quota` of them as one
  consecutive run (:func:`cluster.reshard_plan.new_blocks`: the plan's fixed point, so nothing moves after the
  switch), marked starting until their shards are active. After the switch the hosts plan the new layout only,
  by these same rules; the old layout's leases are released (or expire with a dead host). A claim checks the
  cluster's layout (``<ns>layout``, which the switch sets) in its script and is refused (:class:`LayoutMoved`) if
  it names another shard count: a host that has not followed the switch yet (one that joined during the reshard
  polls for it) claims none of the old blocks the switched hosts release, whose sessions went at the switch (a
  reshard's own claims of its new blocks, before the switch, are exempt). Nor does a renewal write back a lease of
  such a layout, and the last host to release one deletes the layout's counters and markers
  (:meth:`LeaseStore.forget`): no lease of it can come back, so its epochs need not be kept.
* **A host leaving (SIGTERM) hands all its blocks over at once** (drained together, then each saved and
  released): it must be done within its grace period, and the others claim them at once, as in a failover.

Timing argument (why two live sessions for one shard never overlap):

* The host renews its leases every ``ttl / 3`` (:data:`RENEW_FRACTION`). A renewal sent at ``t_send`` (the
  host's monotonic clock, read *before* the command goes out) that succeeds extends the host's own
  deadline for the block to ``t_send + ttl - margin`` (:func:`deadline_after`), ``margin = ttl / 4``.
* Redis sets the key's expiry when it *runs* the renewal, at or after ``t_send``: the key lives until
  at least ``t_send + ttl`` (on Redis's clock; a rate difference between the two clocks within
  ``margin / ttl`` = 25 % is covered).
* Past its deadline a host stops the block's shards at once, with a resumable close that sends nothing
  (the transport is aborted), and stops writing for the block. Each worker checks the deadline itself
  before any send and from a watchdog, so a host that was paused (SIGSTOP, a stalled VM) and wakes up
  late finds its deadline passed *before* any timer of its own fires and sends nothing.
* Another host can claim the block only after the key is gone from Redis, i.e. after ``t_send + ttl``,
  which is ``margin`` after the old owner stopped. Delays and pauses on the old owner only make it stop
  earlier relative to the key, never later; and a write it still makes late is refused by the epoch check.
* A renewal that finds the key missing while the host is still within its deadline means Redis lost its
  data (a restart without persistence): the key could not have expired yet. The host writes the lease
  back with its own epoch (and raises the epoch counter to it) unless another host claimed the block
  meanwhile (it holds the key, or the epoch counter is past this tenure's), in which case the block is lost
  and stopped, or the host released it itself (the released marker holds this epoch: a renewal still in
  flight when the release ran must not bring the lease back). So that no host claims a block whose lease is
  about to be written back, a host that sees Redis's ``run_id`` change claims nothing for ``ttl``: every
  owner renews (and so writes its leases back) within ``ttl / 3``. So a Redis restart takes nothing over.

The cost of the TTL: a dead host's blocks are dark for up to ``ttl`` (plus the resume), and a host
that cannot reach Redis for ``ttl - margin`` stops its blocks even though Discord is fine.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from cluster.error import ConfigError
from cluster.layout import split

__all__ = [
    "LEASE_TTL",
    "MARGIN_FRACTION",
    "RENEW_FRACTION",
    "START_TIMEOUT",
    "LayoutMoved",
    "Lease",
    "LeaseStore",
    "Plan",
    "Renewal",
    "Takeover",
    "blocks",
    "check_no_legacy_leases",
    "deadline_after",
    "epoch_key",
    "fair",
    "fence_check",
    "layout_check",
    "layout_ns",
    "legacy_leases",
    "lease_key",
    "lease_value",
    "margin",
    "parse_lease",
    "plan",
    "quota",
    "released_key",
    "renew_interval",
    "starting_key",
]

LEASE_TTL = 10.0
"""Seconds a block's lease lives after its last renewal (``--lease-ttl``)."""
RENEW_FRACTION = 1 / 3
"""Leases are renewed every ``ttl * RENEW_FRACTION``."""
MARGIN_FRACTION = 1 / 4
"""A host stops a block ``ttl * MARGIN_FRACTION`` before the lease it last renewed could expire."""
START_TIMEOUT = 60.0
"""Seconds a claimed block counts as starting at most (shards that cannot get active must not stop rebalancing)."""


# --- pure ----------------------------------------------------------------------------------

def blocks(shard_total: int, shards_per_worker: int | None) -> list[range]:
    """The blocks of a cluster: consecutive ranges of ``shards_per_worker`` shards (all in one without it)."""
    return split(shard_total, shards_per_worker=shards_per_worker or shard_total)


def margin(ttl: float) -> float:
    """How long before its lease could expire a host stops the block (see the module's timing argument)."""
    return ttl * MARGIN_FRACTION


def deadline_after(sent_at: float, ttl: float) -> float:
    """The monotonic time until which a host may run a block whose lease was claimed or renewed by a command
    sent at ``sent_at`` (its monotonic clock, read before sending)."""
    return sent_at + ttl - margin(ttl)


@dataclass(frozen=True, slots=True)
class Lease:
    """One block's lease as read from Redis: its owner, epoch, and how long it has left (seconds)."""

    block: int
    owner: str
    epoch: int
    remaining: float = 0.0
    starting: bool = False
    """Its owner claimed it and not all its shards are active yet (a rebalance waits for it)."""

    def age(self, ttl: float) -> float:
        """Seconds since the lease was last claimed or renewed."""
        return max(0.0, ttl - self.remaining)


def lease_value(epoch: int, owner: str) -> str:
    return f"{epoch}:{owner}"


def parse_lease(block: int, raw: bytes | str | None, remaining: float = 0.0) -> Lease | None:
    """The lease stored as ``<epoch>:<owner>``, or None (missing or not a lease)."""
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    epoch, sep, owner = text.partition(":")
    if not sep or not epoch.isdigit() or not owner:
        return None
    return Lease(block, owner, int(epoch), remaining)


def quota(me: str, hosts: Iterable[str], block_count: int) -> int:
    """This host's fair share of ``block_count`` blocks among the live ``hosts`` (``me`` counted even if it is not
    listed yet): ``block_count // n``, plus one for the first ``block_count % n`` hosts by id."""
    live = sorted(set(hosts) | {me})
    base, extra = divmod(block_count, len(live))
    return base + (live.index(me) < extra)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a host does next: claim these free blocks, hand off this one (or None)."""

    claim: tuple[int, ...] = ()
    hand_off: int | None = None


def plan(me: str, hosts: Iterable[str], leases: Mapping[int, Lease], block_count: int, *,
         handing_off: bool = False) -> Plan:
    """The next moves of host ``me`` from a snapshot of the live ``hosts`` and the ``leases`` (block -> lease).

    Free blocks (no lease) are claimed up to this host's :func:`quota` (dealt out in host id order). When some
    live host is below its quota and no block is free or starting, the most loaded host above its quota (the
    lowest id of equals) hands off its highest block: one block moves at a time in the whole cluster (none while
    ``handing_off``), and the next only once the last was claimed and is running again. Leases of hosts no longer
    live are not free until they expire in Redis: that is the fencing.
    """
    live = sorted(set(hosts) | {me})
    owned: dict[str, list[int]] = {h: [] for h in live}
    for block, lease in leases.items():
        owned.setdefault(lease.owner, []).append(block)
    mine = sorted(owned[me])
    share = quota(me, live, block_count)
    free = [b for b in range(block_count) if b not in leases]
    if len(mine) < share:
        # the free blocks are dealt out to the hosts below their share in id order, so that hosts
        # reading the same snapshot claim different blocks (a lost race is harmless: retried next round)
        before = sum(max(0, quota(h, live, block_count) - len(owned[h])) for h in live if h < me)
        start = before % len(free) if free else 0
        return Plan(claim=tuple((free[start:] + free[:start])[:share - len(mine)]))
    if len(mine) > share and not handing_off and not free and not any(le.starting for le in leases.values()):
        short = any(len(owned[h]) < quota(h, live, block_count) for h in live if h != me)
        over = [h for h in live if len(owned[h]) > quota(h, live, block_count)]
        if short and min(over, key=lambda h: (-len(owned[h]), h)) == me:
            return Plan(hand_off=mine[-1])
    return Plan()


# --- Redis (one Lua script per move) ----------------------------------------------------------

def layout_ns(ns: str, shard_total: int) -> str:
    """The key prefix of the leases of the bot ``ns``'s ``shard_total``-shard layout (a :class:`LeaseStore`'s)."""
    return f"{ns}shards{shard_total}:"


def lease_key(ns: str, block: int) -> str:
    return f"{ns}lease:{block}"


def epoch_key(ns: str, block: int) -> str:
    return f"{ns}lease-epoch:{block}"


def released_key(ns: str, block: int) -> str:
    return f"{ns}lease-released:{block}"


def starting_key(ns: str, block: int) -> str:
    return f"{ns}lease-starting:{block}"


class Takeover(Enum):
    """How a block came to the host that claimed it (the ``reason`` of its claim in metrics and logs)."""

    NEW = "new"
    """The block's first lease in this Redis."""
    HANDOFF = "handoff"
    """Its previous owner released it after draining it (a rebalance, or a host leaving)."""
    FAILOVER = "failover"
    """Its previous lease expired: the owner died, froze or lost Redis."""


fence_check = """
local function fenced(key, value)
  return redis.call('GET', key) == value
end
"""
"""A Lua prelude for scripts that write about a block: ``fenced(lease key, '<epoch>:<owner>')``."""

layout_check = """
local function current_layout(key, total)
  if total == '' then return true end
  local layout = redis.call('GET', key)
  return not layout or string.match(layout, '^(%d+),') == total
end
"""
"""A Lua prelude for scripts that write about one layout: ``current_layout(the cluster's layout key, shard count)``,
true unless the key (``shards,max_concurrency``) names another count (a missing key, a flushed Redis, or a count of
``''`` pass): a write of a layout a reshard switched away from is refused in the same script."""

_CLAIM = layout_check + """
local held = redis.call('GET', KEYS[1])
if held then return {0, held, ''} end
if not current_layout(KEYS[5], ARGV[3]) then return {-1, redis.call('GET', KEYS[5]), ''} end
local released = redis.call('GET', KEYS[3]) or ''
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], epoch .. ':' .. ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[4], epoch, 'PX', ARGV[2])
return {1, tostring(epoch), released}
"""
"""KEYS: lease, epoch counter, released marker, starting marker, the cluster's layout (``<ns>layout``); ARGV: owner,
ttl ms, this layout's shard count ('' for a reshard's claim, made before its layout is the cluster's). {1, epoch, the
epoch last released or ''}, {0, the holder's value, ''}, or {-1, the cluster's layout, ''} if it names another count
(a missing layout, a flushed Redis, refuses nothing). The block is starting from its claim on."""

_RENEW = fence_check + layout_check + """
local value = ARGV[2] .. ':' .. ARGV[1]
local function starting()
  if ARGV[4] == '1' then
    redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[3])
  elseif redis.call('GET', KEYS[4]) == ARGV[2] then
    redis.call('DEL', KEYS[4])
  end
end
if fenced(KEYS[1], value) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  starting()
  return 1
end
if redis.call('EXISTS', KEYS[1]) == 1 or not current_layout(KEYS[5], ARGV[5]) then return 0 end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if last > tonumber(ARGV[2]) or redis.call('GET', KEYS[3]) == ARGV[2] then return 0 end
if last < tonumber(ARGV[2]) then redis.call('SET', KEYS[2], ARGV[2]) end
redis.call('SET', KEYS[1], value, 'PX', ARGV[3])
starting()
return 2
"""
"""KEYS: lease, epoch counter, released marker, starting marker, the cluster's layout; ARGV: owner, epoch, ttl ms,
'1' if the block is still starting (its marker is kept) else '0' (its marker is deleted), this layout's shard count
(or ''). 1 renewed, 2 written back (Redis had lost it), 0 lost. A missing key is written back only if no later
tenure began (the counter is not past the epoch), this tenure was not released (a renewal that crosses the host's
own release, or a handoff and its claim, in flight must not bring the lease back) and the cluster's layout is this
one (or missing, as after a Redis that lost its data): a layout a reshard left behind gets no lease back, so that
:data:`_FORGET` may drop its counters and markers."""

_FORGET = layout_check + """
local layout = redis.call('GET', KEYS[1])
if not layout or current_layout(KEYS[1], ARGV[2]) then return 0 end
local n = tonumber(ARGV[3])
for b = 0, n - 1 do
  if redis.call('EXISTS', ARGV[1] .. 'lease:' .. b) == 1 then return 0 end
end
for b = 0, n - 1 do
  for _, kind in ipairs({'lease-epoch:', 'lease-released:', 'lease-starting:'}) do
    redis.call('DEL', ARGV[1] .. kind .. b)
  end
end
return 1
"""
"""KEYS: the cluster's layout; ARGV: the layout's key prefix, its shard count, its block count. Once the cluster's
layout is another and no lease of this one is left, delete its epoch counters and markers: 1 (else 0). Safe for
the fencing: no lease of it can come back (a claim and a write-back check the layout), a session write of it is
refused by the layout too, and if a reshard returns to this count its epochs start over with no tenure of the old
ones alive."""

_RELEASE = fence_check + """
if fenced(KEYS[1], ARGV[2] .. ':' .. ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0
"""
"""KEYS: lease, released marker; ARGV: owner, epoch. 1 released (and marked so), 0 not ours (any more)."""


_STARTED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""
"""KEYS: starting marker; ARGV: epoch. The block's shards are all active: its mark goes (if it is this tenure's)."""


class LayoutMoved(Exception):
    """A claim refused: the cluster's layout (``<ns>layout``) is not the store's any more (a reshard switched)."""

    def __init__(self, layout: str) -> None:
        super().__init__(f"the cluster's layout is {layout!r} (shards,max_concurrency) now")
        self.layout = layout


class Renewal(Enum):
    """The outcome of renewing one lease."""

    RENEWED = 1
    RESTORED = 2
    """The key was missing (Redis lost its data) and was written back with this host's epoch."""
    LOST = 0
    """Another host holds the block now: stop it."""


@dataclass(slots=True)
class LeaseStore:
    """The leases of one layout of a bot (key prefix ``ns``, :func:`layout_ns`) in Redis, for host ``owner``: claim,
    renew, release, read.

    ``client`` is a ``redis.asyncio`` client; Redis errors (ConnectionError, TimeoutError) propagate. With ``layout``
    (the cluster's layout key, :func:`cluster.hosts.layout_key`, and this store's shard count) a claim is refused
    once the cluster's layout names another count: a host that has not followed a reshard yet claims none of the
    old layout's blocks the switched hosts release (their sessions went at the switch)."""

    client: Any
    ns: str
    owner: str
    ttl: float = LEASE_TTL
    layout: tuple[str, int] | None = None
    _scripts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, text in (("claim", _CLAIM), ("renew", _RENEW), ("release", _RELEASE), ("started", _STARTED),
                           ("forget", _FORGET)):
            self._scripts[name] = self.client.register_script(text)

    @property
    def _layout(self) -> tuple[str, str]:
        """The cluster's layout key and this store's shard count for the scripts (a count of '' checks nothing)."""
        return (self.layout[0], str(self.layout[1])) if self.layout is not None else (f"{self.ns}-", "")

    async def forget(self, block_count: int) -> bool:
        """Delete this layout's epoch counters and markers once the cluster's layout is another and none of its
        ``block_count`` leases is left (:data:`_FORGET`); False if not (or without ``layout``)."""
        if self.layout is None:
            return False
        return bool(await self._scripts["forget"](keys=[self.layout[0]],
                                                  args=[self.ns, self.layout[1], block_count]))

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    async def claim(self, block: int, *, reshard: bool = False) -> tuple[int, Takeover] | None:
        """Take the free ``block`` (starting): its new epoch and how it came free, or None if another host holds it.
        LayoutMoved if the cluster's layout is not this store's (unless ``reshard``: a reshard's new layout, claimed
        before the switch makes it the cluster's)."""
        layout_key, total = self._layout
        ok, value, released = await self._scripts["claim"](
            keys=[lease_key(self.ns, block), epoch_key(self.ns, block), released_key(self.ns, block),
                  starting_key(self.ns, block), layout_key],
            args=[self.owner, self._ttl_ms, "" if reshard else total])
        if int(ok) < 0:
            raise LayoutMoved(value.decode() if isinstance(value, bytes) else str(value))
        if not ok:
            return None
        epoch = int(value)
        how = (Takeover.NEW if epoch == 1 else Takeover.HANDOFF if released and int(released) == epoch - 1
               else Takeover.FAILOVER)
        return epoch, how

    async def renew(self, held: Mapping[int, int], starting: Collection[int] = ()) -> dict[int, Renewal]:
        """Renew the leases this host holds (block -> epoch), in one round trip; the blocks in ``starting`` stay
        marked as starting, the others' marks are removed."""
        if not held:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            layout_key, total = self._layout
            for block, epoch in held.items():
                await self._scripts["renew"](keys=[lease_key(self.ns, block), epoch_key(self.ns, block),
                                                   released_key(self.ns, block), starting_key(self.ns, block),
                                                   layout_key],
                                             args=[self.owner, epoch, self._ttl_ms, int(block in starting), total],
                                             client=pipe)
            results = await pipe.execute()
        return {block: Renewal(int(r)) for block, r in zip(held, results, strict=True)}

    async def started(self, block: int, epoch: int) -> None:
        """The claimed ``block``'s shards are all active: it no longer holds a rebalance back."""
        await self._scripts["started"](keys=[starting_key(self.ns, block)], args=[epoch])

    async def release(self, block: int, epoch: int) -> bool:
        """Give ``block`` up (after its shards were drained and their sessions saved); False if not ours."""
        return bool(await self._scripts["release"](keys=[lease_key(self.ns, block), released_key(self.ns, block)],
                                                   args=[self.owner, epoch]))

    async def read(self, block_count: int) -> dict[int, Lease]:
        """Every held lease (block -> Lease), with the time each has left and whether it is starting."""
        async with self.client.pipeline(transaction=False) as pipe:
            for block in range(block_count):
                pipe.get(lease_key(self.ns, block))
                pipe.pttl(lease_key(self.ns, block))
                pipe.get(starting_key(self.ns, block))
            raw = await pipe.execute()
        out = {}
        for block in range(block_count):
            value, pttl, mark = raw[3 * block: 3 * block + 3]
            lease = parse_lease(block, value, max(0, pttl) / 1000)
            if lease is not None and mark is not None and int(mark) == lease.epoch:
                lease = replace(lease, starting=True)
            if lease is not None:
                out[block] = lease
        return out


async def legacy_leases(client: Any, ns: str, block_count: int) -> int:
    """How many leases of the bot ``ns`` hosts of an earlier version hold under the keys before layouts
    (``<ns>lease:<block>``): they do not see this version's leases, nor this version theirs (one EXISTS)."""
    return int(await client.exists(*(lease_key(ns, b) for b in range(block_count))))


async def check_no_legacy_leases(client: Any, ns: str, block_count: int) -> None:
    """ConfigError if a host of an earlier version holds a lease of the bot ``ns`` under the keys before layouts
    (:func:`legacy_leases`): it would not see this host's leases, nor this host its, and both would run the block."""
    held = await legacy_leases(client, ns, block_count)
    if held:
        raise ConfigError(f"{held} block lease(s) under {ns}lease:<block> are held by hosts of an earlier shardstack "
                          "version (its leases are not keyed by layout): stop every host of that version before "
                          "starting this one (no rolling update across this change)")


def fair(counts: Sequence[int]) -> bool:
    """True if no two hosts' block counts differ by more than one (the plan's fixed point)."""
    return not counts or max(counts) - min(counts) <= 1


def renew_interval(ttl: float) -> float:
    return ttl * RENEW_FRACTION
