"""Client commands: Request Guild Members (op 8), Presence (3), Voice State (4), Soundboard (31), Channel Info (43)."""

from __future__ import annotations

import pytest
from sim_client import GUILD_MEMBERS, GUILD_VOICE_STATES, GUILDS, violations

from sim import traffic


async def identified(make_sim, gw, *, intents=GUILDS, **options):
    sim = await make_sim(**options)
    c = await gw(sim.url)
    await c.ready(sim.token, intents=intents)
    guilds = []
    while len(guilds) < sim.config.guilds_per_shard:
        p, _ = await c.recv_until(t="GUILD_CREATE")
        guilds.append(p["d"])
    return sim, c, guilds


async def test_request_all_members_chunks_with_nonce_then_rate_limited(make_sim, gw):
    sim, c, guilds = await identified(make_sim, gw, intents=GUILDS | GUILD_MEMBERS, privileged_intents=GUILD_MEMBERS,
                                      guild_size="large", guilds_per_shard=1)
    gid = guilds[0]["id"]
    assert guilds[0]["member_count"] == 4000
    await c.send({"op": 8, "d": {"guild_id": gid, "query": "", "limit": 0, "nonce": "n-1"}})
    chunks = []
    while len(chunks) < 4:
        p, _ = await c.recv_until(t="GUILD_MEMBERS_CHUNK")
        chunks.append(p["d"])
    assert [ch["chunk_index"] for ch in chunks] == [0, 1, 2, 3]
    assert all(ch["chunk_count"] == 4 and ch["nonce"] == "n-1" and ch["guild_id"] == gid for ch in chunks)
    ids = [m["user"]["id"] for ch in chunks for m in ch["members"]]
    assert len(ids) == len(set(ids)) == 4000
    # the same all-member request again: RATE_LIMITED instead of chunks
    await c.send({"op": 8, "d": {"guild_id": gid, "query": "", "limit": 0, "nonce": "n-2"}})
    p = await c.recv()
    assert p["t"] == "RATE_LIMITED"
    assert p["d"]["opcode"] == 8 and p["d"]["retry_after"] > 0
    assert p["d"]["meta"] == {"guild_id": gid, "nonce": "n-2"}
    snap = sim.stats.snapshot()
    assert snap["shards"]["0"]["commands"]["8"] == 2 and snap["total"]["violations"] == 0


async def test_request_members_without_members_intent_sends_nothing(make_sim, gw):
    sim, c, guilds = await identified(make_sim, gw, intents=GUILDS)
    gid = guilds[0]["id"]
    await c.send({"op": 8, "d": {"guild_id": gid, "query": "", "limit": 0}})
    await c.send({"op": 43, "d": {"guild_id": gid, "fields": ["status"]}})
    p = await c.recv()  # the next dispatch answers op 43: op 8 produced nothing
    assert p["t"] == "CHANNEL_INFO"


async def test_request_members_by_query_and_by_ids(make_sim, gw):
    sim, c, guilds = await identified(make_sim, gw, guild_size="medium")
    g = guilds[0]
    name = g["members"][0]["user"]["username"]
    await c.send({"op": 8, "d": {"guild_id": g["id"], "query": name[:3], "limit": 5, "nonce": "q"}})
    p, _ = await c.recv_until(t="GUILD_MEMBERS_CHUNK")
    assert p["d"]["nonce"] == "q" and p["d"]["chunk_count"] == 1 and p["d"]["chunk_index"] == 0
    assert 1 <= len(p["d"]["members"]) <= 5
    assert all(m["user"]["username"].startswith(name[:3]) for m in p["d"]["members"])
    known = g["members"][1]["user"]["id"]
    await c.send({"op": 8, "d": {"guild_id": g["id"], "user_ids": [known, "1"]}})
    p, _ = await c.recv_until(t="GUILD_MEMBERS_CHUNK")
    assert [m["user"]["id"] for m in p["d"]["members"]] == [known]
    assert p["d"]["not_found"] == ["1"]


@pytest.mark.parametrize("d", [
    {"guild_id": "x", "query": "", "limit": 0},
    {"guild_id": "1"},
    {"guild_id": "1", "query": "", "limit": 0, "user_ids": ["2"]},
])
async def test_request_members_invalid_4001(make_sim, gw, d):
    sim, c, _ = await identified(make_sim, gw)
    await c.send({"op": 8, "d": d})
    assert (await c.ended()).code == 4001
    assert len(violations(sim.stats.snapshot(), 4001)) == 1


async def test_presence_update(make_sim, gw):
    sim, c, _ = await identified(make_sim, gw)
    await c.send({"op": 3, "d": {"since": None, "activities": [{"name": "tests", "type": 0}], "status": "idle",
                                 "afk": False}})
    await c.heartbeat()
    await c.recv_until(op=11)  # still connected
    snap = sim.stats.snapshot()
    assert snap["shards"]["0"]["commands"]["3"] == 1 and snap["total"]["violations"] == 0
    await c.send({"op": 3, "d": {"status": "busy"}})
    assert (await c.ended()).code == 4001


async def test_voice_state_update(make_sim, gw):
    sim, c, guilds = await identified(make_sim, gw, intents=GUILDS | GUILD_VOICE_STATES)
    gid = guilds[0]["id"]
    channel = guilds[0]["channels"][0]["id"]
    await c.send({"op": 4, "d": {"guild_id": gid, "channel_id": channel, "self_mute": False, "self_deaf": True}})
    state, _ = await c.recv_until(t="VOICE_STATE_UPDATE")
    assert state["d"]["channel_id"] == channel and state["d"]["self_deaf"] is True
    server, _ = await c.recv_until(t="VOICE_SERVER_UPDATE")
    assert server["d"]["guild_id"] == gid and server["d"]["token"]
    await c.send({"op": 4, "d": {"guild_id": gid, "channel_id": None, "self_mute": "no", "self_deaf": True}})
    assert (await c.ended()).code == 4001


async def test_request_soundboard_sounds(make_sim, gw):
    sim, c, guilds = await identified(make_sim, gw, guilds_per_shard=2)
    ids = [g["id"] for g in guilds]
    await c.send({"op": 31, "d": {"guild_ids": ids}})
    got = []
    while len(got) < 2:
        p, _ = await c.recv_until(t="SOUNDBOARD_SOUNDS")
        got.append(p["d"]["guild_id"])
    assert got == ids
    await c.send({"op": 31, "d": {"guild_ids": []}})
    assert (await c.ended()).code == 4001


async def test_request_channel_info(make_sim, gw):
    sim, c, guilds = await identified(make_sim, gw)
    gid = guilds[0]["id"]
    await c.send({"op": 43, "d": {"guild_id": gid, "fields": ["status", "voice_start_time"]}})
    p, _ = await c.recv_until(t="CHANNEL_INFO")
    assert p["d"]["guild_id"] == gid and p["d"]["channels"]
    assert all(set(ch) == {"id", "status", "voice_start_time"} for ch in p["d"]["channels"])
    await c.send({"op": 43, "d": {"guild_id": gid, "fields": ["topic"]}})
    assert (await c.ended()).code == 4001


async def test_guild_create_routed_to_the_right_shard(make_sim, gw):
    sim = await make_sim(shards=4, max_concurrency=4, identify_window=0.0, guilds_per_shard=3)
    for shard in range(4):
        c = await gw(sim.url)
        ready = await c.ready(sim.token, shard=(shard, 4))
        assert len(ready["d"]["guilds"]) == 3
        for _ in range(3):
            p, _ = await c.recv_until(t="GUILD_CREATE")
            assert traffic.shard_for(int(p["d"]["id"]), 4) == shard
