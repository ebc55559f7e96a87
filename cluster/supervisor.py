"""The supervisor: spawns the workers, owns the identify budget, restarts what breaks.

One asyncio process. It asks ``GET /gateway/bot`` for the shard count and session budget,
splits the shards into workers (consecutive ranges), spawns them with ``multiprocess``,
grants identify slots through a :class:`~cluster.coordination.Coordination`, keeps every
shard's latest session, and restarts dead, hung or crash-looping workers behind a
:class:`~cluster.restart.RestartPolicy`. On SIGTERM/SIGINT it drains the workers resumably and
writes the state file; on SIGHUP it does a rolling restart that resumes every session. :meth:`Supervisor.reshard`
grows the shard count live (:mod:`cluster.reshard`, :mod:`cluster.resharder`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from typing import Any

import msgspec
import multiprocess

from cluster.config import ClusterConfig, ConfigError, check_identify_timing
from cluster.coordination import CoordinationFactory, CoordinationSetup, local_coordination
from cluster.discord_api import fetch_gateway_bot
from cluster.error import CoordinatorUnavailable
from cluster.exitcodes import ClusterExit, ExitCode
from cluster.handler import HandlerImportError, check_handler
from cluster.hosts import (HostRecord, agree_layout, conflict_message, host_id, host_key, keep_registered,
                           layout_key, new_record, remove_host, try_register_host)
from cluster.layout import round_up, split_range
from cluster.loops import Loops
from cluster.reshard import ReshardRefused  # noqa: F401 - what reshard() raises
from cluster.resharder import Resharder
from cluster.restart import Backoff, RestartPolicy
from cluster.routing import Router
from cluster.runtime import LOOP_RETRY_DELAY, Runtime, ShardView, WorkerHandle, WorkerState  # noqa: F401 - were here
from cluster.snapshot import ClusterSnapshot, ReshardSnapshot, ShardPhase, ShardSnapshot, WorkerSnapshot
from cluster.state import grown_total, token_user_id
from cluster.workers import Workers, describe_exit  # noqa: F401 - was here

__all__ = ["Supervisor", "WorkerState"]

log = logging.getLogger("cluster")

def _shared(name: str, doc: str) -> property:
    """A supervisor attribute that is the runtime's (read and assigned through the supervisor)."""
    return property(lambda self: getattr(self._rt, name), lambda self, value: setattr(self._rt, name, value),
                    doc=doc)


