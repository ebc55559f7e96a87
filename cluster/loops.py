"""The supervisor's background loops: the identify pump, IPC heartbeats, shard health, the budget refresh and
the periodic state save."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from cluster.coordination import Defer, Grant, Refuse
from cluster.discord_api import fetch_gateway_bot
from cluster.exitcodes import ExitCode
from cluster.runtime import ACTIVE, Runtime, WorkerHandle, WorkerState
from cluster.sessions_store import FileSessionStore, SessionStore
from cluster.state import token_user_id
from cluster.worker import QUEUED
from ipc.protocol import IdentifyCancel, IdentifyGrant, IdentifyRefused, Packet, Ping, RestartShard

__all__ = ["Loops"]

log = logging.getLogger("cluster")


class Loops:
    """The background loops of one :class:`~cluster.runtime.Runtime`.

    ``send_to_shard(shard_id, packet)`` reaches a shard's worker (False if it could not);
    ``kill(handle, reason)`` kills an unresponsive worker."""

    def __init__(self, rt: Runtime, *, send_to_shard: Callable[[int, Packet], bool],
                 kill: Callable[[WorkerHandle, str], Awaitable[None]]) -> None:
        self.rt = rt
        self.send_to_shard = send_to_shard
        self.kill = kill
        self.store: SessionStore = FileSessionStore(rt.config.state_file or "", rt.config.state_save_interval)
        self.saved_version = 0  # the sessions version in the store
        self.state_error: str | None = None
        self._last_defer = 0.0
        self.send_identify: Callable[[int, Packet], bool] = send_to_shard
        """Sends an identify decision to the shard of a coordinator key (a live reshard has two key ranges)."""
        self.on_refuse: Callable[[int, str], bool] | None = None
        """Told of a refused identify (coordinator key, reason) before the cluster stops; True if it handled it
        (a live reshard's new shard: the reshard rolls back)."""

    def name_state_file(self, token: str) -> None:
        """With no state_file configured, save to the per-user default named after the bot (known from its token)."""
        cfg = self.rt.config
        if cfg.state_file is None:
            self.store = FileSessionStore(cfg.state_path(token), cfg.state_save_interval)

    def start(self) -> None:
        rt, cfg = self.rt, self.rt.config
        rt.spawn_loop("identify_pump", self.identify_pump)
        rt.spawn_loop("heartbeat", self.heartbeat)
        rt.spawn_loop("health", self.health)
        if cfg.budget_refresh_interval > 0:
            rt.spawn_loop("budget_refresh", self.budget_refresh, cfg.budget_refresh_interval)
        if self.store.interval > 0:
            rt.spawn_loop("state_save", self.state_save, self.store.interval)

    async def identify_pump(self) -> None:
        """The one caller of the coordinator: hands it the queued identify reports, acts on its decisions."""
        rt = self.rt
        coord = rt.coordinator
        assert coord is not None
        events = rt.identify_events
        while True:
            if rt.budget_update is not None:
                update, rt.budget_update = rt.budget_update, None
                await coord.refresh_budget(*update)
            if events:
                batch = list(events)
                events.clear()
                await coord.report(batch)
            now = time.monotonic()
            for d in await coord.decide(now):
                if isinstance(d, Grant):
                    self._grant(d)
                elif isinstance(d, Refuse):
                    self.send_identify(d.shard_id, IdentifyRefused(d.shard_id, d.message))
                    if self.on_refuse is None or not self.on_refuse(d.shard_id, d.message):
                        rt.stop(ExitCode.SESSION_BUDGET, d.message)
                elif isinstance(d, Defer) and now - self._last_defer > 60:
                    self._last_defer = now
                    log.warning("%s", d.message)
            deadline = coord.next_deadline(now)
            if events or rt.budget_update is not None:  # came while it decided (or a grant that could not be sent)
                continue
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a racing cancel
                async with asyncio.timeout(None if deadline is None else max(0.0, deadline - now)):
                    await rt.wake.wait()
            except TimeoutError:
                pass
            rt.wake.clear()

    def _grant(self, g: Grant) -> None:
        rt = self.rt
        rt.identifies[g.reason] += 1
        rt.identify_waits.record(g.waited)
        hold = max(0.0, g.not_before - time.monotonic()) if g.not_before else 0.0
        if not self.send_identify(g.shard_id, IdentifyGrant(g.shard_id, hold)):
            rt.identify_events.append((time.monotonic(), IdentifyCancel(g.shard_id)))

    async def heartbeat(self) -> None:
        """Ping every running worker each interval; kill one silent for ``ipc_heartbeat_missed`` intervals.

        Time this process's own event loop was stalled (a slow scrape, a swapped-out host) is
        measured as the tick's lateness and not counted as the workers' silence: their pongs
        could not be read, nor pings sent, meanwhile."""
        rt = self.rt
        interval = rt.config.ipc_heartbeat_interval
        due = time.monotonic() + interval
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            now = time.monotonic()
            lag = max(0.0, now - due)
            due = rt.heartbeat_due = now + interval
            rt.loop_lags.append(lag)
            for handle in list(rt.workers.values()):
                hb = handle.heartbeat
                if handle.state != WorkerState.RUNNING or hb is None or handle.channel is None:
                    continue
                hb.excuse(lag, now)
                if hb.dead(now):
                    reason = f"unresponsive: no IPC heartbeat answer for {hb.silence(now):.1f} s"
                    log.error("worker %d %s; killing it", handle.worker_id, reason)
                    handle.state = WorkerState.DRAINING
                    rt.spawn_task(self.kill(handle, reason), "kill", f"kill worker {handle.worker_id}")
                    continue
                try:
                    handle.channel.send(Ping(hb.ping(now)))
                except ConnectionError:
                    pass

    async def health(self) -> None:
        """Restart a shard stuck short of Active, or Active with no sign of life (no event taken, no heartbeat ACK
        while its consumer waits: :mod:`cluster.liveness`), for ``shard_stuck_timeout``."""
        rt, cfg = self.rt, self.rt.config
        while True:
            await asyncio.sleep(cfg.report_interval)
            if rt.coordinator is None or rt.rolling:
                continue
            now = time.monotonic()
            waiting = rt.coordinator.busy()
            for view in rt.shards.values():
                handle = rt.workers.get(view.worker_id)
                if handle is None or handle.state != WorkerState.RUNNING or view.generation != handle.generation:
                    continue
                if now - view.restarted_at < cfg.shard_stuck_timeout:
                    continue
                reason = None
                if (view.state not in (ACTIVE, QUEUED) and view.shard_id + rt.id_base not in waiting
                        and now - view.since > cfg.shard_stuck_timeout):
                    reason = f"stuck in {view.state} for {now - view.since:.0f} s"
                elif (view.state == ACTIVE and view.last_event_age is not None
                      and view.last_event_age > cfg.shard_stuck_timeout):
                    reason = f"zombie: no event nor heartbeat ACK for {view.last_event_age:.0f} s"
                if reason:
                    view.restarted_at = now
                    log.warning("shard %d %s; restarting it", view.shard_id, reason)
                    self.send_to_shard(view.shard_id, RestartShard(view.shard_id, reason))

    async def budget_refresh(self, every: float) -> None:
        rt = self.rt
        while True:
            await asyncio.sleep(every)
            try:
                info = await fetch_gateway_bot(rt.config.api_url, rt.token())
            except Exception as exc:  # noqa: BLE001 - a truncated body (IncompleteRead), a reset: next time
                rt.errors[("budget_refresh", type(exc).__name__)] += 1
                log.warning("could not refresh the session budget (trying again in %g s): %s: %s",
                            every, type(exc).__name__, exc)
                continue
            limit = info.session_start_limit
            rt.budget_update = (limit.total, limit.remaining, limit.reset_after / 1000, time.monotonic())
            rt.wake.set()  # the identify pump adopts it

    async def state_save(self, every: float) -> None:
        """Save the sessions while running, so that a supervisor killed without SIGTERM (OOM, kill -9,
        a host crash) is followed by one that resumes them: its workers close their shards resumably."""
        rt = self.rt
        while True:
            await asyncio.sleep(every)
            if rt.sessions and (rt.sessions_version != self.saved_version or self.store.refresh):
                await self.save_state()

    async def save_state(self) -> bool:
        """Write the sessions of this host's shards to the session store. A failure is logged once per reason."""
        rt = self.rt
        version = rt.sessions_version
        try:
            await self.store.save(rt.shard_total, [s for s in rt.sessions.values() if s.shard_id in rt.shards],
                                  user_id=token_user_id(rt.token()))
        except OSError as exc:
            if str(exc) != self.state_error:
                log.error("could not write the sessions to %s: %s", self.store.where, exc)
            self.state_error = str(exc)
            return False
        self.saved_version, self.state_error = version, None
        return True
