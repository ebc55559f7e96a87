"""Handlers of the live resharding tests; workers import them by ``module:attribute``."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from sim.guild_events import KEY_FIELDS


class IdLog:
    """Writes one line per shared stream event delivered to it (MESSAGE_CREATE and the kinds without a creation id,
    by their unique snowflake, ``sim.guild_events.KEY_FIELDS``): that id, guild id, shard count, monotonic time
    (and per GUILD_CREATE: G, guild id, shard count, time)
    (one clock for every process of the machine), to ``$RESHARD_ID_LOG/<pid>.ids``, written through at once so
    that a test reads what every worker of both shard sets delivered."""

    async def setup(self, ctx: Any) -> None:
        # kept open for the worker's life (closed with the process), line-buffered so a reader sees every line at once
        path = os.path.join(os.environ["RESHARD_ID_LOG"], f"{os.getpid()}.ids")
        self.file = open(path, "a", buffering=1)  # noqa: ASYNC230, SIM115 - a local file, opened once at setup

    def on_event(self, shard: Any, event: Any) -> None:
        key = KEY_FIELDS.get(event.type)
        if key is not None:
            d = event.data
            self.file.write(f"{d[key]} {d.get('guild_id')} {shard.id.total} {time.monotonic()}\n")
        elif event.type == "GUILD_CREATE":  # "G": not a message
            self.file.write(f"G {event.data['id']} {shard.id.total} {time.monotonic()}\n")

    def teardown(self) -> None:
        self.file.close()


class BlockingIdLog(IdLog):
    """An :class:`IdLog` of which one worker of the ``$RESHARD_BLOCK_TOTAL``-shard set stops at the first stream event
    it gets (before writing it), and at every one after it, until it is killed: the first to create ``$RESHARD_BLOCK``,
    where it writes its pid. A worker restarted after it (the file exists) delivers as usual."""

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
