"""The shared guild event stream (sans-I/O): snowflake message ids, event bodies, and what was emitted.

One stream for the whole simulated bot: each event happens once, in one guild, and the simulator queues it to
every live session whose (shard, num_shards) routes that guild. `GuildEventLog` records each emitted event with
the number of sessions it was queued to, so a test can check that every event reached a handler exactly once.
"""

from __future__ import annotations

import random
import time
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, UTC
from typing import TypedDict

from . import traffic

DISCORD_EPOCH_MS = 1420070400000
"""The first millisecond of 2015, from which Discord snowflakes count."""

INCREMENT_BITS = 22
"""A snowflake's low bits (worker, process, increment) below its timestamp."""


def snowflake(ms: int, increment: int = 0) -> int:
    """The snowflake of wall-clock time `ms` (Unix milliseconds) with `increment` in its low 22 bits."""
    return ((ms - DISCORD_EPOCH_MS) << INCREMENT_BITS) | (increment & ((1 << INCREMENT_BITS) - 1))


def snowflake_ms(sid: int) -> int:
    """The Unix milliseconds a snowflake was made at."""
    return (sid >> INCREMENT_BITS) + DISCORD_EPOCH_MS


def timestamp(ms: int) -> str:
    """Unix milliseconds as Discord's ISO 8601 timestamp (`2026-11-30T15:52:51.123000+00:00`)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="microseconds")


class SnowflakeClock:
    """Unique, strictly increasing snowflakes from the wall clock: within one millisecond (or if the clock steps
    back) the next id is the last one plus one, so ids never repeat and never go backwards."""

    def __init__(self) -> None:
        self.last = 0

    def next(self, now_ms: int | None = None) -> int:
        ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        sid = max(snowflake(ms), self.last + 1)
        self.last = sid
        return sid


@dataclass(frozen=True, slots=True)
class GuildEvent:
    """One emitted MESSAGE_CREATE: its message `id`, the guild it happened in (`guild`, the guild's index k
    among the bot's guilds) and the encoded `d` with and without message content (MESSAGE_CONTENT intent)."""

    id: int
    guild_id: int
    guild: int
    body: bytes
    body_without_content: bytes


def message_event(sid: int, k: int) -> GuildEvent:
    """The MESSAGE_CREATE of message `sid` in the bot's guild k (body as the per-session stream's)."""
    gid = traffic.guild_id(k)
    msg = traffic.message(random.Random(sid), gid, True)
    msg["id"] = str(sid)
    msg["timestamp"] = timestamp(snowflake_ms(sid))
    body = traffic.encode(msg)
    msg["content"] = ""
    return GuildEvent(sid, gid, k, body, traffic.encode(msg))


class EmittedEvent(TypedDict):
    """One event of `GuildEventLog.snapshot`: snowflakes as strings, as Discord sends them."""

    id: str
    guild_id: str
    queued: int


class GuildEventSnapshot(TypedDict):
    """What `GET /_sim/guild-events` returns."""

    total: int
    per_guild: dict[str, int]
    last_id: str | None
    ids: list[str]
    events: list[EmittedEvent]


class GuildEventLog:
    """Every event of the shared stream, in emission order (ids strictly increasing), with the number of
    sessions each was queued to."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.guild_ids: list[int] = []
        self.queued: list[int] = []
        self.per_guild: Counter[int] = Counter()

    @property
    def total(self) -> int:
        return len(self.ids)

    def record(self, event: GuildEvent, queued: int) -> None:
        self.ids.append(event.id)
        self.guild_ids.append(event.guild_id)
        self.queued.append(queued)
        self.per_guild[event.guild_id] += 1

    def snapshot(self, since_id: int | None = None) -> GuildEventSnapshot:
        """Totals over the whole stream; `ids` and `events` only those after message id `since_id`."""
        start = 0 if since_id is None else bisect_right(self.ids, since_id)
        ids = [str(i) for i in self.ids[start:]]
        events: list[EmittedEvent] = [{"id": i, "guild_id": str(g), "queued": q}
                                      for i, g, q in zip(ids, self.guild_ids[start:], self.queued[start:], strict=True)]
        return {"total": self.total, "per_guild": {str(g): n for g, n in sorted(self.per_guild.items())},
                "last_id": str(self.ids[-1]) if self.ids else None, "ids": ids, "events": events}


__all__ = ["DISCORD_EPOCH_MS", "EmittedEvent", "GuildEvent", "GuildEventLog", "GuildEventSnapshot", "SnowflakeClock",
           "message_event", "snowflake", "snowflake_ms", "timestamp"]
