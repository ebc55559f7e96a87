"""Edges of the pure shard modules that mutation testing (``make mutate``) found untested.

Every test here runs on an injected clock (and, for the async waits, an injected ``sleep`` that advances it),
so the exact delays are asserted without waiting for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import AsyncIterator

import pytest

from shard import CloseFrame, InMemoryQueue
from shard import queue as queue_module
from shard import ratelimiter as ratelimiter_module
from shard.close_codes import close_reason
from shard.heartbeat import Beat, Heartbeater
from shard.ratelimiter import CommandRatelimiter, usable_permits


class FakeTime:
    """A clock plus an ``asyncio`` stand-in whose ``sleep`` records the delay and advances the clock."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.sleeps: list[float] = []
        self.asyncio = types.SimpleNamespace(sleep=self.sleep, Lock=asyncio.Lock, Event=asyncio.Event,
                                             timeout=self.timeout)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        assert len(self.sleeps) < 20, f"still waiting after {self.sleeps}"  # a wait that never ends fails fast
        self.sleeps.append(delay)
        self.now += delay

    @contextlib.asynccontextmanager
    async def timeout(self, delay: float) -> AsyncIterator[None]:
        """Nothing else runs on a fake clock: the awaited wake-up never comes, the whole delay passes."""
        await self.sleep(delay)
        raise TimeoutError
        yield


# ---- close codes ---------------------------------------------------------------------------------

def test_close_frames_1000_and_1001_end_the_session_others_keep_it() -> None:
    assert CloseFrame(1000).ends_session() and CloseFrame(1001, "going away").ends_session()
    for code in (1002, 1011, 4000, 4999):
        assert not CloseFrame(code).ends_session(), code


def test_close_reasons_are_plain_english_for_known_and_unknown_codes() -> None:
    assert close_reason(None) == "the connection was lost without a close frame"
    assert close_reason(4004) == "the token is invalid: authentication failed"
    assert close_reason(1001) == "the gateway is going away"
    assert close_reason(4999) == "the gateway closed the connection with code 4999"


# ---- heartbeat -----------------------------------------------------------------------------------

@pytest.mark.parametrize("interval", [0.0, -1.0])
def test_heartbeat_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ValueError, match=r"^heartbeat interval must be positive$"):
        Heartbeater(interval, now=0.0)


def test_heartbeat_requested_by_the_gateway_expects_an_ack() -> None:
    hb = Heartbeater(10.0, now=0.0, rand=lambda: 0.0)
    assert hb.awaiting_ack is False
    hb.sent_on_request()
    assert hb.awaiting_ack is True
    assert hb.tick(0.0) is Beat.ZOMBIE  # the requested beat was never acknowledged
    hb.sent_on_request()
    assert hb.ack() is True and hb.awaiting_ack is False
    assert hb.ack() is False


def test_a_late_tick_schedules_the_next_beat_at_least_half_an_interval_ahead() -> None:
    hb = Heartbeater(10.0, now=0.0, rand=lambda: 0.0)
    assert hb.tick(100.0) is Beat.SEND  # the loop was blocked for 100 s
    assert hb.deadline == 105.0  # not 10.0 (nine beats in a burst), not 95.0 (already overdue)


# ---- ratelimiter ---------------------------------------------------------------------------------

def test_usable_permits_never_drop_below_one() -> None:
    assert usable_permits(0.5) == 1  # 121 beats a period: only the floor is left for Identify


def test_next_available_counts_from_the_oldest_send() -> None:
    """Sends spread over the window: the next permit frees when the *oldest* send leaves the window."""
    clock = FakeTime()
    rl = CommandRatelimiter(41.25, clock=clock)
    assert rl.next_available() == 0.0
    for i in range(rl.max):
        clock.now = i * 0.25  # 117 sends over 29 s
        assert rl.try_acquire()
    clock.now = 30.0
    assert rl.next_available() == 30.0  # 0 + 60 - 30, not 29 + 60 - 30
    clock.now = 59.75
    assert rl.next_available() == pytest.approx(0.25)
    clock.now = 60.0
    assert rl.next_available() == 0.0 and rl.available() == 1


async def test_acquire_sleeps_until_the_oldest_send_expires_and_takes_the_permit(monkeypatch) -> None:
    clock = FakeTime()
    monkeypatch.setattr(ratelimiter_module, "asyncio", clock.asyncio)
    rl = CommandRatelimiter(41.25, clock=clock)
    rl.try_acquire()  # one send at t=0, the rest at t=30
    clock.now = 30.0
    while rl.try_acquire():
        pass
    clock.now = 40.0
    await rl.acquire()
    assert clock.sleeps == [pytest.approx(20.001)]  # one wait, for exactly the oldest permit
    assert rl.available() == 0  # the freed permits were taken by this acquire, not given away


# ---- identify queue ------------------------------------------------------------------------------

def test_queue_defaults_are_discords() -> None:
    q = InMemoryQueue()
    assert (q.max_concurrency, q.remaining, q.total, q.interval) == (1, 1000, 1000, 5.0)
    assert 86399 < q.reset_after <= 86400
    assert q.granted == 0 and q.unused_grants == 0 and q.outcomes == {}


@pytest.mark.parametrize("bad", [dict(max_concurrency=-1), dict(remaining=-1), dict(reset_after=-1.0),
                                 dict(interval=-1.0), dict(hold_timeout=-1.0)])
def test_queue_refuses_each_negative_parameter(bad) -> None:
    with pytest.raises(ValueError, match=r"^queue parameters must not be negative$"):
        InMemoryQueue(**bad)


