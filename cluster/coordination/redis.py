"""Identify coordination shared by every host of a bot, in Redis: the rules of :mod:`.local`, cluster-wide.

Each host's supervisor keeps a :class:`RedisCoordination` (its identify pump is the only caller). The state
that must be one for the whole bot lives in Redis under the bot's namespace ``<ns>`` and changes only inside
two Lua scripts (:data:`DECIDE`, :data:`REPORT`), so no two hosts can read-modify-write past each other:

* ``<ns>id:q:<b>``: bucket ``b``'s waiting shards (``<host>/<shard>``), a ZSET scored by a ticket from the
  counter ``<ns>id:ticket``: first come, first granted, whatever host asked.
* ``<ns>id:slot:<b>``: the member holding the bucket's slot, from its grant until READY / INVALID_SESSION,
  a cancel or an unused grant; its ``PX`` TTL is ``identify_hold_timeout``, so a dead host's slot frees itself.
* ``<ns>id:win:<b>``: when the bucket's window started (Redis ``TIME``, ms): the latest of the grant, the
  Identify's send (IdentifyStarted) and its outcome, as in :mod:`.local`; a grant, a send or a failure
  counts :data:`SLACK` later (the Identify's way to the gateway), a READY (which proves the gateway had
  processed it) as it is. A grant comes up to ``lead`` seconds before the window ends, with the rest of the
  window as its not-before time (the shard connects meanwhile and holds its Identify until then).
  ``<ns>id:late:<b>``: a late Identify's send (plus the slack) that its bucket's next outcome
  must not hide. ``<ns>id:last:<b>`` is the latest grant with the window it replaced, for an unused grant's
  refund.
* ``<ns>id:budget``: the session budget (``total``, ``remaining``, ``reset_at``, ``last_spent``), spent in
  the same script as the grant, with the local reserve and pacing rules.
* ``<ns>id:alive:<host>``: renewed by every decide of a host with waiting shards; a queue head whose host
  has none is dropped (the host died), so a dead host never blocks a bucket.

Wake-ups: every grant and every release is published on ``<ns>id:wake`` (the bucket); each host's
:meth:`RedisCoordination.listen` wakes its identify pump when it has shards waiting on that bucket's slot or on
another host's turn, and otherwise the pump sleeps until the time Redis named: a window's end, or, behind other
hosts' queue entries, one window per entry ahead (a cancel or a refund publishes ``<bucket>!``, which wakes those
sleepers too). Only a bucket that is due (or has new shards to queue) is put to Redis. A lost message costs at
most :data:`POLL_INTERVAL`.

Clock: every time in Redis is the Redis server's ``TIME``; hosts only see durations ("wait 320 ms"), so the
hosts' clocks need not agree. Redis trouble never raises into the pump: the reports are kept and sent again,
decisions wait (with backoff, said once per outage in the log), :attr:`RedisCoordination.up` is False
(``/readyz``, ``cluster_coordinator_up``). Resumes never pass through here, so they go on meanwhile.

A new or emptied Redis holds no windows. A **new cluster**'s first host stores the layout and marks the state
fresh (``<ns>id:fresh``, :func:`store_layout`, one script): no Identify went out before it, so each bucket's
first grant waits only :data:`LOST_GRACE` from the mark. A Redis that **lost its state** under running hosts
(restarted empty) is noticed by its new ``<ns>id:epoch``: the first script to find no epoch records the loss
(``<ns>id:lost``), and a host that knew another epoch turns a fresh mark into a loss (a new host may reach the
empty Redis first); its listener checks at once on resubscribing. A Redis that restarted **with its data** (from a
snapshot, an AOF, or a replica promoted in its place) may hold an older state: the same epoch, with windows that
predate identifies sent since and a budget that predates their spending. The first script to run on a new Redis
process (its ``run_id``, kept in ``<ns>id:run``) records that as a loss with a new epoch, whoever runs it, and
the windows recorded before it (``<ns>id:stale``) count as unknown. Then the host re-asserts the slots it holds
(``SET NX`` with the rest of their hold), and a bucket whose window is unknown waits :data:`LOST_GRACE` plus
one whole window from the loss, so a lost state cannot let two Identifies of one bucket into one window.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from cluster.coordination.base import (CoordinationFactory, CoordinationSetup, CoordinationStats, Decision, Defer,
                                       Grant, IdentifyEvent, Refuse)
from cluster.coordination.local import LEAD
from cluster.coordination.redis_conn import keep_subscribed, on_trouble
from ipc.protocol import IdentifyCancel, IdentifyDone, IdentifyRequest, IdentifyStarted, IdentifyUnused

__all__ = ["DECIDE", "NEW_CLUSTER", "REPORT", "RedisCoordination", "redis_coordination", "store_layout"]

log = logging.getLogger("cluster")

POLL_INTERVAL = 0.5
"""Seconds between looks at Redis while this host holds a slot (a restarted, empty Redis needs it back), and the
safety net of a bucket waiting on another host's slot or turn: the wake-up (:data:`DECIDE` and :data:`REPORT`
publish every grant and release on ``<ns>id:wake``) comes first unless it was lost."""
ALIVE_TTL = 5.0
"""Seconds a host's waiting shards stay in the queues after its last decide (then it counts as dead)."""
BACKOFF = (0.1, 1.0)
"""First and longest delay between attempts while Redis is unavailable."""
LOST_GRACE = 1.0
"""Seconds (besides the window) a bucket whose window Redis lost waits before its first grant, and the seconds a
new cluster's buckets wait: long enough for every live host to reach a new Redis (its wake-up listener
resubscribes at most :data:`BACKOFF` apart and checks the epoch at once; a host holding a slot also looks every
:data:`POLL_INTERVAL`), re-assert its slots and, if the Redis was marked new, mark it lost."""
RESUBSCRIBE = (0.1, 0.5)
"""First and longest delay between attempts of the wake-up listener to subscribe again (then it checks the epoch)."""
RELAPSE = 2.0
"""Seconds after a recovery in which a new failure counts as the same outage (logged once)."""
SLACK = 0.05
"""Seconds added to a window that no outcome proved (a grant's, a send's), as
:class:`~cluster.coordination.local.IdentifyCoordinator` does: an outcome needs none."""

