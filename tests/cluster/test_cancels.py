"""A supervisor task ends on its cancel even when Python 3.11's ``asyncio.wait_for`` in redis-py swallows it, and a
task that outlives its cancel is named in the shutdown's log (a real Redis behind a relay that cancels a task just
as its command was written: tests/cluster/redis_relay.py; a real supervisor against the simulator)."""

import asyncio
import logging
import uuid

import pytest
import redis.asyncio as aioredis
from cluster_testing import running, until
from redis_relay import CancelRelay

from cluster.coordination.redis_conn import connect, keep_subscribed, on_trouble
from cluster.hosts import keep_registered, new_record

STOP_BOUND = 10.0
"""Seconds a cancelled task is given to end: it only bounds a failure (it ends at once, or never)."""


async def ended(task: asyncio.Task[object]) -> bool:
    await asyncio.wait([task], timeout=STOP_BOUND)
    return task.done()


@pytest.mark.parametrize("call", ["command", "pipeline"])
async def test_a_command_whose_cancel_wait_for_swallowed_raises_it_and_the_connection_stays_in_step(redis_server,
                                                                                                     call):
    """A command, and a pipeline (where the stack dump of a reshard loop that went on after its cancel showed it)."""
    key = f"cancels:{uuid.uuid4().hex}".encode()
    async with CancelRelay(redis_server.port) as relay:
        client = await connect(relay.url)
        try:
            await client.set(key, b"before")

            async def write() -> str:
                if call == "command":
                    await client.set(key, b"after")
                else:
                    async with client.pipeline(transaction=False) as pipe:
                        await pipe.set(key, b"after").get(key).execute()
                return "went on as if never cancelled"

            task = asyncio.create_task(write())
            relay.cancel_on(key, task)
            assert await ended(task) and relay.fired == 1
            assert task.cancelled()
            assert await client.get(key) == b"after"  # its own reply, not the cancelled SET's "OK"
        finally:
            await client.delete(key)
            await client.aclose()


async def test_on_trouble_raises_a_cancel_that_its_block_swallowed(redis_server):
    """The backstop for anything else that swallows a cancel: redis-py's own connection class here."""
    key = f"cancels:{uuid.uuid4().hex}".encode()
    async with CancelRelay(redis_server.port) as relay:
        plain = aioredis.Redis.from_url(relay.url, socket_timeout=5.0)  # sends under wait_for: swallows
        try:
            await plain.ping()
            after: list[str] = []

            async def write() -> None:
                with on_trouble():
                    await plain.set(key, b"1")
                after.append("went on")

            task = asyncio.create_task(write())
            relay.cancel_on(key, task)
            assert await ended(task) and relay.fired == 1
            assert task.cancelled() and after == []
        finally:
            await plain.aclose()


@pytest.mark.parametrize("loop", ["host_registry", "subscription"])
async def test_a_redis_loop_ends_on_a_cancel_that_wait_for_swallowed(redis_server, loop):
    """The host registry's renewals (keep_trying, like the status and lease renewals) and a subscription
    (keep_subscribed: the broadcast relay, the identify wake-ups) are cancelled as their command is written."""
    ns = f"shardstack:cancels-{uuid.uuid4().hex}:"
    async with CancelRelay(redis_server.port) as relay:
        client = await connect(relay.url)
        try:
            if loop == "host_registry":
                coro = keep_registered(client, ns, new_record("h1", range(0, 4), 4), 5.0, every=0.05)
            else:
                coro = keep_subscribed(client, [f"{ns}wake"], lambda data: None, retry=(0.05, 0.05))
            task = asyncio.create_task(coro)
            relay.cancel_on(ns.encode(), task)
            assert await ended(task), f"the {loop} loop went on after its cancel"
            assert relay.fired == 1 and task.cancelled()
        finally:
            await client.aclose()


@pytest.fixture
def sim_options():
    return dict(shards=2, max_concurrency=2, identify_window=1.0, events_per_second=2.0)


async def test_a_task_that_outlives_its_cancel_is_named_in_the_shutdown_log(sim, tmp_path, caplog):
    caplog.set_level(logging.ERROR, "cluster")
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # a task that swallowed its cancel

    async with running(sim, None, tmp_path, workers=1, fresh=True, shutdown_timeout=0.5) as (sup, task):
        await until(lambda: sup.active_shards() == 2, what="bring-up")
        sup._rt.spawn_task(stubborn(), "test", "stubborn worker 7")
        sup.stop()
        await until(lambda: "after their cancel" in caplog.text, what="the shutdown's log line")
        release.set()
    line = next(r.getMessage() for r in caplog.records if "after their cancel" in r.getMessage())
    assert "stubborn worker 7 at " in line and "test_cancels.py" in line  # its name, and where it waits
