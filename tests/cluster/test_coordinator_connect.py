"""The coordinator URL and connection: bad input is one clear line, and the password never shows."""

from __future__ import annotations

import asyncio
import logging

import pytest

from cluster.config import ConfigError, load_config
from cluster.coordination.redis_conn import connect, namespace
from cluster.error import CoordinatorUnavailable
from redis_process import RedisServer, free_port
from test_coordinator_url import SECRET


def test_flags_env_and_toml_name_the_coordinator(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('coordinator = "redis://127.0.0.1:1/3"\ncluster_name = "from-toml"\n')
    assert load_config(file=str(toml), env={}).coordinator == "redis://127.0.0.1:1/3"
    env = {"CLUSTER_COORDINATOR": "rediss://r:2/0", "CLUSTER_CLUSTER_NAME": "blue"}
    loaded = load_config(env=env)
    assert (loaded.coordinator, loaded.cluster_name) == ("rediss://r:2/0", "blue")
    with pytest.raises(ConfigError, match="cluster_name must be"):
        load_config(env={"CLUSTER_CLUSTER_NAME": "has space"})


def test_namespace_is_per_bot_and_never_the_token():
    discord_shaped = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GabcDE.xyz"  # base64("123456789012345678")
    assert namespace(None, discord_shaped) == "shardstack:bot-123456789012345678:"
    assert namespace("blue", discord_shaped) == "shardstack:blue:"
    other = namespace(None, "not-a-discord-token")
    assert other.startswith("shardstack:bot-") and "not-a-discord-token" not in other
    assert other != namespace(None, "another-token")


async def test_connect_checks_the_server(redis_server):
    client = await connect(redis_server.url)
    try:
        assert await client.ping()
    finally:
        await client.aclose()


async def test_wrong_password_is_a_config_error_without_the_password(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    server = RedisServer(tmp_path, password="right-one").start()
    try:
        for url in (f"redis://:{SECRET}@127.0.0.1:{server.port}/0", f"redis://127.0.0.1:{server.port}/0"):
            with pytest.raises(ConfigError, match="refused the login") as err:
                await connect(url)
            assert SECRET not in str(err.value) and SECRET not in caplog.text
    finally:
        server.stop()


async def test_a_server_that_is_not_redis_is_a_config_error():
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ConfigError, match="does not answer like Redis"):
            await connect(f"redis://127.0.0.1:{port}/0", timeout=2.0)
    finally:
        server.close()


async def test_an_unreachable_redis_is_retryable_not_fatal():
    with pytest.raises(CoordinatorUnavailable) as err:
        await connect(f"redis://:{SECRET}@127.0.0.1:{free_port()}/0", timeout=1.0)
    assert SECRET not in str(err.value) and "***" in str(err.value)


async def test_connections_left_stale_by_a_redis_restart_are_reconnected_not_reported(redis_server):
    """Every idle connection of the pool met the restart: each used to fail its next command once, whenever that
    came, and a loop that used it seconds after the recovery logged a second outage."""
    from redis.exceptions import ConnectionError as RedisConnectionError  # noqa: PLC0415

    client = await connect(redis_server.url)
    try:
        await asyncio.gather(*(client.ping() for _ in range(4)))  # four connections in the pool
        redis_server.kill()
        with pytest.raises(RedisConnectionError):  # an outage still fails fast: the callers wait it out
            await client.ping()
        redis_server.start()
        for _ in range(3):
            assert all(await asyncio.gather(*(client.ping() for _ in range(4))))
    finally:
        await client.aclose()
