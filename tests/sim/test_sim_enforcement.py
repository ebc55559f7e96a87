"""Every enforcement rule of the gateway, provoked by a raw client: the close code, and the counted violation."""

from __future__ import annotations

import asyncio

import pytest
from sim_client import GUILD_MEMBERS, GUILD_PRESENCES, GatewayClient, violations

from sim import Simulator


async def assert_closed_with(client: GatewayClient, sim: Simulator, code: int, reason_part: str) -> dict:
    ended = await client.ended()
    assert ended.code == code, (ended.code, ended.reason)
    snap = await sim.wait_until(lambda s: any(reason_part in v["reason"] for v in violations(s, code)), 5)
    assert snap["total"]["violations"] == 1, snap["shards"]
    return snap


async def test_bad_token_4004(sim, gw):
    c = await gw(sim.url)
    await c.identify("not-the-token")
    await assert_closed_with(c, sim, 4004, "bad token")
    assert sim.stats.snapshot()["total"]["identifies"] == 0


async def test_bad_token_on_resume_4004(sim, gw):
    c = await gw(sim.resume_url)
    await c.resume("Bot wrong", "0000", 0)
    await assert_closed_with(c, sim, 4004, "bad token")


async def test_second_identify_4005(sim, gw):
    c = await gw(sim.url)
    await c.ready(sim.token)
    await c.identify(sim.token)
    snap = await assert_closed_with(c, sim, 4005, "second Identify")
    assert snap["total"]["identifies"] == 1


async def test_payload_before_identify_4003(sim, gw):
    c = await gw(sim.url)
    await c.send({"op": 3, "d": {"since": None, "activities": [], "status": "online", "afk": False}})
    await assert_closed_with(c, sim, 4003, "before Identify")


async def test_unknown_opcode_4001(sim, gw):
    c = await gw(sim.url)
    await c.ready(sim.token)
    await c.send({"op": 99, "d": None})
    await assert_closed_with(c, sim, 4001, "unknown opcode 99")


@pytest.mark.parametrize("payload, reason", [
    ([1, 2, 3], "not a JSON object"),
    ({"d": None}, "no integer 'op'"),
    ({"op": "1", "d": None}, "no integer 'op'"),
    ({"op": 1, "d": "seven"}, "heartbeat 'd'"),
    ({"op": 2, "d": {"token": 5}}, "string 'token'"),
    ({"op": 2, "d": {"token": "x", "properties": {"os": "linux"}}}, "properties"),
    ({"op": 6, "d": {"token": "x", "session_id": 1, "seq": 0}}, "Resume needs"),
])
async def test_invalid_payload_4001(sim, gw, payload, reason):
    c = await gw(sim.url)
    await c.send(payload)
    await assert_closed_with(c, sim, 4001, reason)


async def test_invalid_presence_in_identify_4001(sim, gw):
    c = await gw(sim.url)
    await c.identify(sim.token, presence={"status": "sleeping", "afk": False, "activities": []})
    await assert_closed_with(c, sim, 4001, "presence")


async def test_bad_json_4002(sim, gw):
    c = await gw(sim.url)
    await c.send_raw('{"op": 1, "d": nul')
    await assert_closed_with(c, sim, 4002, "not valid JSON")


async def test_binary_non_utf8_4002(sim, gw):
    c = await gw(sim.url)
    await c.send_raw(b"\xff\xfe\x00garbage")
    await assert_closed_with(c, sim, 4002, "not valid JSON")


async def test_payload_over_4096_bytes_4002(sim, gw):
    c = await gw(sim.url)
    await c.ready(sim.token)
    big = {"op": 3, "d": {"since": None, "afk": False, "status": "online",
                          "activities": [{"name": "x" * 4100, "type": 0}]}}
    await c.send(big)
    await assert_closed_with(c, sim, 4002, "over 4096 bytes")


async def test_payload_of_exactly_4096_bytes_is_fine(sim, gw):
    c = await gw(sim.url)
    await c.ready(sim.token)
    pad = 4096 - len('{"op": 1, "d": null, "x": ""}')
    raw = '{"op": 1, "d": null, "x": "%s"}' % ("y" * pad)
    assert len(raw.encode()) == 4096
    await c.send_raw(raw)
    ack, _ = await c.recv_until(op=11)
    assert ack["op"] == 11
    assert sim.stats.snapshot()["total"]["violations"] == 0


async def test_rate_limit_121_frames_4008(sim, gw):
    """The real limit: 120 payloads per 60 s; the 121st closes with 4008 (heartbeats count too)."""
    c = await gw(sim.url)
    for _ in range(121):
        await c.heartbeat(None)
    ended = await c.ended()
    assert ended.code == 4008, ended
    acks = [p for p in ended.received if p["op"] == 11]
    assert len(acks) == 120  # every heartbeat before the limit was ACKed
    snap = sim.stats.snapshot()
    assert snap["total"]["ratelimit_closes"] == 1
    assert len(violations(snap, 4008)) == 1


