"""Broadcast-and-gather: send one call to many channels and collect every reply."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from ipc.calls import CallError, Reply, decode_value
from ipc.channel import Channel

__all__ = ["gather"]


async def gather(channels: Mapping[int, Channel], name: str, body: bytes,
                 timeout: float = 5.0) -> list[Reply]:
    """Send the call (``name``, msgpack ``body``) to every channel, keyed by worker id.

    Returns one :class:`Reply` per worker, in worker-id order; a worker that fails, has
    gone away or misses ``timeout`` gets a reply with ``error`` set. Never raises for one
    worker's failure.
    """

    async def one(worker_id: int, channel: Channel) -> Reply:
        try:
            raw = await channel.request_raw(name, body, timeout=timeout)
            return Reply(worker_id, decode_value(raw))
        except CallError as exc:
            return Reply(worker_id, None, str(exc))

    ids = sorted(channels)
    return list(await asyncio.gather(*(one(i, channels[i]) for i in ids)))
