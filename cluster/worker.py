"""A worker process: several shards on one uvloop event loop, driven by the supervisor.

Lifecycle: import the handler (failure: ``WorkerFatal`` and exit code 3), say ``Hello``,
wait for ``Assign``, run ``handler.setup``, then run every shard, delivering its events to
``handler.on_event(shard, event)``. Identify slots come from the supervisor through
:class:`~cluster.queue.IpcQueue`; sessions (up to the last event the handler finished) and health go
back in batched reports. On
``Drain``, SIGTERM or the supervisor's disappearance, the shards are closed resumably and
their sessions are handed back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from cluster.cutover import NewGate, OldGate, ResumedGate, Verdict, snowflake_at, snowflake_time
from cluster.fence import Fence
from cluster.handler import HandlerImportError, WorkerContext, load_handler, maybe_await
from cluster.liveness import Liveness
from cluster.queue import IpcQueue
from cluster.snapshot import ShardPhase
from cluster.watchdog import LoopWatchdog
from ipc import Channel, ChannelClosed, SessionDiff, answer
from ipc.protocol import (Assign, Assignment, CutLate, CutMark, CutoverEnd, Cutover, CutPassed, Drain, Drained, Flushed,
                          Hello, IdentifyGrant, IdentifyRefused, LeaseDeadline, Packet, Regate, Request, RestartShard,
                          SessionInfo, SessionReport, ShardFatal, ShardStatus, ShardWarm, StatusReport, WorkerFatal,
                          encode)

__all__ = ["EXIT_HANDLER_IMPORT", "QUEUED", "WorkerSpec", "run_worker"]

log = logging.getLogger("cluster.worker")

EXIT_HANDLER_IMPORT = 3
QUEUED = "QUEUED"
"""The reported state of a shard waiting for its identify slot. The shard opens no gateway connection
until the slot is granted (``shard.Shard`` takes its identify turn before connecting), so the worker
starts every shard at once."""
EXIT_HANDLER_SETUP = 9
BEAT_RETRY = 0.05
"""Seconds between tries to send a cutover marker heartbeat on a shard that is not Active yet."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs (pickled to the child; the token never appears in repr)."""

    worker_id: int
    token: str = field(repr=False)
    intents: int
    handler: Any = None
    gateway_url: str | None = None
    compression: str | None = "zlib-stream"
    report_interval: float = 1.0
    blocked_threshold: float = 0.5
    log_level: str = "INFO"
    shard_options: dict[str, Any] = field(default_factory=dict)


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class _NullHandler:
    pass


