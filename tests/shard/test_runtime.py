"""The README example against the simulator, uvloop, and the shared TLS context."""

from __future__ import annotations

import asyncio
import re
import ssl
from pathlib import Path

import pytest

import shard as shard_pkg
import shard.shard
from shard import Config, GatewayError, Intents, Shard, ShardId, default_ssl_context
from sim import Simulator


README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(autouse=True)
def fresh_default_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards without a queue share one per process (5 s between Identifies): each test is a new process."""
    monkeypatch.setattr(shard_pkg.shard, "_DEFAULT_QUEUE", None)


def readme_shard_example() -> str:
    """The README's Shard example, verbatim."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (source,) = [b for b in blocks if "Shard.with_config" in b]
    return source


async def readme_example(sim: Simulator) -> tuple[list[tuple[str, int | None]], list[GatewayError], object]:
    """Runs the README's example against the simulator: its gateway URL in place of the example's, its
    ``print`` recorded. When three MESSAGE_CREATEs were printed, the gateway resets the token (close 4004),
    which is how the example's loop ends: the fatal branch. Returns what it printed, what it logged and the
    Session it closed with."""
    source = readme_shard_example()
    assert '"ws://127.0.0.1:8765"' in source  # the placeholder this test points at the simulator
    source = source.replace('"ws://127.0.0.1:8765"', repr(sim.url))
    printed: list[tuple[str, int | None]] = []
    logged: list[GatewayError] = []

    def record(event_type: str, seq: int | None) -> None:
        printed.append((event_type, seq))
        if [t for t, _ in printed].count("MESSAGE_CREATE") == 3:
            sim.close(0, 4004, "token reset")

    class Log:
        def warning(self, message: str, *, exc_info: GatewayError) -> None:
            assert message == "error receiving event"
            logged.append(exc_info)

    body = "".join(f"    {line}\n" for line in source.splitlines())
    namespace: dict[str, object] = {}
    exec(f"async def example(token, log, print):\n{body}    return session\n", vars(shard_pkg) | namespace,
         namespace)
    session = await namespace["example"](sim.token, Log(), record)  # type: ignore[operator]
    return printed, logged, session


async def test_readme_example_runs_against_sim() -> None:
    async with Simulator(events_per_second=50, heartbeat_interval=1000) as sim:
        printed, logged, session = await asyncio.wait_for(readme_example(sim), 20)
    assert printed[0] == ("READY", 1)  # only the event types the example asked for
    assert [t for t, _ in printed[1:]] == ["MESSAGE_CREATE"] * 3
    seqs = [seq for _, seq in printed]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert [(e.close_code, e.is_fatal()) for e in logged] == [(4004, True)]
    assert session is None or session.sequence >= seqs[-1]


async def test_async_for_delivers_the_events() -> None:
    """The README: ``async for event in shard`` works too."""
    async with Simulator(events_per_second=50, heartbeat_interval=1000) as sim:
        shard = Shard.with_config(ShardId(0, 1), Config(sim.token, Intents.GUILDS | Intents.GUILD_MESSAGES,
                                                        gateway_url=sim.url, metrics=False))
        seen: list[str] = []
        async with asyncio.timeout(20):
            async for event in shard:
                seen.append(event.type)
                if seen.count("MESSAGE_CREATE") == 3:
                    break
        await shard.close()
    assert seen[:4] == ["GATEWAY_HELLO", "READY", "GUILD_CREATE", "GUILD_CREATE"]
    assert seen.count("MESSAGE_CREATE") == 3


def test_shard_runs_on_uvloop() -> None:
    async def main() -> tuple[str, list[str]]:
        loop = type(asyncio.get_running_loop()).__module__
        async with Simulator(events_per_second=50, heartbeat_interval=1000) as sim:
            return loop, await asyncio.wait_for(readme_example(sim), 20)

    loop_module, (printed, _, _) = shard_pkg.run(main())
    assert loop_module.startswith("uvloop")
    assert printed[0][0] == "READY"


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
