"""The README example against the simulator, uvloop, and the shared TLS context."""

from __future__ import annotations

import asyncio
import logging
import ssl

import shard as shard_pkg
from shard import (CloseFrame, Config, EventTypeFlags, GatewayError, InMemoryQueue, Intents, Shard, ShardId,
                   default_ssl_context)
from sim import Simulator

log = logging.getLogger("readme")


async def readme_example(sim: Simulator) -> list[str]:
    """The README's example, pointed at the simulator (stops after a few events)."""
    shard = Shard.with_config(ShardId(0, 1), Config(
        sim.token, Intents.GUILDS | Intents.GUILD_MESSAGES,
        gateway_url=sim.url,
        compression="zlib-stream",
        event_types=EventTypeFlags.ALL,
        session=None, resume_url=None,
        queue=InMemoryQueue(max_concurrency=1, remaining=1000, reset_after=86400.0, total=1000, interval=5.0),
        large_threshold=50, presence=None, identify_properties=None, ratelimit_messages=True, metrics=False))
    seen: list[str] = []
    while len(seen) < 6:
        try:
            event = await shard.next_event()
        except GatewayError as source:
            log.warning("error receiving event", exc_info=source)
            if source.is_fatal():
                break
            continue
        seen.append(event.type)
    session = await shard.close(CloseFrame.RESUME)
    assert session is not None
    return seen


async def test_readme_example_runs_against_sim() -> None:
    async with Simulator(events_per_second=50, heartbeat_interval=1000) as sim:
        seen = await asyncio.wait_for(readme_example(sim), 20)
    assert seen[:4] == ["GATEWAY_HELLO", "READY", "GUILD_CREATE", "GUILD_CREATE"]


def test_shard_runs_on_uvloop() -> None:
    async def main() -> tuple[str, list[str]]:
        loop = type(asyncio.get_running_loop()).__module__
        async with Simulator(events_per_second=50, heartbeat_interval=1000) as sim:
            return loop, await asyncio.wait_for(readme_example(sim), 20)

    loop_module, seen = shard_pkg.run(main())
    assert loop_module.startswith("uvloop")
    assert "READY" in seen


def test_one_tls_context_shared_by_all_shards() -> None:
    a, b = Config("t", 0), Config("t", 0, gateway_url="wss://other.example/")
    assert a.ssl_context() is b.ssl_context() is default_ssl_context()
    assert a.ssl_context().verify_mode == ssl.CERT_REQUIRED and a.ssl_context().check_hostname
    custom = ssl.create_default_context()
    assert Config("t", 0, ssl=custom).ssl_context() is custom


def test_wss_url_uses_tls() -> None:
    from shard.websocket import Handshake, build_url
    hs = Handshake(build_url("wss://gateway.discord.gg", "zlib-stream"))
    assert hs.secure and hs.host == "gateway.discord.gg" and hs.port == 443
    assert build_url("wss://gateway.discord.gg", "zstd-stream") == \
        "wss://gateway.discord.gg/?v=10&encoding=json&compress=zstd-stream"
    assert build_url("ws://127.0.0.1:1/resume-gateway/", None) == "ws://127.0.0.1:1/resume-gateway/?v=10&encoding=json"