class Supervisor:
    """Runs a cluster until it is stopped; :meth:`run` returns the process exit code.

    ``handler`` overrides ``config.handler`` (a ``module:attribute`` string or a class,
    factory or instance, pickled to the workers). ``supervisor_handler.on_call`` answers
    workers' typed requests that the supervisor does not handle itself. ``coordination`` builds the
    identify coordinator once the shard count and budget are known (default: this process coordinates).

    It wires together the worker lifecycle (:class:`~cluster.workers.Workers`), packet routing
    (:class:`~cluster.routing.Router`) and the background loops (:class:`~cluster.loops.Loops`) over their
    shared :class:`~cluster.runtime.Runtime`.
    """

    workers = _shared("workers", "The current worker of each worker id.")
    shards = _shared("shards", "What is known of each shard.")
    sessions = _shared("sessions", "Each shard's latest session.")
    shard_total = _shared("shard_total", "The number of shards (0 until Discord answered).")
    max_concurrency = _shared("max_concurrency", "Identify buckets.")
    gateway_url = _shared("gateway_url", "The gateway the workers connect to.")
    coordinator = _shared("coordinator", "The identify coordination (None until started).")
    identifies = _shared("identifies", "Identify slots granted, by reason.")
    restarts = _shared("restarts", "Worker restarts by (worker id, reason).")
    identify_waits = _shared("identify_waits", "The identify-wait histogram (cumulative).")
    errors = _shared("errors", "Failures contained, by (where, exception type).")
    loop_lags = _shared("loop_lags", "This process's event-loop lag, per heartbeat tick.")
    listeners = _shared("listeners", "Callables(event, **info) told of lifecycle events.")
    stopping = _shared("stopping", "True once the shutdown began.")

    def __init__(self, config: ClusterConfig, *, token: str | None = None, handler: Any = None,
                 supervisor_handler: Any = None, start_method: str = "spawn",
                 shard_options: dict[str, Any] | None = None, handle_signals: bool = True,
                 coordination: CoordinationFactory = local_coordination) -> None:
        self.config = config
        self.handle_signals = handle_signals
        self._token = token
        self.handler = handler if handler is not None else config.handler
        self.supervisor_handler = supervisor_handler
        shard_options = shard_options or {}
        check_identify_timing(config, shard_options)
        self._coordination = coordination
        self._rt = Runtime(config, stop=self.stop, token=self.token)
        self._router = Router(self._rt, status=self.status, supervisor_handler=supervisor_handler)
        self._workers = Workers(self._rt, multiprocess.get_context(start_method), handler=self.handler,
                                shard_options=shard_options, on_packet=self._router.on_packet)
        self._loops = Loops(self._rt, send_to_shard=self._router.send_to_shard, kill=self._workers.kill)
        self._resharder = Resharder(self)
        self._router.on_fatal, self._router.on_cutover = self._resharder.on_old_fatal, self._resharder.on_packet
        self._loops.send_identify, self._loops.on_refuse = self._resharder.send_identify, self._resharder.on_refused
        self.exit_code: int = ExitCode.OK  # an ExitCode; a ClusterExit's code is typed int (cluster.error)
        self.exit_message = ""
        self.started = time.monotonic()
        self.http_url: str | None = None
        self.http_server: asyncio.AbstractServer | None = None
        self._stop: asyncio.Future[None] | None = None
        self._stop_early = False
        self._redis: Any = None  # the coordinator's client, with --coordinator
        self._ns = ""
        self.host: HostRecord | None = None  # this host in the registry, with --coordinator
        self._registry: asyncio.Task[Any] | None = None  # the loop renewing it
        self._record_fence: tuple[str, str] | None = None  # its record's key and value: the fence of its session writes
        self._cross: Any = None  # the sessions, status and broadcasts shared with the other hosts (a CrossHost)
        self.blocks: Any = None  # with --assign auto: this host's block leases (a cluster.blocks.BlockKeeper)

    @property
    def mp(self) -> Any:
        """The ``multiprocess`` context workers are started with."""
        return self._workers.mp

    @mp.setter
    def mp(self, value: Any) -> None:
        self._workers.mp = value

    @property
    def shard_options(self) -> dict[str, Any]:
        return self._workers.shard_options

    # --- public control ------------------------------------------------------------------

    def stop(self, code: int = ExitCode.OK, message: str = "") -> None:
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
        rt = self._rt
        if rt.rolling or rt.stopping or self._resharder.running:
            return False
        rt.rolling_task = rt.spawn_task(self._workers.rolling_restart(), "rolling_restart")
        return True

    @property
    def rolling(self) -> bool:
        return self._rt.rolling

    async def reshard(self, shards: int | None = None) -> ReshardSnapshot:
        """Start a live reshard to ``shards`` (None: Discord's recommendation, rounded up to a multiple of
        max_concurrency) and return its first snapshot; :class:`~cluster.reshard.ReshardRefused` says why not
        (:mod:`cluster.reshard`, :mod:`cluster.resharder`)."""
        await self._resharder.start(shards)
        snap = self._resharder.snapshot()
        assert snap is not None
        return snap

    def active_shards(self) -> int:
        return self._rt.active_shards()

    async def broadcast(self, call: Any, timeout: float = 5.0) -> list[Any]:
        """Send a typed call to every running worker (of every host, with a coordinator); gather the replies."""
        return await self._router.broadcast(call, timeout)

    def health_problems(self) -> list[str]:
        """Why the cluster is unhealthy (empty when healthy): stopping, workers down or with a
        silent event loop (IPC heartbeats unanswered for 3 intervals)."""
        if self.stopping:
            return ["stopping"]
        now = min(time.monotonic(), self._rt.heartbeat_due)  # past it, this process stalled: not the workers
        problems = []
        for w in sorted(self.workers.values(), key=lambda w: w.worker_id):
            if w.state == WorkerState.EXITED:
                problems.append(f"worker {w.worker_id} is down (restarting)")
            elif w.heartbeat is not None and w.heartbeat.missed(now) >= 3:
                problems.append(f"worker {w.worker_id} has not answered IPC heartbeats for "
                                f"{w.heartbeat.silence(now):.1f} s")
        return problems

    def snapshot(self) -> ClusterSnapshot:
        """The cluster now, frozen: what ``/status``, ``/metrics``, the probes and the status line read."""
        rt = self._rt
        now = time.monotonic()
        restarts: Counter[int] = Counter()
        for (wid, _), n in rt.restarts.items():
            restarts[wid] += n
        return ClusterSnapshot(
            shard_total=rt.shard_total, max_concurrency=rt.max_concurrency, uptime=now - self.started,
            rolling=rt.rolling, stopping=rt.stopping,
            coordination=rt.coordinator.stats(now) if rt.coordinator is not None else None,
            identifies=dict(rt.identifies), identify_waits=rt.identify_waits.buckets(),
            identify_wait_sum=rt.identify_waits.sum, restarts=dict(rt.restarts), errors=dict(rt.errors),
            loop_lag=max(rt.loop_lags, default=0.0), problems=tuple(self.health_problems()),
            workers=tuple(WorkerSnapshot(
                w.worker_id, w.pid, w.state, w.generation, w.shard_ids, w.rss, w.heartbeat.rtt if w.heartbeat else None,
                w.loop_lag, w.blocked, w.handler_errors, w.consumer_errors, restarts[w.worker_id])
                for w in sorted(rt.workers.values(), key=lambda w: w.worker_id)),
            shards=tuple(ShardSnapshot(v.shard_id, v.worker_id, ShardPhase(v.state), v.latency, v.last_event_age,
                                       v.shard_id in rt.sessions, dict(v.events))
                         for v in sorted(rt.shards.values(), key=lambda v: v.shard_id)),
            hosts=self._cross.summaries() if self._cross is not None else None,
            blocks=self.blocks.view if self.blocks is not None else None,
            lease_moves=dict(self.blocks.moves) if self.blocks is not None else None,
            legacy_leases=self.blocks.legacy if self.blocks is not None else 0,
            reshard=self._resharder.snapshot(),
        )

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot: workers, shards, identify queue and budget (:meth:`ClusterSnapshot.status`)."""
        return self.snapshot().status()

    # --- run -----------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = loop.create_future()
        if self._stop_early:
            self._stop.set_result(None)
        try:
            await self._start()
        except ClusterExit as exc:
            self.exit_code, self.exit_message = exc.code, str(exc)  # set first: the CLI shows it once, not twice
            log.error("%s", exc)
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
        self._loops.name_state_file(token)
        if isinstance(self.handler, str):
            try:
                check_handler(self.handler)
            except HandlerImportError as exc:
                raise ClusterExit(ExitCode.HANDLER_IMPORT, f"handler failed to import: {exc}") from None
        if cfg.coordinator is not None and self._coordination is local_coordination:
            await self._connect_coordinator(cfg.coordinator, token)
        now = time.monotonic()
        info = await fetch_gateway_bot(cfg.api_url, token)
        limit = info.session_start_limit
        self.gateway_url = cfg.gateway_url or info.url
        self.max_concurrency = cfg.max_concurrency or limit.max_concurrency
        self.shard_total = round_up(cfg.shards or info.shards, self.max_concurrency)
        if cfg.shards and self.shard_total != cfg.shards:
            log.warning("shard count %d rounded up to %d, a multiple of max_concurrency %d",
                        cfg.shards, self.shard_total, self.max_concurrency)
        if cfg.coordinator is None and not cfg.fresh and cfg.shard_range is None and cfg.host_index is None:
            # a live reshard (one host, all shards) grew the cluster since it was configured
            grown = grown_total(cfg.state_path(token), self.shard_total, user_id=token_user_id(token))
            if grown is not None:
                log.warning("the state file was written after a live reshard to %d shards: running %d shards, not "
                            "%d (set --shards %d to say so, or --fresh to start over)", grown, grown,
                            self.shard_total, grown)
                self.shard_total = round_up(grown, self.max_concurrency)
        if self._redis is not None:  # the cluster's layout is decided once, by its first host
            total, mc = self.shard_total, self.max_concurrency
            self.shard_total, self.max_concurrency = await self._on_redis("the cluster layout", lambda: agree_layout(
                self._redis, self._ns, total, mc, explicit_shards=total if cfg.shards else None,
                explicit_concurrency=cfg.max_concurrency))
        auto = cfg.assign == "auto"
        try:
            mine = range(0) if auto else cfg.host_shards(self.shard_total)  # auto: blocks come with their leases
        except ConfigError as exc:
            raise ClusterExit(ExitCode.CONFIG, str(exc)) from None
        reserve = (cfg.budget_reserve if cfg.budget_reserve is not None
                   else max(1, min(self.shard_total, limit.total // 20)))
        self.coordinator = self._coordination(CoordinationSetup(
            self.max_concurrency, limit.total, limit.remaining, limit.reset_after / 1000, reserve,
            cfg.budget_pace_below, cfg.identify_window, cfg.identify_hold_timeout, now))
        ranges = split_range(mine, shards_per_worker=cfg.shards_per_worker, workers=cfg.workers) if mine else []
        log.info("%d shards (max_concurrency %d) in %s; session budget %d/%d (safety margin %d)",
                 self.shard_total, self.max_concurrency, "blocks leased by the live hosts" if auto else
                 f"{len(ranges)} worker{'' if len(ranges) == 1 else 's'}", limit.remaining, limit.total, reserve)
        if mine and len(mine) != self.shard_total:
            log.info("this host runs shards %d-%d of %d", mine.start, mine.stop - 1, self.shard_total)
        for wid, r in enumerate(ranges):
            for s in r:
                self.shards[s] = ShardView(s, wid)
        if cfg.http_port is not None:
            from cluster.http import serve_http
            try:
                http_token = cfg.http_secret()
            except ConfigError as exc:
                raise ClusterExit(ExitCode.CONFIG, str(exc)) from None
            try:
                self.http_server, self.http_url = await serve_http(self, cfg.http_host, cfg.http_port, http_token)
            except OSError as exc:  # the port is taken, or the address is not this machine's
                raise ClusterExit(ExitCode.CONFIG, f"cannot serve HTTP on {cfg.http_host}:{cfg.http_port}: "
                                  f"{exc.strerror or exc} (give another --http-port, 0 for a free one, "
                                  "or none)") from None
            log.info("metrics at %s/metrics; POST /restart %s", self.http_url,
                     "needs the HTTP token" if http_token else "is off (no HTTP token configured)")
        if self._redis is not None:
            record = new_record(self._host_id, mine, self.shard_total, self.http_url)
            await self._register(record)
            self.host = record
            self.keep_registered()
            from cluster.coordination.redis import RedisCoordination  # noqa: PLC0415 - needs the redis package
            coord = self.coordinator if isinstance(self.coordinator, RedisCoordination) else None
            if coord is not None:  # other hosts' grants and releases wake the identify pump
                self._rt.spawn_loop("identify_wakeups", coord.listen, self._rt.wake.set)
            self._join_hosts()  # sessions, status and broadcasts shared with the other hosts
            if auto:
                from cluster.leases import blocks, check_no_legacy_leases  # noqa: PLC0415 - needs redis

                count = len(blocks(self.shard_total, cfg.shards_per_worker))
                await self._on_redis("the block leases", lambda: check_no_legacy_leases(self._redis, self._ns, count))
                self.blocks = self.block_keeper(self._rt, self._workers)
                self._cross.sessions.fence = self.blocks.fence
                self.blocks.start()
            self._rt.spawn_loop("reshard_follow", self._resharder.follow)  # take part in other hosts' reshards
        if not cfg.fresh and not auto:  # it logs what it used, or one warning saying what it ignored and why
            def load() -> Any:
                return self._loops.store.load(self.shards.keys(), self.shard_total, cfg.session_ttl,
                                              user_id=token_user_id(token), gateway_url=self.gateway_url)
            self.sessions = await (self._on_redis("the session store", load) if self._redis is not None else load())
        self._loops.start()
        if cfg.auto_reshard:
            self._rt.spawn_loop("auto_reshard", self._resharder.watch)
        for wid, r in enumerate(ranges):
            self._rt.spawn_task(self._workers.bring_up(wid, r, self._policy(wid)), "bring_up", f"bring_up worker {wid}")

    def keep_registered(self) -> None:
        """Renew this host's registry record (:attr:`host`) while the host runs; called again once it changed (a
        reshard moved this host's shards), so that a record Redis lost is written back as it is now."""
        from cluster.coordination.redis import RedisCoordination  # noqa: PLC0415 - needs the redis package

        if self._registry is not None:
            self._registry.cancel()
        record, coord = self.host, self.coordinator if isinstance(self.coordinator, RedisCoordination) else None
        assert record is not None

        async def renew() -> None:
            try:
                await keep_registered(self._redis, self._ns, record, self.config.host_ttl,
                                      on_error=coord.mark_down if coord else None,
                                      on_ok=coord.mark_up if coord else None)
            except ConfigError as exc:  # its record lapsed and another host took its shards: this one yields
                raise ClusterExit(ExitCode.CONFIG, str(exc)) from None

        self._registry = self._rt.spawn_loop("host_registry", renew)
        self._record_fence = (host_key(self._ns, record.host_id), msgspec.json.encode(record).decode())

    def _fence(self, shard_id: int) -> tuple[str, str] | None:
        """Static assignment: a session is written only while this host's registry record is in Redis as it wrote
        it, so a host whose record lapsed never overwrites the sessions of a host that took its shards meanwhile."""
        return self._record_fence

    def _policy(self, wid: int) -> RestartPolicy:
        cfg = self.config
        return RestartPolicy(f"worker {wid}", min_alive=cfg.restart_min_alive, max_failures=cfg.restart_max_failures,
                             backoff=Backoff(cfg.restart_backoff_base, cfg.restart_backoff_cap))

    def block_keeper(self, rt: Runtime, workers: Workers) -> Any:
        """``--assign auto``: the keeper of the leases of ``rt``'s layout (:mod:`cluster.blocks`), whose workers
        ``workers`` starts: the host's, or a reshard's new set's (not started: the caller runs its loops)."""
        from cluster.blocks import BlockKeeper  # noqa: PLC0415 - needs the redis package
        from cluster.leases import LeaseStore, layout_ns  # noqa: PLC0415

        cfg, store = self.config, self._cross.sessions
        user_id = token_user_id(self.token())

        async def load(shards: range) -> dict[int, Any]:
            if cfg.fresh:
                return {}
            return await store.load(shards, self.shard_total, cfg.session_ttl, user_id=user_id,
                                    gateway_url=self.gateway_url)

        async def save(sessions: list[Any]) -> None:
            await store.save(self.shard_total, sessions, user_id=user_id)

        leases = LeaseStore(self._redis, layout_ns(self._ns, rt.shard_total), self._host_id, cfg.lease_ttl,
                            layout=(layout_key(self._ns), rt.shard_total))
        keeper = BlockKeeper(rt, workers, leases, client=self._redis, ns=self._ns, host_ttl=cfg.host_ttl,
                             shards_per_worker=cfg.shards_per_worker, load=load, save=save, policy=self._policy)
        if self.blocks is not None:
            keeper.moves = self.blocks.moves  # one count of this host's moves across layouts
        return keeper

    def _join_hosts(self) -> None:
        """Keep the sessions in the coordinator's Redis, publish this host's status there, and relay broadcasts
        to and from the other hosts (:mod:`cluster.crosshost`), all under this host's registry id."""
        from cluster.crosshost import CrossHost

        cfg = self.config
        assert cfg.coordinator is not None  # the Redis client (the caller's condition) was made from it
        cross = CrossHost(self._redis, cfg.coordinator, self._ns, host=self._host_id,
                          report_interval=cfg.report_interval, session_ttl=cfg.session_ttl, status=self.status,
                          channels=self._rt.running_channels, http_url=lambda: self.http_url,
                          spawn=self._rt.spawn_task)
        self._cross = cross
        self._loops.store = cross.sessions
        cross.sessions.fence = self._fence  # --assign auto: each block's lease instead (_keep_blocks)
        self._router.host, self._router.remote = cross.host, cross.ask
        self._rt.spawn_loop("host_status", cross.publish_status)
        self._rt.spawn_loop("broadcast_relay", cross.relay)

    async def _shutdown(self) -> None:
        """Close everything resumably; bounded by 2 x shutdown_timeout + 5 s (a drain may take two timeouts):
        past that, what still runs is logged with where it waits, the workers are killed and the cluster exits,
        so a stuck step can never keep a stopping supervisor alive."""
        limit = 2 * self.config.shutdown_timeout + 5
        steps = asyncio.ensure_future(self._shutdown_steps())
        done, _ = await asyncio.wait({steps}, timeout=limit)
        if not done:
            self._rt.errors[("shutdown", "TimeoutError")] += 1
            log.error("shutdown did not finish within %g s; killing the workers. Still waiting: %s", limit,
                      _where_tasks_wait(t for t in asyncio.all_tasks() if t is not asyncio.current_task()))
            self._workers.kill_remaining()
        self._rt.emit("stopped", code=int(self.exit_code))

    async def _shutdown_steps(self) -> None:
        rt = self._rt
        rt.stopping = True
        await self._resharder.stop()  # before the switch: rolled back; after it: the old set closed
        if self.blocks is not None:  # hand every block over (drained, saved, released) while leases are renewed
            await self.blocks.leave()
        for task in list(rt.tasks):
            task.cancel()
        if rt.tasks:  # asyncio.wait, not gather: a task that ignored its cancel must not hang the shutdown
            _, pending = await asyncio.wait(list(rt.tasks), timeout=self.config.shutdown_timeout)
            if pending:
                log.error("supervisor tasks still running %g s after their cancel: %s",
                          self.config.shutdown_timeout, _where_tasks_wait(pending))
        await self._workers.drain_all()
        if self.sessions and self.shard_total:
            self._loops.state_error = None  # the final save reports its failure even if a periodic one did
            if await self._loops.save_state():
                log.info("saved %d sessions to %s", len(self.sessions), self._loops.store.where)
        if self._cross is not None:
            await self._cross.close()
        if self.http_server is not None:
            self.http_server.close()
        if self._redis is not None:
            await self._leave_coordinator()

    # --- the shared coordinator (Redis) ---------------------------------------------------

    async def _connect_coordinator(self, url: str, token: str) -> None:
        """Connect to the coordinator's Redis, retrying with backoff while it is unreachable (logged once); a bad
        URL, a refused login or a server that is not Redis exits 2. Its identify coordination becomes this host's."""
        from cluster.coordination.redis import redis_coordination  # noqa: PLC0415 - needs the redis package
        from cluster.coordination.redis_conn import connect, namespace  # noqa: PLC0415

        self._redis = await self._on_redis("the coordinator", lambda: connect(url))
        self._ns = namespace(self.config.cluster_name, token)
        self._host_id: str = host_id()
        self._coordination = redis_coordination(self._redis, self._ns, self._host_id)

    async def _register(self, record: HostRecord) -> None:
        """Join the host registry; exit 2 if a live host runs some of these shards. A record of this machine (pod)
        is waited out for host_ttl first: it is a predecessor killed without a clean stop, unless it is renewed."""
        ttl = self.config.host_ttl
        deadline = time.monotonic() + ttl + 1.0
        said = False
        while True:
            other = await self._on_redis("the host registry", lambda: try_register_host(self._redis, self._ns,
                                                                                         record, ttl))
            if other is None:
                return
            if other.hostname != record.hostname or time.monotonic() > deadline:
                raise ClusterExit(ExitCode.CONFIG, conflict_message(record, other))
            if not said:
                log.warning("%s: a previous run on this machine? waiting up to %g s for its record to expire",
                            other.describe(), ttl)
                said = True
            await asyncio.sleep(min(1.0, ttl / 4))

    async def _on_redis(self, what: str, call: Any) -> Any:
        """``await call()``, retried with backoff while Redis is unavailable (said once); ConfigError exits 2."""
        from cluster.coordination.redis_conn import REDIS_DOWN, on_trouble  # noqa: PLC0415 - needs redis

        delay, said = 0.5, False
        while True:
            try:
                with on_trouble((CoordinatorUnavailable, *REDIS_DOWN)) as caught:
                    result = await call()
            except ConfigError as exc:
                raise ClusterExit(ExitCode.CONFIG, str(exc)) from None
            if caught.exc is not None:
                trouble = caught.exc
                self._rt.errors[("coordinator", type(trouble).__name__)] += 1
                if not said:
                    log.warning("%s is unavailable (%s); retrying with backoff until it answers", what, trouble)
                    said = True
                if self._stop is not None:  # asyncio.wait: 3.11's wait_for can swallow a racing cancel
                    await asyncio.wait([self._stop], timeout=delay)
                    if self._stop.done():
                        raise ClusterExit(self.exit_code, f"stopped while waiting for {what}") from None
                else:
                    await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
                continue
            if said:
                log.warning("%s answers again", what)
            return result

    async def _leave_coordinator(self) -> None:
        """Leave the host registry (so that a successor with this range starts at once) and close the client."""
        from cluster.coordination.redis_conn import on_trouble  # noqa: PLC0415 - needs the redis package

        with on_trouble() as caught:
            if self.host is not None:
                async with asyncio.timeout(2.0):
                    await remove_host(self._redis, self._ns, self.host.host_id)
        if caught.exc is not None:
            log.warning("could not leave the host registry (its record expires in %g s): %s", self.config.host_ttl,
                        caught.exc)
        await self._redis.aclose()


def _where_tasks_wait(tasks: Any) -> str:
    """Each task's name and the innermost frame it waits in (for a log line about a stuck shutdown)."""
    out = []
    for task in tasks:
        stack = task.get_stack(limit=1)
        where = f"{stack[-1].f_code.co_filename}:{stack[-1].f_lineno}" if stack else "?"
        out.append(f"{task.get_name()} at {where}")
    return "; ".join(out) or "nothing"
