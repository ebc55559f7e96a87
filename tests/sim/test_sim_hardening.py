"""Hostile input to the simulator itself: each gets a clear answer (a counted close code, or a 4xx with a message)
and costs nothing else: no exception escapes into the event loop and other clients keep being served."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_client import GatewayClient, rest, violations

from sim import SimConfig, Simulator
from sim.server import Request
from sim.wsframe import close_frame


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Every context the event loop's exception handler saw (a protocol callback that raised lands here)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    yield errors
    loop.set_exception_handler(previous)


async def still_serves(sim: Simulator) -> None:
    """A fresh client still gets Hello and an ACK: the sim survived."""
    c = await GatewayClient.open(sim.url)
    await c.heartbeat(None)
    assert (await c.recv())["op"] == 11
    c.drop()


# ---- gateway ---------------------------------------------------------------------------------------

NESTED = 2000  # levels: under MAX_PAYLOAD (4096 bytes), far over the decoder's recursion limit


@pytest.mark.parametrize("payload", ['{"op":1,"d":' + "[" * NESTED + "]" * NESTED + "}",
                                     "[" * NESTED + "]" * NESTED], ids=["in-d", "top-level"])
async def test_deeply_nested_json_is_4002_and_counted(sim, gw, loop_errors, payload):
    c = await gw(sim.url)
    await c.send_raw(payload)
    ended = await c.ended()
    assert ended.code == 4002 and "nested too deeply" in ended.reason  # a close frame, not a bare TCP drop
    assert [v["reason"] for v in violations(sim.stats.snapshot(), 4002)] == ["payload is nested too deeply to decode"]
    await still_serves(sim)
    assert loop_errors == []


@pytest.mark.parametrize("command", [
    {"op": 3, "d": {"status": [], "since": None, "activities": [], "afk": False}},
    {"op": 3, "d": {"status": {"online": 1}, "since": None, "activities": [], "afk": False}},
    {"op": 43, "d": {"guild_id": "1", "fields": [["status"]]}},
    {"op": 43, "d": {"guild_id": "1", "fields": [{"a": 1}]}},
], ids=["presence-list-status", "presence-dict-status", "channel-info-list-field", "channel-info-dict-field"])
async def test_unhashable_command_values_are_4001(sim, gw, loop_errors, command):
    c = await gw(sim.url)
    await c.ready(sim.token)
    await c.send(command)
    assert (await c.ended()).code == 4001
    assert len(violations(sim.stats.snapshot(), 4001)) == 1
    await still_serves(sim)
    assert loop_errors == []


async def test_identify_presence_with_unhashable_status_is_4001(sim, gw, loop_errors):
    c = await gw(sim.url)
    await c.identify(sim.token, presence={"status": ["online"], "since": None, "activities": [], "afk": False})
    assert (await c.ended()).code == 4001
    assert loop_errors == []


def test_close_reason_is_cut_on_a_character_boundary():
    reason = "é" * 100  # 200 bytes: over the 123 a close frame may carry
    data = close_frame(4000, reason)
    body = data[4:]  # 2-byte header with a 7-bit length, then the code
    assert data[1] == len(body) + 2 <= 125
    assert body.decode() == "é" * 61  # valid UTF-8 (a cut at 123 bytes would split a character)


async def test_chaos_close_with_long_non_ascii_reason(sim, gw):
    c = await gw(sim.url)
    await c.ready(sim.token)
    status, _, _ = await rest(f"{sim.admin_url}/shards/0/close?code=4000&reason={'%C3%A9' * 100}", method="POST")
    assert status == 200
    ended = await c.ended()
    assert ended.code == 4000 and ended.reason == "é" * 61  # the client got a valid close frame, not a 1007

