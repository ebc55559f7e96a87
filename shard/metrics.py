"""Prometheus metrics, labelled by shard.

The shard counts in plain fields (`shard.counters.ShardCounters`, no Prometheus in the sans-I/O core);
prometheus objects are only built when the registry is scraped (a custom collector reads every live
shard), so metrics cost nothing per event.

Families: shard_gateway_events_received_total{shard,type}, shard_gateway_reconnects_total{shard,reason},
shard_gateway_latency_seconds{shard} (average) and shard_gateway_latency_recent_seconds{shard},
shard_gateway_state{shard,state}, shard_gateway_inflater_bytes_in_total{shard},
shard_gateway_inflater_bytes_out_total{shard}, shard_gateway_inflater_buffer_bytes{shard}.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from .counters import ShardCounters
from .id import ShardId
from .latency import Latency
from .state import ShardState, StateKind

__all__ = ["ShardMetrics", "GatewayCollector", "register_collector"]

ShardMetrics = ShardCounters
"""The former name of `shard.counters.ShardCounters`, kept importable from here."""


class Observed(Protocol):
    """What the collector reads of a shard (a `Shard`; declared here so this module does not import it)."""

    @property
    def id(self) -> ShardId: ...

    @property
    def metrics(self) -> ShardCounters: ...

    @property
    def latency(self) -> Latency: ...

    @property
    def state(self) -> ShardState: ...

    def inflater_stats(self) -> tuple[int, int, int]: ...


class GatewayCollector(Collector):
    """Reads the counters of every live shard at scrape time."""

    def __init__(self) -> None:
        self._shards: weakref.WeakSet[Observed] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, shard: Observed) -> None:
        with self._lock:
            self._shards.add(shard)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            shards = list(self._shards)
        events = CounterMetricFamily("shard_gateway_events_received", "Gateway events received, by type",
                                     labels=["shard", "type"])
        reconnects = CounterMetricFamily("shard_gateway_reconnects", "Reconnects, by reason",
                                         labels=["shard", "reason"])
        latency = GaugeMetricFamily("shard_gateway_latency_seconds", "Average heartbeat round trip",
                                    labels=["shard"])
        recent = GaugeMetricFamily("shard_gateway_latency_recent_seconds", "Last heartbeat round trip",
                                   labels=["shard"])
        state = GaugeMetricFamily("shard_gateway_state", "1 for the shard's current state", labels=["shard", "state"])
        inflated_in = CounterMetricFamily("shard_gateway_inflater_bytes_in", "Compressed bytes received",
                                          labels=["shard"])
        inflated_out = CounterMetricFamily("shard_gateway_inflater_bytes_out", "Decompressed bytes produced",
                                           labels=["shard"])
        capacity = GaugeMetricFamily("shard_gateway_inflater_buffer_bytes", "Inflater buffer capacity",
                                     labels=["shard"])
        for shard in shards:
            label = str(shard.id.number)
            m = shard.metrics
            for t, n in list(m.events.items()):
                events.add_metric([label, t], n)
            for reason, n in list(m.reconnects.items()):
                reconnects.add_metric([label, reason], n)
            lat = shard.latency
            if lat.average is not None:
                latency.add_metric([label], lat.average)
                recent.add_metric([label], lat.recent[0])
            current = shard.state.kind
            for kind in StateKind:
                state.add_metric([label, kind.value], 1.0 if kind is current else 0.0)
            b_in, b_out, cap = shard.inflater_stats()
            inflated_in.add_metric([label], b_in)
            inflated_out.add_metric([label], b_out)
            capacity.add_metric([label], cap)
        yield from (events, reconnects, latency, recent, state, inflated_in, inflated_out, capacity)


_COLLECTORS: dict[int, GatewayCollector] = {}
_REG_LOCK = threading.Lock()


def register_collector(registry: CollectorRegistry = REGISTRY) -> GatewayCollector:
    """The collector for `registry`, registering it on first use."""
    with _REG_LOCK:
        collector = _COLLECTORS.get(id(registry))
        if collector is None:
            collector = _COLLECTORS[id(registry)] = GatewayCollector()
            registry.register(collector)
        return collector
