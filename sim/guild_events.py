"""The shared guild event stream (sans-I/O): snowflake message ids, event bodies, and what was emitted.

One stream for the whole simulated bot: each event happens once, in one guild, and the simulator queues it to
every live session whose (shard, num_shards) routes that guild. `GuildEventLog` records each emitted event with
the number of sessions it was queued to, so a test can check that every event reached a handler exactly once.

Besides MESSAGE_CREATE the stream can carry events without a creation id (`KINDS`: MESSAGE_UPDATE,
MESSAGE_REACTION_ADD, TYPING_START), each with a unique snowflake in its `KEY_FIELDS` field, so that a test can
count them too; every kind goes only to sessions with its intent (`INTENTS`).
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
from .config import GUILD_EVENT_KINDS

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


KINDS = GUILD_EVENT_KINDS
"""The event types the shared stream can carry (`--guild-event-kinds`); only MESSAGE_CREATE has a creation id."""
KEY_FIELDS = {"MESSAGE_CREATE": "id", "MESSAGE_UPDATE": "id", "MESSAGE_REACTION_ADD": "message_id",
              "TYPING_START": "user_id"}
"""The field of each kind's `d` that holds the event's unique snowflake (the log's id)."""
INTENTS = {"MESSAGE_CREATE": traffic.INTENT_GUILD_MESSAGES, "MESSAGE_UPDATE": traffic.INTENT_GUILD_MESSAGES,
           "MESSAGE_REACTION_ADD": 1 << 10, "TYPING_START": traffic.INTENT_GUILD_MESSAGE_TYPING}
"""The intent a session needs to receive each kind (GUILD_MESSAGES, GUILD_MESSAGE_REACTIONS, GUILD_MESSAGE_TYPING)."""


@dataclass(frozen=True, slots=True)
class GuildEvent:
    """One emitted event: its unique snowflake `id` (the message id of a MESSAGE_CREATE), the guild it happened in
    (`guild`, the guild's index k among the bot's guilds), the encoded `d` with and without message content
    (MESSAGE_CONTENT intent) and its `type` (one of `KINDS`)."""

    id: int
    guild_id: int
    guild: int
    body: bytes
    body_without_content: bytes
    type: str = "MESSAGE_CREATE"


def message_event(sid: int, k: int) -> GuildEvent:
    """The MESSAGE_CREATE of message `sid` in the bot's guild k (body as the per-session stream's)."""
    gid = traffic.guild_id(k)
    msg = traffic.message(random.Random(sid), gid, True)
    msg["id"] = str(sid)
    msg["timestamp"] = timestamp(snowflake_ms(sid))
    body = traffic.encode(msg)
    msg["content"] = ""
    return GuildEvent(sid, gid, k, body, traffic.encode(msg))


def guild_event(kind: str, sid: int, k: int) -> GuildEvent:
    """The event of type `kind` (one of `KINDS`) with unique snowflake `sid` in the bot's guild k."""
    if kind == "MESSAGE_CREATE":
        return message_event(sid, k)
    gid = traffic.guild_id(k)
    channel, key = str(gid + 10_000 + sid % 3), str(sid)
    if kind == "MESSAGE_UPDATE":
        d: dict[str, object] = {"id": key, "channel_id": channel, "guild_id": str(gid), "content": "edited",
                                "edited_timestamp": timestamp(snowflake_ms(sid))}
    elif kind == "MESSAGE_REACTION_ADD":
        d = {"user_id": str(gid + 7), "channel_id": channel, "message_id": key, "guild_id": str(gid),
             "emoji": {"id": None, "name": "\N{THUMBS UP SIGN}"}, "burst": False, "type": 0}
    elif kind == "TYPING_START":
        d = {"channel_id": channel, "guild_id": str(gid), "user_id": key, "timestamp": snowflake_ms(sid) // 1000}
    else:
        raise ValueError(f"unknown guild event kind {kind!r} (one of {', '.join(KINDS)})")
    body = traffic.encode(d)
    return GuildEvent(sid, gid, k, body, body, kind)


class EmittedEvent(TypedDict):
    """One event of `GuildEventLog.snapshot`: snowflakes as strings, as Discord sends them."""

    id: str
    guild_id: str
    queued: int
    type: str


class GuildEventSnapshot(TypedDict):
    """What `GET /_sim/guild-events` returns."""

    total: int
    per_guild: dict[str, int]
    last_id: str | None
    ids: list[str]
    events: list[EmittedEvent]


class GuildEventLog:
    """Every event of the shared stream, in emission order (ids unique; out of order with an id skew), with the
    number of sessions each was queued to."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.guild_ids: list[int] = []
        self.queued: list[int] = []
        self.types: list[str] = []
        self.per_guild: Counter[int] = Counter()
        self._index: dict[int, int] = {}

    @property
    def total(self) -> int:
        return len(self.ids)

    def record(self, event: GuildEvent, queued: int) -> None:
        self._index[event.id] = len(self.ids)
        self.ids.append(event.id)
        self.guild_ids.append(event.guild_id)
        self.queued.append(queued)
        self.types.append(event.type)
        self.per_guild[event.guild_id] += 1

    def snapshot(self, since_id: int | None = None) -> GuildEventSnapshot:
        """Totals over the whole stream; `ids` and `events` only those emitted after the event `since_id` (or, for
        an id the stream never emitted, after the last smaller id)."""
        if since_id is None:
            start = 0
        elif since_id in self._index:
            start = self._index[since_id] + 1
        else:
            start = bisect_right(self.ids, since_id)
        ids = [str(i) for i in self.ids[start:]]
        events: list[EmittedEvent] = [{"id": i, "guild_id": str(g), "queued": q, "type": t}
                                      for i, g, q, t in zip(ids, self.guild_ids[start:], self.queued[start:],
                                                            self.types[start:], strict=True)]
        return {"total": self.total, "per_guild": {str(g): n for g, n in sorted(self.per_guild.items())},
                "last_id": str(self.ids[-1]) if self.ids else None, "ids": ids, "events": events}


__all__ = ["DISCORD_EPOCH_MS", "INTENTS", "KEY_FIELDS", "KINDS", "EmittedEvent", "GuildEvent", "GuildEventLog",
           "GuildEventSnapshot", "SnowflakeClock", "guild_event", "message_event", "snowflake", "snowflake_ms",
           "timestamp"]
