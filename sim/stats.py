"""Accounting for tests: per-shard counters, per-session delivery records, and awaitable change notification."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class ShardStats:
    connections: int = 0
    open_connections: int = 0
    identifies: int = 0
    resumes: int = 0
    heartbeats: int = 0
    dispatched: int = 0
    concurrency_violations: int = 0
    ratelimit_closes: int = 0
    overlapping_resumes: int = 0
    frames_after_takeover: int = 0
    takeovers: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    closes: Counter[int | str] = field(default_factory=Counter)
    commands: Counter[int] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections, "open_connections": self.open_connections,
            "identifies": self.identifies, "resumes": self.resumes, "heartbeats": self.heartbeats,
            "dispatched": self.dispatched, "concurrency_violations": self.concurrency_violations,
            "ratelimit_closes": self.ratelimit_closes, "overlapping_resumes": self.overlapping_resumes,
            "frames_after_takeover": self.frames_after_takeover, "takeovers": list(self.takeovers),
            "violations": list(self.violations),
            "closes": {str(k): v for k, v in sorted(self.closes.items(), key=str)},
            "commands": {str(k): v for k, v in sorted(self.commands.items())},
        }


@dataclass(slots=True)
class SetStats:
    """Counters of one shard set: the sessions identified with one shard count (num_shards), whichever shard.

    `open_connections` counts connections with a session of this set; `live_shards` how many of its shards
    have one now, and `complete` is true while every shard does. `closes` counts the closes of those
    connections (server codes, and "client N" for the client's).
    """

    num_shards: int
    connections: int = 0
    open_connections: int = 0
    peak_open_connections: int = 0
    identifies: int = 0
    resumes: int = 0
    closes: Counter[int | str] = field(default_factory=Counter)
    open_by_shard: Counter[int] = field(default_factory=Counter)
    complete_since: float | None = None
    first_complete_at: float | None = None

    @property
    def live_shards(self) -> int:
        return len(self.open_by_shard)

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections, "open_connections": self.open_connections,
            "peak_open_connections": self.peak_open_connections, "identifies": self.identifies,
            "resumes": self.resumes, "live_shards": self.live_shards, "complete": self.complete_since is not None,
            "complete_since": self.complete_since, "first_complete_at": self.first_complete_at,
            "closes": {str(k): v for k, v in sorted(self.closes.items(), key=str)},
        }


MIN_RECHECK = 0.005


class Stats:
    """Counters kept by the simulator. `snapshot()` is what GET /_sim/stats returns.

    Shard keys are shard numbers; connections that never identified are counted under shard None
    ("unidentified" in the snapshot). Shard 3 of 8 and shard 3 of 16 share those counters; `sets` (keyed by
    num_shards) keeps each shard count apart, and `max_complete_sets` is the most sets that had a connected
    session on every one of their shards at once.
    """

    def __init__(self) -> None:
        self.shards: dict[int | None, ShardStats] = {}
        self.sets: dict[int, SetStats] = {}  # num_shards -> the set's counters
        self.max_complete_sets = 0
        self.sessions: dict[str, Any] = {}  # session id -> sim.session.Session (owned by the registry)
        self.rest_requests = 0
        self.rest_rate_limited = 0
        self.started = time.monotonic()
        self._changed = asyncio.Event()
        self._waiters = 0

    def shard(self, number: int | None) -> ShardStats:
        s = self.shards.get(number)
        if s is None:
            s = self.shards[number] = ShardStats()
        return s

    def shard_set(self, num_shards: int) -> SetStats:
        s = self.sets.get(num_shards)
        if s is None:
            s = self.sets[num_shards] = SetStats(num_shards)
        return s

    def set_opened(self, s: SetStats, shard: int) -> None:
        """A connection of set `s` now carries a session of `shard`."""
        s.connections += 1
        s.open_connections += 1
        s.peak_open_connections = max(s.peak_open_connections, s.open_connections)
        s.open_by_shard[shard] += 1
        if s.complete_since is None and s.live_shards == s.num_shards:
            s.complete_since = self._at()
            if s.first_complete_at is None:
                s.first_complete_at = s.complete_since
            self.max_complete_sets = max(self.max_complete_sets,
                                         sum(x.complete_since is not None for x in self.sets.values()))
        self.changed()

    def set_closed(self, s: SetStats, shard: int) -> None:
        """A connection of set `s` carrying a session of `shard` is gone."""
        s.open_connections -= 1
        s.open_by_shard[shard] -= 1
        if s.open_by_shard[shard] <= 0:
            del s.open_by_shard[shard]
            s.complete_since = None
        self.changed()

    def violation(self, shard: int | None, code: int, reason: str) -> None:
        self.shard(shard).violations.append({"code": code, "reason": reason, "at": self._at()})
        self.changed()

    def overlapping_resume(self, sess: Any, old_idle: float) -> None:
        """A Resume took `sess` (a sim.session.Session) from a connection that was still open, whose client
        last sent a payload `old_idle` seconds ago: two live connections for one session."""
        sess.overlapping_resumes += 1
        s = self.shard(sess.shard)
        s.overlapping_resumes += 1
        s.takeovers.append({"event": "overlapping_resume", "shard": sess.shard, "session": sess.id, "at": self._at(),
                            "old_idle": round(old_idle, 3)})
        self.changed()

    def frame_after_takeover(self, sess: Any, op: int | None) -> None:
        """A payload (gateway `op`, None if undecodable) arrived on a connection after `sess` was resumed elsewhere."""
        sess.frames_after_takeover += 1
        s = self.shard(sess.shard)
        s.frames_after_takeover += 1
        s.takeovers.append({"event": "frame_after_takeover", "shard": sess.shard, "session": sess.id,
                            "at": self._at(), "op": op})
        self.changed()

    def _at(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def changed(self) -> None:
        if self._waiters:
            self._changed.set()

    def total(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.shards.values())

    def snapshot(self) -> dict[str, Any]:
        shards = {("unidentified" if k is None else str(k)): v.as_dict()
                  for k, v in sorted(self.shards.items(), key=lambda kv: -1 if kv[0] is None else kv[0])}
        sessions = {sid: s.record() for sid, s in self.sessions.items()}
        names = ("connections", "open_connections", "identifies", "resumes", "heartbeats", "dispatched",
                 "concurrency_violations", "ratelimit_closes", "overlapping_resumes", "frames_after_takeover")
        total: dict[str, Any] = {n: self.total(n) for n in names}
        total["violations"] = sum(len(s.violations) for s in self.shards.values())
        total["lost"] = sum(r["lost"] for r in sessions.values())
        total["gapless"] = all(r["gapless"] for r in sessions.values())
        total["rest_requests"] = self.rest_requests
        total["rest_rate_limited"] = self.rest_rate_limited
        sets = {}
        for n, st in sorted(self.sets.items()):
            states = Counter(r["state"] for r in sessions.values() if r["shard"][1] == n)
            sets[str(n)] = dict(st.as_dict(), sessions=dict(sorted(states.items())))
        total["max_complete_sets"] = self.max_complete_sets
        return {"uptime": round(time.monotonic() - self.started, 3), "total": total, "shards": shards,
                "sets": sets, "sessions": sessions}

    async def wait_until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """Wait until `predicate(snapshot)` is true, re-checking whenever the stats change. Returns the snapshot."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            self._waiters += 1
            try:
                while True:
                    snap = self.snapshot()
                    checked = loop.time()
                    if predicate(snap):
                        return snap
                    self._changed.clear()
                    await self._changed.wait()
                    # Coalesce bursts of changes (a busy stream changes stats thousands of times a second):
                    # a snapshot costs O(sessions), so re-check at most every MIN_RECHECK seconds.
                    pause = checked + MIN_RECHECK - loop.time()
                    if pause > 0:
                        await asyncio.sleep(pause)
            finally:
                self._waiters -= 1
