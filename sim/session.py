"""Gateway sessions: the replay buffer, resumability, and what was delivered."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .stats import ShardStats

ACTIVE, DETACHED, CLOSED, INVALIDATED, EXPIRED = "active", "detached", "closed", "invalidated", "expired"

_counter = itertools.count(1)


class Connection(Protocol):
    """The connection a session is attached to (sim.gateway.GatewayConnection), as the session and the
    simulator use it through `Session.conn`."""

    closing: bool
    write_paused: bool

    @property
    def last_received(self) -> float: ...

    def send_payload(self, data: bytes) -> None: ...
    def close(self, code: int, reason: str) -> None: ...
    def supersede(self, sess: Session) -> None: ...
    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...
    async def flood(self) -> None: ...


class Session:
    """One Identify's session. Sequence numbers are contiguous: 1..seq were dispatched.

    `confirmed` is the highest sequence the client proved it had (heartbeat `d` or Resume `seq`).
    `lost` counts dispatches the client can no longer get: a Resume older than the replay buffer,
    or a session the server ended (invalidated, expired, timed out) with unconfirmed dispatches.
    A Resume on another connection, by any client, replays from its `seq` and loses nothing.
    `overlapping_resumes` counts Resumes that took the session from a connection that was still open;
    `frames_after_takeover` counts payloads that arrived on such a superseded connection afterwards.
    """

    __slots__ = ("id", "shard", "num_shards", "intents", "seq", "confirmed", "buffer", "conn", "state",
                 "resumes", "replayed", "lost", "end_reason", "detached_at", "unconfirmed_at_end",
                 "guilds", "stream_paused", "large_threshold", "stats", "stream_task", "overlapping_resumes",
                 "frames_after_takeover", "ack_delay")

    def __init__(self, shard: int, num_shards: int, intents: int, buffer_size: int, guilds: range,
                 large_threshold: int, stats: ShardStats) -> None:
        self.id = f"{next(_counter):06d}{os.urandom(13).hex()}"
        self.shard = shard
        self.num_shards = num_shards
        self.intents = intents
        self.guilds = guilds
        self.large_threshold = large_threshold
        self.seq = 0
        self.confirmed = 0
        self.buffer: deque[bytes] = deque(maxlen=buffer_size)
        self.conn: Connection | None = None
        self.state = ACTIVE
        self.resumes = 0
        self.replayed = 0
        self.lost = 0
        self.overlapping_resumes = 0
        self.frames_after_takeover = 0
        self.unconfirmed_at_end = 0
        self.end_reason = ""
        self.detached_at = 0.0
        self.stream_paused = False
        self.ack_delay = 0.0  # seconds each heartbeat ACK waits (events generated meanwhile go out before it)
        self.stats = stats
        self.stream_task: asyncio.Task[None] | None = None

    def dispatch(self, t: bytes, d: bytes) -> None:
        """Send (or, while disconnected, queue for replay) one dispatch with the next sequence number."""
        self.seq += 1
        data = b'{"t":"%s","s":%d,"op":0,"d":%s}' % (t, self.seq, d)
        self.buffer.append(data)
        self.stats.dispatched += 1
        conn = self.conn
        if conn is not None:
            conn.send_payload(data)

    @property
    def resumable(self) -> bool:
        return self.state in (ACTIVE, DETACHED)

    def confirm(self, seq: int) -> None:
        if self.confirmed < seq <= self.seq:
            self.confirmed = seq

    def replay_from(self, seq: int) -> list[bytes] | None:
        """Payloads after `seq`, or None if the buffer no longer holds them."""
        missing = self.seq - seq
        if missing > len(self.buffer):
            return None
        return list(self.buffer)[len(self.buffer) - missing:] if missing else []

    def detach(self) -> None:
        self.conn = None
        if self.state == ACTIVE:
            self.state = DETACHED
            self.detached_at = time.monotonic()

    def end(self, state: str, reason: str, *, client_requested: bool = False) -> None:
        """End the session; unconfirmed dispatches count as lost unless the client chose to end it."""
        if not self.resumable:
            return
        self.state = state
        self.end_reason = reason
        tail = self.seq - self.confirmed
        if client_requested:
            self.unconfirmed_at_end = tail
        else:
            self.lost += tail
        self.buffer.clear()
        if self.stream_task is not None:
            self.stream_task.cancel()
            self.stream_task = None

    def record(self) -> dict[str, Any]:
        return {"shard": [self.shard, self.num_shards], "state": self.state, "dispatched": self.seq,
                "sequences": [1, self.seq] if self.seq else [], "confirmed": self.confirmed,
                "resumes": self.resumes, "overlapping_resumes": self.overlapping_resumes,
                "frames_after_takeover": self.frames_after_takeover, "replayed": self.replayed, "lost": self.lost,
                "gapless": self.lost == 0,
                "unconfirmed_at_end": self.unconfirmed_at_end, "end_reason": self.end_reason,
                "connected": self.conn is not None}
