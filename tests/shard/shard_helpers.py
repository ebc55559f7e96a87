"""Helpers for driving real shards against `sim.Simulator`."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from shard import Event, GatewayError, Shard


async def call(result: Any) -> Any:
    """Sim chaos controls may be sync or async."""
    if inspect.isawaitable(result):
        return await result
    return result


class Recorder:
    """Consumes a shard in the background and records events and errors, awaitably."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self.events: list[Event] = []
        self.errors: list[GatewayError] = []
        self._changed = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._consume())

    async def _consume(self) -> None:
        while True:
            try:
                event = await self.shard.next_event()
            except GatewayError as error:
                self.errors.append(error)
                self._changed.set()
                if error.is_fatal():
                    return
                continue
            self.events.append(event)
            self._changed.set()

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    def count(self, event_type: str) -> int:
        return sum(1 for e in self.events if e.type == event_type)

    async def wait_for(self, predicate: Callable[[Recorder], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    async def stop(self) -> None:
        """Stop consuming. A consumer that crashed (anything but a GatewayError from the shard) re-raises here,
        so a test cannot pass over it."""
        if not self.task.done():
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        elif not self.task.cancelled():
            self.task.result()


def shard_stats(snap: dict[str, Any], number: int = 0) -> dict[str, Any]:
    """The simulator's counters for one shard (zeros before it identified)."""
    return snap["shards"].get(str(number), {"connections": 0, "open_connections": 0, "identifies": 0, "resumes": 0,
                                            "heartbeats": 0, "violations": [], "closes": {}, "commands": {},
                                            "concurrency_violations": 0, "ratelimit_closes": 0})


async def feed_backlog(shard: Shard, segments: int) -> tuple[Any, int]:
    """Wait for READY, stop the socket's reading, then hand the shard `segments` copies of the simulator's
    flood segment as if its socket had read them all at once (they are independent: Z_FULL_FLUSH at the
    end of each). Returns the connection and the number of MESSAGE_CREATEs fed. Use a simulator with the
    default heartbeat interval: an ACK arriving later would not fit the stream."""
    from sim import compress, traffic

    while (await asyncio.wait_for(shard.next_event(), 5)).type != "READY":
        pass
    conn = shard._conn
    assert conn is not None and conn.transport is not None
    conn.transport.pause_reading()
    pool = traffic.flood_pool(0, 1, 1, False)
    shard._on_data(conn, compress.replay_segment(traffic.numbered(pool, 100), 1) * segments)
    return conn, segments * len(pool)