_PRELUDE = """
-- ARGV: ns, epoch candidate, the epoch this host knew ('' if none), grace ms, window ms, slack ms
local ns = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local grace, window, slack = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local info = redis.pcall('INFO', 'server')  -- this server process's run_id (none where INFO is not allowed)
local run = type(info) == 'string' and string.match(info, 'run_id:(%x+)') or nil
local ran = redis.call('GET', ns .. 'id:run')
local epoch = redis.call('GET', ns .. 'id:epoch')
if not epoch then  -- emptied under running hosts (a new cluster's first host marks it fresh with its layout)
  epoch = ARGV[2]
  redis.call('SET', ns .. 'id:epoch', epoch)
  redis.call('SET', ns .. 'id:lost', now)
  redis.call('DEL', ns .. 'id:fresh')
elseif run and ran and run ~= ran then  -- restarted with data (a snapshot, an AOF, a promoted replica) that may
  epoch = ARGV[2]                       -- predate identifies sent since: a loss too, whose windows are not trusted
  redis.call('SET', ns .. 'id:epoch', epoch)
  redis.call('SET', ns .. 'id:lost', now)
  redis.call('SET', ns .. 'id:stale', now)
  redis.call('DEL', ns .. 'id:fresh')
elseif ARGV[3] ~= '' and ARGV[3] ~= epoch then  -- this host ran on a state that is gone: not a new cluster
  local fresh = redis.call('GET', ns .. 'id:fresh')
  if fresh then
    redis.call('SET', ns .. 'id:lost', fresh)
    redis.call('DEL', ns .. 'id:fresh')
  end
end
if run and run ~= ran then redis.call('SET', ns .. 'id:run', run) end
local stale = tonumber(redis.call('GET', ns .. 'id:stale'))
local bk = ns .. 'id:budget'
local function window_start(b)
  local wk = ns .. 'id:win:' .. b
  local win = tonumber(redis.call('GET', wk))
  if win and not (stale and win < stale) then return win, wk end  -- older than a restart: unknown
  local fresh = redis.call('GET', ns .. 'id:fresh')
  if fresh then  -- a new cluster: no Identify before it, only the grace (not stored: a loss may still be told)
    return tonumber(fresh) + grace - window, wk
  end
  -- a lost state: the grace (and the slack), then a whole window, from the loss
  win = (tonumber(redis.call('GET', ns .. 'id:lost')) or now) + grace + slack
  redis.call('SET', wk, win)
  return win, wk
end
local function wake(b, earlier)  -- a slot granted or freed: hosts waiting on it decide again; a turn or a window
  redis.call('PUBLISH', ns .. 'id:wake', earlier and b .. '!' or b)  -- made earlier: hosts that sleep until it too
end
"""

