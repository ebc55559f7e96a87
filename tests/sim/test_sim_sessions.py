"""Identify concurrency, the session start budget, resumability after closes, Resume replay and the resume URL."""

from __future__ import annotations

import asyncio
import json

import pytest
from sim_client import rest, violations


async def test_heartbeat_before_identify_is_acked(sim, gw):
    c = await gw(sim.url)
    for _ in range(3):
        await c.heartbeat(None)
        ack = await c.recv()
        assert ack == {"t": None, "s": None, "op": 11, "d": None}
    snap = sim.stats.snapshot()
    assert snap["shards"]["unidentified"]["heartbeats"] == 3
    assert snap["total"]["violations"] == 0 and snap["total"]["identifies"] == 0


async def test_identify_concurrency_same_bucket_gets_op9(make_sim, gw):
    sim = await make_sim(shards=4, max_concurrency=2, identify_window=60.0)
    first = await gw(sim.url)
    await first.ready(sim.token, shard=(0, 4))
    # shard 1 is in bucket 1: fine in the same window
    other = await gw(sim.url)
    await other.ready(sim.token, shard=(1, 4))
    # shard 2 is in bucket 0, already used in this window: op 9 d=false, and no session
    second = await gw(sim.url)
    await second.identify(sim.token, shard=(2, 4))
    invalid = await second.recv()
    assert invalid["op"] == 9 and invalid["d"] is False
    snap = sim.stats.snapshot()
    assert snap["shards"]["2"]["concurrency_violations"] == 1
    assert snap["total"]["concurrency_violations"] == 1
    assert snap["shards"]["2"]["identifies"] == 0
    assert [v["code"] for v in snap["shards"]["2"]["violations"]] == [9]
    assert "bucket 0" in snap["shards"]["2"]["violations"][0]["reason"]
    assert snap["total"]["identifies"] == 2
    assert sim.remaining == 998  # the refused Identify did not spend a session start


async def test_identify_window_elapses(make_sim, gw):
    sim = await make_sim(shards=2, max_concurrency=1, identify_window=0.5)
    a = await gw(sim.url)
    await a.ready(sim.token, shard=(0, 2))
    b = await gw(sim.url)
    await b.identify(sim.token, shard=(1, 2))
    assert (await b.recv())["op"] == 9
    # a client that waits out the window (as an identify queue does) is accepted on a new connection
    await asyncio.sleep(0.55)  # the identify window itself is what is being waited out
    c = await gw(sim.url)
    ready = await c.ready(sim.token, shard=(1, 2))
    assert ready["d"]["shard"] == [1, 2]
    assert sim.stats.snapshot()["total"]["concurrency_violations"] == 1


async def test_session_budget_decrements_then_exhaustion_closes_everything_4004(make_sim, gw):
    sim = await make_sim(shards=4, max_concurrency=4, identify_window=0.0, session_limit=3)
    headers = {"Authorization": f"Bot {sim.token}"}

    async def remaining() -> int:
        status, _, body = await rest(sim.api_url + "/gateway/bot", headers)
        assert status == 200
        return json.loads(body)["session_start_limit"]["remaining"]

    assert await remaining() == 3
    clients = []
    for i in range(3):
        c = await gw(sim.url)
        await c.ready(sim.token, shard=(i, 4))
        clients.append(c)
        assert await remaining() == 2 - i
    # the budget is gone: the next Identify closes every session with 4004
    last = await gw(sim.url)
    await last.identify(sim.token, shard=(3, 4))
    for c in [*clients, last]:
        ended = await c.ended()
        assert ended.code == 4004, ended
    snap = sim.stats.snapshot()
    assert len(violations(snap, 4004)) == 4
    assert snap["total"]["identifies"] == 3
    assert all(s["state"] == "invalidated" for s in snap["sessions"].values())
    # the token was reset: even a Resume is refused
    r = await gw(sim.resume_url)
    await r.resume(sim.token, next(iter(snap["sessions"])), 0)
    assert (await r.ended()).code == 4004
    # ... and so is REST: the token was reset, as Discord does when the budget runs out
    status, _, _ = await rest(sim.api_url + "/gateway/bot", headers)
    assert status == 401


async def resumable_session(sim, gw, **kw):
    c = await gw(sim.url)
    ready = await c.ready(sim.token, **kw)
    await c.heartbeat()  # confirm what we have
    await c.recv_until(op=11)
    return c, ready["d"]["session_id"]


@pytest.mark.parametrize("code", [1000, 1001])
async def test_client_close_1000_1001_invalidates(sim, gw, code):
    c, session_id = await resumable_session(sim, gw)
    await c.close(code)
    await sim.wait_until(lambda s: s["sessions"][session_id]["state"] == "closed", 5)
    r = await gw(sim.resume_url)
    await r.resume(sim.token, session_id, c.seq)
    invalid = await r.recv()
    assert invalid["op"] == 9 and invalid["d"] is False
    snap = sim.stats.snapshot()
    assert snap["total"]["resumes"] == 0 and snap["total"]["violations"] == 0
    assert snap["sessions"][session_id]["lost"] == 0  # the client chose to end it


