"""The live resharding benchmark's and tests' handler: it logs every shared guild stream event a worker delivers.

Workers import it by ``stream_log:IdLog`` (bench/ on their path: the benchmark puts it there, the tests' conftest
too). Each worker process appends to ``$RESHARD_ID_LOG/<pid>.ids``, line-buffered, so that a reader sees at once
what every worker of both shard sets delivered; :func:`delivered` reads them all back. A line is

- ``<id> <guild id> <shard count> <monotonic time>`` for a stream event (MESSAGE_CREATE and the kinds without a
  creation id, by their unique snowflake: ``sim.guild_events.KEY_FIELDS``);
- ``G <guild id> <shard count> <monotonic time>`` for a GUILD_CREATE.

The monotonic clock is one for every process of the machine. ``$RESHARD_ID_LOG_DELAY`` (seconds, default 0): the
worker awaits that long after each stream event, as with a handler doing I/O (a test widens a race with it).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable
from typing import Any, NamedTuple

from sim.guild_events import KEY_FIELDS

__all__ = ["Delivered", "IdLog", "delivered"]


class Delivered(NamedTuple):
    """One logged line: the event's id (0 for a GUILD_CREATE), its guild, the shard count and the time."""

    id: int
    guild: int
    total: int
    at: float


class IdLog:
    """Writes one line per stream event or GUILD_CREATE delivered to it (see the module docstring)."""

    async def setup(self, ctx: Any) -> None:
        # kept open for the worker's life (closed with the process), line-buffered so a reader sees every line at once
        path = os.path.join(os.environ["RESHARD_ID_LOG"], f"{os.getpid()}.ids")
        self.file = open(path, "a", buffering=1)  # noqa: ASYNC230, SIM115 - a local file, opened once at setup
        self.delay = float(os.environ.get("RESHARD_ID_LOG_DELAY") or 0)

    def on_event(self, shard: Any, event: Any) -> Awaitable[None] | None:
        key = KEY_FIELDS.get(event.type)
        if key is not None:
            d = event.data
            self.file.write(f"{d[key]} {d.get('guild_id')} {shard.id.total} {time.monotonic()}\n")
            if self.delay:
                return asyncio.sleep(self.delay)  # the worker awaits it, as it awaits an async handler
        elif event.type == "GUILD_CREATE":  # "G": not a message
            self.file.write(f"G {event.data['id']} {shard.id.total} {time.monotonic()}\n")
        return None

    def teardown(self) -> None:
        self.file.close()


def delivered(path: str | os.PathLike[str], guilds: bool = False) -> list[Delivered]:
    """Every stream event any handler logged under ``path`` (with ``guilds``: every GUILD_CREATE instead, id 0).
    A line still being written (no newline yet) is left for the next read."""
    out = []
    for name in os.listdir(path):
        if not name.endswith(".ids"):
            continue
        with open(os.path.join(path, name)) as f:
            for line in f:
                parts = line.split()
                if line.endswith("\n") and len(parts) == 4 and (parts[0] == "G") == guilds:
                    out.append(Delivered(0 if guilds else int(parts[0]), int(parts[1]), int(parts[2]),
                                         float(parts[3])))
    return out
