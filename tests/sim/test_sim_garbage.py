"""Garbage from a client never crashes the simulator: the offender gets a close code and a counted violation,
every other connection keeps working, and no exception escapes into the event loop."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim_client import GatewayClient
from websockets.exceptions import ConnectionClosed

from sim import Simulator

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# payloads that look like gateway commands, to get past the first checks and into each handler
commands = st.fixed_dictionaries({"op": st.sampled_from([1, 2, 3, 4, 6, 8, 31, 43, 99, -1, 2**40]), "d": json_values})
identify_like = st.fixed_dictionaries({"op": st.just(2), "d": st.fixed_dictionaries(
    {"token": st.text(max_size=5), "properties": json_values, "shard": json_values, "intents": json_values},
    optional={"compress": json_values, "large_threshold": json_values, "presence": json_values})})

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


async def run_scenario(attack) -> None:
    """Start a sim with one healthy identified shard, run `attack(sim)`, then prove the sim is still fine."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    async with Simulator(shards=2, max_concurrency=2, identify_window=0.0) as sim:
        healthy = await GatewayClient.open(sim.url)
        await healthy.ready(sim.token, shard=(1, 2))
        try:
            await attack(sim)
            # the healthy shard still gets its ACKs, and a new connection can still identify
            await healthy.heartbeat()
            await healthy.recv_until(op=11)
            fresh = await GatewayClient.open(sim.url)
            await fresh.heartbeat(None)
            assert (await fresh.recv())["op"] == 11
            fresh.drop()
            snap = sim.stats.snapshot()
            assert snap["shards"]["1"]["violations"] == []
            assert snap["shards"]["1"]["open_connections"] == 1
        finally:
            healthy.drop()
    assert not errors, errors


async def send_and_judge(sim: Simulator, messages: list[str | bytes], identify: bool) -> None:
    c = await GatewayClient.open(sim.url)
    if identify:
        await c.ready(sim.token, shard=(0, 2))
    try:
        for m in messages:
            await c.send_raw(m)
        # one heartbeat at the end: either it is ACKed (the garbage was acceptable) or the sim closed on us
        await c.heartbeat(None)
        async with asyncio.timeout(5):
            while (await c.recv())["op"] != 11:
                pass
        return
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd else None
    finally:
        c.drop()
    assert code is not None and (code >= 4000 or code == 1002), code
    # every close the sim chose comes with a counted violation of that code
    snap = sim.stats.snapshot()
    assert any(v["code"] == code for s in snap["shards"].values() for v in s["violations"]), snap["shards"]


@FAST
@given(st.lists(json_values.map(json.dumps) | commands.map(json.dumps) | identify_like.map(json.dumps)
                | st.text(max_size=60) | st.binary(max_size=60), min_size=1, max_size=4), st.booleans())
def test_random_payloads(messages, identify):
    asyncio.run(run_scenario(lambda sim: send_and_judge(sim, messages, identify)))


async def raw_websocket(sim: Simulator) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(sim.config.host, sim.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /?v=10&encoding=json HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    return reader, writer


@FAST
@given(st.binary(min_size=1, max_size=300), st.booleans())
def test_random_bytes(data, after_handshake):
    async def attack(sim: Simulator) -> None:
        if after_handshake:  # random bytes where WebSocket frames should be
            reader, writer = await raw_websocket(sim)
        else:  # random bytes where an HTTP request should be
            reader, writer = await asyncio.open_connection(sim.config.host, sim.port)
        writer.write(data)
        await writer.drain()
        # the sim answers, closes, or waits for more; any of those is fine as long as it never breaks
        try:
            async with asyncio.timeout(0.05):
                await reader.read(65536)
        except TimeoutError:
            pass
        writer.transport.abort()

    asyncio.run(run_scenario(attack))


def test_oversized_http_head_and_bad_handshakes():
    async def attack(sim: Simulator) -> None:
        for request in (b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 20000,  # never-ending head
                        b"GET /?v=10 HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",  # no key
                        b"GET /elsewhere HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                        b"GARBAGE\r\n\r\n",
                        b"GET /api/v10/gateway HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"):
            reader, writer = await asyncio.open_connection(sim.config.host, sim.port)
            writer.write(request)
            answer = await asyncio.wait_for(reader.read(65536), 5)
            assert answer.startswith(b"HTTP/1.1 4"), answer[:60]
            writer.transport.abort()

    asyncio.run(run_scenario(attack))
