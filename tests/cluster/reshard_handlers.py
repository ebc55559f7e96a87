"""A handler of the live resharding tests beside bench/stream_log.py; workers import it by ``module:attribute``."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from stream_log import IdLog

from sim.guild_events import KEY_FIELDS


class BlockingIdLog(IdLog):
    """An :class:`stream_log.IdLog` of which one worker of the ``$RESHARD_BLOCK_TOTAL``-shard set stops at the first
    stream event it gets (before writing it), and at every one after it, until it is killed: the first to create
    ``$RESHARD_BLOCK``, where it writes its pid. A worker restarted after it (the file exists) delivers as usual."""

    async def setup(self, ctx: Any) -> None:
        await super().setup(ctx)
        self.total = int(os.environ["RESHARD_BLOCK_TOTAL"])
        self.blocked: asyncio.Event | None = None
        self.free = False

    def on_event(self, shard: Any, event: Any) -> Any:
        if event.type in KEY_FIELDS and shard.id.total == self.total and not self.free:
            if self.blocked is None:
                try:
                    fd = os.open(os.environ["RESHARD_BLOCK"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    self.free = True
                    return super().on_event(shard, event)
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                self.blocked = asyncio.Event()  # never set: the worker awaits it until it is killed
            return self.blocked.wait()
        return super().on_event(shard, event)
