"""State file, restart policy, shard layout and the worker-side identify queue."""

import asyncio
import json
import os
import random

import pytest

from cluster.layout import round_up, split
from cluster.queue import IpcQueue
from cluster.restart import Backoff, GiveUp, Restart, RestartPolicy
from cluster.state import load_sessions, save_sessions
from ipc.protocol import (IdentifyCancel, IdentifyDone, IdentifyGrant, IdentifyRefused,
                          IdentifyRequest, IdentifyStarted, SessionInfo)

# --- state file ------------------------------------------------------------------------


def test_state_round_trip_and_permissions(tmp_path):
    path = tmp_path / "sub" / "state.json"
    sessions = [SessionInfo(1, "b", 7, "wss://gateway-us-east1-b.discord.gg"), SessionInfo(0, "a", 3)]
    save_sessions(path, 16, sessions, now=1000.0)
    loaded, note = load_sessions(path, 16, ttl=120, now=1100.0)
    assert loaded == {0: SessionInfo(0, "a", 3), 1: SessionInfo(1, "b", 7, "wss://gateway-us-east1-b.discord.gg")}
    assert "resuming 2 sessions" in note
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert json.loads(path.read_text())["shard_total"] == 16
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temp file left


@pytest.mark.parametrize("case,expect", [
    ("missing", "no state file"), ("expired", "past the 120 s session TTL"),
    ("total", "for 16 shards, this run has 32"), ("garbage", "unreadable"),
])
def test_state_is_ignored_with_a_reason(tmp_path, case, expect):
    path = tmp_path / "state.json"
    if case != "missing":
        save_sessions(path, 16, [SessionInfo(0, "a", 1)], now=0.0)
    if case == "garbage":
        path.write_text("{not json")
    now = 500.0 if case == "expired" else 10.0
    total = 32 if case == "total" else 16
    loaded, note = load_sessions(path, total, ttl=120, now=now)
    assert loaded == {} and expect in note


def test_state_write_is_atomic_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    save_sessions(path, 4, [SessionInfo(0, "old", 1)], now=0.0)

    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        save_sessions(path, 4, [SessionInfo(0, "new", 2)], now=1.0)
    monkeypatch.undo()
    loaded, _ = load_sessions(path, 4, ttl=120, now=2.0)
    assert loaded[0].session_id == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


# --- restart policy ----------------------------------------------------------------------


def test_backoff_grows_with_jitter_and_cap():
    b = Backoff(base=1.0, cap=8.0)
    rng = random.Random(1)
    for attempt, full in [(0, 1), (1, 2), (2, 4), (3, 8), (10, 8)]:
        d = b.delay(attempt, rng)
        assert full / 2 <= d <= full
    assert len({round(b.delay(3, rng), 6) for _ in range(20)}) > 1


def test_circuit_breaker_opens_after_quick_failures_and_resets_after_long_run():
    p = RestartPolicy("worker 1", min_alive=10.0, max_failures=3, backoff=Backoff(1.0, 60.0))
    p.started(0.0)
    r1 = p.exited(1.0, "exit code 1")
    assert isinstance(r1, Restart) and r1.attempt == 1 and 0.5 <= r1.delay <= 1.0
    p.started(2.0)
    r2 = p.exited(3.0, "exit code 1")
    assert isinstance(r2, Restart) and 1.0 <= r2.delay <= 2.0
    p.started(100.0)
    assert isinstance(p.exited(200.0, "killed"), Restart) and p.failures == 0  # ran long enough
    for t in (300.0, 310.0):
        p.started(t)
        assert isinstance(p.exited(t + 1, "exit code 1"), Restart)
    p.started(320.0)
    g = p.exited(321.0, "exit code 1")
    assert isinstance(g, GiveUp)
    assert "worker 1 failed 3 times in a row" in g.message and "exit code 1" in g.message


# --- layout ----------------------------------------------------------------------------


def test_round_up():
    assert round_up(9, 4) == 12 and round_up(16, 4) == 16 and round_up(1, 1) == 1


def test_split_by_workers_and_by_size():
    assert split(16, workers=4) == [range(0, 4), range(4, 8), range(8, 12), range(12, 16)]
    assert split(10, workers=3) == [range(0, 4), range(4, 7), range(7, 10)]
    assert split(10, shards_per_worker=4) == [range(0, 4), range(4, 8), range(8, 10)]
    assert split(2, workers=5) == [range(0, 1), range(1, 2)]
    assert split(5) == [range(0, 5)]
    with pytest.raises(ValueError):
        split(4, workers=2, shards_per_worker=2)


@pytest.mark.parametrize("total,w", [(1, 1), (7, 3), (64, 5), (1024, 7)])
def test_split_covers_every_shard_once_in_order(total, w):
    ranges = split(total, workers=w)
    assert [s for r in ranges for s in r] == list(range(total))
    assert max(map(len, ranges)) - min(map(len, ranges)) <= 1


# --- the worker-side queue ---------------------------------------------------------------


async def test_ipc_queue_grant_flow():
    sent = []
    q = IpcQueue(sent.append, reason=lambda s: "resume_failed")
    task = asyncio.ensure_future(q.enqueue(3))
    await asyncio.sleep(0)
    assert sent == [IdentifyRequest(3, "resume_failed")] and q.waiting == [3]
    q.feed(IdentifyGrant(3))
    await task
    assert sent[1:] == []  # granted: the shard connects; its Identify is not sent yet
    q.sent(3)  # the Identify was written: the coordinator's window for the bucket starts now
    q.identified(3, True)
    assert sent[1:] == [IdentifyStarted(3), IdentifyDone(3, True)]


async def test_ipc_queue_is_cancel_safe():
    sent = []
    q = IpcQueue(sent.append)
    task = asyncio.ensure_future(q.enqueue(1))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sent[-1] == IdentifyCancel(1) and q.waiting == []
    # a grant arriving after the cancel is handed straight back
    q.feed(IdentifyGrant(1))
    assert sent[-1] == IdentifyCancel(1) and len(sent) == 3
    # granted, then cancelled before the task resumed: the slot is released too
    task = asyncio.ensure_future(q.enqueue(2))
    await asyncio.sleep(0)
    q.feed(IdentifyGrant(2))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sent[-1] == IdentifyCancel(2)


async def test_ipc_queue_refusal_keeps_the_shard_waiting():
    sent = []
    q = IpcQueue(sent.append)
    task = asyncio.ensure_future(q.enqueue(0))
    await asyncio.sleep(0)
    q.feed(IdentifyRefused(0, "budget guarded"))
    await asyncio.sleep(0.01)
    assert not task.done() and q.refusals == {0: "budget guarded"}
    task.cancel()
