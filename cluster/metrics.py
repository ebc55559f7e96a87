"""Prometheus metrics of the whole cluster, built from the supervisor's state at scrape time.

Workers send cheap deltas in their status reports; the supervisor accumulates them, so
counters survive worker restarts. Every family is prefixed ``cluster_``.
"""

from __future__ import annotations

import bisect
import itertools
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

if TYPE_CHECKING:
    from cluster.supervisor import Supervisor

__all__ = ["ClusterCollector", "WAIT_BUCKETS", "render"]

WAIT_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
SHARD_STATES = ("PENDING", "STARTING", "QUEUED", "IDENTIFYING", "RESUMING", "ACTIVE", "DISCONNECTED",
                "FATALLY_CLOSED", "WORKER_DOWN")
RECONNECT_EVENTS = {"GATEWAY_RECONNECT": "reconnect", "GATEWAY_INVALID_SESSION": "invalid_session",
                    "GATEWAY_CLOSE": "close"}


class ClusterCollector:
    """A prometheus-client collector over a :class:`~cluster.supervisor.Supervisor`."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self._wait_counts = [0] * (len(WAIT_BUCKETS) + 1)  # the last one is +Inf
        self._wait_sum = 0.0

    def _waits(self) -> tuple[list[tuple[str, float]], float]:
        """Fold the identify waits recorded since the last scrape into the histogram."""
        for w in self.sup.identify_waits:
            self._wait_sum += w
            self._wait_counts[bisect.bisect_left(WAIT_BUCKETS, w)] += 1
        self.sup.identify_waits.clear()
        cumulative = itertools.accumulate(self._wait_counts)
        return list(zip([*map(str, WAIT_BUCKETS), "+Inf"], cumulative)), self._wait_sum

    def collect(self) -> Any:
        sup = self.sup
        now = time.monotonic()
        state = GaugeMetricFamily("cluster_shard_state", "1 for the shard's current state", labels=["shard", "state"])
        latency = GaugeMetricFamily("cluster_shard_latency_seconds", "Average gateway heartbeat latency",
                                    labels=["shard"])
        age = GaugeMetricFamily("cluster_shard_last_event_age_seconds", "Seconds since the shard's last event",
                                labels=["shard"])
        events = CounterMetricFamily("cluster_gateway_events", "Gateway events received by type",
                                     labels=["shard", "type"])
        reconnects = CounterMetricFamily("cluster_shard_reconnects", "Reconnects by reason", labels=["shard", "reason"])
        resumes = CounterMetricFamily("cluster_shard_resumes", "Sessions resumed (RESUMED)", labels=["shard"])
        for v in sup.shards.values():
            sid = str(v.shard_id)
            for name in SHARD_STATES:
                state.add_metric([sid, name], 1.0 if v.state == name else 0.0)
            if v.latency is not None:
                latency.add_metric([sid], v.latency)
            if v.last_event_age is not None:
                age.add_metric([sid], v.last_event_age)
            for etype, n in v.events.items():
                events.add_metric([sid, etype], n)
                if etype in RECONNECT_EVENTS:
                    reconnects.add_metric([sid, RECONNECT_EVENTS[etype]], n)
            resumes.add_metric([sid], v.events.get("RESUMED", 0))
        yield from (state, latency, age, events, reconnects, resumes)

        identifies = CounterMetricFamily("cluster_identifies", "Identify slots granted, by reason", labels=["reason"])
        for reason, n in sup.identifies.items():
            identifies.add_metric([reason], n)
        yield identifies
        coord = sup.coordinator
        depth = GaugeMetricFamily("cluster_identify_queue_depth", "Shards waiting for an identify slot")
        depth.add_metric([], coord.depth if coord else 0)
        yield depth
        buckets, total = self._waits()
        wait = HistogramMetricFamily("cluster_identify_wait_seconds", "Time a shard waited for its identify slot")
        wait.add_metric([], buckets, total)
        yield wait
        if coord is not None:
            remaining = GaugeMetricFamily("cluster_session_start_remaining", "Identifies left in the daily budget")
            remaining.add_metric([], coord.budget.available(now))
            yield remaining
            reset = GaugeMetricFamily("cluster_session_start_reset_seconds", "Seconds until the budget resets")
            reset.add_metric([], coord.budget.reset_in(now))
            yield reset

        restarts = CounterMetricFamily("cluster_worker_restarts", "Worker restarts by reason", labels=["worker", "reason"])
        for (wid, reason), n in sup.restarts.items():
            restarts.add_metric([str(wid), reason], n)
        yield restarts
        rtt = GaugeMetricFamily("cluster_ipc_rtt_seconds", "Last IPC heartbeat round-trip time", labels=["worker"])
        rss = GaugeMetricFamily("cluster_worker_rss_bytes", "Worker resident memory", labels=["worker"])
        lag = GaugeMetricFamily("cluster_worker_loop_lag_seconds", "Worst event-loop lag in the last report",
                                labels=["worker"])
        blocked = CounterMetricFamily("cluster_handler_blocked", "Times a handler blocked the loop", labels=["worker"])
        errors = CounterMetricFamily("cluster_handler_errors", "Exceptions raised by the handler", labels=["worker"])
        up = GaugeMetricFamily("cluster_worker_up", "1 if the worker is running", labels=["worker"])
        for w in sup.workers.values():
            wid = str(w.worker_id)
            if w.heartbeat is not None and w.heartbeat.rtt is not None:
                rtt.add_metric([wid], w.heartbeat.rtt)
            rss.add_metric([wid], w.rss)
            lag.add_metric([wid], w.loop_lag)
            blocked.add_metric([wid], w.blocked)
            errors.add_metric([wid], w.handler_errors)
            up.add_metric([wid], 1.0 if w.state.value == "running" else 0.0)
        yield from (rtt, rss, lag, blocked, errors, up)


def render(supervisor: Supervisor) -> bytes:
    """The Prometheus text exposition of the cluster."""
    registry = getattr(supervisor, "_metrics_registry", None)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ClusterCollector(supervisor))
        supervisor._metrics_registry = registry  # type: ignore[attr-defined]
    return generate_latest(registry)
