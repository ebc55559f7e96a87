"""Prometheus metrics of the whole cluster.

Workers send cheap deltas in their status reports; the supervisor accumulates them, so
counters survive worker restarts. Every family is prefixed ``cluster_``.

A scrape copies what it needs into a :class:`MetricsSnapshot` on the event loop (plain
copies, no formatting) and renders the text in a thread, so that a 1,024-shard page (MBs,
~200 ms of formatting) does not stall the supervisor; :class:`MetricsPage` renders once for
every scrape that arrives meanwhile and reuses the page for ``metrics_cache_interval``.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

if TYPE_CHECKING:
    from cluster.supervisor import Supervisor

__all__ = ["MetricsPage", "MetricsSnapshot", "WAIT_BUCKETS", "render_snapshot", "snapshot"]

WAIT_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
SHARD_STATES = ("PENDING", "STARTING", "QUEUED", "IDENTIFYING", "RESUMING", "ACTIVE", "DISCONNECTED",
                "FATALLY_CLOSED", "WORKER_DOWN")
RECONNECT_EVENTS = {"GATEWAY_RECONNECT": "reconnect", "GATEWAY_INVALID_SESSION": "invalid_session",
                    "GATEWAY_CLOSE": "close"}


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything one page shows, copied from the supervisor on its event loop.

    ``shards`` rows are ``(shard_id, state, latency, last_event_age, events)``; ``workers`` rows are
    ``(worker_id, up, ipc_rtt, rss, loop_lag, blocked, handler_errors)``.
    """

    shards: list[tuple[int, str, float | None, float | None, dict[str, int]]]
    identifies: dict[str, int]
    queue_depth: int
    waits: list[tuple[str, float]]
    wait_sum: float
    budget: tuple[float, float] | None  # (remaining, reset in seconds)
    restarts: dict[tuple[int, str], int]
    workers: list[tuple[int, bool, float | None, int, float, int, int]]
    errors: dict[tuple[str, str], int]
    loop_lag: float