def test_queue_accepts_zero_for_every_parameter_and_refuses_remaining_over_total() -> None:
    q = InMemoryQueue(max_concurrency=0, remaining=0, reset_after=0.0, total=0, interval=0.0, hold_timeout=0.0)
    assert q.max_concurrency == 0 and q.interval == 0.0 and q.hold_timeout == 0.0
    with pytest.raises(ValueError, match=r"^remaining must not exceed total$"):
        InMemoryQueue(remaining=6, total=5)


async def test_queue_without_limits_grants_at_once_and_counts() -> None:
    q = InMemoryQueue(max_concurrency=0)
    await q.enqueue(0)
    await q.enqueue(0)
    assert q.granted == 2
    q.sent(0)  # nothing is held without limits: the reports are taken and change nothing
    q.identified(0, True)
    q.unused(0)
    assert q.unused_grants == 1 and q.remaining == 1000 and q.outcomes == {0: True}


async def test_queue_grants_at_exactly_the_interval_and_at_the_budget_reset(monkeypatch) -> None:
    clock = FakeTime()
    monkeypatch.setattr(queue_module, "asyncio", clock.asyncio)
    q = InMemoryQueue(max_concurrency=1, remaining=2, total=5, reset_after=20.0, interval=5.0, clock=clock)
    await q.enqueue(0)  # a new bucket grants at t=0
    q.sent(0)  # the Identify goes out at once: the window starts now
    assert clock.sleeps == [] and q.granted == 1
    await q.enqueue(1)
    q.sent(1)
    assert clock.sleeps == [5.0] and clock.now == 5.0  # at exactly the interval, not one wait later
    assert q.remaining == 0 and q.granted == 2
    await q.enqueue(0)  # budget spent: wait for the reset, once, then grant
    assert clock.sleeps == [5.0, pytest.approx(15.001)]
    assert q.remaining == 4 and q.granted == 3


async def test_queue_budget_wait_is_exactly_until_the_reset(monkeypatch) -> None:
    clock = FakeTime()
    monkeypatch.setattr(queue_module, "asyncio", clock.asyncio)
    q = InMemoryQueue(max_concurrency=1, remaining=0, total=3, reset_after=0.5, interval=0.0, clock=clock)
    await q.enqueue(0)
    assert clock.sleeps == [pytest.approx(0.501)]
    clock.now = 10.0
    q2 = InMemoryQueue(max_concurrency=1, remaining=0, total=3, reset_after=4.0, clock=clock)
    clock.now = 14.0
    assert q2.remaining == 3  # refilled at exactly the reset time


async def test_a_hold_ends_at_exactly_hold_timeout_and_only_its_holder_releases_it(monkeypatch) -> None:
    """Reports from a shard that does not hold the bucket (a stale or stray `sent`/`identified`) leave the
    holder's hold alone: the next shard waits out the whole hold, then the interval from its end."""
    clock = FakeTime()
    monkeypatch.setattr(queue_module, "asyncio", clock.asyncio)
    q = InMemoryQueue(max_concurrency=1, interval=5.0, hold_timeout=15.0, clock=clock)
    await q.enqueue(0)  # shard 0 holds the bucket until t=15 unless it reports
    q.sent(1)
    q.identified(1, False)
    await q.enqueue(1)
    assert clock.sleeps == [15.0, 5.0] and clock.now == 20.0  # the hold's end (not one wait later), then 5 s
    assert q.outcomes == {1: False}


async def test_unused_grant_refunds_the_start_and_the_window(monkeypatch) -> None:
    clock = FakeTime(100.0)
    monkeypatch.setattr(queue_module, "asyncio", clock.asyncio)
    q = InMemoryQueue(max_concurrency=2, remaining=10, total=10, interval=5.0, clock=clock)
    q.update(2, 5, 1000.0, 10)  # fresh /gateway/bot numbers: 5 of 10 left
    assert (q.max_concurrency, q.remaining, q.total, q.reset_after) == (2, 5, 10, 1000.0)
    await q.enqueue(3)  # bucket 1
    assert q.remaining == 4
    q.unused(3)
    assert q.remaining == 5 and q.unused_grants == 1
    await q.enqueue(1)  # bucket 1 again: Discord never saw shard 3's Identify, so no 5 s wait
    assert clock.sleeps == [] and q.remaining == 4
    q.unused(3)  # stale: shard 1 holds the bucket's latest grant
    assert q.remaining == 4 and q.unused_grants == 2
    await q.enqueue(0)  # bucket 0
    q.unused(2)  # not bucket 0's latest grant either
    assert q.remaining == 3


async def test_unused_in_a_single_bucket_queue(monkeypatch) -> None:
    clock = FakeTime()
    monkeypatch.setattr(queue_module, "asyncio", clock.asyncio)
    q = InMemoryQueue(max_concurrency=1, remaining=5, total=5, interval=5.0, clock=clock)
    await q.enqueue(0)
    q.unused(0)
    q.unused(0)  # a repeated report refunds once
    assert q.remaining == 5 and q.unused_grants == 2
    await q.enqueue(1)
    assert clock.sleeps == []


async def test_unused_after_a_cancelled_first_wait_changes_nothing(monkeypatch) -> None:
    q = InMemoryQueue(max_concurrency=1, remaining=0, total=5, reset_after=60.0)
    waiter = asyncio.ensure_future(q.enqueue(0))  # creates the bucket, then waits for the budget
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    q.unused(0)  # a shard that gave up before its turn: no grant to refund
    assert q.remaining == 0 and q.unused_grants == 1


async def test_recorder_stop_reraises_a_crashed_consumer() -> None:
    from shard_helpers import Recorder

    class Broken:
        async def next_event(self) -> None:
            raise RuntimeError("consumer bug")

    rec = Recorder(Broken())  # type: ignore[arg-type]
    await asyncio.wait([rec.task])
    with pytest.raises(RuntimeError, match="consumer bug"):
        await rec.stop()
