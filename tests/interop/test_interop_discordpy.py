"""discord.py 2.7.1, unmodified from PyPI, brings up 4 shards over zlib-stream (and zstd-stream) against the simulator.

Why zlib-stream has to be forced: discord.py picks its transport compression at import time. When the
``zstandard`` package is importable (it is here: it is the simulator's ``zstd`` extra), ``discord/utils.py``
only defines ``_ZstdDecompressionContext`` and connects with ``compress=zstd-stream``; the zlib context lives in
the ``else:`` branch of that import-time check and is never created. The least invasive way to get the
library's *own* zlib-stream code is to compile that ``else:`` branch from the installed ``discord/utils.py``
(so no line of discord.py is rewritten or copied here) and point ``discord.utils._ActiveDecompressionContext`` at
it for the duration of the test; ``discord/gateway.py`` reads that attribute for both the ``compress=`` query
parameter and the inflater of every new connection.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import zlib

import pytest

discord = pytest.importorskip("discord")
yarl = pytest.importorskip("yarl")

from sim import Simulator  # noqa: E402

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

SHARDS = 4


def discordpy_zlib_context() -> type:
    """discord.py's own ``_ZlibDecompressionContext``, compiled from the installed discord/utils.py."""
    source = inspect.getsource(discord.utils)
    tree = ast.parse(source)
    for node in tree.body:
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and getattr(node.test.left, "id", None) == "_ZSTD_SOURCE"):
            namespace = dict(vars(discord.utils), zlib=zlib)
            exec(compile(ast.Module(body=node.orelse, type_ignores=[]), discord.utils.__file__, "exec"), namespace)
            ctx = namespace["_ZlibDecompressionContext"]
            assert ctx.COMPRESSION_TYPE == "zlib-stream"
            return ctx
    raise AssertionError("discord/utils.py has no zstd/zlib import-time switch any more: revisit this test")


@pytest.mark.parametrize("compression, zlib_chunk", [("zlib-stream", 0), ("zlib-stream", 200), ("zstd-stream", 0)],
                         ids=["zlib-whole", "zlib-split-messages", "zstd"])
async def test_discordpy_four_shards(monkeypatch: pytest.MonkeyPatch, compression: str, zlib_chunk: int) -> None:
    # zlib_chunk=200 splits READY and GUILD_CREATE into several WebSocket messages: discord.py must buffer them.
    # zstd-stream is what discord.py picks by itself when zstandard is installed (as it is here).
    if compression == "zlib-stream":
        monkeypatch.setattr(discord.utils, "_ActiveDecompressionContext", discordpy_zlib_context())
    assert discord.utils._ActiveDecompressionContext.COMPRESSION_TYPE == compression
    async with Simulator(shards=SHARDS, max_concurrency=SHARDS, identify_window=1.0, guilds_per_shard=2,
                         events_per_second=20, dm_fraction=0.0, zlib_chunk=zlib_chunk) as sim:
        # The two documented knobs for a custom endpoint (class attributes; restored by monkeypatch).
        monkeypatch.setattr(discord.http.Route, "BASE", sim.api_url)
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(sim.url))

        ready: set[int] = set()
        guilds: dict[int, set[int]] = {i: set() for i in range(SHARDS)}
        messages: dict[int, int] = {i: 0 for i in range(SHARDS)}
        done = asyncio.Event()

        def check() -> None:
            if (ready == set(range(SHARDS)) and all(len(g) == 2 for g in guilds.values())
                    and all(messages.values())):
                done.set()

        class Bot(discord.AutoShardedClient):
            async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
                return None  # the default sleeps 5 s before each non-initial Identify; the sim's window is the rule

            async def on_shard_ready(self, shard_id: int) -> None:
                ready.add(shard_id)
                check()

            async def on_guild_available(self, guild: discord.Guild) -> None:
                guilds[guild.shard_id].add(guild.id)
                check()

            async def on_message(self, message: discord.Message) -> None:
                if message.guild is not None:
                    messages[message.guild.shard_id] += 1
                    check()

        intents = discord.Intents.default()  # GUILDS, GUILD_MESSAGES, ...; no privileged intents
        assert intents.guild_messages and not intents.members and not intents.presences
        client = Bot(intents=intents, shard_count=SHARDS, guild_ready_timeout=0.2)
        async with client:
            task = asyncio.create_task(client.start(sim.token))
            try:
                await asyncio.wait_for(done.wait(), 20)
                snap = sim.stats.snapshot()
                compressions = {c.enc.name for c in sim.connections}
            finally:
                await client.close()
                await asyncio.wait_for(task, 10)

    assert compressions == {compression}
    for i in range(SHARDS):
        shard = snap["shards"][str(i)]
        assert shard["identifies"] == 1, shard
        assert shard["violations"] == [], shard["violations"]
    assert snap["total"]["concurrency_violations"] == 0
    assert snap["total"]["violations"] == 0
    assert snap["total"]["lost"] == 0
    # every guild routed to a shard arrived on that shard
    for shard_id, ids in guilds.items():
        assert all((gid >> 22) % SHARDS == shard_id for gid in ids)
