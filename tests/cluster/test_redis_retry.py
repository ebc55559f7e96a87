"""The one way Redis calls are retried (cluster.coordination.redis_conn): Redis trouble is caught and retried, a
cancel never is, even one that the client turned into a connection error."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis import exceptions as rx

from cluster.coordination.redis_conn import keep_subscribed, keep_trying, on_trouble


async def cut_short() -> None:
    """What the Redis client does when a cancel cuts a read short: it raises a connection error instead."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        raise rx.ConnectionError("Connection closed by server.") from None


async def test_on_trouble_catches_redis_trouble_but_re_raises_a_cancel_turned_into_one():
    with on_trouble() as caught:
        raise rx.ConnectionError("down")
    assert isinstance(caught.exc, rx.ConnectionError)
    with on_trouble() as caught:
        pass
    assert caught.exc is None

    async def guarded() -> None:
        with on_trouble():
            await cut_short()

    task = asyncio.ensure_future(guarded())
    await asyncio.sleep(0)  # it waits in cut_short
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_keep_trying_retries_trouble_tells_it_and_ends_on_a_cancel():
    calls, errors, oks = [], [], []
    third = asyncio.Event()

    async def step() -> None:
        calls.append(1)
        if len(calls) == 3:
            third.set()
            await cut_short()
        if len(calls) == 1:
            raise OSError("refused")

    task = asyncio.ensure_future(keep_trying(step, 0.0, on_error=errors.append, on_ok=lambda: oks.append(1)))
    await third.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [type(e) for e in errors] == [OSError] and oks == [1]


async def test_keep_subscribed_hands_messages_on_and_ends_on_a_cancel(redis_server):
    client = aioredis.Redis.from_url(redis_server.url)
    subscribed, got = asyncio.Event(), asyncio.Event()
    messages: list[bytes] = []

    async def on_subscribed() -> None:
        subscribed.set()

    def on_message(data: bytes) -> None:
        messages.append(data)
        got.set()

    task = asyncio.ensure_future(keep_subscribed(client, ["ch"], on_message, on_subscribed=on_subscribed,
                                                 retry=(0.05, 0.1)))
    await asyncio.wait_for(subscribed.wait(), 10)
    await client.publish("ch", "hello")
    await asyncio.wait_for(got.wait(), 10)
    assert messages == [b"hello"]
    task.cancel()  # while it waits for the next message on the socket
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    await client.aclose()


async def test_a_connection_left_stale_by_a_redis_restart_is_replaced_quietly(redis_server, monkeypatch):
    """After Redis restarted, a pooled connection idle for the health-check interval is checked and replaced on its
    next use: the call succeeds (it failed, seconds after the outage, and was logged as a new one)."""
    from cluster.coordination import redis_conn

    monkeypatch.setattr(redis_conn, "HEALTH_CHECK", 0.05)
    client = await redis_conn.connect(redis_server.url)
    try:
        await client.set("k", "before")
        redis_server.kill()
        redis_server.start()
        await asyncio.sleep(0.1)  # the connection sits idle past its health-check interval (the case under test)
        assert await client.set("k", "after")
    finally:
        await client.aclose()
