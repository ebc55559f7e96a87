"""Handlers of the live resharding tests; workers import them by ``module:attribute``."""

from __future__ import annotations

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
