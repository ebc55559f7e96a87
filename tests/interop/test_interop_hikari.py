"""hikari 2.7.0, unmodified from PyPI, brings up 4 shards over zlib-stream against the simulator, then resumes.

hikari picks zlib-stream by itself on Python < 3.14 without ``backports.zstd`` (hikari/impl/shard.py decides
at import time); the test asserts the simulator saw zlib-stream rather than trusting that.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

hikari = pytest.importorskip("hikari")

from sim import Simulator  # noqa: E402

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

SHARDS = 4


def make_bot(sim: Simulator) -> hikari.GatewayBot:
    # The token's first segment is base64(bot id), as hikari requires; the sim's default token is built that way.
    return hikari.GatewayBot(sim.token, rest_url=sim.api_url, banner=None, logs=logging.WARNING,
                             suppress_optimization_warning=True, intents=hikari.Intents.ALL_UNPRIVILEGED)


@pytest.mark.parametrize("zlib_chunk", [0, 200], ids=["whole", "split-messages"])
async def test_hikari_four_shards_then_resume_after_op7(zlib_chunk: int) -> None:
    # zlib_chunk=200 splits READY and GUILD_CREATE into several WebSocket messages: hikari must buffer them
    async with Simulator(shards=SHARDS, max_concurrency=SHARDS, identify_window=1.0, guilds_per_shard=2,
                         events_per_second=20, dm_fraction=0.0, reconnect_close_after=10.0,
                         zlib_chunk=zlib_chunk) as sim:
        bot = make_bot(sim)
        ready: set[int] = set()
        guilds: dict[int, set[int]] = {i: set() for i in range(SHARDS)}
        messages: dict[int, int] = {i: 0 for i in range(SHARDS)}
        resumed: dict[int, asyncio.Event] = {i: asyncio.Event() for i in range(SHARDS)}
        messages_after_resume: dict[int, asyncio.Event] = {i: asyncio.Event() for i in range(SHARDS)}
        done = asyncio.Event()

        def check() -> None:
            if (ready == set(range(SHARDS)) and all(len(g) == 2 for g in guilds.values())
                    and all(messages.values())):
                done.set()

        @bot.listen(hikari.ShardReadyEvent)
        async def on_ready(event: hikari.ShardReadyEvent) -> None:
            ready.add(event.shard.id)
            check()

        @bot.listen(hikari.GuildAvailableEvent)
        async def on_guild(event: hikari.GuildAvailableEvent) -> None:
            guilds[event.shard.id].add(int(event.guild_id))
            check()

        @bot.listen(hikari.GuildMessageCreateEvent)
        async def on_message(event: hikari.GuildMessageCreateEvent) -> None:
            messages[event.shard.id] += 1
            if resumed[event.shard.id].is_set():
                messages_after_resume[event.shard.id].set()
            check()

        @bot.listen(hikari.ShardResumedEvent)
        async def on_resumed(event: hikari.ShardResumedEvent) -> None:
            resumed[event.shard.id].set()

        await asyncio.wait_for(bot.start(shard_count=SHARDS, check_for_updates=False), 20)
        try:
            await asyncio.wait_for(done.wait(), 15)
            before = sim.stats.snapshot()
            compressions = {c.enc.name for c in sim.connections}
            assert compressions == {"zlib-stream"}
            for i in range(SHARDS):
                assert before["shards"][str(i)]["identifies"] == 1
                assert before["shards"][str(i)]["resumes"] == 0
            assert before["total"]["violations"] == 0

            target = 2
            assert sim.reconnect(target) == 1  # op 7 to shard 2
            await asyncio.wait_for(resumed[target].wait(), 10)
            after = await sim.wait_until(lambda s: s["shards"][str(target)]["resumes"] == 1, 5)
            # the stream goes on over the resumed connection
            await asyncio.wait_for(messages_after_resume[target].wait(), 10)
            after = sim.stats.snapshot()
            resumed_conns = [c for c in sim.connections_of(target)]
        finally:
            await bot.close()

    for i in range(SHARDS):
        b, a = before["shards"][str(i)], after["shards"][str(i)]
        assert a["identifies"] == b["identifies"] == 1, (i, a)  # no new Identify, on any shard
        assert a["resumes"] == (1 if i == target else 0), (i, a)
        assert a["violations"] == [], a["violations"]
    assert after["total"]["violations"] == 0  # in particular no "Resume sent to the main gateway URL"
    assert after["total"]["concurrency_violations"] == 0
    assert after["total"]["lost"] == 0 and after["total"]["gapless"]
    # the resumed connection came in on the distinct resume_gateway_url path
    assert len(resumed_conns) == 1 and resumed_conns[0].on_resume_url
    # hikari closed the old connection itself (3000 keeps the session) before the sim's 4000 fallback fired
    assert "4000" not in after["shards"][str(target)]["closes"]
    session = next(s for s in after["sessions"].values() if s["shard"] == [target, SHARDS])
    assert session["resumes"] == 1 and session["state"] == "active"
