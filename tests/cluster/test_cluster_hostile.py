"""Hostile input reaching a worker: a shard's consumer survives any exception, and one bad session value
never costs the other shards their reports or their sessions at drain."""

import asyncio

import pytest

from cluster_hostile_handlers import Count, Poisoner, PoisonSequence, RaisingDecode
from cluster_testing import running, until

TYPING = 1 << 11  # GUILD_MESSAGE_TYPING: the stream also carries TYPING_START, which decodes fine


@pytest.fixture
def sim_options():
    return dict(shards=2, max_concurrency=2, identify_window=1.0, events_per_second=50.0)


async def test_an_exception_from_next_event_is_logged_counted_and_the_shard_goes_on(sim, tmp_path):
    # every MESSAGE_CREATE makes next_event raise RuntimeError (a registered struct that cannot be built)
    async with running(sim, RaisingDecode, tmp_path, workers=1, intents=513 | TYPING, fresh=True) as (sup, _):
        await until(lambda: sup.active_shards() == 2, what="bring-up")
        await until(lambda: sup.workers[0].consumer_errors >= 2, what="counted consumer errors")
        errors = sup.workers[0].consumer_errors
        before = await typing_starts(sup)
        # the consumers still run: later events reach the handler and later failures are counted
        await until(lambda: sup.workers[0].consumer_errors > errors + 4, what="more consumer errors")
        for _ in range(100):
            if await typing_starts(sup) > before:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no TYPING_START reached the handler after the failures")
        assert sup.active_shards() == 2


async def typing_starts(sup):
    reply = (await sup.broadcast(Count()))[0]
    assert reply.ok
    return reply.value.get("TYPING_START", 0)


async def test_a_session_that_cannot_be_encoded_costs_only_its_own_shard(sim, tmp_path):
    async with running(sim, Poisoner, tmp_path, workers=1, fresh=True) as (sup, _):
        await until(lambda: sup.active_shards() == 2 and {0, 1} <= sup.sessions.keys(), what="session reports")
        assert sim.pause(0) == 1  # shard 0 gets no dispatch that would overwrite the bad sequence
        reply = (await sup.broadcast(PoisonSequence(0)))[0]
        assert reply.ok and reply.value is True
        seqs = [sup.sessions[1].seq]
        for _ in range(2):  # two more reports: at least one was sent after the poisoning
            await until(lambda: sup.sessions[1].seq > seqs[-1], what="shard 1's session reports")
            seqs.append(sup.sessions[1].seq)
        assert sup.sessions[0].seq < 2**63
        handle = sup.workers[0]
    # the drain: the worker hands back its sessions (without the bad one) and exits cleanly
    assert handle.drained.done() and handle.exitcode == 0
    assert sup.sessions[1].seq >= seqs[-1]
