"""Several hosts, one bot: which shards this host runs, and the registry of live hosts in Redis.

Static assignment: ``--shard-range A-B`` (inclusive) or ``--host-index I --host-count N`` (consecutive
ranges, split like workers by :func:`cluster.layout.split`); ``--host-index auto`` takes ``I`` from a
Kubernetes StatefulSet pod name (``HOSTNAME=bot-3`` gives 3). Pure functions: :func:`parse_shard_range`,
:func:`host_ordinal`, :func:`host_range`.

The cluster's layout (shard total and max_concurrency) is decided once per cluster: the first host stores
it (``SET NX``) and later hosts adopt it (:func:`agree_layout`). Each host keeps a record under
``<ns>host:<host id>`` with a short TTL, renewed by the supervisor (:func:`register_host`,
:func:`renew_host`); registering refuses a range that overlaps another live host's, atomically (one Lua
script), so two hosts started at once cannot both win; a renewal that finds the record expired registers it again
with the same check, and a host whose record lapsed while another took its shards stops them (:func:`renew_host`).
:func:`read_hosts` lists the live hosts: the one
notion of a live host, for ``cluster status``, broadcasts and the block leases. The ids of the hosts are in the
set ``<ns>hosts``; a record whose key expired
is a dead host and is dropped from the set by the next reader or registrant.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from cluster.coordination.redis import store_layout
from cluster.coordination.redis_conn import keep_trying
from cluster.error import ConfigError
from cluster.layout import split

__all__ = ["HOST_RENEW_INTERVAL", "HOST_TTL", "HostRecord", "agree_layout", "conflict_message", "host_id", "host_key",
           "host_ordinal", "host_range", "hosts_key", "keep_registered", "lapsed_message", "layout_key", "new_record",
           "parse_shard_range", "read_hosts",
           "register_host", "remove_host", "renew_host", "this_hostname", "try_register_host"]

HOST_TTL = 10.0
"""Seconds a host record lives unless renewed."""
HOST_RENEW_INTERVAL = 1.0
"""Seconds between renewals of this host's record (also how soon an idle host notices Redis is away)."""

_ORDINAL = re.compile(r"-(\d+)$")
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


class HostRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One host of the cluster as it registered itself: its shards ``first..last`` (inclusive) of
    ``shard_total``, its process, its HTTP endpoint (``/status``) and when it started (Unix time)."""

    host_id: str
    first: int
    last: int
    shard_total: int
    pid: int
    hostname: str
    http_url: str | None = None
    started_at: float = 0.0

    @property
    def shards(self) -> range:
        return range(self.first, self.last + 1)

    def describe(self) -> str:
        where = f" at {self.http_url}" if self.http_url else ""
        runs = f"runs shards {self.first}-{self.last}" if self.last >= self.first else "leases its blocks"
        return f"host {self.host_id} ({self.hostname}, pid {self.pid}{where}) {runs}"


# --- static assignment (pure) ---------------------------------------------------------------

def parse_shard_range(text: str) -> range:
    """``"A-B"`` (inclusive, ``A <= B``) as ``range(A, B + 1)``; ConfigError otherwise."""
    m = _RANGE.match(text)
    if m is None:
        raise ConfigError(f"shard_range must look like A-B (inclusive, e.g. 0-15), got {text!r}")
    first, last = int(m[1]), int(m[2])
    if first > last:
        raise ConfigError(f"shard_range {text!r}: the first shard is after the last")
    return range(first, last + 1)


def host_ordinal(hostname: str | None = None) -> int:
    """The ordinal of a StatefulSet pod name (``bot-3`` -> 3), from ``HOSTNAME`` (or the system's host name)."""
    name = hostname if hostname is not None else this_hostname()
    m = _ORDINAL.search(name)
    if m is None:
        raise ConfigError(f"host_index auto needs a host name ending in -<ordinal> (a StatefulSet pod, e.g. "
                          f"bot-3); this one is {name!r}: give --host-index N instead")
    return int(m[1])


def host_range(shard_total: int, *, shard_range: range | None = None, host_index: int | None = None,
               host_count: int | None = None) -> range:
    """The shards this host runs: ``shard_range``, or part ``host_index`` of ``host_count`` consecutive
    ranges, or all of them. ConfigError if it does not fit in ``shard_total``."""
    if shard_range is not None:
        if shard_range.stop > shard_total:
            raise ConfigError(f"shard_range {shard_range.start}-{shard_range.stop - 1} is past the last shard "
                              f"({shard_total - 1}) of this {shard_total}-shard cluster")
        return shard_range
    if host_count is None:
        return range(shard_total)
    index = 0 if host_index is None else host_index
    if not 0 <= index < host_count:
        raise ConfigError(f"host_index {index} is not below host_count {host_count}")
    if host_count > shard_total:
        raise ConfigError(f"host_count {host_count} is more than the {shard_total} shards")
    return split(shard_total, workers=host_count)[index]


def host_id(hostname: str | None = None) -> str:
    """A fresh id for this host process: its host name, its pid and a random suffix (no ``/``)."""
    name = (hostname or this_hostname()).split(".")[0][:40].replace("/", "-") or "host"
    return f"{name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


# --- keys -----------------------------------------------------------------------------------

def host_key(ns: str, hid: str) -> str:
    return f"{ns}host:{hid}"


def hosts_key(ns: str) -> str:
    return f"{ns}hosts"


def layout_key(ns: str) -> str:
    return f"{ns}layout"


# --- Redis (atomic: one Lua script each, or SET NX) -----------------------------------------

_ARGS = """
local ns, hid, record, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local first, last = tonumber(ARGV[5]), tonumber(ARGV[6])
"""

_CLAIM = """
for _, other in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if other ~= hid then
    local raw = redis.call('GET', ns .. 'host:' .. other)
    if not raw then
      redis.call('SREM', KEYS[1], other)
    else
      local r = cjson.decode(raw)
      if r.first <= last and first <= r.last then return raw end
    end
  end
end
redis.call('SET', ns .. 'host:' .. hid, record, 'PX', ttl)
redis.call('SADD', KEYS[1], hid)
return false
"""

_REGISTER = _ARGS + _CLAIM
"""Write this host's record unless its range overlaps a live host's: that host's record (nothing written), or nil."""

_RENEW = _ARGS + """
if redis.call('SET', ns .. 'host:' .. hid, record, 'PX', ttl, 'XX') then return 1 end
""" + _CLAIM
"""Write this host's record over itself with a new TTL: 1; one that expired (or Redis lost) is registered again as by
:data:`_REGISTER`."""


async def agree_layout(client: Any, ns: str, shard_total: int, max_concurrency: int, *,
                       explicit_shards: int | None = None, explicit_concurrency: int | None = None) -> tuple[int, int]:
    """The cluster's ``(shard_total, max_concurrency)``: stored by the first host (``SET NX``), adopted by
    the others (the first host of a new cluster also marks its identify state fresh: :func:`store_layout`).
    ConfigError if this host was given an explicit ``--shards`` or ``--max-concurrency``
    that differs from the stored one."""
    key = layout_key(ns)
    mine = f"{shard_total},{max_concurrency}"
    if await store_layout(client, ns, key, mine):
        return shard_total, max_concurrency
    raw = await client.get(key)
    if raw is None:  # deleted in between (a flushed Redis): take it again
        await store_layout(client, ns, key, mine)
        return shard_total, max_concurrency
    try:
        total_s, mc_s = (raw.decode() if isinstance(raw, bytes) else raw).split(",")
        stored_total, stored_mc = int(total_s), int(mc_s)
    except ValueError:
        raise ConfigError(f"the coordinator's {key} holds {raw!r}, not 'shards,max_concurrency': delete it") from None
    if explicit_shards is not None and explicit_shards != stored_total:
        raise ConfigError(f"this host was started with {explicit_shards} shards, but the cluster has "
                             f"{stored_total} (stored in {key} by its first host or its last live reshard): start "
                             f"every host with the same --shards, or delete {key} once every host is stopped")
    if explicit_concurrency is not None and explicit_concurrency != stored_mc:
        raise ConfigError(f"this host was started with max_concurrency {explicit_concurrency}, but the cluster "
                             f"has {stored_mc} (stored in {key})")
    return stored_total, stored_mc


async def try_register_host(client: Any, ns: str, record: HostRecord, ttl: float = HOST_TTL) -> HostRecord | None:
    """Add this host to the registry unless its range overlaps a live host's, atomically; the first such host
    (then nothing was written), or None."""
    raw = await client.eval(_REGISTER, 1, hosts_key(ns), *_args(ns, record, ttl))
    return msgspec.json.decode(raw, type=HostRecord) if raw else None


def _args(ns: str, record: HostRecord, ttl: float) -> tuple[Any, ...]:
    return ns, record.host_id, msgspec.json.encode(record), int(ttl * 1000), record.first, record.last


def conflict_message(record: HostRecord, other: HostRecord) -> str:
    return (f"shards {record.first}-{record.last} overlap those of a live host: {other.describe()}; "
            f"give each host its own --shard-range or --host-index")


def lapsed_message(record: HostRecord, other: HostRecord) -> str:
    return (f"this host's registry record expired (Redis was out of reach for longer than host_ttl, or lost its data), "
            f"and meanwhile {other.describe()}: shards {max(record.first, other.first)}-"
            f"{min(record.last, other.last)} are that host's now, so this host stops its shards")


async def register_host(client: Any, ns: str, record: HostRecord, ttl: float = HOST_TTL) -> None:
    """Add this host to the registry, refusing (ConfigError, naming the other host) a range that overlaps a
    live host's."""
    other = await try_register_host(client, ns, record, ttl)
    if other is not None:
        raise ConfigError(conflict_message(record, other))


async def renew_host(client: Any, ns: str, record: HostRecord, ttl: float = HOST_TTL) -> bool:
    """Extend this host's record (written as ``record`` is now); False if it had expired (or Redis lost it) and was
    registered again.

    Registered again as :func:`register_host` does, atomically: if a live host took an overlapping range
    meanwhile, nothing is written and ConfigError (:func:`lapsed_message`) says this host must stop its shards.
    The host whose record lapsed yields: the other registered while the range was free by the registry's one
    notion of a live host (which the leases, broadcasts and statuses share), may have resumed the sessions this host
    stored, and renews without trouble, so only this host learns of the conflict and exactly one of the two stops."""
    answer = await client.eval(_RENEW, 1, hosts_key(ns), *_args(ns, record, ttl))
    if answer == 1:
        return True
    if answer:
        raise ConfigError(lapsed_message(record, msgspec.json.decode(answer, type=HostRecord)))
    return False


async def remove_host(client: Any, ns: str, hid: str) -> None:
    """Leave the registry (a clean shutdown), so that a successor with this range may start at once."""
    await client.delete(host_key(ns, hid))
    await client.srem(hosts_key(ns), hid)


async def read_hosts(client: Any, ns: str, *, renewed_within: float | None = None,
                     ttl: float = HOST_TTL) -> list[HostRecord]:
    """Every live host, by first shard: the one notion of a live host (its record in the registry has not expired),
    for ``cluster status``, broadcasts and the block leases. With ``renewed_within``, only the hosts whose record
    was renewed within that many seconds (a renewal sets its TTL to ``ttl``): a killed or frozen host drops out
    long before its record expires. Records that do not decode are skipped."""
    ids = sorted(i.decode() if isinstance(i, bytes) else i for i in await client.smembers(hosts_key(ns)))
    if not ids:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for hid in ids:
            pipe.get(host_key(ns, hid))
            pipe.pttl(host_key(ns, hid))
        answers = await pipe.execute()
    out = []
    for raw, ms in zip(answers[::2], answers[1::2], strict=True):
        if raw is None or ms <= 0 or (renewed_within is not None and ttl - ms / 1000 > renewed_within):
            continue
        try:
            out.append(msgspec.json.decode(raw, type=HostRecord))
        except msgspec.DecodeError:
            continue
    return sorted(out, key=lambda r: r.first)


async def keep_registered(client: Any, ns: str, record: HostRecord, ttl: float = HOST_TTL, *,
                          every: float = HOST_RENEW_INTERVAL, on_error: Callable[[BaseException], None] | None = None,
                          on_ok: Callable[[], None] | None = None) -> None:
    """Renew this host's record every ``every`` seconds, for as long as the host runs; a record that expired or was
    lost with Redis's data is written again, unless a live host took an overlapping range meanwhile: ConfigError then
    (:func:`renew_host`). Redis trouble is waited out and told to ``on_error`` (and its end to ``on_ok``), so that
    an idle host notices an unavailable coordinator too."""
    await keep_trying(lambda: renew_host(client, ns, record, ttl), every, start_after=every, on_error=on_error,
                      on_ok=on_ok)


def new_record(hid: str, shards: range, shard_total: int, http_url: str | None = None) -> HostRecord:
    """This process's record."""
    return HostRecord(host_id=hid, first=shards.start, last=shards.stop - 1, shard_total=shard_total,
                      pid=os.getpid(), hostname=this_hostname(), http_url=http_url, started_at=time.time())


def this_hostname() -> str:
    """``HOSTNAME`` (a Kubernetes pod's name) or the system's host name."""
    return os.environ.get("HOSTNAME") or socket.gethostname()