DECIDE = _PRELUDE + """
-- ARGV (after the prelude's): host, hold ms, alive ms, reserve, pace_below, budget if lost (total, remaining,
--       reset_after ms), bucket count, lead ms, then per bucket: b, probe (this host's oldest member already
--       queued there, or ''), n, n members to queue
local host = ARGV[7]
local hold, alive = tonumber(ARGV[8]), tonumber(ARGV[9])
local reserve, pace_below = tonumber(ARGV[10]), tonumber(ARGV[11])
local lead = tonumber(ARGV[16])
if redis.call('EXISTS', bk) == 0 then
  redis.call('HSET', bk, 'total', ARGV[12], 'remaining', ARGV[13], 'reset_at', now + tonumber(ARGV[14]),
             'last_spent', 0)
end
redis.call('SET', ns .. 'id:alive:' .. host, '1', 'PX', alive)
local out = {}
local i = 17
for _ = 1, tonumber(ARGV[15]) do
  local b, probe, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local q = ns .. 'id:q:' .. b
  if probe ~= '' and not redis.call('ZSCORE', q, probe) then
    out[#out + 1] = {'lost', b, 0}  -- purged while this host looked dead: it queues them again
  end
  for j = i + 3, i + 2 + n do
    if not redis.call('ZSCORE', q, ARGV[j]) then
      redis.call('ZADD', q, redis.call('INCR', ns .. 'id:ticket'), ARGV[j])
    end
  end
  local slot = ns .. 'id:slot:' .. b
  local win, wk = window_start(b)
  local due = math.max(win, tonumber(redis.call('GET', ns .. 'id:late:' .. b)) or 0) + window
  local held = redis.call('PTTL', slot)
  if held ~= -2 and now < win - slack + window - lead then  -- held: its Identify goes out at win - slack at
    out[#out + 1] = {'window', b, win - slack + window - lead - now}  -- the earliest: no grant before then
  elseif held ~= -2 then
    out[#out + 1] = {'wait', b, held > 0 and held or 0}  -- held: wait for its outcome (another host's, maybe)
  elseif now < due - lead then  -- the next grant comes `lead` early: its Identify waits for `due`
    out[#out + 1] = {'window', b, due - lead - now}
  else
    local head, purged
    while true do
      head = redis.call('ZRANGE', q, 0, 0)[1]
      if not head then break end
      local h = string.match(head, '^(.*)/%d+$')
      if h == host or redis.call('EXISTS', ns .. 'id:alive:' .. h) == 1 then break end
      redis.call('ZREM', q, head)  -- its host is gone
      purged = true
    end
    if purged then wake(b, true) end  -- the hosts behind it are nearer their turn
    if head and string.match(head, '^(.*)/%d+$') == host then
      local budget = redis.call('HMGET', bk, 'total', 'remaining', 'reset_at')
      local total, remaining, reset_at = tonumber(budget[1]), tonumber(budget[2]), tonumber(budget[3])
      if now >= reset_at then
        remaining, reset_at = total, now + 86400000
        redis.call('HSET', bk, 'remaining', remaining, 'reset_at', reset_at)
      end
      local not_before = 0
      if remaining > pace_below then
      elseif remaining - 1 >= reserve then
        local spacing = math.floor((reset_at - now) / math.max(1, remaining - reserve))
        not_before = tonumber(redis.call('HGET', bk, 'last_spent')) + spacing
      end
      if remaining - 1 < reserve then
        out[#out + 1] = {'refuse', b, reset_at - now}
      elseif now < not_before then
        out[#out + 1] = {'defer', b, not_before - now}
      else
        redis.call('ZREM', q, head)
        redis.call('SET', slot, head, 'PX', hold)
        redis.call('SET', ns .. 'id:last:' .. b, head .. '|' .. win)
        redis.call('SET', wk, math.max(now, due) + slack)  -- unproven until its outcome comes
        redis.call('HSET', bk, 'remaining', remaining - 1, 'last_spent', now)
        wake(b)
        out[#out + 1] = {'grant', head, math.max(0, due - now)}  -- ms its Identify must wait
      end
    else  -- another host's turn: each entry ahead of this host's first takes a window at least
      local first = probe ~= '' and probe or (n > 0 and ARGV[i + 3]) or nil
      local ahead = first and redis.call('ZRANK', q, first)
      if ahead and ahead * window > lead then
        out[#out + 1] = {'turn', b, ahead * window - lead}
      else
        out[#out + 1] = {'wait', b, 0}
      end
    end
  end
  i = i + 3 + n
end
local budget = redis.call('HMGET', bk, 'total', 'remaining', 'reset_at')
local total, remaining, reset_in = tonumber(budget[1]), tonumber(budget[2]), tonumber(budget[3]) - now
return {epoch, remaining, total, reset_in, out}
"""

