"""The simulator's side of live resharding (issue 10): one shared guild event stream routed to every shard set,
per guild event accounting, guilds added while running, and accounting per shard set."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict

import pytest
from sim_client import GUILDS, rest

from shard import Config, InMemoryQueue, Intents, Shard, ShardId
from sim import SimConfig
from sim.__main__ import stats_line
from sim.guild_events import DISCORD_EPOCH_MS, SnowflakeClock, snowflake, snowflake_ms, timestamp
from sim.traffic import shard_for


def route(gid: str | int, num_shards: int) -> int:
    return shard_for(int(gid), num_shards)


async def post(sim, path: str, body: bytes) -> tuple[int, dict]:
    status, _, data = await rest(f"{sim.admin_url}/{path}", {"Content-Type": "application/json"}, "POST", body)
    return status, json.loads(data)


async def get(sim, path: str) -> tuple[int, dict]:
    status, _, data = await rest(f"{sim.admin_url}/{path}")
    return status, json.loads(data)


# ---- snowflakes --------------------------------------------------------------------------------------------


def test_snowflakes_come_from_the_wall_clock_and_always_increase():
    ms = DISCORD_EPOCH_MS + 1_000_000
    assert snowflake(ms, 5) == (1_000_000 << 22) | 5 and snowflake_ms(snowflake(ms, 5)) == ms
    clock = SnowflakeClock()
    same_ms = [clock.next(ms) for _ in range(3)]
    assert same_ms == [snowflake(ms), snowflake(ms) + 1, snowflake(ms) + 2]
    assert clock.next(ms - 50) == snowflake(ms) + 3  # a clock that steps back never repeats an id
    assert clock.next(ms + 1) == snowflake(ms + 1)
    now = clock.next()  # the real clock: a 2026-ish timestamp
    assert snowflake_ms(now) > DISCORD_EPOCH_MS + 10 * 365 * 86_400_000
    assert timestamp(DISCORD_EPOCH_MS + 1) == "2015-01-01T00:00:00.001000+00:00"


# ---- the shared stream ---------------------------------------------------------------------------------------


async def test_two_shard_sets_receive_the_same_stream_each_event_once_on_its_shard(make_sim):
    """Sets of 2 and 4 shard.Shards at once, a steady stream: each set gets every emitted event exactly once,
    each on the shard its own count routes the guild to, with the same message ids."""
    sim = await make_sim(shards=2, guilds_per_shard=6, max_concurrency=8, identify_window=0.0,
                         heartbeat_interval=1000)
    sets = (2, 4)
    shards = [Shard.with_config(ShardId(n, total), Config(
        sim.token, Intents.GUILDS | Intents.GUILD_MESSAGES, gateway_url=sim.url,
        queue=InMemoryQueue(max_concurrency=8, interval=0.05), metrics=False, close_timeout=1.0))
        for total in sets for n in range(total)]
    got: dict[int, list[tuple[int, str, str]]] = defaultdict(list)  # set -> (shard, message id, guild id)
    guild_creates: Counter[int] = Counter()
    changed = asyncio.Event()

    async def pump(shard: Shard) -> None:
        async for event in shard:
            if event.type == "MESSAGE_CREATE":
                got[shard.id.total].append((shard.id.number, event.data["id"], event.data["guild_id"]))
            elif event.type == "GUILD_CREATE":
                guild_creates[shard.id.total] += 1
            changed.set()

    async def until(predicate) -> None:
        async with asyncio.timeout(15):
            while not predicate():
                changed.clear()
                await changed.wait()

    tasks = [asyncio.create_task(pump(s)) for s in shards]
    try:
        await until(lambda: guild_creates[2] == 12 and guild_creates[4] == 12)
        snap = await sim.wait_until(lambda s: s["total"]["max_complete_sets"] == 2)
        assert snap["sets"]["2"]["identifies"] == 2 and snap["sets"]["4"]["identifies"] == 4
        sim.config.guild_events_per_second = 400
        await sim.wait_until(lambda s: sim.guild_events.total >= 60)
        sim.config.guild_events_per_second = 0  # stop the stream, then everything emitted must arrive
        log = sim.guild_event_log()
        await until(lambda: all(len(got[n]) >= log["total"] for n in sets))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*(s.close() for s in shards), return_exceptions=True)
    assert log["total"] == len(log["ids"]) >= 60
    ids = [int(i) for i in log["ids"]]
    assert ids == sorted(set(ids))  # unique and strictly increasing
    assert all(e["queued"] == 2 for e in log["events"])  # one session of each set
    assert sum(log["per_guild"].values()) == log["total"] and len(log["per_guild"]) == 12  # spread over all guilds
    emitted = {e["id"]: e["guild_id"] for e in log["events"]}
    for n in sets:
        assert sorted(int(i) for _, i, _ in got[n]) == ids  # every event exactly once in each set
        assert all(emitted[i] == g and route(g, n) == number for number, i, g in got[n])
        assert {number for number, _, _ in got[n]} == set(range(n))


async def test_emitted_events_follow_intents_and_are_logged(make_sim, gw):
    sim = await make_sim(identify_window=0.0)
    one = await gw(sim.url)
    await one.ready(sim.token, shard=(0, 1))
    while one.seq < 3:  # READY and two GUILD_CREATEs
        await one.recv()
    no_messages = await gw(sim.url)
    await no_messages.ready(sim.token, shard=(0, 1), intents=GUILDS)
    ids = sim.emit_guild_events(3)
    log = sim.guild_event_log()
    assert [int(i) for i in log["ids"]] == ids and log["total"] == 3
    assert [e["queued"] for e in log["events"]] == [1, 1, 1]  # the session without GUILD_MESSAGES gets none
    received = [await one.recv() for _ in range(3)]
    assert [p["t"] for p in received] == ["MESSAGE_CREATE"] * 3
    assert [int(p["d"]["id"]) for p in received] == ids
    assert all(p["d"]["content"] == "" for p in received)  # no MESSAGE_CONTENT intent
    assert [p["d"]["timestamp"] for p in received] == [timestamp(snowflake_ms(i)) for i in ids]
    assert [int(e["id"]) for e in sim.guild_event_log(since_id=ids[0])["events"]] == ids[1:]
    assert sim.guild_event_log(since_id=ids[0])["total"] == 3


async def test_resume_replays_guild_events_missed_while_disconnected(make_sim, gw):
    sim = await make_sim(guilds_per_shard=3)
    c = await gw(sim.url)
    ready = await c.ready(sim.token)
    session_id = ready["d"]["session_id"]
    await c.recv_until(t="GUILD_CREATE")
    while c.seq < 4:  # READY and three GUILD_CREATEs
        await c.recv()
    before = sim.emit_guild_events(2)
    live = [await c.recv() for _ in range(2)]
    mark = c.seq
    c.drop()
    await sim.wait_until(lambda s: s["sessions"][session_id]["state"] == "detached")
    missed = sim.emit_guild_events(5)
    assert [e["queued"] for e in sim.guild_event_log()["events"]] == [1] * 7  # queued while detached too
    r = await gw(sim.resume_url)
    await r.resume(sim.token, session_id, mark)
    _, replayed = await r.recv_until(t="RESUMED")
    assert [int(p["d"]["id"]) for p in live] == before
    assert [int(p["d"]["id"]) for p in replayed] == missed
    assert [p["s"] for p in replayed] == list(range(mark + 1, mark + 6))


# ---- guilds added while running --------------------------------------------------------------------------


async def test_added_guilds_send_guild_create_then_close_an_overfull_shard_4011(make_sim, gw):
    sim = await make_sim(shards=2, guilds_per_shard=2, max_guilds_per_shard=3, max_concurrency=2, identify_window=0.0)
    clients = [await gw(sim.url) for _ in range(2)]
    sessions = []
    for n, c in enumerate(clients):
        sessions.append((await c.ready(sim.token, shard=(n, 2)))["d"]["session_id"])
        while c.seq < 3:  # READY and two GUILD_CREATEs
            await c.recv()
    assert sim.add_guilds(1) == {"added": 1, "guilds": 5, "recommended_shards": 2, "guild_creates": 1, "closed": 0}
    created = await clients[0].recv()  # guild 4 routes to shard 0
    assert created["t"] == "GUILD_CREATE" and route(created["d"]["id"], 2) == 0
    status, added = await post(sim, "guilds", b'{"count": 2}')  # guild 5 to shard 1, guild 6 overfills shard 0
    assert status == 200 and added == {"added": 2, "guilds": 7, "recommended_shards": 2, "guild_creates": 1,
                                       "closed": 1}
    ended = await clients[0].ended()
    assert ended.code == 4011 and "sharding required" in ended.reason
    created = await clients[1].recv()
    assert created["t"] == "GUILD_CREATE" and route(created["d"]["id"], 2) == 1
    r = await gw(sim.resume_url)  # Discord does not let a 4011 session resume
    await r.resume(sim.token, sessions[0], clients[0].seq)
    assert (await r.recv())["op"] == 9
    snap = sim.stats.snapshot()
    assert snap["sets"]["2"]["closes"] == {"4011": 1} and snap["sessions"][sessions[0]]["state"] == "invalidated"
    # a new set that fits: 4 shards hold at most 2 of the 7 guilds
    fresh = await gw(sim.url)
    ready = await fresh.ready(sim.token, shard=(0, 4))
    assert len(ready["d"]["guilds"]) == 2


async def test_gateway_bot_recommends_one_shard_per_thousand_guilds(make_sim):
    sim = await make_sim(shards=2, guilds_per_shard=2)
    auth = {"Authorization": f"Bot {sim.token}"}

    async def recommended() -> int:
        status, _, body = await rest(f"{sim.api_url}/gateway/bot", auth)
        assert status == 200
        return json.loads(body)["shards"]

    assert await recommended() == 2
    assert sim.add_guilds(2996)["guilds"] == 3000
    assert await recommended() == 3
    assert (await post(sim, "guilds", b'{"count": 1}'))[1]["recommended_shards"] == 4
    assert await recommended() == 4
    assert await get(sim, "guilds") == (200, {"guilds": 3001, "recommended_shards": 4})


async def test_recommended_guilds_per_shard_scales_the_recommendation_down_for_tests(make_sim, gw):
    """Small numbers for a 4011 test: 3 guilds a shard at most, one shard recommended per 2 guilds."""
    sim = await make_sim(shards=2, guilds_per_shard=2, max_guilds_per_shard=3, recommended_guilds_per_shard=2)
    c = await gw(sim.url)
    await c.ready(sim.token, shard=(0, 2))
    assert sim.recommended_shards == 2
    assert sim.add_guilds(3) == {"added": 3, "guilds": 7, "recommended_shards": 4, "guild_creates": 0, "closed": 1}
    assert (await c.ended()).code == 4011
    status, _, body = await rest(f"{sim.api_url}/gateway/bot", {"Authorization": f"Bot {sim.token}"})
    assert status == 200 and json.loads(body)["shards"] == 4


@pytest.mark.parametrize(("path", "body", "message"), [
    ("guilds", b"{not json", "invalid JSON"),
    ("guilds", b"", "JSON object"),
    ("guilds", b"[1]", "JSON object"),
    ("guilds", b'{"count": -1}', "count must be an integer from 0 to"),
    ("guilds", b'{"count": "5"}', "count must be an integer"),
    ("guilds", b'{"count": true}', "count must be an integer"),
    ("guilds", b'{"count": 1.5}', "count must be an integer"),
    ("guilds", b'{"count": 100001}', "count must be an integer from 0 to 100000"),
    ("guilds", b'{"guilds": 5}', '{"count": N}'),
    ("guild-events", b'{"count": -3}', "count must be an integer"),
    ("guild-events", b'{"count": 99999999999}', "count must be an integer"),
    ("guild-events", b"{}", 'give "count"'),
    ("guild-events", b'{"cnt": 2}', "unknown fields ['cnt']"),
    ("guild-events", b'{"per_second": -1}', "per_second must be a finite number >= 0"),
    ("guild-events", b'{"per_second": "fast"}', "per_second must be a finite number"),
    ("guild-events", b'{"count": 2, "per_second": -1}', "per_second"),
])
async def test_admin_guild_endpoints_refuse_bad_input_and_change_nothing(sim, path, body, message):
    status, answer = await post(sim, path, body)
    assert status == 400 and message in answer["message"], answer
    assert sim.total_guilds == 2 and sim.guild_events.total == 0 and sim.config.guild_events_per_second == 0


async def test_admin_guild_events_emit_rate_and_since_id(sim):
    status, answer = await post(sim, "guild-events", b'{"count": 3}')
    assert status == 200 and answer["emitted"] == 3 and answer["per_second"] == 0
    status, log = await get(sim, f"guild-events?since_id={answer['ids'][0]}")
    assert status == 200 and log["total"] == 3 and log["ids"] == answer["ids"][1:]
    assert log["last_id"] == answer["ids"][-1] and sorted(log["per_guild"].values()) == [1, 2]  # 2 guilds in turn
    status, answer = await post(sim, "guild-events", b'{"per_second": 25}')
    assert status == 200 and answer["emitted"] == 0 and sim.config.guild_events_per_second == 25
    assert (await get(sim, "guild-events?since_id=-1"))[0] == 400
    assert (await get(sim, "guild-events?since_id=12a"))[0] == 400
    status, _, _ = await rest(f"{sim.admin_url}/guilds", method="DELETE")
    assert status == 405


# ---- accounting per shard set --------------------------------------------------------------------------------


async def test_stats_keep_shard_sets_apart(make_sim, gw):
    sim = await make_sim(shards=2, max_concurrency=8, identify_window=0.0)
    small = [await gw(sim.url) for _ in range(2)]
    for n, c in enumerate(small):
        await c.ready(sim.token, shard=(n, 2))
    big = [await gw(sim.url) for _ in range(4)]
    for n, c in enumerate(big[:3]):
        await c.ready(sim.token, shard=(n, 4))
    snap = sim.stats.snapshot()
    assert snap["shards"]["0"]["identifies"] == 2  # the old per-shard keys still add both sets up
    assert snap["sets"]["2"]["complete"] and not snap["sets"]["4"]["complete"]
    assert snap["total"]["max_complete_sets"] == 1
    await big[3].ready(sim.token, shard=(3, 4))
    snap = sim.stats.snapshot()
    assert snap["total"]["max_complete_sets"] == 2  # both sets were live at once
    assert (snap["sets"]["2"]["identifies"], snap["sets"]["4"]["identifies"]) == (2, 4)
    assert snap["total"]["identifies"] == 2 + 4
    for c in small:
        await c.close(1000)
    snap = await sim.wait_until(lambda s: s["sets"]["2"]["open_connections"] == 0)
    assert snap["sets"]["2"]["closes"] == {"client 1000": 2} and snap["sets"]["2"]["sessions"] == {"closed": 2}
    assert not snap["sets"]["2"]["complete"] and snap["sets"]["2"]["peak_open_connections"] == 2
    assert snap["sets"]["4"]["complete"] and snap["sets"]["4"]["sessions"] == {"active": 4}
    assert snap["sets"]["4"]["closes"] == {} and snap["sets"]["4"]["live_shards"] == 4


async def test_a_closed_set_stops_receiving_and_the_other_set_goes_on(make_sim, gw):
    """The cut-over: after the old set closes with 1000, each event is queued to the new set only."""
    sim = await make_sim(shards=1, guilds_per_shard=2, max_concurrency=8, identify_window=0.0)
    old = await gw(sim.url)
    await old.ready(sim.token, shard=(0, 1))
    new = [await gw(sim.url) for _ in range(2)]
    for n, c in enumerate(new):
        await c.ready(sim.token, shard=(n, 2))
        await c.recv_until(t="GUILD_CREATE")
    both = sim.emit_guild_events(2)
    await old.close(1000)
    await sim.wait_until(lambda s: s["sets"]["1"]["sessions"] == {"closed": 1})
    after = sim.emit_guild_events(2)
    assert [e["queued"] for e in sim.guild_event_log()["events"]] == [2, 2, 1, 1]
    received = {int((await c.recv_until(t="MESSAGE_CREATE"))[0]["d"]["id"]) for c in new for _ in range(2)}
    assert received == set(both + after)


async def test_an_invalidated_session_leaves_its_set(make_sim, gw):
    sim = await make_sim(shards=1)
    c = await gw(sim.url)
    await c.ready(sim.token, shard=(0, 1))
    assert sim.stats.snapshot()["sets"]["1"]["complete"]
    assert sim.invalidate(0, resumable=False) == 1
    snap = sim.stats.snapshot()  # the socket is still open, but carries no session of the set
    assert snap["sets"]["1"]["open_connections"] == 0 and not snap["sets"]["1"]["complete"]
    assert snap["total"]["open_connections"] == 1


async def test_cli_stats_line_shows_the_guild_stream_once_used(sim):
    assert "guild_events" not in stats_line(sim, 0, 1.0)[0]  # unchanged while the stream is unused
    sim.emit_guild_events(3)
    sim.add_guilds(5)
    assert stats_line(sim, 0, 1.0)[0].endswith(" guild_events=3 guilds=7")


@pytest.mark.parametrize(("option", "value", "message"), [
    ("recommended_guilds_per_shard", 0, "recommended_guilds_per_shard must be >= 1"),
    ("guild_events_per_second", -1.0, "guild_events_per_second must be >= 0"),
    ("guild_events_per_second", float("nan"), "guild_events_per_second must be a finite number"),
])
def test_new_options_are_checked(option, value, message):
    with pytest.raises(ValueError, match=message):
        SimConfig(**{option: value})
