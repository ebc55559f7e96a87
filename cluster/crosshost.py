"""What hosts of one bot share through the coordinator's Redis besides identify slots: sessions, each host's
status, and broadcasts.

* Sessions: :class:`~cluster.sessions_store.RedisSessionStore` (a host resumes what another one ran).
* Status: every ``report_interval`` each supervisor writes its ``/status`` (msgpack) to
  ``<namespace>status:<host id>``, expiring after :func:`status_ttl`; it reads every live host's back (live: in
  the registry, :func:`cluster.hosts.read_hosts`), for the ``hosts`` section of its ``/status`` and for
  ``python -m cluster status --coordinator ...``.
* Broadcast: ``ctx.broadcast(call)`` also reaches the workers of the other hosts. The supervisor publishes
  the call (its registered name and msgpack body, never code) on ``<namespace>broadcast``; every other
  supervisor gathers its workers' replies and publishes them on ``<namespace>reply:<origin host>``. A host
  that does not answer within the call's timeout gets an error reply per worker it last reported.

A host that loses Redis keeps running: publishing and relaying log one warning, retry every interval, and say
when they work again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec

from cluster.coordination.redis_conn import REDIS_DOWN, keep_subscribed, keep_trying, on_trouble, unavailable
from cluster.coordination.redis_url import redacted_url
from cluster.hosts import read_hosts
from cluster.sessions_store import RedisSessionStore
from ipc import gather
from ipc.calls import Reply

__all__ = ["BroadcastAnswer", "BroadcastRequest", "CrossHost", "HostStatus", "REPLY_MARGIN", "STATUS_TTL_MIN",
           "host_summary", "read_statuses", "status_ttl"]

log = logging.getLogger("cluster")

STATUS_TTL_MIN = 5.0
"""Seconds a host's published status outlives its last write, at least (else 5 report intervals): a host
silent for that long is no longer listed, nor waited for by broadcasts."""
REPLY_MARGIN = 0.5
"""Seconds of a broadcast's timeout kept for the other hosts' answers to travel back: their workers get the
timeout less this, so that their replies arrive before the asking worker's own deadline."""

_HOST_ID: str | None = None


def status_ttl(report_interval: float) -> float:
    return max(STATUS_TTL_MIN, 5 * report_interval)


class HostStatus(msgspec.Struct, frozen=True):
    """One host's published ``/status`` (``status``), who it is, and when it wrote it (Unix time)."""

    host: str
    hostname: str
    pid: int
    published_at: float
    http_url: str | None
    status: dict[str, Any]


class BroadcastRequest(msgspec.Struct, frozen=True, tag=True):
    rid: str
    origin: str
    name: str
    body: bytes
    timeout: float


class BroadcastAnswer(msgspec.Struct, frozen=True, tag=True):
    rid: str
    host: str
    replies: list[Reply]


_encode = msgspec.msgpack.Encoder().encode
_decode_message = msgspec.msgpack.Decoder(BroadcastRequest | BroadcastAnswer).decode
_decode_status = msgspec.msgpack.Decoder(HostStatus).decode


async def read_statuses(client: Any, prefix: str) -> dict[str, HostStatus]:
    """The last published status of every live host (:func:`cluster.hosts.read_hosts`), by host id; a host that
    published none yet, or one that cannot be decoded, is left out."""
    ids = [r.host_id for r in await read_hosts(client, prefix)]
    if not ids:
        return {}
    out = {}
    for raw in await client.mget([f"{prefix}status:{hid}" for hid in ids]):
        if raw is None:
            continue  # none yet (or it expired: the host is going)
        try:
            st = _decode_status(raw)
        except msgspec.DecodeError:
            continue
        out[st.host] = st
    return dict(sorted(out.items()))


