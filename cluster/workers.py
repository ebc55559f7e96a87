"""Worker lifecycle: spawn, assign, reap, kill, drain and roll the worker processes; their handles."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from cluster.exitcodes import ExitCode
from cluster.restart import GiveUp, RestartPolicy
from cluster.runtime import ACTIVE, Runtime, WorkerHandle, WorkerState
from cluster.snapshot import ShardPhase
from cluster.worker import EXIT_HANDLER_IMPORT, WorkerSpec, run_worker
from ipc import Channel, ChannelClosed, HeartbeatMonitor
from ipc.protocol import Assign, Assignment, Drain, IdentifyCancel, Packet

__all__ = ["Workers", "describe_exit"]

log = logging.getLogger("cluster")


def describe_exit(code: int | None) -> str:
    if code is None:
        return "unknown exit"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Workers:
    """Starts, restarts and stops the worker processes of one :class:`~cluster.runtime.Runtime`.

    ``mp`` is the ``multiprocess`` context; ``on_packet(handle, packet)`` gets every packet a worker sends."""

    def __init__(self, rt: Runtime, mp: Any, *, handler: Any, shard_options: dict[str, Any],
                 on_packet: Callable[[WorkerHandle, Packet], None]) -> None:
        self.rt = rt
        self.mp = mp
        self.handler = handler
        self.shard_options = shard_options
        self.on_packet = on_packet
        self._spawn_failures: Counter[int] = Counter()  # consecutive failures to start each worker
        self._reapers: set[asyncio.Future[Any]] = set()  # never cancelled: they confirm exits
        self._handles: set[WorkerHandle] = set()  # every worker ever started, for the shutdown
        self.may_run: Callable[[int], bool] = lambda worker_id: True
        """Whether a worker id may be (re)started now (``--assign auto``: only while its block's lease is held)."""
        self.hold = False
        """Assign with ``hold``: the new set of a live reshard delivers nothing until its cutover."""
        self.before_assign: Callable[[WorkerHandle], None] | None = None
        """Called with a worker just before its Assign is sent (``--assign auto``: its lease deadline first)."""
        self.after_assign: Callable[[WorkerHandle], None] | None = None
        """Called with a worker just after its Assign was sent (a live reshard's cutover: the old set's cut)."""

    async def spawn(self, worker_id: int, shard_ids: range, policy: RestartPolicy, generation: int) -> WorkerHandle:
        """Start a worker process and wait for its Hello (handler imported).

        An ``OSError`` (``EMFILE``, ``EAGAIN`` from fork) leaves nothing behind: the pipe is closed, and a
        process started before the failure is killed and reaped."""
        rt, cfg = self.rt, self.rt.config
        parent, child = self.mp.Pipe(duplex=True)
        spec = WorkerSpec(worker_id, rt.token(), cfg.intents, self.handler, rt.gateway_url,
                          cfg.compression, cfg.report_interval, cfg.blocked_threshold,
                          cfg.log_level, self.shard_options)
        process = self.mp.Process(target=run_worker, args=(spec, child), name=f"cluster-worker-{worker_id}",
                                  daemon=False)
        handle = WorkerHandle(worker_id, shard_ids, generation, process, policy, id_base=rt.id_base)
        self._handles.add(handle)

        async def start() -> None:  # never cancelled half-way: a started process is always watched
            await asyncio.to_thread(process.start)
            child.close()
            handle.pid = process.pid
            handle.started_at = time.monotonic()
            policy.started(handle.started_at)
            asyncio.get_running_loop().add_reader(process.sentinel, self._on_sentinel, handle)
            handle.channel = await Channel.open(parent, lambda p: self.on_packet(handle, p),
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
                await self.kill(handle, "failed to start")
            raise
        log.debug("worker %d (gen %d) spawned, pid %d", worker_id, generation, process.pid)
        started: list[asyncio.Future[Any]] = [handle.hello, handle.exited]
        await asyncio.wait(started, timeout=120, return_when=asyncio.FIRST_COMPLETED)
        if not handle.hello.done() and not handle.exited.done():
            await self.kill(handle, "no hello within 120 s")
        return handle

    async def bring_up(self, worker_id: int, shard_ids: range, policy: RestartPolicy, generation: int = 0,
                       delay: float = 0.0, replacing: WorkerHandle | None = None) -> None:
        """Spawn a worker for ``shard_ids`` (after ``delay``), replacing the dead ``replacing``."""
        rt = self.rt
        if delay:
            await asyncio.sleep(delay)
        if rt.stopping or rt.workers.get(worker_id) is not replacing or not self.may_run(worker_id):
            return  # stopping, someone else (a rolling restart) replaced it meanwhile, or its block was lost
        try:
            handle = await self.spawn(worker_id, shard_ids, policy, generation)
        except Exception as exc:  # noqa: BLE001 - EMFILE, fork failing: try again, the shards wait
            self._spawn_failures[worker_id] += 1
            retry = policy.backoff.delay(self._spawn_failures[worker_id] - 1, policy.rng)
            rt.failed("spawn", exc, f"could not start worker {worker_id}", f"trying again in {retry:.1f} s")
            rt.spawn_task(self.bring_up(worker_id, shard_ids, policy, generation, retry, replacing), "bring_up",
                          f"bring_up worker {worker_id}")
            return
        self._spawn_failures.pop(worker_id, None)
        if rt.stopping:
            return  # the shutdown drains every started handle
        if rt.workers.get(worker_id) is not replacing or not self.may_run(worker_id):
            await self.drain(handle)  # surplus: never run a shard twice
            return
        rt.workers[worker_id] = handle
        if handle.hello.done() and not handle.exited.done():
            self.assign(handle)
        elif handle.exited.done():
            self.died(handle)

    def assign(self, handle: WorkerHandle) -> None:
        rt = self.rt
        now = time.monotonic()
        shards = []
        for s in handle.shard_ids:
            view = rt.shards[s]
            view.state, view.since = ShardPhase.STARTING, now
            view.generation, view.worker_id = handle.generation, handle.worker_id
            shards.append(Assignment(s, rt.sessions.get(s)))
        handle.state = WorkerState.RUNNING
        handle.heartbeat = HeartbeatMonitor(rt.config.ipc_heartbeat_interval, rt.config.ipc_heartbeat_missed,
                                            now=now)
        resumes = sum(1 for a in shards if a.session is not None)
        log.info("worker %d (pid %d) runs shards %d-%d (%d resuming)", handle.worker_id, handle.pid,
                 handle.shard_ids.start, handle.shard_ids.stop - 1, resumes)
        assert handle.channel is not None
        if self.before_assign is not None:
            self.before_assign(handle)
        try:
            handle.channel.send(Assign(rt.shard_total, shards, rt.max_concurrency, self.hold))
        except ChannelClosed:  # it is exiting: its reaper restarts it
            log.warning("worker %d exited before its assignment could be sent", handle.worker_id)
            return
        if self.after_assign is not None:
            self.after_assign(handle)
        rt.emit("assigned", worker_id=handle.worker_id, pid=handle.pid)

    def _on_sentinel(self, handle: WorkerHandle) -> None:
        asyncio.get_running_loop().remove_reader(handle.process.sentinel)
        reaper = asyncio.get_running_loop().create_task(self._reap(handle))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)

    async def _reap(self, handle: WorkerHandle) -> None:
        rt = self.rt
        # the sentinel closes while the process exits; waitpid confirms it is dead and reaps it
        while handle.process.exitcode is None:
            await asyncio.to_thread(handle.process.join, 1.0)
        handle.exitcode = handle.process.exitcode
        handle.state = WorkerState.EXITED
        if handle.channel is not None:
            handle.channel.close()
        now = time.monotonic()
        for s in handle.shard_ids:
            rt.identify_events.append((now, IdentifyCancel(s + handle.id_base)))
            view = rt.shards.get(s)
            if view is not None and view.generation == handle.generation and rt.workers.get(handle.worker_id) is handle:
                view.state = ShardPhase.WORKER_DOWN
        rt.wake.set()
        if not handle.exited.done():
            handle.exited.set_result(handle.exitcode if handle.exitcode is not None else -1)
        if rt.workers.get(handle.worker_id) is handle and not handle.retiring and not rt.stopping:
            self.died(handle)

    def died(self, handle: WorkerHandle) -> None:
        """Count a worker's unexpected exit and restart it behind its policy (or stop the cluster)."""
        rt = self.rt
        reason = handle.last_fatal or describe_exit(handle.exitcode)
        if not self.may_run(handle.worker_id):  # --assign auto: its block's lease ran out (its fence killed it)
            log.info("worker %d (pid %s) exited (%s); its block is no longer this host's", handle.worker_id,
                     handle.pid, reason)
            return
        log.warning("worker %d (pid %s) died: %s", handle.worker_id, handle.pid, reason)
        kind = "handler_import" if handle.exitcode == EXIT_HANDLER_IMPORT else (
            "unresponsive" if handle.last_fatal and handle.last_fatal.startswith("unresponsive") else
            "killed" if (handle.exitcode or 0) < 0 else "exit")
        rt.restarts[(handle.worker_id, kind)] += 1
        rt.emit("worker_died", worker_id=handle.worker_id, reason=reason)
        decision = handle.policy.exited(time.monotonic(), reason)
        if isinstance(decision, GiveUp):
            code = ExitCode.HANDLER_IMPORT if kind == "handler_import" else ExitCode.CRASH_LOOP
            rt.stop(code, decision.message)
            return
        log.info("restarting worker %d in %.1f s (attempt %d)", handle.worker_id, decision.delay, decision.attempt)
        rt.spawn_task(self.bring_up(handle.worker_id, handle.shard_ids, handle.policy,
                                    handle.generation + 1, decision.delay, replacing=handle),
                      "bring_up", f"bring_up worker {handle.worker_id}")

    async def kill(self, handle: WorkerHandle, reason: str) -> None:
        """SIGKILL a worker and wait until it is reaped (confirmed dead)."""
        handle.last_fatal = reason
        if handle.process.exitcode is None:
            try:
                os.kill(handle.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        await asyncio.shield(handle.exited)

    async def drain(self, handle: WorkerHandle, resumable: bool = True) -> None:
        """Drain a worker (sessions come back in Drained) and wait until it is confirmed dead."""
        handle.retiring = True
        handle.state = WorkerState.DRAINING
        timeout = self.rt.config.shutdown_timeout
        if handle.channel is not None and not handle.channel.closed:
            try:
                handle.channel.send(Drain(resumable))
            except ConnectionError:
                pass
            # a worker that exits instead (its handler's setup failed) sends no Drained: do not wait for one
            ends: list[asyncio.Future[Any]] = [handle.drained, handle.exited]
            done, _ = await asyncio.wait(ends, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                log.warning("worker %d did not drain within %.0f s; killing it", handle.worker_id, timeout)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(handle.exited)
        except TimeoutError:
            await self.kill(handle, "did not exit after draining")

    def kill_remaining(self) -> None:
        """SIGKILL every started worker that has not exited (the last resort of a stuck shutdown)."""
        for w in self._handles:
            if w.pid is not None and not w.exited.done():
                try:
                    os.kill(w.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    async def drain_all(self, resumable: bool = True) -> None:
        """The shutdown: wait for the starts under way, then drain every worker ever started that still runs."""
        await asyncio.gather(*list(self._reapers), return_exceptions=True)  # started processes are watched
        handles = [w for w in self._handles if w.pid is not None and not w.exited.done()]
        await asyncio.gather(*(self.drain(w, resumable) for w in handles))

    def all_active(self, shard_ids: range) -> bool:
        """Every one of these shards is known and active."""
        return all((v := self.rt.shards.get(s)) is not None and v.state == ACTIVE for s in shard_ids)

    async def wait_active(self, shard_ids: range, timeout: float) -> bool:
        """Until every one of these shards is active (True), or ``timeout`` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.all_active(shard_ids):
                return True
            await asyncio.sleep(0.05)
        return False

    async def rolling_restart(self) -> None:
        """Replace every worker in turn by a new one that resumes its sessions."""
        rt = self.rt
        log.info("rolling restart of %d workers", len(rt.workers))
        rt.emit("rolling_started")
        for wid in sorted(rt.workers):
            if rt.stopping:
                return
            old = rt.workers[wid]
            if old.state != WorkerState.RUNNING:
                log.warning("rolling restart: skipping worker %d, it is being restarted", wid)
                continue
            old.retiring = True  # from now on its exit is ours to handle, not the crash path's
            try:
                new = await self.spawn(wid, old.shard_ids, old.policy, old.generation + 1)
            except Exception as exc:  # noqa: BLE001 - EMFILE and the like: the old worker keeps running
                rt.failed("spawn", exc, f"rolling restart: could not start a new worker {wid}",
                          "aborted; the old one runs on")
                old.retiring = False
                if old.exited.done():
                    self.died(old)
                return
            if not new.hello.done():
                log.error("rolling restart aborted: the new worker %d did not start (%s)", wid,
                          new.last_fatal or describe_exit(new.exitcode))
                old.retiring = False
                if old.exited.done():
                    self.died(old)
                return
            await self.drain(old)
            rt.workers[wid] = new
            if new.exited.done():
                self.died(new)
                return
            self.assign(new)
            if not await self.wait_active(new.shard_ids, timeout=60.0):
                log.warning("rolling restart: worker %d's shards are not all Active after 60 s; going on", wid)
        log.info("rolling restart done")
        rt.emit("rolling_done")