REPORT = _PRELUDE + """
-- ARGV (after the prelude's): (op, bucket, member, extra) x n
-- S: the Identify was sent; D: its READY came; F: it failed (a close, INVALID_SESSION: no proof of when the
-- gateway read it); C: cancel; U: an unused grant; R: re-assert a held slot
-- (extra: ms of hold left); B: refresh the budget (bucket: total, member: remaining, extra: reset_after ms)
local unused = 0
for i = 7, #ARGV, 4 do
  local op, b, member, extra = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if op == 'B' then
    redis.call('HSET', bk, 'total', b, 'remaining', member, 'reset_at', now + tonumber(extra))
    if not redis.call('HGET', bk, 'last_spent') then redis.call('HSET', bk, 'last_spent', 0) end
  else
    local slot = ns .. 'id:slot:' .. b
    local q = ns .. 'id:q:' .. b
    local win, wk = window_start(b)
    if op == 'S' then
      if redis.call('GET', slot) == member then
        if now + slack > win then redis.call('SET', wk, now + slack) end
      else  -- written after its hold expired: the next outcome (another grant's) must not hide it
        local lk = ns .. 'id:late:' .. b
        if now + slack > (tonumber(redis.call('GET', lk)) or 0) then
          redis.call('SET', lk, now + slack, 'PX', window + slack + 1000)
        end
      end
    elseif op == 'D' then
      if redis.call('GET', slot) == member then  -- the gateway has processed it: the window starts now
        redis.call('DEL', slot)
        wake(b)
        -- (the next ms: TIME is floored to it); a window later than its grant's and send's stays
        if now >= win - slack then redis.call('SET', wk, now + 1) end
      end
    elseif op == 'F' then
      if redis.call('GET', slot) == member then
        redis.call('DEL', slot)
        wake(b)
        if now + slack > win then redis.call('SET', wk, now + slack) end
      end
    elseif op == 'C' then
      local gone = redis.call('ZREM', q, member) == 1  -- the hosts behind it are nearer their turn
      if redis.call('GET', slot) == member then
        redis.call('DEL', slot)
        gone = true
      end
      if gone then wake(b, true) end
    elseif op == 'U' then
      local lk = ns .. 'id:last:' .. b
      local last = redis.call('GET', lk)
      if last and string.sub(last, 1, #member + 1) == member .. '|' then
        redis.call('DEL', lk)
        if redis.call('GET', slot) == member then redis.call('DEL', slot) end
        redis.call('SET', wk, string.sub(last, #member + 2))
        wake(b, true)
        local total = tonumber(redis.call('HGET', bk, 'total'))
        local remaining = tonumber(redis.call('HGET', bk, 'remaining'))
        if total and remaining and remaining < total then redis.call('HINCRBY', bk, 'remaining', 1) end
        unused = unused + 1
      end
    elseif op == 'R' then
      redis.call('SET', slot, member, 'NX', 'PX', extra)
    end
  end
end
return {epoch, unused}
"""