class Worker:
    def __init__(self, spec: WorkerSpec, conn: Any) -> None:
        self.spec = spec
        self.conn = conn
        self.shards: dict[int, Any] = {}
        self.runners: dict[int, asyncio.Task[None]] = {}
        self.shard_total = 0
        self.events: dict[int, dict[str, int]] = {}  # per shard: events by type since the last report
        self.live: dict[int, Liveness] = {}  # per shard: its signs of life, for the supervisor's zombie check
        self.assigned_session: dict[int, bool] = {}
        self.was_ready: dict[int, bool] = {}
        self.handler_errors = 0
        self.consumer_errors = 0  # unexpected exceptions out of a shard's next_event (the shard goes on)
        self.sessions = SessionDiff()
        self.watchdog = LoopWatchdog(spec.blocked_threshold)
        self.fence = Fence()  # --assign auto: no frame past the block's lease deadline
        self.gates: dict[int, OldGate | NewGate | ResumedGate] = {}  # a live reshard's cutover gates, by shard
        self.held: dict[int, list[Any]] = {}  # events a gate holds back, by shard
        self._assign: asyncio.Future[Assign] | None = None
        self._early_cutover: Cutover | Regate | None = None  # read before the Assign's shards were started
        self._early_mark: CutMark | None = None  # and its CutMark
        self._stop: asyncio.Future[bool] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._releases: set[asyncio.Task[None]] = set()  # deliveries of held events (cutover end), awaited at the stop

    # --- shard/ API adapters (the only place that knows the Shard's attribute names) ------

    def _session_info(self, shard_id: int) -> SessionInfo | None:
        """The session to report for resuming the shard: up to the last event its handler finished (the
        shard's ``handled_session``), so a worker killed at any moment loses none of the events it had received
        but not handled; they, and the one being handled, come again after the resume (at least once)."""
        shard = self.shards.get(shard_id)
        session = getattr(shard, "handled_session", None)
        return None if session is None else self._info(shard_id, shard, session)

    def _info(self, shard_id: int, shard: Any, session: Any) -> SessionInfo:
        """A shard's ``session`` as reported to the supervisor, capped by its cutover gate (:meth:`_resume_seq`)."""
        return SessionInfo(shard_id, session.id, self._resume_seq(shard_id, session.sequence),
                           getattr(shard, "resume_url", None))

    def _resume_seq(self, shard_id: int, handled: int) -> int:
        """The sequence to report for a shard's session: a shard of either set resumes before the first event its
        cutover gate holds (cluster.cutover), so that a restart loses none of them."""
        gate = self.gates.get(shard_id)
        return handled if gate is None else gate.resume_seq(handled)

    def _status(self, shard_id: int, now: float, queued: frozenset[int] = frozenset()) -> ShardStatus:
        shard = self.shards[shard_id]
        state = getattr(shard, "state", None)
        name = getattr(state, "name", None) or str(state)
        if shard_id in queued:
            name = QUEUED  # waiting for its identify slot, with no gateway connection
        latency = getattr(shard, "latency", None)
        avg: Any = getattr(latency, "average", None)
        if callable(avg):
            avg = avg()
        if hasattr(avg, "total_seconds"):
            avg = avg.total_seconds()
        ack = getattr(latency, "received", None)  # the last heartbeat ACK, whatever the event_types filter keeps
        age = self.live[shard_id].age(now, name == ShardPhase.ACTIVE, ack if isinstance(ack, (int, float)) else None)
        counts = self.events[shard_id]
        delta = dict(counts)
        counts.clear()
        return ShardStatus(shard_id, name, float(avg) if isinstance(avg, (int, float)) else None, age, delta)

    def _make_shard(self, shard_id: int, info: SessionInfo | None) -> Any:
        from shard import Config, Intents, Session, Shard, ShardId
        from shard.inflater import Compression

        options: dict[str, Any] = dict(self.spec.shard_options)
        if self.spec.gateway_url:
            options["gateway_url"] = self.spec.gateway_url
        if info is not None:
            options["session"] = Session(info.session_id, info.seq)
            options["resume_url"] = info.resume_url
        compression = cast(Compression, self.spec.compression)  # a str checked by ClusterConfig and again by Config
        config = Config(self.spec.token, Intents(self.spec.intents), compression=compression,
                        queue=self.queue, **options)
        return Shard.with_config(ShardId(shard_id, self.shard_total), config)

    # --- main --------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._assign = loop.create_future()
        self._stop = loop.create_future()
        self.channel = await Channel.open(self.conn, self._on_packet, name=f"worker {self.spec.worker_id}")
        try:
            self.handler = load_handler(self.spec.handler) if self.spec.handler is not None else _NullHandler()
        except HandlerImportError as exc:
            log.error("%s", exc)
            self.channel.send(WorkerFatal("handler_import", str(exc)))
            await self._flush()
            return EXIT_HANDLER_IMPORT
        self.queue = IpcQueue(self.channel.send, self._identify_reason)
        import shard  # noqa: F401 - imported before the watchdog starts: the first shard must not pay for it
        loop.add_signal_handler(signal.SIGTERM, self.stop, True)
        self.watchdog.start()
        self.channel.send(Hello(self.spec.worker_id, os.getpid()))
        closed = loop.create_task(self.channel.wait_closed())
        first: list[asyncio.Future[Any]] = [self._assign, closed, self._stop]
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if not self._assign.done():  # drained (or orphaned) before getting any shard
            if not self.channel.closed:
                self.channel.send(Drained([]))
            await self._flush()
            return 0
        assign = self._assign.result()
        self.shard_total = assign.shard_total
        for a in assign.shards:
            self._start_shard(a)
            if assign.hold:  # the new set of a live reshard: nothing reaches the handler before the cutover
                self.gates[a.shard_id] = NewGate(on_warm=partial(self._send, ShardWarm(a.shard_id)),
                                                 on_cold=partial(self._send, ShardWarm(a.shard_id, False)))
                self.held[a.shard_id] = []
        if self._early_cutover is not None:  # sent right after the Assign (a worker restarted during a cutover)
            self._apply(self._early_cutover)
            self._early_cutover = None
        if self._early_mark is not None:
            self._start_task(self._beat_at(self._early_mark.at, OldGate))
            self._early_mark = None
        self.ctx = WorkerContext(self.spec.worker_id, self.shards, self.shard_total, self.channel)
        setup = getattr(self.handler, "setup", None)
        if setup is not None:
            try:
                await maybe_await(setup(self.ctx))
            except Exception as exc:
                log.exception("handler setup failed")
                self.channel.send(WorkerFatal("handler_setup", f"{type(exc).__name__}: {exc}"))
                await self._flush()
                return EXIT_HANDLER_SETUP
        # Sessions resume at once; new sessions wait for their identify slot without a connection.
        for a in assign.shards:
            self.runners[a.shard_id] = loop.create_task(self._run_shard(a.shard_id))
        reporter = loop.create_task(self._report_loop())
        last: list[asyncio.Future[Any]] = [closed, self._stop]
        await asyncio.wait(last, return_when=asyncio.FIRST_COMPLETED)
        resumable = self._stop.result() if self._stop.done() else True
        reporter.cancel()
        if self._releases:  # a rollback right before the stop (SIGTERM in a cutover): its held events first
            await asyncio.wait(self._releases)
        sessions = await self._close_all(resumable)
        if not self.channel.closed:
            self._send_sessions(Drained, sessions)
        teardown = getattr(self.handler, "teardown", None)
        if teardown is not None:
            try:
                await maybe_await(teardown())
            except Exception:
                log.exception("handler teardown failed")
        self.watchdog.stop()
        await self._flush()
        return 0

    def stop(self, resumable: bool = True) -> None:
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(resumable)

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the transport write out
        self.channel.close()
        await self.channel.wait_closed()

    def _start_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- packets from the supervisor ---------------------------------------------------------

    def _on_packet(self, packet: Packet) -> None:
        if isinstance(packet, (IdentifyGrant, IdentifyRefused)):
            self.queue.feed(packet)
        elif isinstance(packet, Assign):
            if self._assign is not None and not self._assign.done():
                self._assign.set_result(packet)
        elif isinstance(packet, Request):
            self._start_task(self._answer(packet))
        elif isinstance(packet, RestartShard):
            self._start_task(self._restart_shard(packet.shard_id, packet.reason))
        elif isinstance(packet, Drain):
            self.stop(packet.resumable)
        elif isinstance(packet, LeaseDeadline):
            self.fence.extend(packet.deadline)
        elif isinstance(packet, (Cutover, Regate)):
            if not self._started():
                self._early_cutover = packet  # read with the Assign: applied once its shards exist
            else:
                self._apply(packet)
        elif isinstance(packet, CutMark):
            if not self._started():
                self._early_mark = packet
            else:
                self._start_task(self._beat_at(packet.at, OldGate))
        elif isinstance(packet, CutoverEnd):
            self._early_cutover = self._early_mark = None
            self._end_cutover(packet.go, packet.delivered)

    def _started(self) -> bool:
        """Whether the Assign's shards exist (a cutover packet read with the Assign waits for them)."""
        return self._assign is not None and self._assign.done() and bool(self.shards)

    def _send(self, packet: Packet) -> None:
        if not self.channel.closed:
            self.channel.send(packet)

    async def _answer(self, request: Request) -> None:
        on_call = getattr(self.handler, "on_call", None)
        if on_call is None:
            def on_call(call: Any) -> Any:
                raise LookupError(f"worker {self.spec.worker_id}'s handler has no on_call")
        response = await answer(request, on_call)
        if not self.channel.closed:
            self.channel.send(response)

    # --- shards ------------------------------------------------------------------------------

    def _identify_reason(self, shard_id: int) -> str:
        if self.was_ready.get(shard_id):
            return "session_lost"
        if self.assigned_session.get(shard_id):
            return "resume_failed"
        return "initial"

    def _start_shard(self, a: Assignment) -> None:
        self.assigned_session[a.shard_id] = a.session is not None
        self.events.setdefault(a.shard_id, {})
        self.live[a.shard_id] = Liveness(time.monotonic())  # a restarted shard starts afresh too
        self.shards[a.shard_id] = self._make_shard(a.shard_id, a.session)

    async def _run_shard(self, shard_id: int) -> None:
        from shard import GatewayError

        shard = self.shards[shard_id]
        counts = self.events[shard_id]
        count = counts.get
        live = self.live[shard_id]
        on_event = getattr(self.handler, "on_event", None)
        watchdog = self.watchdog
        clock = time.monotonic
        gates = self.gates
        failing = 0  # unexpected errors in a row
        while True:
            live.waiting = True
            try:
                event = await shard.next_event()
            except GatewayError as exc:
                if exc.is_fatal():
                    log.error("shard %d closed fatally: %s", shard_id, exc)
                    if not self.channel.closed:
                        self.channel.send(ShardFatal(shard_id, exc.close_code, str(exc)))
                    return
                log.warning("shard %d: %s", shard_id, exc)
                continue
            except Exception as exc:  # one bad input or struct must not end this shard's consumer
                self.consumer_errors += 1
                failing += 1
                if failing == 1:
                    log.exception("shard %d: reading the next event failed; the shard goes on", shard_id)
                else:  # the traceback once per run of failures
                    log.error("shard %d: reading the next event failed (%d in a row): %s: %s",
                              shard_id, failing, type(exc).__name__, exc)
                await asyncio.sleep(0)  # never a busy loop that starves the other shards
                continue
            failing = 0
            etype = event.type
            counts[etype] = count(etype, 0) + 1
            live.waiting = False
            live.taken = clock()
            if etype == "READY":
                self.was_ready[shard_id] = True
            if gates:  # a live reshard's cutover (cluster.cutover); otherwise this one check is all it costs
                gate = gates.get(shard_id)
                if gate is not None and (verdict := gate.admit(etype, event.data, event.seq)) is not Verdict.DELIVER:
                    if verdict is Verdict.HOLD:
                        self.held[shard_id].append(event)
                    continue
            if on_event is None:
                continue
            watchdog.current = (etype, shard_id)  # formatted only if the loop is reported blocked
            try:
                result = on_event(shard, event)
                if result is not None and hasattr(result, "__await__"):
                    await result
            except Exception:
                self.handler_errors += 1
                log.exception("handler failed on %s for shard %d; the shard goes on", etype, shard_id)
            watchdog.current = None

    # --- live resharding: the cutover (cluster.cutover) ---------------------------------------

    def _apply(self, packet: Cutover | Regate) -> None:
        if isinstance(packet, Cutover):
            self._cutover(packet.at, packet.old)
            return
        cut = snowflake_at(packet.at)  # restarted after go: each shard's replay is gated as its lost gate would have
        for shard_id, marker_seq in packet.marks.items():
            if shard_id in self.shards:
                self.gates[shard_id] = ResumedGate(cut, marker_seq, packet.delivered, packet.dropped.get(shard_id, []),
                                                   on_done=partial(self._resumed, shard_id))
                if marker_seq is None:
                    log.warning("shard %d: resumed after the switch without its marker; events without a creation id "
                                "may be delivered twice", shard_id)

    def _resumed(self, shard_id: int) -> None:
        """A regated shard's replay is over: ungated, it no longer needs a gate after a restart."""
        self.gates.pop(shard_id, None)
        self._flushed(shard_id)

    def _flushed(self, shard_id: int) -> None:
        """A new shard delivered what it held (or its replay): report its session, then say so."""
        if not self.channel.closed:
            self._report_sessions()
            self._send(Flushed(shard_id))

    def _cutover(self, at: float, old: bool) -> None:
        """The cut is at ``at``: gate the old set's shards, arm the new set's. At ``at`` every new shard sends the
        heartbeat whose ACK marks it past the cut if no event with a creation id does first; the old set's shards
        send theirs at :class:`CutMark`, once every new shard passed."""
        cut = snowflake_at(at)
        for shard_id in list(self.shards):
            if old:
                self.gates[shard_id] = OldGate(cut, on_pass=partial(self._passed, shard_id))
                self.held[shard_id] = []
            else:
                gate = self.gates.get(shard_id)
                if isinstance(gate, NewGate) and not gate.arm(cut, on_pass=partial(self._passed, shard_id)):
                    ahead = snowflake_time(gate.max_seen) - at
                    log.error("shard %d: the cut came too late: a message created %.3f s after it was already dropped "
                              "(is this host's clock behind Discord's?)", shard_id, ahead)
                    self._send(CutLate(shard_id, ahead))
        if not old:
            self._start_task(self._beat_at(at, NewGate))

    def _passed(self, shard_id: int) -> None:
        """A gated shard passed its marker: the supervisor counts it (an old one's digests with it); a new one that
        is live already needs no gate any more."""
        gate = self.gates.get(shard_id)
        if isinstance(gate, NewGate):  # what a restart of this worker after go needs to gate its replay
            self._send(CutPassed(shard_id, gate.dropped, gate.marker_seq))
        else:
            self._send(CutPassed(shard_id, gate.digests if isinstance(gate, OldGate) else []))
        if isinstance(gate, NewGate) and gate.mode == "live":
            del self.gates[shard_id]

    async def _beat_at(self, at: float, kind: type[OldGate] | type[NewGate]) -> None:
        """At wall time ``at``, each shard gated by a ``kind`` gate sends its marker heartbeat (on the heartbeat path:
        no command permit, never behind queued commands); one that is not Active (reconnecting, or resuming in a
        restarted worker) sends it once it is, so its marker follows what its session replayed."""
        await asyncio.sleep(max(0.0, at - time.time()))
        waiting = [shard_id for shard_id, gate in self.gates.items() if isinstance(gate, kind)]
        while waiting:
            later = []
            for shard_id in waiting:
                gate, shard = self.gates.get(shard_id), self.shards.get(shard_id)
                if (not isinstance(gate, kind) or gate.marker is None or gate.marker.passed or shard is None
                        or (isinstance(gate, OldGate) and gate.ended)):
                    continue  # passed (a new shard may, by a creation id), ungated, or the switch came
                acks = shard.beat_now()
                if acks is None:
                    later.append(shard_id)
                else:
                    gate.marker.heartbeats_sent(acks)
            waiting = later
            if waiting:
                await asyncio.sleep(BEAT_RETRY)

    def _end_cutover(self, go: bool, delivered: list[int]) -> None:
        """``go``: the new set delivers what it held (then live), the old set drops everything. A rollback: the old
        set delivers what it held and goes on ungated; the new set is about to be drained."""
        for shard_id, gate in list(self.gates.items()):
            if isinstance(gate, OldGate):
                gate.ended = go
                if go:
                    self.held[shard_id].clear()
                else:
                    self._start_release(shard_id)
            elif not isinstance(gate, NewGate):
                continue
            elif go:
                gate.mode = "flushing"
                gate.old_delivered(delivered)
                self._start_release(shard_id)
            else:
                self.held[shard_id].clear()

    def _start_release(self, shard_id: int) -> None:
        task = asyncio.get_running_loop().create_task(self._release(shard_id))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, shard_id: int) -> None:
        """Deliver a shard's held events in order (events arriving meanwhile are held behind them), then ungate it:
        an old shard at a rollback, a new one at go (which stays gated, live, until its own marker)."""
        held = self.held[shard_id]
        on_event = getattr(self.handler, "on_event", None)
        shard = self.shards[shard_id]
        gate = self.gates.get(shard_id)
        while held:
            event = held[0]  # taken off once handed over: a session reported meanwhile resumes before it
            dropped = isinstance(gate, NewGate) and gate.delivered_by_old(event.type, event.data)
            if on_event is not None and not dropped:
                try:
                    await maybe_await(on_event(shard, event))
                except Exception:
                    self.handler_errors += 1
                    log.exception("handler failed on %s for shard %d; the shard goes on", event.type, shard_id)
            held.pop(0)
            if gate is not None:
                gate.released(event.seq)
        gate = self.gates.get(shard_id)
        if isinstance(gate, NewGate):
            gate.mode = "live"
            if gate.passed:
                del self.gates[shard_id]
            # else: until its marker, it still drops the old set's creation ids that come late
            self._flushed(shard_id)
            return
        self.gates.pop(shard_id, None)

    async def _close_shard(self, shard_id: int, resumable: bool) -> SessionInfo | None:
        from shard import CloseFrame

        runner = self.runners.pop(shard_id, None)
        if runner is not None:
            runner.cancel()
        shard = self.shards[shard_id]
        info = self._session_info(shard_id)
        try:
            async with asyncio.timeout(5.0):
                session = await shard.close(CloseFrame.RESUME if resumable else CloseFrame.NORMAL)
        except Exception as exc:  # noqa: BLE001 - keep the last known session
            log.warning("closing shard %d: %s", shard_id, exc)
            session = None
        if session is not None:
            info = self._info(shard_id, shard, session)
        return info if resumable else None

    async def _close_all(self, resumable: bool) -> list[SessionInfo]:
        infos = await asyncio.gather(*(self._close_shard(s, resumable) for s in list(self.shards)))
        return [i for i in infos if i is not None]

    async def _restart_shard(self, shard_id: int, reason: str) -> None:
        if shard_id not in self.runners:
            return  # not started yet (or already being restarted)
        log.warning("restarting shard %d: %s", shard_id, reason)
        info = await self._close_shard(shard_id, True)
        self.sessions.forget(shard_id)
        self._start_shard(Assignment(shard_id, info))
        self.runners[shard_id] = asyncio.get_running_loop().create_task(self._run_shard(shard_id))

    # --- reports -----------------------------------------------------------------------------

    async def _report_loop(self) -> None:
        interval = self.spec.report_interval
        while not self.channel.closed:
            try:
                self._report(time.monotonic())
            except ChannelClosed:
                return
            except Exception:  # one report that cannot be sent must not end the reports
                log.exception("a status report could not be sent")
            await asyncio.sleep(interval)

    def _report(self, now: float) -> None:
        self._report_sessions()
        queued = frozenset(self.queue.waiting)
        self.channel.send(StatusReport([self._status(s, now, queued) for s in list(self.shards)], _rss(),
                                       self.watchdog.take_lag(), self.watchdog.blocked, self.handler_errors,
                                       self.consumer_errors))

    def _report_sessions(self) -> None:
        changed = self.sessions.changes(i for i in map(self._session_info, list(self.shards)) if i)
        if changed:
            self._send_sessions(SessionReport, changed)

    def _send_sessions(self, packet: type[SessionReport] | type[Drained], infos: list[SessionInfo]) -> None:
        """Send ``infos`` as one ``packet``. A session that cannot be encoded (a sequence number beyond
        msgpack's 64 bits, say) is logged and left out, so it never costs the other shards theirs."""
        try:
            self.channel.send(packet(infos))
            return
        except ChannelClosed:
            raise
        except Exception:  # noqa: BLE001 - find the bad entries below (rare: the batch is encoded once)
            pass
        good = []
        for info in infos:
            try:
                encode(SessionReport([info]))
            except Exception as exc:  # noqa: BLE001
                log.error("shard %d: its session cannot be reported (%s: %s); it is left out",
                          info.shard_id, type(exc).__name__, exc)
            else:
                good.append(info)
        self.channel.send(packet(good))


def run_worker(spec: WorkerSpec, conn: Any) -> None:
    """Process entry point: run one worker on a uvloop event loop (`shard.run`), then exit with its code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the supervisor decides
    logging.basicConfig(level=spec.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s worker-{spec.worker_id} %(levelname)s %(name)s: %(message)s")
    from shard import run as shard_run  # uvloop when installed

    code = shard_run(Worker(spec, conn).run())
    sys.stdout.flush()
    sys.exit(code)
