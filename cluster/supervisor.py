"""The supervisor: spawns the workers, owns the identify budget, restarts what breaks.

One asyncio process. It asks ``GET /gateway/bot`` for the shard count and session budget,
splits the shards into workers (consecutive ranges), spawns them with ``multiprocess``,
grants identify slots through a :class:`~cluster.coordination.Coordination`, keeps every
shard's latest session, and restarts dead, hung or crash-looping workers behind a
:class:`~cluster.restart.RestartPolicy`. On SIGTERM/SIGINT it drains the workers resumably and
writes the state file; on SIGHUP it does a rolling restart that resumes every session.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import os
import signal
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import multiprocess

from cluster.config import ClusterConfig, ConfigError, check_identify_timing
from cluster.discord_api import fetch_gateway_bot
from cluster.exitcodes import ClusterExit, ExitCode, for_close_code
from cluster.handler import ClusterStatus, HandlerImportError, check_handler, maybe_await
from cluster.coordination import (Coordination, CoordinationFactory, CoordinationSetup, Defer, Grant, IdentifyEvent,
                                  Refuse, local_coordination)
from cluster.layout import round_up, split
from cluster.restart import Backoff, GiveUp, RestartPolicy
from cluster.state import load_sessions, save_sessions, token_user_id
from cluster.worker import EXIT_HANDLER_IMPORT, QUEUED, WorkerSpec, run_worker
from ipc import Channel, ChannelClosed, HeartbeatMonitor, answer, gather
from ipc.calls import encode_value
from ipc.protocol import (Assign, Assignment, Drain, Drained, Hello, IdentifyCancel, IdentifyDone, IdentifyUnused,
                          IdentifyGrant, IdentifyRefused, IdentifyRequest, IdentifyStarted, Packet,
                          Ping, Pong, Request, Response, RestartShard, SessionInfo, SessionReport,
                          ShardFatal, StatusReport, WorkerFatal)

__all__ = ["Supervisor", "WorkerState"]

log = logging.getLogger("cluster")

ACTIVE = "ACTIVE"
LOOP_RETRY_DELAY = 1.0
"""Seconds before a supervisor loop that raised an unexpected exception runs again."""

class WorkerState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    EXITED = "exited"


@dataclass
class ShardView:
    """What the supervisor knows about one shard (from its worker's reports)."""

    shard_id: int
    worker_id: int
    state: str = "PENDING"
    since: float = 0.0
    latency: float | None = None
    last_event_age: float | None = None
    generation: int = 0
    restarted_at: float = -math.inf
    events: Counter[str] = field(default_factory=Counter)


@dataclass(eq=False)
class WorkerHandle:
    worker_id: int
    shard_ids: range
    generation: int
    process: Any
    policy: RestartPolicy
    state: WorkerState = WorkerState.STARTING
    channel: Channel | None = None
    heartbeat: HeartbeatMonitor | None = None
    pid: int | None = None
    started_at: float = 0.0
    exitcode: int | None = None
    retiring: bool = False
    last_fatal: str | None = None
    rss: int = 0
    loop_lag: float = 0.0
    blocked: int = 0
    handler_errors: int = 0
    consumer_errors: int = 0
    hello: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    drained: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    exited: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def describe_exit(code: int | None) -> str:
    if code is None:
        return "unknown exit"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Runs a cluster until it is stopped; :meth:`run` returns the process exit code.

    ``handler`` overrides ``config.handler`` (a ``module:attribute`` string or a class,
    factory or instance, pickled to the workers). ``supervisor_handler.on_call`` answers
    workers' typed requests that the supervisor does not handle itself. ``coordination`` builds the
    identify coordinator once the shard count and budget are known (default: this process coordinates).
    """

    def __init__(self, config: ClusterConfig, *, token: str | None = None, handler: Any = None,
                 supervisor_handler: Any = None, start_method: str = "spawn",
                 shard_options: dict[str, Any] | None = None, handle_signals: bool = True,
                 coordination: CoordinationFactory = local_coordination) -> None:
        self.config = config
        self.handle_signals = handle_signals
        self._token = token
        self.handler = handler if handler is not None else config.handler
        self.supervisor_handler = supervisor_handler
        self.mp = multiprocess.get_context(start_method)
        self.shard_options = shard_options or {}
        check_identify_timing(config, self.shard_options)
        self.workers: dict[int, WorkerHandle] = {}
        self.shards: dict[int, ShardView] = {}
        self.sessions: dict[int, SessionInfo] = {}
        self.shard_total = 0
        self.max_concurrency = 1
        self.gateway_url: str | None = config.gateway_url
        self.identifies: Counter[str] = Counter()
        self.restarts: Counter[tuple[int, str]] = Counter()
        self.identify_waits: deque[float] = deque(maxlen=100_000)  # until the next scrape
        self.errors: Counter[tuple[str, str]] = Counter()  # (where, exception type): contained failures
        self.loop_lags: deque[float] = deque(maxlen=64)  # this process's event-loop lag, per heartbeat tick
        self._spawn_failures: Counter[int] = Counter()  # consecutive failures to start each worker
        self._heartbeat_due = math.inf  # when the heartbeat loop should next run
        self.exit_code = ExitCode.OK
        self.exit_message = ""
        self.stopping = False
        self.started = time.monotonic()
        self.http_url: str | None = None
        self.http_server: asyncio.AbstractServer | None = None
        self._coordination = coordination
        self.coordinator: Coordination | None = None
        self._identify_events: deque[tuple[float, IdentifyEvent]] = deque()  # for the identify pump
        self._stop: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sessions_version = 0       # bumped by every session report; the state file has `_saved_version`
        self._saved_version = 0
        self._state_error: str | None = None
        self._reapers: set[asyncio.Future[Any]] = set()  # never cancelled: they confirm exits
        self._handles: set[WorkerHandle] = set()  # every worker ever started, for the shutdown
        self._stop_early = False
        self._rolling: asyncio.Task[None] | None = None
        self._last_defer = 0.0
        self.listeners: list[Any] = []  # callables(event: str, **info) for tests and the display

    # --- public control ------------------------------------------------------------------

    def stop(self, code: ExitCode = ExitCode.OK, message: str = "") -> None:
        """Ask the cluster to shut down (resumably) and exit with ``code``."""
        if self._stop is None:
            self._stop_early = True
        if self._stop is None or not self._stop.done():
            if code != ExitCode.OK and self.exit_code == ExitCode.OK:
                self.exit_code, self.exit_message = code, message
                log.error("%s", message)
            if self._stop is not None:
                self._stop.set_result(None)

    def rolling_restart(self) -> bool:
        """Start a rolling restart (worker by worker, resuming every session); False if one runs."""
        if self._rolling is not None and not self._rolling.done() or self.stopping:
            return False
        self._rolling = self._spawn_task(self._rolling_restart())
        return True

    @property
    def rolling(self) -> bool:
        return self._rolling is not None and not self._rolling.done()

    def active_shards(self) -> int:
        return sum(1 for v in self.shards.values() if v.state == ACTIVE)

    def health_problems(self) -> list[str]:
        """Why the cluster is unhealthy (empty when healthy): stopping, workers down or with a
        silent event loop (IPC heartbeats unanswered for 3 intervals)."""
        if self.stopping:
            return ["stopping"]
        now = min(time.monotonic(), self._heartbeat_due)  # past it, this process stalled: not the workers
        problems = []
        for w in sorted(self.workers.values(), key=lambda w: w.worker_id):
            if w.state == WorkerState.EXITED:
                problems.append(f"worker {w.worker_id} is down (restarting)")
            elif w.heartbeat is not None and w.heartbeat.missed(now) >= 3:
                problems.append(f"worker {w.worker_id} has not answered IPC heartbeats for "
                                f"{w.heartbeat.silence(now):.1f} s")
        return problems

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot: workers, shards, identify queue and budget."""
        now = time.monotonic()
        coord = self.coordinator.stats(now) if self.coordinator is not None else None
        return {
            "shard_total": self.shard_total,
            "active": self.active_shards(),
            "max_concurrency": self.max_concurrency,
            "uptime": now - self.started,
            "rolling": self.rolling,
            "stopping": self.stopping,
            "identify_queue": coord.queue_depth if coord else 0,
            "session_budget": ({"remaining": coord.budget_remaining, "total": coord.budget_total,
                                "reserve": coord.budget_reserve, "reset_in": coord.budget_reset_in}
                               if coord else None),
            "identifies": dict(self.identifies),
            "workers": [{"id": w.worker_id, "pid": w.pid, "state": w.state.value, "generation": w.generation,
                         "shards": [w.shard_ids.start, w.shard_ids.stop - 1], "rss": w.rss,
                         "ipc_rtt": w.heartbeat.rtt if w.heartbeat else None, "loop_lag": w.loop_lag,
                         "blocked": w.blocked, "handler_errors": w.handler_errors,
                         "restarts": sum(n for (wid, _), n in self.restarts.items() if wid == w.worker_id)}
                        for w in sorted(self.workers.values(), key=lambda w: w.worker_id)],
            "shards": [{"id": v.shard_id, "worker": v.worker_id, "state": v.state, "latency": v.latency,
                        "last_event_age": v.last_event_age, "session": v.shard_id in self.sessions,
                        "resumes": v.events.get("RESUMED", 0)}
                       for v in sorted(self.shards.values(), key=lambda v: v.shard_id)],
        }

    # --- run -----------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = loop.create_future()
        if self._stop_early:
            self._stop.set_result(None)
        try:
            await self._start()
        except ClusterExit as exc:
            log.error("%s", exc)
            self.exit_code, self.exit_message = exc.code, str(exc)
            await self._shutdown()
            return int(exc.code)
        signals = ((signal.SIGTERM, self.stop), (signal.SIGINT, self.stop),
                   (signal.SIGHUP, self.rolling_restart)) if self.handle_signals else ()
        for sig, fn in signals:
            try:
                loop.add_signal_handler(sig, fn)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        await self._stop
        await self._shutdown()
        for sig, _ in signals:
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
        return int(self.exit_code)

    def token(self) -> str:
        if self._token is None:
            self._token = self.config.token()
        return self._token

    async def _start(self) -> None:
        cfg = self.config
        try:
            token = self.token()
        except ValueError as exc:
            raise ClusterExit(ExitCode.CONFIG, str(exc)) from None
        if isinstance(self.handler, str):
            try:
                check_handler(self.handler)
            except HandlerImportError as exc:
                raise ClusterExit(ExitCode.HANDLER_IMPORT, f"handler failed to import: {exc}") from None
        now = time.monotonic()
        info = await fetch_gateway_bot(cfg.api_url, token)
        limit = info.session_start_limit
        self.gateway_url = cfg.gateway_url or info.url
        self.max_concurrency = cfg.max_concurrency or limit.max_concurrency
        self.shard_total = round_up(cfg.shards or info.shards, self.max_concurrency)
        if cfg.shards and self.shard_total != cfg.shards:
            log.warning("shard count %d rounded up to %d, a multiple of max_concurrency %d",
                        cfg.shards, self.shard_total, self.max_concurrency)
        reserve = (cfg.budget_reserve if cfg.budget_reserve is not None
                   else max(1, min(self.shard_total, limit.total // 20)))
        self.coordinator = self._coordination(CoordinationSetup(
            self.max_concurrency, limit.total, limit.remaining, limit.reset_after / 1000, reserve,
            cfg.budget_pace_below, cfg.identify_window, cfg.identify_hold_timeout, now))
        if not cfg.fresh:  # it logs what it used, or one warning saying what it ignored and why
            self.sessions, _ = load_sessions(cfg.state_file, self.shard_total, cfg.session_ttl,
                                             user_id=token_user_id(token), gateway_url=self.gateway_url)
        ranges = split(self.shard_total, shards_per_worker=cfg.shards_per_worker, workers=cfg.workers)
        log.info("%d shards (max_concurrency %d) in %d workers; session budget %d/%d (safety margin %d)",
                 self.shard_total, self.max_concurrency, len(ranges), limit.remaining, limit.total, reserve)
        for wid, r in enumerate(ranges):
            for s in r:
                self.shards[s] = ShardView(s, wid)
        if cfg.http_port is not None:
            from cluster.http import serve_http
            try:
                http_token = cfg.http_secret()
            except ConfigError as exc:
                raise ClusterExit(ExitCode.CONFIG, str(exc)) from None
            self.http_server, self.http_url = await serve_http(self, cfg.http_host, cfg.http_port, http_token)
            log.info("metrics at %s/metrics; POST /restart %s", self.http_url,
                     "needs the HTTP token" if http_token else "is off (no HTTP token configured)")
        self._spawn_loop("identify_pump", self._identify_pump)
        self._spawn_loop("heartbeat", self._heartbeat_loop)
        self._spawn_loop("health", self._health_loop)
        if cfg.budget_refresh_interval > 0:
            self._spawn_loop("budget_refresh", self._budget_refresh_loop, cfg.budget_refresh_interval)
        if cfg.state_save_interval > 0:
            self._spawn_loop("state_save", self._state_loop, cfg.state_save_interval)
        for wid, r in enumerate(ranges):
            self._spawn_task(self._bring_up(wid, r, RestartPolicy(
                f"worker {wid}", min_alive=cfg.restart_min_alive, max_failures=cfg.restart_max_failures,
                backoff=Backoff(cfg.restart_backoff_base, cfg.restart_backoff_cap))))

    def _spawn_task(self, coro: Any, where: str | None = None) -> asyncio.Task[Any]:
        """Run ``coro`` as a supervisor task. A :class:`ClusterExit` from it stops the cluster with its
        code (the documented fatal conditions); any other exception is logged and counted, and the
        cluster goes on (one failed request, restart or kill is not worth every shard)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        where = where or getattr(coro, "__name__", "task").lstrip("_")

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                if isinstance(exc, ClusterExit):
                    self.stop(exc.code, str(exc))
                else:
                    self._failed(where, exc, f"supervisor task {where} failed", "the cluster goes on")

        task.add_done_callback(done)
        return task

    def _spawn_loop(self, where: str, loop: Any, *args: Any) -> asyncio.Task[Any]:
        """Run the supervisor loop ``loop(*args)``; restart it :data:`LOOP_RETRY_DELAY` seconds after an
        unexpected exception (logged and counted in ``cluster_supervisor_errors_total``)."""

        async def keep_running() -> None:
            while True:
                try:
                    return await loop(*args)
                except (ClusterExit, asyncio.CancelledError):
                    raise
                except Exception as exc:  # noqa: BLE001 - contained: logged, counted, retried
                    self._failed(where, exc, f"supervisor loop {where} failed",
                                 f"running it again in {LOOP_RETRY_DELAY:g} s")
                await asyncio.sleep(LOOP_RETRY_DELAY)

        return self._spawn_task(keep_running(), where)

    def _failed(self, where: str, exc: BaseException, what: str, then: str) -> None:
        """Log and count (``cluster_supervisor_errors_total{where,error}``) a failure that the supervisor
        contains; an OSError (EMFILE, ...) is logged without its traceback, anything else with it."""
        self.errors[(where, type(exc).__name__)] += 1
        log.error("%s: %s: %s; %s", what, type(exc).__name__, exc, then,
                  exc_info=None if isinstance(exc, OSError) else exc)

    def _emit(self, event: str, **info: Any) -> None:
        for fn in self.listeners:
            try:
                fn(event, **info)
            except Exception:  # noqa: BLE001
                log.exception("listener failed")

    # --- workers -------------------------------------------------------------------------

    async def _spawn(self, worker_id: int, shard_ids: range, policy: RestartPolicy, generation: int) -> WorkerHandle:
        """Start a worker process and wait for its Hello (handler imported).

        An ``OSError`` (``EMFILE``, ``EAGAIN`` from fork) leaves nothing behind: the pipe is closed, and a
        process started before the failure is killed and reaped."""
        parent, child = self.mp.Pipe(duplex=True)
        spec = WorkerSpec(worker_id, self.token(), self.config.intents, self.handler, self.gateway_url,
                          self.config.compression, self.config.report_interval, self.config.blocked_threshold,
                          self.config.log_level, self.shard_options)
        process = self.mp.Process(target=run_worker, args=(spec, child), name=f"cluster-worker-{worker_id}",
                                  daemon=False)
        handle = WorkerHandle(worker_id, shard_ids, generation, process, policy)
        self._handles.add(handle)

        async def start() -> None:  # never cancelled half-way: a started process is always watched
            await asyncio.to_thread(process.start)
            child.close()
            handle.pid = process.pid
            handle.started_at = time.monotonic()
            policy.started(handle.started_at)
            asyncio.get_running_loop().add_reader(process.sentinel, self._on_sentinel, handle)
            handle.channel = await Channel.open(parent, lambda p: self._on_packet(handle, p),
                                                name=f"worker {worker_id}")

        starting = asyncio.ensure_future(start())
        self._reapers.add(starting)
        starting.add_done_callback(self._reapers.discard)
        try:
            await asyncio.shield(starting)
        except Exception:
            child.close()
            if handle.channel is None:
                parent.close()  # Channel.open owns it once it succeeded
            if handle.pid is not None:
                await self._kill(handle, "failed to start")
            raise
        log.debug("worker %d (gen %d) spawned, pid %d", worker_id, generation, process.pid)
        await asyncio.wait([handle.hello, handle.exited], timeout=120, return_when=asyncio.FIRST_COMPLETED)
        if not handle.hello.done() and not handle.exited.done():
            await self._kill(handle, "no hello within 120 s")
        return handle

    async def _bring_up(self, worker_id: int, shard_ids: range, policy: RestartPolicy, generation: int = 0,
                        delay: float = 0.0, replacing: WorkerHandle | None = None) -> None:
        """Spawn a worker for ``shard_ids`` (after ``delay``), replacing the dead ``replacing``."""
        if delay:
            await asyncio.sleep(delay)
        if self.stopping or self.workers.get(worker_id) is not replacing:
            return  # stopping, or someone else (a rolling restart) replaced it meanwhile
        try:
            handle = await self._spawn(worker_id, shard_ids, policy, generation)
        except Exception as exc:  # noqa: BLE001 - EMFILE, fork failing: try again, the shards wait
            self._spawn_failures[worker_id] += 1
            retry = policy.backoff.delay(self._spawn_failures[worker_id] - 1, policy.rng)
            self._failed("spawn", exc, f"could not start worker {worker_id}", f"trying again in {retry:.1f} s")
            self._spawn_task(self._bring_up(worker_id, shard_ids, policy, generation, retry, replacing))
            return
        self._spawn_failures.pop(worker_id, None)
        if self.stopping:
            return  # the shutdown drains every started handle
        if self.workers.get(worker_id) is not replacing:
            await self._drain(handle)  # surplus: never run a shard twice
            return
        self.workers[worker_id] = handle
        if handle.hello.done() and not handle.exited.done():
            self._assign(handle)
        elif handle.exited.done():
            self._worker_died(handle)

    def _assign(self, handle: WorkerHandle) -> None:
        now = time.monotonic()
        shards = []
        for s in handle.shard_ids:
            view = self.shards[s]
            view.state, view.since, view.generation, view.worker_id = "STARTING", now, handle.generation, handle.worker_id
            shards.append(Assignment(s, self.sessions.get(s)))
        handle.state = WorkerState.RUNNING
        handle.heartbeat = HeartbeatMonitor(self.config.ipc_heartbeat_interval, self.config.ipc_heartbeat_missed,
                                            now=now)
        resumes = sum(1 for a in shards if a.session is not None)
        log.info("worker %d (pid %d) runs shards %d-%d (%d resuming)", handle.worker_id, handle.pid,
                 handle.shard_ids.start, handle.shard_ids.stop - 1, resumes)
        assert handle.channel is not None
        try:
            handle.channel.send(Assign(self.shard_total, shards, self.max_concurrency))
        except ChannelClosed:  # it is exiting: its reaper restarts it
            log.warning("worker %d exited before its assignment could be sent", handle.worker_id)
            return
        self._emit("assigned", worker_id=handle.worker_id, pid=handle.pid)

    def _on_sentinel(self, handle: WorkerHandle) -> None:
        asyncio.get_running_loop().remove_reader(handle.process.sentinel)
        reaper = asyncio.get_running_loop().create_task(self._reap(handle))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)

    async def _reap(self, handle: WorkerHandle) -> None:
        # the sentinel closes while the process exits; waitpid confirms it is dead and reaps it
        while handle.process.exitcode is None:
            await asyncio.to_thread(handle.process.join, 1.0)
        handle.exitcode = handle.process.exitcode
        handle.state = WorkerState.EXITED
        if handle.channel is not None:
            handle.channel.close()
        now = time.monotonic()
        for s in handle.shard_ids:
            self._identify_events.append((now, IdentifyCancel(s)))
            view = self.shards.get(s)
            if view is not None and view.generation == handle.generation and self.workers.get(handle.worker_id) is handle:
                view.state = "WORKER_DOWN"
        self._wake.set()
        if not handle.exited.done():
            handle.exited.set_result(handle.exitcode if handle.exitcode is not None else -1)
        if self.workers.get(handle.worker_id) is handle and not handle.retiring and not self.stopping:
            self._worker_died(handle)

    def _worker_died(self, handle: WorkerHandle) -> None:
        reason = handle.last_fatal or describe_exit(handle.exitcode)
        log.warning("worker %d (pid %s) died: %s", handle.worker_id, handle.pid, reason)
        kind = "handler_import" if handle.exitcode == EXIT_HANDLER_IMPORT else (
            "unresponsive" if handle.last_fatal and handle.last_fatal.startswith("unresponsive") else
            "killed" if (handle.exitcode or 0) < 0 else "exit")
        self.restarts[(handle.worker_id, kind)] += 1
        self._emit("worker_died", worker_id=handle.worker_id, reason=reason)
        decision = handle.policy.exited(time.monotonic(), reason)
        if isinstance(decision, GiveUp):
            code = ExitCode.HANDLER_IMPORT if kind == "handler_import" else ExitCode.CRASH_LOOP
            self.stop(code, decision.message)
            return
        log.info("restarting worker %d in %.1f s (attempt %d)", handle.worker_id, decision.delay, decision.attempt)
        self._spawn_task(self._bring_up(handle.worker_id, handle.shard_ids, handle.policy,
                                        handle.generation + 1, decision.delay, replacing=handle))

    async def _kill(self, handle: WorkerHandle, reason: str) -> None:
        """SIGKILL a worker and wait until it is reaped (confirmed dead)."""
        handle.last_fatal = reason
        if handle.process.exitcode is None:
            try:
                os.kill(handle.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        await asyncio.shield(handle.exited)

    # --- packets -------------------------------------------------------------------------

    def _on_packet(self, handle: WorkerHandle, p: Packet) -> None:
        now = time.monotonic()
        match p:
            case StatusReport():
                self._on_status(handle, p, now)
            case SessionReport(sessions=sessions):
                for info in sessions:
                    self.sessions[info.shard_id] = info
                self._sessions_version += 1
            case Pong(nonce=nonce):
                if handle.heartbeat is not None:
                    handle.heartbeat.pong(nonce, now)
            case IdentifyRequest(shard_id=shard_id) | IdentifyUnused(shard_id=shard_id) if shard_id in handle.shard_ids:
                self._queue_identify(now, p)
            case IdentifyStarted() | IdentifyDone() | IdentifyCancel():
                self._queue_identify(now, p)
            case Hello():
                if not handle.hello.done():
                    handle.hello.set_result(None)
            case Drained(sessions=sessions):
                for info in sessions:
                    self.sessions[info.shard_id] = info
                self._sessions_version += 1
                if not handle.drained.done():
                    handle.drained.set_result(None)
            case Request():
                self._spawn_task(self._answer(handle, p))
            case ShardFatal(shard_id=shard_id, code=code):
                exit_code, text = for_close_code(code)
                self.stop(exit_code, f"shard {shard_id}: {text}")
            case WorkerFatal(kind=kind, message=message):
                handle.last_fatal = f"{kind.replace('_', ' ')} failed: {message}"
                log.error("worker %d: %s", handle.worker_id, handle.last_fatal)
                if kind == "handler_setup":
                    self.stop(ExitCode.HANDLER_SETUP, f"worker {handle.worker_id}: {handle.last_fatal}")

    def _on_status(self, handle: WorkerHandle, report: StatusReport, now: float) -> None:
        handle.rss, handle.loop_lag = report.rss, report.loop_lag
        handle.blocked, handle.handler_errors = report.blocked, report.handler_errors
        handle.consumer_errors = report.consumer_errors
        for st in report.shards:
            view = self.shards.get(st.shard_id)
            if view is None or view.generation != handle.generation:
                continue
            if st.state != view.state:
                view.since = now
                if st.state == ACTIVE:
                    self._emit("shard_active", shard_id=st.shard_id)
            view.state, view.latency, view.last_event_age = st.state, st.latency, st.last_event_age
            if st.events:
                view.events.update(st.events)

    async def _answer(self, handle: WorkerHandle, request: Request) -> None:
        if request.broadcast:
            channels = {w.worker_id: w.channel for w in self.workers.values()
                        if w.state == WorkerState.RUNNING and w.channel is not None}
            replies = await gather(channels, request.name, request.body, request.timeout)  # type: ignore[arg-type]
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
        """Send a typed call to every running worker from the supervisor; gather the replies."""
        from ipc.calls import encode_call
        name, body = encode_call(call)
        channels = {w.worker_id: w.channel for w in self.workers.values()
                    if w.state == WorkerState.RUNNING and w.channel is not None}
        return await gather(channels, name, body, timeout)  # type: ignore[arg-type]

    # --- loops ---------------------------------------------------------------------------

    def _queue_identify(self, now: float, event: IdentifyEvent) -> None:
        """Hand a worker's identify report to the identify pump (the one caller of the coordinator)."""
        self._identify_events.append((now, event))
        self._wake.set()

    async def _identify_pump(self) -> None:
        coord = self.coordinator
        assert coord is not None
        events = self._identify_events
        while True:
            if events:
                batch = list(events)
                events.clear()
                await coord.report(batch)
            now = time.monotonic()
            for d in await coord.decide(now):
                if isinstance(d, Grant):
                    self._grant(d)
                elif isinstance(d, Refuse):
                    self._send_to_shard(d.shard_id, IdentifyRefused(d.shard_id, d.message))
                    self.stop(ExitCode.SESSION_BUDGET, d.message)
                elif isinstance(d, Defer) and now - self._last_defer > 60:
                    self._last_defer = now
                    log.warning("%s", d.message)
            deadline = coord.next_deadline(now)
            if events:  # reported while it decided (or a grant that could not be sent)
                continue
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a racing cancel
                async with asyncio.timeout(None if deadline is None else max(0.0, deadline - now)):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    def _grant(self, g: Grant) -> None:
        self.identifies[g.reason] += 1
        self.identify_waits.append(g.waited)
        if not self._send_to_shard(g.shard_id, IdentifyGrant(g.shard_id)):
            self._identify_events.append((time.monotonic(), IdentifyCancel(g.shard_id)))

    def _send_to_shard(self, shard_id: int, packet: Packet) -> bool:
        view = self.shards.get(shard_id)
        handle = self.workers.get(view.worker_id) if view else None
        if handle is None or handle.channel is None or handle.channel.closed:
            return False
        try:
            handle.channel.send(packet)
        except ChannelClosed:  # its pipe is closing (the worker exits): the reaper restarts it
            self.errors[("ipc_send", "ChannelClosed")] += 1
            log.warning("worker %d's pipe is closing; %s for shard %d not sent", handle.worker_id,
                        type(packet).__name__, shard_id)
            return False
        return True

    async def _heartbeat_loop(self) -> None:
        """Ping every running worker each interval; kill one silent for ``ipc_heartbeat_missed`` intervals.

        Time this process's own event loop was stalled (a slow scrape, a swapped-out host) is
        measured as the tick's lateness and not counted as the workers' silence: their pongs
        could not be read, nor pings sent, meanwhile."""
        interval = self.config.ipc_heartbeat_interval
        due = time.monotonic() + interval
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            now = time.monotonic()
            lag = max(0.0, now - due)
            due = self._heartbeat_due = now + interval
            self.loop_lags.append(lag)
            for handle in list(self.workers.values()):
                hb = handle.heartbeat
                if handle.state != WorkerState.RUNNING or hb is None or handle.channel is None:
                    continue
                hb.excuse(lag, now)
                if hb.dead(now):
                    reason = f"unresponsive: no IPC heartbeat answer for {hb.silence(now):.1f} s"
                    log.error("worker %d %s; killing it", handle.worker_id, reason)
                    handle.state = WorkerState.DRAINING
                    self._spawn_task(self._kill(handle, reason))
                    continue
                try:
                    handle.channel.send(Ping(hb.ping(now)))
                except ConnectionError:
                    pass

    async def _health_loop(self) -> None:
        cfg = self.config
        while True:
            await asyncio.sleep(cfg.report_interval)
            if self.coordinator is None or self.rolling:
                continue
            now = time.monotonic()
            waiting = self.coordinator.busy()
            for view in self.shards.values():
                handle = self.workers.get(view.worker_id)
                if handle is None or handle.state != WorkerState.RUNNING or view.generation != handle.generation:
                    continue
                if now - view.restarted_at < cfg.shard_stuck_timeout:
                    continue
                reason = None
                if (view.state not in (ACTIVE, QUEUED) and view.shard_id not in waiting
                        and now - view.since > cfg.shard_stuck_timeout):
                    reason = f"stuck in {view.state} for {now - view.since:.0f} s"
                elif view.state == ACTIVE and view.last_event_age is not None and view.last_event_age > cfg.shard_stuck_timeout:
                    reason = f"zombie: nothing received for {view.last_event_age:.0f} s"
                if reason:
                    view.restarted_at = now
                    log.warning("shard %d %s; restarting it", view.shard_id, reason)
                    self._send_to_shard(view.shard_id, RestartShard(view.shard_id, reason))

    async def _budget_refresh_loop(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                info = await fetch_gateway_bot(self.config.api_url, self.token())
            except Exception as exc:  # noqa: BLE001 - a truncated body (IncompleteRead), a reset: next time
                self.errors[("budget_refresh", type(exc).__name__)] += 1
                log.warning("could not refresh the session budget (trying again in %g s): %s: %s",
                            every, type(exc).__name__, exc)
                continue
            limit = info.session_start_limit
            assert self.coordinator is not None
            await self.coordinator.refresh_budget(limit.total, limit.remaining, limit.reset_after / 1000,
                                                  time.monotonic())

    async def _state_loop(self, every: float) -> None:
        """Save the sessions while running, so that a supervisor killed without SIGTERM (OOM, kill -9,
        a host crash) is followed by one that resumes them: its workers close their shards resumably."""
        while True:
            await asyncio.sleep(every)
            if self.sessions and self._sessions_version != self._saved_version:
                self._save_state()

    def _save_state(self) -> bool:
        """Write the known sessions to the state file (atomically). A failure is logged once per reason."""
        version = self._sessions_version
        try:
            save_sessions(self.config.state_file, self.shard_total, list(self.sessions.values()),
                          user_id=token_user_id(self.token()))
        except OSError as exc:
            if str(exc) != self._state_error:
                log.error("could not write the state file %s: %s", self.config.state_file, exc)
            self._state_error = str(exc)
            return False
        self._saved_version, self._state_error = version, None
        return True

    # --- rolling restart and shutdown --------------------------------------------------------

    async def _rolling_restart(self) -> None:
        log.info("rolling restart of %d workers", len(self.workers))
        self._emit("rolling_started")
        for wid in sorted(self.workers):
            if self.stopping:
                return
            old = self.workers[wid]
            if old.state != WorkerState.RUNNING:
                log.warning("rolling restart: skipping worker %d, it is being restarted", wid)
                continue
            old.retiring = True  # from now on its exit is ours to handle, not the crash path's
            try:
                new = await self._spawn(wid, old.shard_ids, old.policy, old.generation + 1)
            except Exception as exc:  # noqa: BLE001 - EMFILE and the like: the old worker keeps running
                self._failed("spawn", exc, f"rolling restart: could not start a new worker {wid}",
                             "aborted; the old one runs on")
                old.retiring = False
                if old.exited.done():
                    self._worker_died(old)
                return
            if not new.hello.done():
                log.error("rolling restart aborted: the new worker %d did not start (%s)", wid,
                          new.last_fatal or describe_exit(new.exitcode))
                old.retiring = False
                if old.exited.done():
                    self._worker_died(old)
                return
            await self._drain(old)
            self.workers[wid] = new
            if new.exited.done():
                self._worker_died(new)
                return
            self._assign(new)
            if not await self._wait_active(new.shard_ids, timeout=60.0):
                log.warning("rolling restart: worker %d's shards are not all Active after 60 s; going on", wid)
        log.info("rolling restart done")
        self._emit("rolling_done")

    async def _drain(self, handle: WorkerHandle, resumable: bool = True) -> None:
        """Drain a worker (sessions come back in Drained) and wait until it is confirmed dead."""
        handle.retiring = True
        handle.state = WorkerState.DRAINING
        timeout = self.config.shutdown_timeout
        if handle.channel is not None and not handle.channel.closed:
            try:
                handle.channel.send(Drain(resumable))
            except ConnectionError:
                pass
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(handle.drained)
            except TimeoutError:
                log.warning("worker %d did not drain within %.0f s; killing it", handle.worker_id, timeout)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(handle.exited)
        except TimeoutError:
            await self._kill(handle, "did not exit after draining")

    async def _wait_active(self, shard_ids: range, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.shards[s].state == ACTIVE for s in shard_ids):
                return True
            await asyncio.sleep(0.05)
        return False

    async def _shutdown(self) -> None:
        self.stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*list(self._reapers), return_exceptions=True)  # started processes are watched
        handles = [w for w in self._handles if w.pid is not None and not w.exited.done()]
        await asyncio.gather(*(self._drain(w) for w in handles))
        if self.sessions and self.shard_total:
            self._state_error = None  # the final save reports its failure even if a periodic one did
            if self._save_state():
                log.info("saved %d sessions to %s", len(self.sessions), self.config.state_file)
        if self.http_server is not None:
            self.http_server.close()
        self._emit("stopped", code=int(self.exit_code))