def _ranges(ids: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for i in sorted(ids):
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def host_summary(h: HostStatus, now: float) -> dict[str, Any]:
    """One host in ``/status``'s ``hosts`` section: who, its shards (as inclusive ranges) and their states,
    its identify queue and budget, and how old this is (seconds)."""
    st = h.status
    shards = st.get("shards") or []
    return {"host": h.host, "hostname": h.hostname, "pid": h.pid, "http_url": h.http_url,
            "age": max(0.0, now - h.published_at), "shard_total": st.get("shard_total"), "active": st.get("active"),
            "shards": _ranges([s["id"] for s in shards]), "states": dict(Counter(s["state"] for s in shards)),
            "workers": len(st.get("workers") or []), "identify_queue": st.get("identify_queue"),
            "session_budget": st.get("session_budget"), "stopping": st.get("stopping")}


class _Pending:
    def __init__(self, expected: set[str]) -> None:
        self.expected = expected
        self.answers: dict[str, list[Reply]] = {}
        self.done = asyncio.Event()

    def add(self, answer: BroadcastAnswer) -> None:
        if answer.host in self.expected:
            self.answers[answer.host] = answer.replies
            if self.expected <= self.answers.keys():
                self.done.set()


class CrossHost:
    """This host's share of the coordinator's Redis: its session store, its published status, the broadcast
    relay. ``status()`` is this supervisor's ``/status`` dict, ``channels()`` its running workers' IPC channels,
    ``http_url()`` its HTTP address (or None)."""

    def __init__(self, client: Any, url: str, prefix: str, *, host: str, report_interval: float, session_ttl: float,
                 status: Callable[[], dict[str, Any]], channels: Callable[[], dict[int, Any]],
                 http_url: Callable[[], str | None], spawn: Callable[[Any, str, str], Any]) -> None:
        self.client, self.url, self.prefix = client, url, prefix
        self.host = host  # the host registry's id (cluster.hosts.host_id)
        self.report_interval = report_interval
        self.status, self.channels, self.http_url, self.spawn = status, channels, http_url, spawn
        self.sessions = RedisSessionStore(client, url, prefix, host=self.host, ttl=session_ttl,
                                          interval=report_interval)
        self.status_key = f"{prefix}status:{self.host}"
        self.broadcast_channel = f"{prefix}broadcast"
        self.reply_channel = f"{prefix}reply:{self.host}"
        self.hosts: dict[str, HostStatus] = {}  # the last read of every host's status
        self._pending: dict[str, _Pending] = {}
        self._problems: dict[str, str] = {}  # per loop, the Redis error last logged

    def summaries(self) -> tuple[dict[str, Any], ...]:
        """The ``hosts`` section of ``/status`` (from the last read: no Redis call)."""
        now = time.time()
        return tuple(host_summary(h, now) for h in self.hosts.values())

    # --- status ------------------------------------------------------------------------------

    async def publish_status(self) -> None:
        """Every report interval: write this host's status, read every host's."""
        await keep_trying(self.publish_once, self.report_interval, kinds=REDIS_DOWN,
                          on_error=lambda exc: self._trouble("status", exc, "this host's status is not published"),
                          on_ok=lambda: self._recovered("status"))

    async def publish_once(self) -> None:
        status = self.status()
        status.pop("hosts", None)
        record = HostStatus(self.host, socket.gethostname(), os.getpid(), time.time(), self.http_url(), status)
        await self.client.set(self.status_key, _encode(record),
                              px=int(status_ttl(self.report_interval) * 1000))
        self.hosts = await read_statuses(self.client, self.prefix)

    # --- broadcast ---------------------------------------------------------------------------

    async def relay(self) -> None:
        """Receive the other hosts' broadcasts (answering them) and their answers to ours; resubscribe after
        Redis went away."""

        async def subscribed() -> None:
            self._recovered("relay")

        await keep_subscribed(self.client, [self.broadcast_channel, self.reply_channel], self._received,
                              on_subscribed=subscribed, kinds=REDIS_DOWN,
                              on_error=lambda exc: self._trouble("relay", exc,
                                                                 "broadcasts do not reach the other hosts"),
                              retry=(self.report_interval, self.report_interval))

    def _received(self, data: bytes) -> None:
        try:
            message = _decode_message(data)
        except msgspec.DecodeError as exc:
            log.warning("ignoring a broadcast message that does not decode: %s", exc)
            return
        if isinstance(message, BroadcastAnswer):
            pending = self._pending.get(message.rid)
            if pending is not None:
                pending.add(message)
        elif message.origin != self.host:
            self.spawn(self._serve(message), "serve", f"serve broadcast from {message.origin}")

    async def _serve(self, request: BroadcastRequest) -> None:
        """Gather this host's workers' replies to another host's broadcast and send them back."""
        replies = await gather(self.channels(), request.name, request.body, request.timeout)
        answer = BroadcastAnswer(request.rid, self.host, [msgspec.structs.replace(r, host=self.host)
                                                          for r in replies])
        with on_trouble(REDIS_DOWN) as caught:
            await self.client.publish(f"{self.prefix}reply:{request.origin}", _encode(answer))
        if caught.exc is not None:
            log.warning("could not send the answer to %s's broadcast %s: %s", request.origin, request.name,
                        unavailable(self.url, caught.exc))

    async def ask(self, name: str, body: bytes, timeout: float) -> list[Reply]:
        """The other hosts' workers' replies to the call: one per worker, an error for each worker of a host
        that did not answer within ``timeout`` or could not be reached. The other hosts' workers have
        ``timeout`` less :data:`REPLY_MARGIN` to answer."""
        rid = uuid.uuid4().hex
        hosts = self.hosts
        pending = _Pending(set())
        problem = f"did not answer within {timeout:g}s"
        try:
            with on_trouble(REDIS_DOWN) as caught:
                async with asyncio.timeout(timeout):
                    hosts = await read_statuses(self.client, self.prefix)
                    pending.expected = {h for h in hosts if h != self.host}
                    if pending.expected:
                        self._pending[rid] = pending
                        request = BroadcastRequest(rid, self.host, name, body, max(0.0, timeout - REPLY_MARGIN))
                        await self.client.publish(self.broadcast_channel, _encode(request))
                        await pending.done.wait()
        finally:
            self._pending.pop(rid, None)
        if caught.exc is not None and not isinstance(caught.exc, TimeoutError):  # (a timeout: the problem above)
            problem = f"not reached: {unavailable(self.url, caught.exc)}"
        out: list[Reply] = []
        for host, st in hosts.items():
            if host == self.host:
                continue
            if host in pending.answers:
                out += pending.answers[host]
            else:
                out += [Reply(w["id"], None, f"host {host} {problem}", host)
                        for w in st.status.get("workers") or []]
        return out

    # --- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Withdraw this host's status (it stops being listed and waited for); the supervisor owns the client."""
        with on_trouble(REDIS_DOWN):
            await self.client.delete(self.status_key)

    def _trouble(self, where: str, exc: BaseException, effect: str) -> None:
        text = str(unavailable(self.url, exc))
        if self._problems.get(where) != text:
            log.warning("%s; %s (trying again every %g s)", text, effect, self.report_interval)
        self._problems[where] = text

    def _recovered(self, where: str) -> None:
        if self._problems.pop(where, None) is not None:
            log.warning("the coordinator %s is reachable again (%s)", redacted_url(self.url), where)