@pytest.mark.parametrize("code", [4000, 3000, 1002])
async def test_client_close_other_code_keeps_session_resumable(make_sim, gw, code):
    sim = await make_sim(guilds_per_shard=3)
    c, session_id = await resumable_session(sim, gw)
    confirmed = c.seq
    # one more dispatch that the client reads but does not confirm before leaving
    await c.send({"op": 43, "d": {"guild_id": "1", "fields": ["status"]}})
    await c.recv_until(t="CHANNEL_INFO")
    await c.close(code)
    await sim.wait_until(lambda s: s["sessions"][session_id]["state"] == "detached", 5)
    r = await gw(sim.resume_url)
    await r.resume(sim.token, session_id, confirmed)
    resumed, replayed = await r.recv_until(t="RESUMED")
    assert [p["s"] for p in replayed] == [confirmed + 1]  # replayed with its original s
    assert replayed[0]["t"] == "CHANNEL_INFO"
    assert resumed["s"] == confirmed + 2
    snap = sim.stats.snapshot()
    assert snap["total"]["resumes"] == 1 and snap["total"]["violations"] == 0
    assert snap["sessions"][session_id]["state"] == "active"


async def test_resume_after_ttl_is_invalid(make_sim, gw):
    sim = await make_sim(session_ttl=0.1)
    c, session_id = await resumable_session(sim, gw)
    await c.close(4000)
    await sim.wait_until(lambda s: s["sessions"][session_id]["state"] == "expired", 5)
    r = await gw(sim.resume_url)
    await r.resume(sim.token, session_id, c.seq)
    invalid = await r.recv()
    assert invalid["op"] == 9 and invalid["d"] is False


async def test_resume_replays_everything_missed_during_a_tcp_drop(make_sim, gw):
    sim = await make_sim(events_per_second=500, guilds_per_shard=2)
    c = await gw(sim.url)
    ready = await c.ready(sim.token)
    session_id = ready["d"]["session_id"]
    seen: list[int] = [ready["s"]]
    while len(seen) < 20:
        p = await c.recv()
        if p["op"] == 0:
            seen.append(p["s"])
    await c.heartbeat()
    c.drop()  # no close frame: the session stays resumable, the stream keeps going
    mark = seen[-1]
    await sim.wait_until(lambda s: s["sessions"][session_id]["dispatched"] >= mark + 50, 10)
    r = await gw(sim.resume_url)
    await r.resume(sim.token, session_id, mark)
    resumed, replayed = await r.recv_until(t="RESUMED")
    assert len(replayed) >= 50 and all(p["op"] == 0 for p in replayed)
    live: list[int] = []
    while len(live) < 10:  # and the live stream goes on from there
        p = await r.recv()
        if p["op"] == 0:
            live.append(p["s"])
    received = seen + [p["s"] for p in replayed] + [resumed["s"]] + live
    # every sequence number exactly once, in order: the replay carries the original s, RESUMED takes the next
    assert received == list(range(1, received[-1] + 1))
    await r.heartbeat()
    await r.recv_until(op=11)
    await r.close(1000)
    snap = await sim.wait_until(lambda s: s["sessions"][session_id]["state"] == "closed", 5)
    record = snap["sessions"][session_id]
    assert record["lost"] == 0 and record["gapless"] and record["resumes"] == 1
    assert record["replayed"] == len(replayed)
    assert snap["total"]["lost"] == 0 and snap["total"]["gapless"]


async def test_resume_on_main_url_is_counted(sim, gw):
    c, session_id = await resumable_session(sim, gw)
    await c.close(4000)
    r = await gw(sim.url)  # ignores resume_gateway_url
    await r.resume(sim.token, session_id, c.seq)
    await r.recv_until(t="RESUMED")  # lenient by default, but counted
    snap = sim.stats.snapshot()
    [v] = snap["shards"]["0"]["violations"]
    assert v["code"] == 0 and "main gateway URL" in v["reason"]


async def test_resume_on_main_url_strict_gets_op9(make_sim, gw):
    sim = await make_sim(strict_resume_url=True)
    c, session_id = await resumable_session(sim, gw)
    await c.close(4000)
    r = await gw(sim.url)
    await r.resume(sim.token, session_id, c.seq)
    invalid = await r.recv()
    assert invalid["op"] == 9 and invalid["d"] is False
    assert any("main gateway URL" in v["reason"] for v in violations(sim.stats.snapshot(), 0))
    # the resume URL from READY still works
    r2 = await gw(sim.resume_url)
    await r2.resume(sim.token, session_id, c.seq)
    await r2.recv_until(t="RESUMED")


async def test_ready_points_at_the_distinct_resume_path(sim, gw):
    c = await gw(sim.url)
    ready = await c.ready(sim.token)
    url = ready["d"]["resume_gateway_url"]
    assert url == sim.resume_url and url.rstrip("/") != sim.url.rstrip("/")