async def test_rate_limit_configurable_4008(make_sim, gw):
    sim = await make_sim(rate_limit_frames=5)
    c = await gw(sim.url)
    await c.ready(sim.token)  # Identify is frame 1
    for _ in range(5):
        await c.heartbeat()
    await assert_closed_with(c, sim, 4008, "more than 5 payloads")


async def test_invalid_seq_on_resume_4007(sim, gw):
    c = await gw(sim.url)
    ready = await c.ready(sim.token)
    await c.close(4000)
    r = await gw(sim.resume_url)
    await r.resume(sim.token, ready["d"]["session_id"], c.seq + 100)
    snap = await assert_closed_with(r, sim, 4007, "invalid seq")
    assert snap["sessions"][ready["d"]["session_id"]]["state"] == "invalidated"


async def test_missed_heartbeats_4009(make_sim, gw):
    sim = await make_sim(heartbeat_interval=100, heartbeat_grace=0.3)
    c = await gw(sim.url)
    assert c.hello["d"]["heartbeat_interval"] == 100
    await c.ready(sim.token)
    await assert_closed_with(c, sim, 4009, "no heartbeat for 0.3 s")


async def test_default_grace_is_twice_the_interval(make_sim, gw):
    sim = await make_sim(heartbeat_interval=150)
    assert sim.config.grace == 0.3
    c = await gw(sim.url)
    await assert_closed_with(c, sim, 4009, "no heartbeat for 0.3 s")


async def test_heartbeats_keep_the_connection(make_sim, gw):
    # grace 0.6 s = 6 intervals: a loaded CI machine may stall the client a little without a false 4009
    sim = await make_sim(heartbeat_interval=100, heartbeat_grace=0.6)
    c = await gw(sim.url)
    await c.ready(sim.token)
    interval = c.hello["d"]["heartbeat_interval"] / 1000
    for _ in range(12):  # 1.2 s of heartbeats at the interval Hello asked for: twice the grace
        await asyncio.sleep(interval)  # the protocol's own heartbeat timer, as a real client runs it
        await c.heartbeat()
        await c.recv_until(op=11)
    snap = sim.stats.snapshot()
    assert snap["total"]["violations"] == 0 and snap["total"]["heartbeats"] == 12


@pytest.mark.parametrize("shard, reason", [
    ([1, 1], "invalid shard [1, 1]"),
    ([0, 0], "invalid shard [0, 0]"),
    ([-1, 2], "invalid shard [-1, 2]"),
    ([0], "must be [shard_id, num_shards]"),
    (["0", "1"], "must be [shard_id, num_shards]"),
])
async def test_invalid_shard_4010(sim, gw, shard, reason):
    c = await gw(sim.url)
    await c.identify(sim.token, shard=shard)
    await assert_closed_with(c, sim, 4010, reason)


async def test_shard_multiple_4010(make_sim, gw):
    sim = await make_sim(shards=16, shard_multiple=16)
    c = await gw(sim.url)
    await c.identify(sim.token, shard=(0, 8))
    await assert_closed_with(c, sim, 4010, "multiple of 16")


async def test_too_many_guilds_4011(make_sim, gw):
    sim = await make_sim(shards=1, guilds_per_shard=3, max_guilds_per_shard=2)
    c = await gw(sim.url)
    await c.identify(sim.token, shard=(0, 1))
    await assert_closed_with(c, sim, 4011, "would hold 3 guilds")
    # sharding fixes it: two shards hold 2 and 1 guilds
    ok = await gw(sim.url)
    ready = await ok.ready(sim.token, shard=(0, 2))
    assert len(ready["d"]["guilds"]) <= 2


@pytest.mark.parametrize("v", ["8", "11", None, "abc"])
async def test_bad_version_4012(sim, gw, v):
    c = await gw(sim.url, v=v, hello=False)  # refused at once: no Hello
    await assert_closed_with(c, sim, 4012, "invalid API version")


@pytest.mark.parametrize("intents, reason", [
    (None, "'intents' is required"),
    (-1, "'intents' is required"),
    (1 << 30, "undocumented bits"),
])
async def test_invalid_intents_4013(sim, gw, intents, reason):
    c = await gw(sim.url)
    await c.identify(sim.token, intents=intents)
    await assert_closed_with(c, sim, 4013, reason)


@pytest.mark.parametrize("bit", [GUILD_MEMBERS, GUILD_PRESENCES, 1 << 15])
async def test_privileged_intents_4014(sim, gw, bit):
    c = await gw(sim.url)
    await c.identify(sim.token, intents=1 | bit)
    await assert_closed_with(c, sim, 4014, "privileged bits")


async def test_privileged_intents_allowed_when_enabled(make_sim, gw):
    sim = await make_sim(privileged_intents=GUILD_MEMBERS | GUILD_PRESENCES | (1 << 15))
    c = await gw(sim.url)
    await c.ready(sim.token, intents=1 | GUILD_MEMBERS | GUILD_PRESENCES | (1 << 15))
    assert sim.stats.snapshot()["total"]["violations"] == 0
