"""Packet routing: what the supervisor does with each packet a worker sends, and sending to a shard's worker."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from cluster.exitcodes import ExitCode, for_close_code
from cluster.handler import ClusterStatus, maybe_await
from cluster.runtime import ACTIVE, Runtime, WorkerHandle
from ipc import ChannelClosed, answer, gather
from ipc.calls import Reply, encode_call, encode_value
from ipc.channel import BROADCAST_MARGIN
from ipc.protocol import (CutLate, CutPassed, Drained, Flushed, Hello, IdentifyCancel, IdentifyDone, IdentifyRequest,
                          IdentifyStarted, IdentifyUnused, Packet, Pong, Request, Response, SessionReport, ShardFatal,
                          ShardWarm, StatusReport, WorkerFatal)

__all__ = ["Router"]

log = logging.getLogger("cluster")


class Router:
    """Routes the workers' packets of one :class:`~cluster.runtime.Runtime`.

    Identify reports are queued for the identify pump; ``status()`` answers a worker's
    :class:`~cluster.handler.ClusterStatus` call; ``supervisor_handler.on_call`` answers the other calls."""

    def __init__(self, rt: Runtime, *, status: Callable[[], dict[str, Any]], supervisor_handler: Any = None) -> None:
        self.rt = rt
        self.status = status
        self.supervisor_handler = supervisor_handler
        self.host: str | None = None
        """This host's id when the cluster spans hosts (set with ``remote``)."""
        self.remote: Callable[[str, bytes, float], Awaitable[list[Reply]]] | None = None
        """The other hosts' workers' replies to a broadcast (:meth:`cluster.crosshost.CrossHost.ask`), or None."""
        self.on_fatal: Callable[[int, int | None], bool] | None = None
        """Told of a shard closed fatally (id, close code) before the cluster stops; True if it handled it (a live
        reshard: a new shard lost rolls it back; --auto-reshard on 4011)."""
        self.on_cutover: Callable[[WorkerHandle, Packet], None] | None = None
        """Gets a live reshard's reports (:class:`ShardWarm`, :class:`CutPassed`, :class:`CutLate`,
        :class:`Flushed`)."""

    def on_packet(self, handle: WorkerHandle, p: Packet) -> None:
        rt = self.rt
        now = time.monotonic()
        match p:
            case StatusReport():
                self._on_status(handle, p, now)
            case SessionReport(sessions=sessions):
                rt.record_sessions(sessions)
            case Pong(nonce=nonce):
                if handle.heartbeat is not None:
                    handle.heartbeat.pong(nonce, now)
            case IdentifyRequest(shard_id=shard_id) | IdentifyUnused(shard_id=shard_id) if shard_id in handle.shard_ids:
                rt.queue_identify(now, p, handle.id_base)
            case IdentifyStarted() | IdentifyDone() | IdentifyCancel():
                rt.queue_identify(now, p, handle.id_base)
            case Hello():
                if not handle.hello.done():
                    handle.hello.set_result(None)
            case Drained(sessions=sessions):
                rt.record_sessions(sessions)
                if not handle.drained.done():
                    handle.drained.set_result(None)
            case Request():
                rt.spawn_task(self._answer(handle, p), "answer", f"answer worker {handle.worker_id}")
            case ShardFatal(shard_id=shard_id, code=code):
                if self.on_fatal is None or not self.on_fatal(shard_id, code):
                    exit_code, text = for_close_code(code)
                    rt.stop(exit_code, f"shard {shard_id}: {text}")
            case ShardWarm() | CutPassed() | CutLate() | Flushed():
                if self.on_cutover is not None:
                    self.on_cutover(handle, p)
            case WorkerFatal(kind=kind, message=message):
                handle.last_fatal = f"{kind.replace('_', ' ')} failed: {message}"
                if kind == "handler_setup":  # stop logs it
                    rt.stop(ExitCode.HANDLER_SETUP, f"worker {handle.worker_id}: {handle.last_fatal}")
                else:
                    log.error("worker %d: %s", handle.worker_id, handle.last_fatal)

    def _on_status(self, handle: WorkerHandle, report: StatusReport, now: float) -> None:
        handle.rss, handle.loop_lag = report.rss, report.loop_lag
        handle.blocked, handle.handler_errors = report.blocked, report.handler_errors
        handle.consumer_errors = report.consumer_errors
        for st in report.shards:
            view = self.rt.shards.get(st.shard_id)
            if view is None or view.generation != handle.generation:
                continue
            if st.state != view.state:
                view.since = now
                if st.state == ACTIVE:
                    self.rt.emit("shard_active", shard_id=st.shard_id)
            view.state, view.latency, view.last_event_age = st.state, st.latency, st.last_event_age
            if st.events:
                view.events.update(st.events)

    async def _answer(self, handle: WorkerHandle, request: Request) -> None:
        if request.broadcast:
            replies = await self.gather_all(request.name, request.body,
                                            max(0.0, request.timeout - BROADCAST_MARGIN))  # back in time
            response = Response(request.id, encode_value(replies))
        else:
            response = await answer(request, self._on_call)
        try:
            if handle.channel is not None:
                handle.channel.send(response)
        except ChannelClosed:
            log.debug("worker %d is gone; dropping the answer to its %s", handle.worker_id, request.name)

    async def _on_call(self, call: Any) -> Any:
        if isinstance(call, ClusterStatus):
            return self.status()
        on_call = getattr(self.supervisor_handler, "on_call", None)
        if on_call is None:
            raise LookupError(f"the supervisor does not answer {type(call).__name__}")
        return await maybe_await(on_call(call))

    async def broadcast(self, call: Any, timeout: float = 5.0) -> list[Any]:
        """Send a typed call to every running worker (of every host, with a coordinator); gather the replies."""
        return await self.gather_all(*encode_call(call), timeout)

    async def gather_all(self, name: str, body: bytes, timeout: float) -> list[Reply]:
        """Every running worker's reply to the call (``name``, msgpack ``body``): this host's, then, when the
        cluster spans hosts, the other hosts' (each reply naming its host)."""
        local = gather(self.rt.running_channels(), name, body, timeout)
        if self.remote is None:
            return await local
        mine, others = await asyncio.gather(local, self.remote(name, body, timeout))
        return [msgspec.structs.replace(r, host=self.host) for r in mine] + others

    def send_to_shard(self, shard_id: int, packet: Packet) -> bool:
        """Send ``packet`` to the worker that runs ``shard_id``; False if it could not be sent."""
        rt = self.rt
        view = rt.shards.get(shard_id)
        handle = rt.workers.get(view.worker_id) if view else None
        if handle is None or handle.channel is None or handle.channel.closed:
            return False
        try:
            handle.channel.send(packet)
        except ChannelClosed:  # its pipe is closing (the worker exits): the reaper restarts it
            rt.errors[("ipc_send", "ChannelClosed")] += 1
            log.warning("worker %d's pipe is closing; %s for shard %d not sent", handle.worker_id,
                        type(packet).__name__, shard_id)
            return False
        return True
