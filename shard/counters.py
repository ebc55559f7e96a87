"""Plain counters one shard keeps, without any metrics library (the sans-I/O core counts here).

`shard.metrics` reads them at scrape time for Prometheus; counting is a dict increment on the receive path.
"""

from __future__ import annotations

__all__ = ["ShardCounters"]


class ShardCounters:
    """Plain counters kept by one shard."""

    __slots__ = ("events", "reconnects", "inflater_in", "inflater_out", "__weakref__")

    def __init__(self) -> None:
        self.events: dict[str, int] = {}
        self.reconnects: dict[str, int] = {}
        self.inflater_in = 0    # bytes of finished connections (the live inflater adds its own)
        self.inflater_out = 0

    def reconnect(self, reason: str) -> None:
        self.reconnects[reason] = self.reconnects.get(reason, 0) + 1
