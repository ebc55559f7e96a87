"""Where the supervisor keeps its shards' sessions so that the next run of a shard resumes it.

Two stores with one interface (:class:`SessionStore`): the state file (:class:`FileSessionStore`, one
host, today's :mod:`cluster.state` unchanged) and Redis (:class:`RedisSessionStore`, with a
``coordinator``), where any host that later runs a shard finds its session. Both are checked on load
by :mod:`cluster.state`'s rules: bot user, shard total, age, session id, seq, and a resume URL the
token may be sent to; what does not fit is ignored with one warning.

In Redis each shard has one hash, ``<namespace>session:<shard>``, with the session's fields and its
header (``saved_at``, ``shard_total``, ``user_id``, ``host``), replaced whole in one MULTI and expiring
``session_ttl`` seconds after its last write. Only the host that runs a shard writes it: with ``--assign
auto`` each write is also fenced by the shard's block lease (:mod:`cluster.leases`): the script refuses it
unless the lease still holds this host's ``<epoch>:<owner>``, so that a host that wakes up after its block was
taken over cannot overwrite the new owner's session; with static ranges, by this host's registry record
(:mod:`cluster.hosts`), so that a host whose record lapsed cannot overwrite those of the host that took its range.
Every write is also refused once the cluster's layout (``<namespace>layout``) names another shard count than the
session's: a live reshard's switch deletes the old layout's sessions, and a host that has not switched yet must
not write them back (under the same keys as the new layout's).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

import msgspec

from cluster.coordination.redis_conn import REDIS_DOWN, on_trouble, unavailable
from cluster.coordination.redis_url import redacted_url
from cluster.hosts import layout_key
from cluster.leases import fence_check, layout_check
from cluster.state import (VERSION, StateFile, check_sessions, load_sessions, save_sessions, saved_problem,
                           skipped_note)
from ipc.protocol import SessionInfo

__all__ = ["FileSessionStore", "RedisSessionStore", "SessionStore"]

log = logging.getLogger("cluster")


class SessionStore(Protocol):
    """Loads the sessions to resume at start, and saves the known ones while running and at shutdown."""

    interval: float
    """Seconds between saves while running (0: only at shutdown)."""
    where: str
    """Where the sessions go, for log lines (never a password)."""
    refresh: bool
    """Save at every interval even if no session changed (the store skips what is still fresh)."""

    async def load(self, shard_ids: Collection[int], shard_total: int, ttl: float, *, user_id: int | None,
                   gateway_url: str | None) -> dict[int, SessionInfo]:
        """The sessions of ``shard_ids`` that can be resumed (the rest is logged and identifies)."""
        ...

    async def save(self, shard_total: int, sessions: list[SessionInfo], *, user_id: int | None) -> None:
        """Write ``sessions``; raise OSError (ConnectionError included) if they could not be written."""
        ...


class FileSessionStore:
    """The state file (one host): :func:`cluster.state.load_sessions` and :func:`~cluster.state.save_sessions`."""

    def __init__(self, path: str, interval: float) -> None:
        self.path, self.interval, self.where, self.refresh = path, interval, f"the state file {path}", False

    async def load(self, shard_ids: Collection[int], shard_total: int, ttl: float, *, user_id: int | None,
                   gateway_url: str | None) -> dict[int, SessionInfo]:
        sessions, _ = load_sessions(self.path, shard_total, ttl, user_id=user_id, gateway_url=gateway_url)
        return sessions

    async def save(self, shard_total: int, sessions: list[SessionInfo], *, user_id: int | None) -> None:
        save_sessions(self.path, shard_total, sessions, user_id=user_id)


_REPLACE = layout_check + """
if not current_layout(KEYS[2], ARGV[2]) then return -1 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""
"""Replace one shard's hash whole and set its expiry (ARGV: ttl ms, shard count, then field, value, ...), atomically,
unless the cluster's layout ``KEYS[2]`` names another shard count (-1: a reshard switched away from this one); 1."""
_REPLACE_FENCED = fence_check + layout_check + """
if not current_layout(KEYS[3], ARGV[3]) then return -1 end
if not fenced(KEYS[2], ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""
""":data:`_REPLACE` only while the lease ``KEYS[2]`` holds ``ARGV[2]`` (``<epoch>:<owner>``; layout ``KEYS[3]``, shard
count ``ARGV[3]``); 1 written, 0 refused by the fence, -1 by the layout."""
Fence = Callable[[int], "tuple[str, str] | None"]
"""A shard's block lease, or this host's registry record (key, expected value), to check a write against, or None
(not fenced)."""
_FIELDS = ("shard_id", "session_id", "seq", "resume_url", "saved_at", "shard_total", "user_id", "host")


class RedisSessionStore:
    """Sessions in Redis, one hash per shard, shared by every host of the bot.

    ``client`` is a connected ``redis.asyncio`` client (:func:`cluster.coordination.redis_conn.connect`),
    ``prefix`` the bot's key namespace, ``host`` this host's id (written with each session, for operators).
    A save writes only the sessions that changed since they were last written, and rewrites the others
    before a third of ``ttl`` has passed so that a running shard's session never expires.

    ``fence`` names the key (and value) a shard's write depends on: with ``--assign auto`` its block lease
    (``<epoch>:<owner>``), with static ranges this host's registry record. A write whose key holds another value
    (or none) is refused by Redis, counted in :attr:`refused` and logged; the others are written. So is a write
    of a shard count the cluster's layout (``<prefix>layout``) no longer names (a reshard switched).
    """

    def __init__(self, client: Any, url: str, prefix: str, *, host: str, ttl: float, interval: float,
                 clock: Callable[[], float] = time.time, fence: Fence | None = None) -> None:
        self.client, self.url, self.prefix, self.host = client, url, prefix, host
        self.ttl, self.interval, self.clock, self.refresh = ttl, interval, clock, True
        self.where = f"the coordinator {redacted_url(url)} ({prefix}session:*)"
        self.fence = fence
        self.refused = 0
        """Session writes refused because the shard's block lease (or this host's registry record) was no longer
        this host's, or the cluster's layout was no longer the sessions' shard count."""
        self._written: dict[int, tuple[SessionInfo, float]] = {}
        self._replace = client.register_script(_REPLACE)
        self._replace_fenced = client.register_script(_REPLACE_FENCED)

    def key(self, shard_id: int) -> str:
        return f"{self.prefix}session:{shard_id}"

    async def load(self, shard_ids: Collection[int], shard_total: int, ttl: float, *, user_id: int | None,
                   gateway_url: str | None) -> dict[int, SessionInfo]:
        ids = sorted(shard_ids)
        with on_trouble(REDIS_DOWN) as caught:
            async with self.client.pipeline(transaction=False) as pipe:
                for shard_id in ids:
                    pipe.hmget(self.key(shard_id), *_FIELDS)
                rows = await pipe.execute()
        if caught.exc is not None:
            raise unavailable(self.url, caught.exc) from None
        now = self.clock()
        raws: list[Any] = []
        skipped: list[str] = []
        for shard_id, row in zip(ids, rows, strict=True):
            if row[1] is None and row[0] is None:
                continue  # never saved, or expired
            fields = dict(zip(_FIELDS, (_value(v) for v in row), strict=True))
            problem = _header_problem(fields, shard_total, ttl, now, user_id)
            if fields["shard_id"] != shard_id:
                problem = f"it is stored under shard {shard_id} but names shard {fields['shard_id']!r}"
            if problem:
                skipped.append(f"shard {shard_id}: {problem}")
            else:
                raws.append({k: fields[k] for k in ("shard_id", "session_id", "seq", "resume_url")})
        sessions, bad = check_sessions(raws, shard_total, gateway_url)
        note = f"resuming {len(sessions)} of {len(ids)} shards' sessions from {self.where}"
        sessions, _ = skipped_note(sessions, note, skipped + bad)
        for info in sessions.values():
            self._written[info.shard_id] = (info, now)  # fresh in Redis: no need to write it back at once
        return sessions

    async def save(self, shard_total: int, sessions: list[SessionInfo], *, user_id: int | None) -> None:
        now = self.clock()
        due = [s for s in sessions if (last := self._written.get(s.shard_id)) is None or last[0] != s
               or now - last[1] > self.ttl / 3]
        if not due:
            return
        ttl_ms, layout = max(1, int(self.ttl * 1000)), layout_key(self.prefix)
        with on_trouble(REDIS_DOWN) as caught:
            async with self.client.pipeline(transaction=False) as pipe:
                for s in due:  # one script per shard: a reader sees the old session or the new one, whole
                    fields: list[Any] = ["shard_id", s.shard_id, "session_id", s.session_id, "seq", s.seq,
                                         "saved_at", repr(now), "shard_total", shard_total, "host", self.host]
                    if s.resume_url is not None:
                        fields += ["resume_url", s.resume_url]
                    if user_id is not None:
                        fields += ["user_id", user_id]
                    lease = self.fence(s.shard_id) if self.fence is not None else None
                    if lease is None:
                        await self._replace(keys=[self.key(s.shard_id), layout],
                                            args=[ttl_ms, shard_total, *fields], client=pipe)
                    else:
                        await self._replace_fenced(keys=[self.key(s.shard_id), lease[0], layout],
                                                   args=[ttl_ms, lease[1], shard_total, *fields], client=pipe)
                results = await pipe.execute()
        if caught.exc is not None:
            self._written.clear()  # a Redis that comes back may have lost them all: write everything next time
            raise unavailable(self.url, caught.exc) from None
        refused, stale = [], []
        for s, result in zip(due, results, strict=True):
            if result == 0:
                refused.append(s.shard_id)
            elif result == -1:
                stale.append(s.shard_id)
            else:
                self._written[s.shard_id] = (s, now)
        self.refused += len(refused) + len(stale)
        if stale:
            log.warning("not saving the sessions of shards %s of the %d-shard layout: the cluster resharded away from "
                        "it (its sessions went with the switch)", ", ".join(map(str, stale)), shard_total)
        if refused:
            log.warning("not saving the sessions of shards %s: their block's lease, or this host's registry record, "
                        "is no longer this host's (another host may run them now)", ", ".join(map(str, refused)))


def _value(raw: bytes | None) -> Any:
    """A hash field as the type it was written as: an int, a float, text, or None if absent."""
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace")
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _header_problem(fields: dict[str, Any], shard_total: int, ttl: float, now: float,
                    user_id: int | None) -> str | None:
    """Why one stored session's header rules it out (:func:`cluster.state.saved_problem`), or None."""
    try:
        header = msgspec.convert({"version": VERSION, "saved_at": fields["saved_at"], "shard_total":
                                  fields["shard_total"], "sessions": [], "user_id": fields["user_id"]}, StateFile)
    except msgspec.ValidationError as exc:
        return str(exc).replace("`", "")
    return saved_problem(header, shard_total, ttl, now, user_id)