NEW_CLUSTER = """
-- KEYS: the layout key; ARGV: ns, the layout, an epoch. The layout is set if absent; if it was, and Redis holds
-- no identify state, this is a new cluster: its epoch is marked fresh (no Identify can have gone out before it)
if not redis.call('SET', KEYS[1], ARGV[2], 'NX') then return 0 end
local ns = ARGV[1]
if redis.call('EXISTS', ns .. 'id:epoch') == 0 then
  local t = redis.call('TIME')
  redis.call('SET', ns .. 'id:epoch', ARGV[3])
  redis.call('SET', ns .. 'id:fresh', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
return 1
"""

async def store_layout(client: Any, ns: str, key: str, layout: str) -> bool:
    """Store the cluster's layout at ``key`` unless one is there (False then). The first host of a new cluster
    (no identify state in Redis) also marks the identify state fresh, in the same script: its buckets wait only
    the grace, not the window a Redis that lost its state must wait (a host that knew the lost state turns the
    mark into a loss when it reaches the new Redis, within the grace)."""
    return bool(await client.eval(NEW_CLUSTER, 1, key, ns, layout, uuid.uuid4().hex))


class RedisCoordination:
    """One host's view of the cluster-wide identify coordination in Redis (see the module docstring).

    ``client`` is a connected ``redis.asyncio`` client (:func:`~cluster.coordination.redis_conn.connect`),
    ``ns`` the bot's key prefix, ``host`` this host's id. ``clock`` is the supervisor's monotonic clock."""

    def __init__(self, client: Any, ns: str, host: str, setup: CoordinationSetup, *,
                 poll_interval: float = POLL_INTERVAL, alive_ttl: float = ALIVE_TTL, lost_grace: float = LOST_GRACE,
                 slack: float = SLACK, lead: float = LEAD, clock: Callable[[], float] = time.monotonic) -> None:
        if "/" in host:
            raise ValueError("a host id must not contain '/'")
        self.client, self.ns, self.host = client, ns, host
        self.max_concurrency = setup.max_concurrency
        self.window = setup.window
        self.slack, self.lead = slack, min(lead, setup.hold_timeout / 2)  # as in IdentifyCoordinator
        self.hold_timeout = setup.hold_timeout
        self.reserve = setup.reserve
        self.pace_below = 2 * setup.reserve if setup.pace_below is None else setup.pace_below
        self.poll_interval, self.alive_ttl, self.clock = poll_interval, alive_ttl, clock
        self.lost_grace = lost_grace
        self._decide = client.register_script(DECIDE)
        self._report = client.register_script(REPORT)
        self._epoch: str | None = None
        self._pending: list[str] = []  # REPORT arguments not yet applied (Redis was unavailable)
        self._waiting: dict[int, tuple[float, str]] = {}  # shard -> (enqueued at, reason)
        self._holding: dict[int, float] = {}  # granted shard -> local time its hold ends
        self._unstarted: set[int] = set()
        self._queued: set[int] = set()  # waiting shards known to be in Redis's queues (not sent again)
        self._due: dict[int, float] = {}  # bucket -> when its waiting shards are next put to Redis (absent: now)
        self._on_wake: set[int] = set()  # buckets waiting on another slot's grant or release (woken by a message)
        self._look_at = -math.inf  # when to look at Redis even with no bucket due (a held slot, this host's alive key)
        # what the last decide said, for the synchronous readers
        self.total, self.remaining = setup.total, setup.remaining
        self._reset_at = setup.now + setup.reset_after
        self._next: float | None = None
        self._pending.extend(("B", str(setup.total), str(setup.remaining), str(int(setup.reset_after * 1000))))
        self.up = True
        self.errors = 0
        self._down_since: float | None = None
        self._up_since = -math.inf  # when the last outage ended
        self._relapse = False  # the current outage began within RELAPSE of the last one's end (not announced)
        self._backoff = BACKOFF[0]
        self._retry_at = -math.inf
        self.late_starts = self.unused_grants = self.expired_holds = 0

    def _member(self, shard_id: int) -> str:
        return f"{self.host}/{shard_id}"

    def _op(self, op: str, shard_id: int, extra: int = 0) -> None:
        self._pending.extend((op, str(shard_id % self.max_concurrency), self._member(shard_id), str(extra)))
        if op != "S":  # a slot of this host freed (or an entry gone): its bucket's waiters look again at once
            self._due.pop(shard_id % self.max_concurrency, None)

    def _prelude(self) -> list[Any]:
        """The arguments every script starts with (see :data:`_PRELUDE`)."""
        return [self.ns, uuid.uuid4().hex, self._epoch or "", int(self.lost_grace * 1000), int(self.window * 1000),
                int(self.slack * 1000)]

    # --- the Coordination interface -------------------------------------------------------

    async def report(self, events: Sequence[tuple[float, IdentifyEvent]]) -> None:
        for now, event in events:
            match event:
                case IdentifyRequest(shard_id=shard_id, reason=reason):
                    if shard_id in self._holding:  # identifying again: its previous attempt ended
                        self._holding.pop(shard_id)
                        self._unstarted.discard(shard_id)
                        self._op("F", shard_id)
                    self._waiting.setdefault(shard_id, (now, reason))
                case IdentifyStarted(shard_id=shard_id):
                    if shard_id in self._unstarted:
                        self._unstarted.discard(shard_id)
                        if shard_id not in self._holding:
                            self.late_starts += 1
                        self._op("S", shard_id)
                case IdentifyDone(shard_id=shard_id, ready=ready):
                    self._unstarted.discard(shard_id)
                    if self._holding.pop(shard_id, None) is not None:
                        self._op("D" if ready else "F", shard_id)
                case IdentifyCancel(shard_id=shard_id):
                    self._unstarted.discard(shard_id)
                    self._waiting.pop(shard_id, None)
                    self._queued.discard(shard_id)
                    self._holding.pop(shard_id, None)
                    self._op("C", shard_id)
                case IdentifyUnused(shard_id=shard_id):
                    self._unstarted.discard(shard_id)
                    self._holding.pop(shard_id, None)
                    self._op("U", shard_id)
        await self._flush()

    async def refresh_budget(self, total: int, remaining: int, reset_after: float, now: float) -> None:
        self.total, self.remaining, self._reset_at = total, remaining, now + reset_after
        self._pending.extend(("B", str(total), str(remaining), str(int(reset_after * 1000))))
        await self._flush()

    async def decide(self, now: float) -> list[Decision]:
        for shard_id, until in list(self._holding.items()):
            if now >= until:  # its slot's TTL freed it in Redis too
                del self._holding[shard_id]
                self.expired_holds += 1
        if now < self._retry_at or not await self._flush():
            self._next = max(self._retry_at, now)
            return []
        if not self._waiting and not self._holding:
            self._next = None
            return []
        mc = self.max_concurrency
        # only the buckets due (a timer, a wake-up, the safety net) or with new shards to queue (first come)
        due = {s % mc for s in self._waiting if self._due.get(s % mc, -math.inf) <= now or s not in self._queued}
        by_bucket: dict[int, list[int]] = {}
        for shard_id in sorted(self._waiting, key=lambda s: self._waiting[s][0]):
            if shard_id % mc in due:
                by_bucket.setdefault(shard_id % mc, []).append(shard_id)
        if not by_bucket and now < self._look_at:
            self._next = self._next_look(now)
            return []
        args: list[Any] = [*self._prelude(), self.host, int(self.hold_timeout * 1000), int(self.alive_ttl * 1000),
                           self.reserve, self.pace_below, self.total, self.remaining,
                           int(max(0.0, self._reset_at - now) * 1000), len(by_bucket), int(self.lead * 1000)]
        for b, shards in by_bucket.items():
            known = [s for s in shards if s in self._queued]
            new = [s for s in shards if s not in self._queued]
            args += [b, self._member(known[0]) if known else "", len(new), *map(self._member, new)]
        with on_trouble() as caught:
            epoch, remaining, total, reset_in, outcome = await self._decide(args=args)
        if caught.exc is not None:
            self._trouble(caught.exc, now)
            self._next = self._retry_at
            return []
        self._recovered(now)
        self._queued.update(self._waiting)
        await self._check_epoch(epoch)
        self.total, self.remaining, self._reset_at = int(total), int(remaining), now + int(reset_in) / 1000
        return self._apply(outcome, now, by_bucket)

    def _apply(self, outcome: list[Any], now: float, by_bucket: dict[int, list[int]]) -> list[Decision]:
        out: list[Decision] = []
        again: set[int] = set()  # buckets to put to Redis at once
        for kind, what, ms in outcome:
            kind, ms = kind.decode() if isinstance(kind, bytes) else kind, int(ms)
            what = what.decode() if isinstance(what, bytes) else str(what)
            if kind == "grant":
                shard_id = int(what.rsplit("/", 1)[1])
                # Redis's ms from its TIME, counted from now that the answer is here: later, never earlier
                not_before = self.clock() + ms / 1000 if ms else 0.0
                self._queued.discard(shard_id)
                self._wait_for_wake(shard_id % self.max_concurrency, now + self.poll_interval)  # for its outcome
                if shard_id not in self._waiting:  # no longer wanted (a stale entry): give it back unused
                    self._op("U", shard_id)
                    continue
                enqueued, reason = self._waiting.pop(shard_id)
                self._holding[shard_id] = now + self.hold_timeout
                self._unstarted.add(shard_id)
                out.append(Grant(shard_id, now - enqueued, reason, not_before))
                continue
            b = int(what)
            if kind == "lost":
                self._queued.difference_update(by_bucket.get(b, []))
                again.add(b)
            elif kind in ("window", "turn"):  # no grant before then (unless a message says a turn came nearer)
                self._due[b] = now + ms / 1000
                self._on_wake.discard(b)
            elif kind == "refuse":
                hours = ms / 3_600_000
                message = (f"session start budget guarded: {self.remaining} of {self.total} identifies left across "
                           f"the cluster, and one more would go below the safety margin of {self.reserve}; refusing "
                           f"to identify until the budget resets in {hours:.1f} h (is something crash-looping?)")
                for shard_id in by_bucket.get(b, []):
                    self._waiting.pop(shard_id, None)
                    self._queued.discard(shard_id)
                    self._op("C", shard_id)  # out of the queue (sent with the next report)
                    out.append(Refuse(shard_id, message))
            elif kind == "defer":
                left = self.remaining
                spacing = (self._reset_at - now) / max(1, left - self.reserve)
                out.append(Defer(now + ms / 1000, (
                    f"session start budget low ({left} of {self.total} left across the cluster, safety margin "
                    f"{self.reserve}): pacing identifies to one per {spacing:.0f} s until the reset")))
                self._due[b] = now + ms / 1000
                self._on_wake.discard(b)
            else:  # a slot held, or another host's turn: its grant or release wakes us (else the safety net)
                self._wait_for_wake(b, now + (min(self.poll_interval, ms / 1000) if ms else self.poll_interval))
        for b in again:
            self._due.pop(b, None)
        # look at Redis while holding (a restarted, empty one needs our slots back), and keep our alive key
        self._look_at = now + (self.poll_interval if self._holding else self.alive_ttl / 3)
        self._next = self._next_look(now)
        return out

    def _wait_for_wake(self, bucket: int, safety: float) -> None:
        self._due[bucket] = safety
        self._on_wake.add(bucket)

    def _next_look(self, now: float) -> float | None:
        """When :meth:`decide` next has something to put to Redis: a bucket due, or a look (None: idle)."""
        if not self._waiting and not self._holding:
            return None
        buckets = {s % self.max_concurrency for s in self._waiting}
        due = min((self._due.get(b, now) for b in buckets), default=math.inf)
        return max(now, min(due, self._look_at))

    def woken(self, message: bytes | str) -> bool:
        """A grant or release was published (``<bucket>``, or ``<bucket>!`` for a window made earlier): True if
        this host's waiters in that bucket should look now."""
        text = _text(message)
        try:
            bucket = int(text.rstrip("!"))
        except ValueError:  # not ours (anyone who can write to this Redis can publish)
            return False
        if bucket not in self._on_wake and not (text.endswith("!") and bucket in self._due):
            return False
        self._on_wake.discard(bucket)
        self._due.pop(bucket, None)
        self._next = self.clock()
        return True

    async def listen(self, wake: Callable[[], None]) -> None:
        """Wake the identify pump (``wake``) when another host grants or frees a slot this host's shards wait on
        (``<ns>id:wake``), for as long as the host runs. After each (re)subscription the epoch is checked at
        once: a Redis that restarted dropped this connection, and a host that knew the old state must say so
        before a new host takes the empty Redis for a new cluster. A lost message costs a bucket at most
        :data:`POLL_INTERVAL`."""

        async def check_epoch() -> None:  # no reports: the epoch check alone
            epoch, _ = await self._report(args=self._prelude())
            if self._epoch is not None and _text(epoch) != self._epoch:  # a new Redis: every bucket looks again
                self._due.clear()
                self._look_at = -math.inf
            elif not self._on_wake:
                return
            for b in list(self._on_wake):  # a message may have been missed meanwhile
                self.woken(str(b))
            self._next = self.clock()
            wake()

        def message(data: bytes) -> None:
            if self.woken(data):
                wake()

        await keep_subscribed(self.client, [f"{self.ns}id:wake"], message, on_subscribed=check_epoch,
                              retry=RESUBSCRIBE)

    def next_deadline(self, now: float) -> float | None:
        return self._next

    def busy(self) -> set[int]:
        return set(self._waiting) | set(self._holding)

    def stats(self, now: float) -> CoordinationStats:
        return CoordinationStats(len(self._waiting), self.remaining, self.total, self.reserve,
                                 max(0.0, self._reset_at - now), self.late_starts, self.unused_grants,
                                 self.expired_holds, self.up, self.errors)

    # --- Redis trouble ---------------------------------------------------------------------

    def mark_down(self, exc: BaseException) -> None:
        """Another user of this Redis (the host registry) could not reach it: say so as the pump would."""
        self._trouble(exc, self.clock())

    def mark_up(self) -> None:
        """Another user of this Redis reached it again."""
        self._recovered(self.clock())

    async def _flush(self) -> bool:
        """Apply the pending reports; False (and kept for later) if Redis is unavailable."""
        if not self._pending:
            return True
        now = self.clock()
        if now < self._retry_at:
            return False
        batch = self._pending
        self._pending = []
        with on_trouble() as caught:
            epoch, unused = await self._report(args=[*self._prelude(), *batch])
        if caught.exc is not None:
            self._pending = batch + self._pending
            self._trouble(caught.exc, now)
            return False
        self.unused_grants += int(unused)
        self._recovered(now)
        await self._check_epoch(epoch)
        return True

    async def _check_epoch(self, epoch: bytes | str) -> None:
        """A Redis that lost its data (or restarted) has a new epoch: re-assert the slots this host holds, and its
        view of the budget."""
        epoch = _text(epoch)
        if self._epoch is None:
            self._epoch = epoch
            return
        if epoch == self._epoch:
            return
        self._epoch = epoch
        self._queued.clear()  # the queues went with the rest
        now = self.clock()
        log.warning("the coordinator's Redis lost its state (restarted empty, or from older data?): re-asserting %d "
                    "held identify slots and this host's session budget; every bucket waits one window before its "
                    "next grant", len(self._holding))
        for shard_id, until in self._holding.items():
            self._op("R", shard_id, max(1, int((until - now) * 1000)))
        self._pending.extend(("B", str(self.total), str(self.remaining),
                              str(int(max(0.0, self._reset_at - now) * 1000))))
        await self._flush()

    def _trouble(self, exc: BaseException, now: float) -> None:
        self.errors += 1
        if self.up:
            # a failure just after a recovery is the same outage (a connection of the pool that went stale with
            # the restart, say): it is not announced again, so the log says one line per outage
            self._relapse = now - self._up_since < RELAPSE
            self.up, self._down_since = False, now
            if not self._relapse:
                log.warning("coordinator unavailable (%s: %s): running shards keep running and resuming, "
                            "identifies wait; retrying with backoff", type(exc).__name__, exc)
            self._backoff = BACKOFF[0]
        else:
            self._backoff = min(BACKOFF[1], self._backoff * 2)
        self._retry_at = now + self._backoff

    def _recovered(self, now: float) -> None:
        if not self.up:
            if not self._relapse:
                log.warning("coordinator back after %.1f s (%d failed attempts): identifies continue",
                            now - (self._down_since or now), self.errors)
            self.up, self._down_since, self._retry_at = True, None, -math.inf
            self._up_since, self._relapse = now, False


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def redis_coordination(client: Any, ns: str, host: str, **options: Any) -> CoordinationFactory:
    """The :data:`~cluster.coordination.base.CoordinationFactory` of a host sharing ``client``'s Redis."""

    def factory(setup: CoordinationSetup) -> RedisCoordination:
        return RedisCoordination(client, ns, host, setup, **options)

    return factory
