"""Live resharding across hosts, the Redis part: the reshard record every host reads (:mod:`cluster.reshard_plan`).

Keys under the bot's namespace: ``<ns>reshard`` (a hash: epoch, counts, leader, hosts, phase, deadlines, cut time,
reason), ``<ns>reshard:warm``, ``<ns>reshard:marked`` and ``<ns>reshard:passed`` (the hosts that reported),
``<ns>reshard:digests`` (what the hosts' old sets delivered without a creation id while gated, :mod:`cluster.cutover`:
a guild's old shard and its new shard may run on two hosts, and every host's new set must drop all of them at go),
and ``<ns>reshard:epoch`` (a counter that never expires, so an epoch is not reused, unless Redis loses its data: each
begin also writes a random ``id``, and a record is known by both, :attr:`ClusterReshard.identity`). Every write is one
Lua script that first checks the record's identity and phase, so a late or stale host can never move another reshard,
and two hosts that begin at once cannot both win. The step to *go* also writes the cluster's layout (``<ns>layout``) and
removes the old count's sessions in the same script: the switch and the new layout are one atomic step.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from cluster.coordination.redis_conn import REDIS_DOWN, on_trouble, unavailable
from cluster.error import ReshardRefused
from cluster.hosts import HostRecord, host_key, layout_key, read_hosts
from cluster.reshard_plan import ClusterPhase, ClusterReshard, reshard_key

__all__ = ["ReshardStore"]

DONE_TTL = 86_400.0
"""Seconds a finished record stays readable (``cluster status``, a late host)."""

_BEGIN = """
local phase = redis.call('HGET', KEYS[1], 'phase')
if phase == 'warming' or phase == 'cutting_over' then
  return {0, redis.call('HGET', KEYS[1], 'old') .. ' -> ' .. redis.call('HGET', KEYS[1], 'new'),
          redis.call('HGET', KEYS[1], 'leader')}
end
local layout = redis.call('GET', KEYS[3])
if layout and layout ~= ARGV[1] .. ',' .. ARGV[2] then return {-1, layout} end
local remaining = tonumber(redis.call('HGET', KEYS[6], 'remaining'))
if remaining and remaining - tonumber(ARGV[3]) < tonumber(ARGV[9]) then return {-2, remaining} end
local epoch = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[4], KEYS[5], KEYS[7], KEYS[8])
redis.call('HSET', KEYS[1], 'epoch', epoch, 'id', ARGV[10], 'old', ARGV[1], 'new', ARGV[3], 'leader', ARGV[4],
           'hosts', ARGV[5], 'phase', 'warming', 'warm_deadline', ARGV[6], 'cut_timeout', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[8])
return {1, epoch}
"""
"""Begin a reshard unless one runs, the layout is not ``old,mc`` or the cluster's session budget (``KEYS[6]``,
:mod:`cluster.coordination.redis`) would fall below ``ARGV[9]`` after the new set's identifies: ``{1, epoch}``,
``{0, 'old -> new', leader}`` (one runs), ``{-1, layout}`` or ``{-2, remaining}``."""

_SAME = """
local rec = redis.call('HMGET', KEYS[1], 'epoch', 'id', 'phase')
local same = (rec[1] or '') .. '/' .. (rec[2] or '') == ARGV[1]
"""
"""``same``: the record ``KEYS[1]`` is still the one ``ARGV[1]`` (``epoch/id``, :attr:`ClusterReshard.identity`);
``rec[3]``: its phase."""

_REPORT = _SAME + """
if not same or rec[3] ~= ARGV[2] then return 0 end
local added = redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if added == 1 and #ARGV > 4 then
  redis.call('RPUSH', KEYS[3], unpack(ARGV, 5))
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
return 1
"""
"""Add host ``ARGV[3]`` to the set ``KEYS[2]`` if the record is still ``ARGV[1]`` in phase ``ARGV[2]``, and
append the digests ``ARGV[5..]`` to the list ``KEYS[3]``, once (the client runs a script again after a timeout: a
second append would make the new sets drop as many more identical events)."""

_ADVANCE = _SAME + """
if not same then return 0 end
local phase = rec[3]
if not phase or not string.find(' ' .. ARGV[2] .. ' ', ' ' .. phase .. ' ', 1, true) then return 0 end
redis.call('HSET', KEYS[1], 'phase', ARGV[3], unpack(ARGV, 8))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if ARGV[5] ~= '' then
  redis.call('SET', KEYS[2], ARGV[5])
  for i = 0, tonumber(ARGV[7]) - 1 do redis.call('DEL', ARGV[6] .. i) end
