"""Terminal output: a progress bar while the shards come up, then a live status line."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, Protocol, TextIO

from cluster.snapshot import ClusterSnapshot

__all__ = ["StatusDisplay", "progress_bar", "status_line"]


def progress_bar(active: int, total: int, queued: int, width: int = 30) -> str:
    """``[#########.........]  8/16 shards active · 8 queued for identify``"""
    if not total:
        return "starting: asking Discord for the shard count and session budget..."
    filled = int(width * active / total) if total else 0
    return f"[{'#' * filled}{'.' * (width - filled)}] {active}/{total} shards active · {queued} queued for identify"


def status_line(status: dict[str, Any], rate: float, metrics_url: str | None) -> str:
    """One line: shards active, workers up, event rate, identify budget and the metrics URL."""
    workers = status["workers"]
    up = sum(1 for w in workers if w["state"] == "running")
    budget = status.get("session_budget") or {}
    parts = [f"{status['active']}/{status['shard_total']} shards active",
             f"{up}/{len(workers)} workers",
             f"{rate:,.0f} events/s",
             f"identifies left {budget.get('remaining', '?')}/{budget.get('total', '?')}"]
    if status.get("rolling"):
        parts.append("rolling restart")
    if status.get("stopping"):
        parts.append("stopping")
    if metrics_url:
        parts.append(f"metrics {metrics_url}/metrics")
    return " · ".join(parts)


class Shown(Protocol):
    """What the display needs of a supervisor."""

    http_url: str | None

    def snapshot(self) -> ClusterSnapshot: ...


class StatusDisplay:
    """Redraws the progress bar, then the status line, every ``interval`` seconds.

    On a terminal it rewrites one line in place; otherwise it prints a line every
    ``plain_every`` seconds (for logs).
    """

    def __init__(self, sup: Shown, stream: TextIO = sys.stderr, *, tty: bool | None = None,
                 interval: float = 0.5, plain_every: float = 10.0) -> None:
        self.sup = sup
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.interval = interval
        self.plain_every = plain_every
        self._last_events = 0
        self._last_time = time.monotonic()
        self._last_plain = 0.0
        self.rate = 0.0
        self.was_up = False

    def line(self) -> str:
        now = time.monotonic()
        snap = self.sup.snapshot()
        total = sum(sum(s.events.values()) for s in snap.shards)
        dt = now - self._last_time
        if dt > 0:
            self.rate = 0.7 * self.rate + 0.3 * (total - self._last_events) / dt if self._last_events else 0.0
        self._last_events, self._last_time = total, now
        st = snap.status()
        if not self.was_up and st["active"] == st["shard_total"] and st["shard_total"]:
            self.was_up = True
        if not self.was_up:
            return progress_bar(st["active"], st["shard_total"], st["identify_queue"])
        return status_line(st, self.rate, self.sup.http_url)

    async def run(self) -> None:
        try:
            while True:
                was_up = self.was_up
                text = self.line()
                now = time.monotonic()
                if self.was_up and not was_up:
                    self._last_plain = 0.0  # print the first status line at once
                if self.tty:
                    self.stream.write("\r\x1b[2K" + text)
                    self.stream.flush()
                elif now - self._last_plain >= self.plain_every:
                    self._last_plain = now
                    self.stream.write(text + "\n")
                    self.stream.flush()
                await asyncio.sleep(self.interval)
        finally:
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()