class _Histogram:
    """The identify-wait histogram: folds in the waits the supervisor recorded since the last scrape."""

    def __init__(self) -> None:
        self.counts = [0] * (len(WAIT_BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0

    def fold(self, waits: Any) -> tuple[list[tuple[str, float]], float]:
        for w in waits:
            self.sum += w
            self.counts[bisect.bisect_left(WAIT_BUCKETS, w)] += 1
        waits.clear()
        return list(zip([*map(str, WAIT_BUCKETS), "+Inf"], itertools.accumulate(self.counts))), self.sum


def snapshot(sup: Supervisor, histogram: _Histogram) -> MetricsSnapshot:
    """Copy the supervisor's numbers (call it on the supervisor's event loop)."""
    now = time.monotonic()
    coord = sup.coordinator.stats(now) if sup.coordinator is not None else None
    waits, wait_sum = histogram.fold(sup.identify_waits)
    return MetricsSnapshot(
        shards=[(v.shard_id, v.state, v.latency, v.last_event_age, dict(v.events)) for v in sup.shards.values()],
        identifies=dict(sup.identifies),
        queue_depth=coord.queue_depth if coord else 0,
        waits=waits, wait_sum=wait_sum,
        budget=(coord.budget_remaining, coord.budget_reset_in) if coord else None,
        restarts=dict(sup.restarts),
        workers=[(w.worker_id, w.state.value == "running", w.heartbeat.rtt if w.heartbeat else None, w.rss,
                  w.loop_lag, w.blocked, w.handler_errors) for w in sup.workers.values()],
        errors=dict(sup.errors),
        loop_lag=max(sup.loop_lags, default=0.0),
    )


class _Collector:
    def __init__(self, snap: MetricsSnapshot) -> None:
        self.snap = snap

    def collect(self) -> Any:
        snap = self.snap
        state = GaugeMetricFamily("cluster_shard_state", "1 for the shard's current state", labels=["shard", "state"])
        latency = GaugeMetricFamily("cluster_shard_latency_seconds", "Average gateway heartbeat latency",
                                    labels=["shard"])
        age = GaugeMetricFamily("cluster_shard_last_event_age_seconds", "Seconds since the shard's last event",
                                labels=["shard"])
        events = CounterMetricFamily("cluster_gateway_events", "Gateway events received by type",
                                     labels=["shard", "type"])
        reconnects = CounterMetricFamily("cluster_shard_reconnects", "Reconnects by reason", labels=["shard", "reason"])
        resumes = CounterMetricFamily("cluster_shard_resumes", "Sessions resumed (RESUMED)", labels=["shard"])
        for shard_id, current, lat, last_age, counts in snap.shards:
            sid = str(shard_id)
            for name in SHARD_STATES:
                state.add_metric([sid, name], 1.0 if current == name else 0.0)
            if lat is not None:
                latency.add_metric([sid], lat)
            if last_age is not None:
                age.add_metric([sid], last_age)
            for etype, n in counts.items():
                events.add_metric([sid, etype], n)
                if etype in RECONNECT_EVENTS:
                    reconnects.add_metric([sid, RECONNECT_EVENTS[etype]], n)
            resumes.add_metric([sid], counts.get("RESUMED", 0))
        yield from (state, latency, age, events, reconnects, resumes)

        identifies = CounterMetricFamily("cluster_identifies", "Identify slots granted, by reason", labels=["reason"])
        for reason, n in snap.identifies.items():
            identifies.add_metric([reason], n)
        yield identifies
        depth = GaugeMetricFamily("cluster_identify_queue_depth", "Shards waiting for an identify slot")
        depth.add_metric([], snap.queue_depth)
        yield depth
        wait = HistogramMetricFamily("cluster_identify_wait_seconds", "Time a shard waited for its identify slot")
        wait.add_metric([], snap.waits, snap.wait_sum)
        yield wait
        if snap.budget is not None:
            remaining = GaugeMetricFamily("cluster_session_start_remaining", "Identifies left in the daily budget")
            remaining.add_metric([], snap.budget[0])
            yield remaining
            reset = GaugeMetricFamily("cluster_session_start_reset_seconds", "Seconds until the budget resets")
            reset.add_metric([], snap.budget[1])
            yield reset

        restarts = CounterMetricFamily("cluster_worker_restarts", "Worker restarts by reason", labels=["worker", "reason"])
        for (wid, reason), n in snap.restarts.items():
            restarts.add_metric([str(wid), reason], n)
        yield restarts
        rtt = GaugeMetricFamily("cluster_ipc_rtt_seconds", "Last IPC heartbeat round-trip time", labels=["worker"])
        rss = GaugeMetricFamily("cluster_worker_rss_bytes", "Worker resident memory", labels=["worker"])
        lag = GaugeMetricFamily("cluster_worker_loop_lag_seconds", "Worst event-loop lag in the last report",
                                labels=["worker"])
        blocked = CounterMetricFamily("cluster_handler_blocked", "Times a handler blocked the loop", labels=["worker"])
        errors = CounterMetricFamily("cluster_handler_errors", "Exceptions raised by the handler", labels=["worker"])
        up = GaugeMetricFamily("cluster_worker_up", "1 if the worker is running", labels=["worker"])
        for worker_id, running, ipc_rtt, rss_bytes, loop_lag, n_blocked, n_errors in snap.workers:
            wid = str(worker_id)
            if ipc_rtt is not None:
                rtt.add_metric([wid], ipc_rtt)
            rss.add_metric([wid], rss_bytes)
            lag.add_metric([wid], loop_lag)
            blocked.add_metric([wid], n_blocked)
            errors.add_metric([wid], n_errors)
            up.add_metric([wid], 1.0 if running else 0.0)
        yield from (rtt, rss, lag, blocked, errors, up)

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


def render_snapshot(snap: MetricsSnapshot) -> bytes:
    """The Prometheus text exposition of ``snap`` (pure: safe to call in a thread)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snap))
    return generate_latest(registry)


class MetricsPage:
    """The /metrics page of one supervisor: rendered in a thread, once for all the scrapes that
    arrive while it renders, and served again for ``max_age`` seconds."""

    def __init__(self, supervisor: Supervisor, max_age: float) -> None:
        self.sup = supervisor
        self.max_age = max_age
        self.renders = 0
        self._histogram = _Histogram()
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
            body = await asyncio.to_thread(render_snapshot, snapshot(self.sup, self._histogram))
            self.renders += 1
            self._body, self._at = body, time.monotonic()
            return body
        finally:
            self._pending = None