end
return 1
"""
"""Move the record ``ARGV[1]`` from one of the phases ``ARGV[2]`` to ``ARGV[3]`` with the fields
``ARGV[8..]``; with a layout ``ARGV[5]``, also set it and delete the sessions ``ARGV[6]0..ARGV[7]-1``. 1 or 0."""


class ReshardStore:
    """The reshard record of one bot (``ns``) as host ``host`` reads and writes it, through a connected
    ``redis.asyncio`` client. Redis trouble is :class:`~cluster.error.CoordinatorUnavailable` (no password)."""

    def __init__(self, client: Any, url: str, ns: str, host: str) -> None:
        self.client, self.url, self.ns, self.host = client, url, ns, host
        self.key = reshard_key(ns)
        self._begin = client.register_script(_BEGIN)
        self._report = client.register_script(_REPORT)
        self._advance = client.register_script(_ADVANCE)

    def _set(self, what: str) -> str:
        return f"{self.key}:{what}"

    async def _do(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """``call()``'s result; CoordinatorUnavailable if Redis cannot be reached (a cancel stays a cancel)."""
        with on_trouble(REDIS_DOWN) as caught:
            return await call()
        raise unavailable(self.url, caught.exc or ConnectionError()) from None

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return await self._do(lambda: script(keys=keys, args=args))

    async def begin(self, old_total: int, new_total: int, max_concurrency: int, hosts: list[str], *,
                    warm_deadline: float, cut_timeout: float, budget_floor: int) -> tuple[int, int | None]:
        """Write a new record with this host as its leader: ``(epoch, None)``; or ``(0, remaining)`` if the
        cluster's shared session budget would leave fewer than ``budget_floor`` identifies after ``new_total``.
        ReshardRefused if one is running, or if the cluster's layout is not ``old_total`` (another host resharded
        meanwhile)."""
        ttl = max(1.0, warm_deadline - time.time()) + cut_timeout + 60.0
        out = await self._call(self._begin, [self.key, self._set("epoch"), layout_key(self.ns), self._set("warm"),
                                             self._set("passed"), f"{self.ns}id:budget", self._set("digests"),
                                             self._set("marked")],
                               [old_total, max_concurrency, new_total, self.host, msgspec.json.encode(hosts),
                                repr(warm_deadline), repr(cut_timeout), int(ttl * 1000), budget_floor,
                                secrets.token_hex(8)])
        status = int(out[0])
        if status == -2:
            return 0, int(out[1])
        if status == 0 and _text(out[2]) == self.host:  # this very begin, run twice over a failed connection
            return await self.epoch(), None
        if status == 0:
            raise ReshardRefused(f"a reshard is already running in this cluster ({_text(out[1])} shards, begun by "
                                 f"host {_text(out[2])})")
        if status < 0:
            raise ReshardRefused(f"the cluster's layout in Redis is {_text(out[1])!r} (shards,max_concurrency), "
                                 f"not {old_total},{max_concurrency}: another host changed it; try again")
        return int(out[1]), None

    async def epoch(self) -> int:
        """The current record's epoch (0: none)."""
        raw = await self._do(lambda: self.client.hget(self.key, "epoch"))
        try:
            return int(raw) if raw is not None else 0
        except ValueError:
            return 0

    async def identity(self) -> str:
        """The current record's :attr:`~cluster.reshard_plan.ClusterReshard.identity` ("": none): one cheap command,
        for idle hosts watching for a new reshard."""
        epoch, id_ = await self._do(lambda: self.client.hmget(self.key, ["epoch", "id"]))
        return "" if epoch is None else f"{_text(epoch)}/{_text(id_) if id_ is not None else ''}"

    async def layout_total(self) -> int | None:
        """The cluster's shard count in Redis (``<ns>layout``), or None (missing or not ``shards,max_concurrency``)."""
        raw = await self._do(lambda: self.client.get(layout_key(self.ns)))
        total = _text(raw).partition(",")[0] if raw is not None else ""
        return int(total) if total.isdigit() else None

    async def switched(self, record: ClusterReshard) -> bool:
        """Whether the cluster switched to ``record``'s new count: the layout (written with go) or the registry record
        of one of its hosts says so. A host that cannot confirm the record's decision asks before it rolls back."""
        if await self.layout_total() == record.new_total:
            return True
        hosts = await self._do(lambda: read_hosts(self.client, self.ns))
        return any(h.host_id in record.hosts and h.shard_total == record.new_total for h in hosts)

    async def read(self) -> ClusterReshard | None:
        """The current record, or None (no reshard yet, or it expired, or it does not decode)."""
        async def fetch() -> list[Any]:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hgetall(self.key)
                pipe.smembers(self._set("warm"))
                pipe.smembers(self._set("passed"))
                pipe.smembers(self._set("marked"))
                return await pipe.execute()

        raw, warm, passed, marked = await self._do(fetch)
        if not raw:
            return None
        f = {_text(k): _text(v) for k, v in raw.items()}
        try:
            return ClusterReshard(
                epoch=int(f["epoch"]), id=f.get("id", ""), old_total=int(f["old"]), new_total=int(f["new"]),
                leader=f["leader"],
                hosts=tuple(msgspec.json.decode(f["hosts"], type=list[str])), phase=ClusterPhase(f["phase"]),
                warm_deadline=float(f["warm_deadline"]), cut_timeout=float(f["cut_timeout"]),
                cut_at=float(f["cut_at"]) if "cut_at" in f else None,
                go_deadline=float(f["go_deadline"]) if "go_deadline" in f else None, reason=f.get("reason", ""),
                warm=frozenset(map(_text, warm)), passed=frozenset(map(_text, passed)),
                marked=frozenset(map(_text, marked)))
        except (KeyError, ValueError, msgspec.DecodeError):
            return None

    async def report(self, record: ClusterReshard, what: str, digests: Sequence[int] = ()) -> bool:
        """This host is ``warm`` (phase warming), ``marked`` (cutting over: its new shards passed their markers) or
        ``passed`` (cutting over: its old shards did, with the ``digests`` of what its old set delivered without a
        creation id while gated); False if the record moved on."""
        phase = ClusterPhase.WARMING if what == "warm" else ClusterPhase.CUTTING_OVER
        return bool(await self._call(self._report, [self.key, self._set(what), self._set("digests")],
                                     [record.identity, phase.value, self.host, int(DONE_TTL * 1000), *digests]))

    async def digests(self) -> list[int]:
        """Every host's old-set digests, as reported with ``passed`` (read at go)."""
        return [int(d) for d in await self._do(lambda: self.client.lrange(self._set("digests"), 0, -1))]

    async def cut(self, record: ClusterReshard, cut_at: float) -> bool:
        """The leader sets the cut time (every host warm)."""
        return await self._move(record, (ClusterPhase.WARMING,), ClusterPhase.CUTTING_OVER,
                                ["cut_at", repr(cut_at), "go_deadline", repr(cut_at + record.cut_timeout)],
                                ttl=record.cut_timeout + 60.0)

    async def go(self, record: ClusterReshard, max_concurrency: int, reason: str = "") -> bool:
        """The leader sets go; the layout becomes ``new_total`` and the old count's sessions go, atomically."""
        return await self._move(record, (ClusterPhase.CUTTING_OVER,), ClusterPhase.GO, ["reason", reason],
                                layout=f"{record.new_total},{max_concurrency}", old_total=record.old_total)

    async def roll_back(self, record: ClusterReshard, reason: str) -> bool:
        """Any host, before go: the reshard is rolled back (False: it had moved on, to go say, or ended)."""
        return await self._move(record, (ClusterPhase.WARMING, ClusterPhase.CUTTING_OVER), ClusterPhase.ROLLED_BACK,
                                ["reason", reason])

    async def _move(self, record: ClusterReshard, from_: tuple[ClusterPhase, ...], to: ClusterPhase,
                    fields: list[str], *, ttl: float = DONE_TTL, layout: str = "", old_total: int = 0) -> bool:
        return bool(await self._call(self._advance, [self.key, layout_key(self.ns)],
                                     [record.identity, " ".join(from_), to.value, int(ttl * 1000), layout,
                                      f"{self.ns}session:", old_total, *fields]))

    async def move_host(self, record: HostRecord, ttl: float) -> None:
        """Rewrite this host's registry record for its new shards (it exists: the registry loop renews it)."""
        await self._do(lambda: self.client.set(host_key(self.ns, record.host_id), msgspec.json.encode(record),
                                               px=int(ttl * 1000)))


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)
