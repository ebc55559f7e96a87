"""Prometheus metrics of the whole cluster.

Workers send cheap deltas in their status reports; the supervisor accumulates them, so
counters survive worker restarts. Every family is prefixed ``cluster_``.

A scrape takes the supervisor's :class:`~cluster.snapshot.ClusterSnapshot` on the event loop (plain
copies, no formatting; nothing in the supervisor changes) and renders the text in a thread, so that a
1,024-shard page (MBs, ~200 ms of formatting) does not stall the supervisor; :class:`MetricsPage` renders once for
every scrape that arrives meanwhile and reuses the page for ``metrics_cache_interval``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from cluster.snapshot import WAIT_BUCKETS, ClusterSnapshot, ShardPhase, WaitHistogram

__all__ = ["MetricsPage", "MetricsSnapshot", "WAIT_BUCKETS", "render_snapshot", "snapshot"]

SHARD_STATES = tuple(p.value for p in ShardPhase if p is not ShardPhase.UNKNOWN)
RESHARD_PHASES = ("idle", "starting", "warming", "cutting_over", "closing_old", "done", "rolled_back")
"""The values of :class:`cluster.reshard.Phase` (this module imports nothing of the supervisor)."""
RECONNECT_EVENTS = {"GATEWAY_RECONNECT": "reconnect", "GATEWAY_INVALID_SESSION": "invalid_session",
                    "GATEWAY_CLOSE": "close"}

MetricsSnapshot = ClusterSnapshot
"""Deprecated name: a page shows one :class:`~cluster.snapshot.ClusterSnapshot`."""
_Histogram = WaitHistogram  # deprecated: the histogram lives in the supervisor, cumulative


class Snapshots(Protocol):
    def snapshot(self) -> ClusterSnapshot: ...


def snapshot(source: Snapshots, histogram: Any = None) -> ClusterSnapshot:
    """Deprecated: ``source.snapshot()`` (``histogram`` is ignored)."""
    return source.snapshot()


class _Collector:
    def __init__(self, snap: ClusterSnapshot) -> None:
        self.snap = snap

    def collect(self) -> Any:
        snap = self.snap
        state = GaugeMetricFamily("cluster_shard_state", "1 for the shard's current state", labels=["shard", "state"])
        latency = GaugeMetricFamily("cluster_shard_latency_seconds", "Average gateway heartbeat latency",
                                    labels=["shard"])
        age = GaugeMetricFamily("cluster_shard_last_event_age_seconds",
                                "Seconds since the shard's last event or heartbeat ACK",
                                labels=["shard"])
        events = CounterMetricFamily("cluster_gateway_events", "Gateway events received by type",
                                     labels=["shard", "type"])
        reconnects = CounterMetricFamily("cluster_shard_reconnects", "Reconnects by reason", labels=["shard", "reason"])
        resumes = CounterMetricFamily("cluster_shard_resumes", "Sessions resumed (RESUMED)", labels=["shard"])
        for shard in snap.shards:
            sid, current = str(shard.shard_id), shard.state
            for name in SHARD_STATES:
                state.add_metric([sid, name], 1.0 if current == name else 0.0)
            if shard.latency is not None:
                latency.add_metric([sid], shard.latency)
            if shard.last_event_age is not None:
                age.add_metric([sid], shard.last_event_age)
            for etype, n in shard.events.items():
                events.add_metric([sid, etype], n)
                if etype in RECONNECT_EVENTS:
                    reconnects.add_metric([sid, RECONNECT_EVENTS[etype]], n)
            resumes.add_metric([sid], shard.resumes)
        yield from (state, latency, age, events, reconnects, resumes)

        identifies = CounterMetricFamily("cluster_identifies", "Identify slots granted, by reason", labels=["reason"])
        for reason, n in snap.identifies.items():
            identifies.add_metric([reason], n)
        yield identifies
        depth = GaugeMetricFamily("cluster_identify_queue_depth", "Shards waiting for an identify slot")
        coord = snap.coordination
        depth.add_metric([], coord.queue_depth if coord else 0)
        yield depth
        wait = HistogramMetricFamily("cluster_identify_wait_seconds", "Time a shard waited for its identify slot")
        wait.add_metric([], list(snap.identify_waits), snap.identify_wait_sum)
        yield wait
        if coord is not None:
            remaining = GaugeMetricFamily("cluster_session_start_remaining", "Identifies left in the daily budget")
            remaining.add_metric([], coord.budget_remaining)
            yield remaining
            reset = GaugeMetricFamily("cluster_session_start_reset_seconds", "Seconds until the budget resets")
            reset.add_metric([], coord.budget_reset_in)
            yield reset
            late = CounterMetricFamily("cluster_identify_late_starts", "Identifies written after their slot's hold "
                                       "expired (identify_hold_timeout is too short for the shards' connects)")
            late.add_metric([], coord.late_starts)
            yield late
            up = GaugeMetricFamily("cluster_coordinator_up", "1 if the identify coordinator (Redis, when shared by "
                                   "hosts) answers; 0 while identifies wait for it")
            up.add_metric([], 1 if coord.coordinator_up else 0)
            yield up
            failed = CounterMetricFamily("cluster_coordinator_errors", "Failed attempts to reach the shared "
                                         "identify coordinator")
            failed.add_metric([], coord.coordinator_errors)
            yield failed

        restarts = CounterMetricFamily("cluster_worker_restarts", "Worker restarts by reason",
                                       labels=["worker", "reason"])
        for (worker, reason), n in snap.restarts.items():
            restarts.add_metric([str(worker), reason], n)
        yield restarts
        rtt = GaugeMetricFamily("cluster_ipc_rtt_seconds", "Last IPC heartbeat round-trip time", labels=["worker"])
        rss = GaugeMetricFamily("cluster_worker_rss_bytes", "Worker resident memory", labels=["worker"])
        lag = GaugeMetricFamily("cluster_worker_loop_lag_seconds", "Worst event-loop lag in the last report",
                                labels=["worker"])
        blocked = CounterMetricFamily("cluster_handler_blocked", "Times a handler blocked the loop", labels=["worker"])
        errors = CounterMetricFamily("cluster_handler_errors", "Exceptions raised by the handler", labels=["worker"])
        consumer = CounterMetricFamily("cluster_consumer_errors", "Unexpected exceptions from the shards' "
                                       "next_event (each shard goes on)", labels=["worker"])
        up = GaugeMetricFamily("cluster_worker_up", "1 if the worker is running", labels=["worker"])
        for w in snap.workers:
            wid = str(w.worker_id)
            if w.ipc_rtt is not None:
                rtt.add_metric([wid], w.ipc_rtt)
            rss.add_metric([wid], w.rss)
            lag.add_metric([wid], w.loop_lag)
            blocked.add_metric([wid], w.blocked)
            errors.add_metric([wid], w.handler_errors)
            consumer.add_metric([wid], w.consumer_errors)
            up.add_metric([wid], 1.0 if w.up else 0.0)
        yield from (rtt, rss, lag, blocked, errors, consumer, up)

        if snap.lease_moves is not None:
            moves = CounterMetricFamily("cluster_lease_moves", "Block lease moves of this host (--assign auto): "
                                        "claim, loss, handoff and failover, by reason", labels=["event", "reason"])
            for (event, reason), n in sorted(snap.lease_moves.items()):
                moves.add_metric([event, reason], n)
            yield moves
            yield GaugeMetricFamily("cluster_legacy_leases", "Block leases held by hosts of an earlier version under "
                                    "the keys before layouts (--assign auto): while any is, this host claims and hands "
                                    "off nothing", value=snap.legacy_leases)
        reshard = snap.reshard
        phase = GaugeMetricFamily("cluster_reshard_phase", "1 for the phase of the latest live reshard (idle: none "
                                  "since the start)", labels=["phase"])
        for name in RESHARD_PHASES:
            phase.add_metric([name], 1.0 if (reshard.phase if reshard else "idle") == name else 0.0)
        yield phase
        if reshard is not None:
            target = GaugeMetricFamily("cluster_reshard_target_shards", "Shard count the latest reshard moves to")
            target.add_metric([], reshard.new_total)
            ready = GaugeMetricFamily("cluster_reshard_new_shards_ready", "New shards of the latest reshard that are "
                                      "READY with all their guilds")
            ready.add_metric([], reshard.ready)
            yield from (target, ready)
        failures = CounterMetricFamily("cluster_supervisor_errors", "Failures the supervisor contained and went on "
                                       "after (a failed budget refresh, worker start, IPC send, task)",
                                       labels=["where", "error"])
        for (where, error), n in snap.errors.items():
            failures.add_metric([where, error], n)
        yield failures
        own_lag = GaugeMetricFamily("cluster_supervisor_loop_lag_seconds",
                                    "Worst lag of the supervisor's event loop over its last 64 IPC heartbeat ticks")
        own_lag.add_metric([], snap.loop_lag)
        yield own_lag


def render_snapshot(snap: ClusterSnapshot) -> bytes:
    """The Prometheus text exposition of ``snap`` (pure: safe to call in a thread)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snap))
    return generate_latest(registry)


class MetricsPage:
    """The /metrics page of one supervisor: rendered in a thread, once for all the scrapes that
    arrive while it renders, and served again for ``max_age`` seconds."""

    def __init__(self, take: Callable[[], ClusterSnapshot], max_age: float) -> None:
        self.take = take
        self.max_age = max_age
        self.renders = 0
        self._body: bytes | None = None
        self._at = 0.0
        self._pending: asyncio.Future[bytes] | None = None

    async def get(self) -> bytes:
        if self._body is not None and time.monotonic() - self._at < self.max_age:
            return self._body
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._render())
        return await asyncio.shield(self._pending)  # a client that goes away does not cancel the others'

    async def _render(self) -> bytes:
        try:
            body = await asyncio.to_thread(render_snapshot, self.take())
            self.renders += 1
            self._body, self._at = body, time.monotonic()
            return body
        finally:
            self._pending = None

