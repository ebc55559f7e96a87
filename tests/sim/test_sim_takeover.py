"""A session resumed by another client (failover): what is lost, and the accounting of overlapping connections.

A Resume on another connection takes the session. If the old connection is still open, the Resume is counted as
overlapping (two live connections for one session), the old connection gets close 4000, and every payload that
still arrives on it is counted as a frame after takeover.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from sim_client import rest


async def streamed(sim, gw, count: int):
    """Client A: identified, holding `count` dispatches; returns it, its session id and the sequences it saw."""
    a = await gw(sim.url)
    ready = await a.ready(sim.token)
    seen = [ready["s"]]
    while len(seen) < count:
        p = await a.recv()
        if p["op"] == 0:
            seen.append(p["s"])
    return a, ready["d"]["session_id"], seen


@pytest.mark.parametrize("from_confirmed", [False, True], ids=["last-seen-seq", "older-confirmed-seq"])
async def test_another_client_resumes_a_killed_clients_session_without_loss(make_sim, gw, from_confirmed):
    sim = await make_sim(events_per_second=500)
    a, session_id, seen = await streamed(sim, gw, 10)
    await a.heartbeat()  # confirms seen[-1]: what a state store would have saved
    confirmed = seen[-1]
    _, before_ack = await a.recv_until(op=11)
    seen += [p["s"] for p in before_ack if p["op"] == 0]
    while len(seen) < 20:
        p = await a.recv()
        if p["op"] == 0:
            seen.append(p["s"])
    a.drop()  # killed: the socket goes without a close frame
    await sim.wait_until(lambda s: s["sessions"][session_id]["state"] == "detached"
                         and s["sessions"][session_id]["dispatched"] >= seen[-1] + 30, 10)
    b = await gw(sim.resume_url)  # the new owner: another client, knowing only the session id and a seq
    mark = confirmed if from_confirmed else seen[-1]
    await b.resume(sim.token, session_id, mark)
    resumed, replayed = await b.recv_until(t="RESUMED")
    received = [s for s in seen if s <= mark] + [p["s"] for p in replayed] + [resumed["s"]]
    assert received == list(range(1, resumed["s"] + 1))  # every sequence once, in order, across both clients
    await b.heartbeat()
    await b.recv_until(op=11)
    snap = sim.stats.snapshot()
    record = snap["sessions"][session_id]
    assert record["lost"] == 0 and record["gapless"] and record["resumes"] == 1
    assert record["confirmed"] == resumed["s"] and record["connected"]
    assert record["overlapping_resumes"] == 0 and record["frames_after_takeover"] == 0
    total = snap["total"]
    assert total["lost"] == 0 and total["gapless"] and total["identifies"] == 1
    assert total["overlapping_resumes"] == 0 and total["frames_after_takeover"] == 0
    assert snap["shards"]["0"]["takeovers"] == []


async def test_resume_while_the_old_connection_is_open_is_counted_and_its_later_frames_too(make_sim, gw):
    sim = await make_sim(guilds_per_shard=3)
    a, session_id, seen = await streamed(sim, gw, 4)  # READY and 3 GUILD_CREATEs
    a.ws.transport.pause_reading()  # A is frozen (SIGSTOP): its socket stays open, what the sim sends waits
    b = await gw(sim.resume_url)
    await b.resume(sim.token, session_id, seen[-1])
    resumed, replayed = await b.recv_until(t="RESUMED")
    assert replayed == [] and resumed["s"] == seen[-1] + 1
    snap = sim.stats.snapshot()
    record, shard = snap["sessions"][session_id], snap["shards"]["0"]
    assert record["overlapping_resumes"] == 1 and record["frames_after_takeover"] == 0
    assert shard["overlapping_resumes"] == 1 and snap["total"]["overlapping_resumes"] == 1
    [overlap] = shard["takeovers"]
    assert overlap["event"] == "overlapping_resume" and overlap["shard"] == 0 and overlap["session"] == session_id
    assert overlap["at"] >= 0 and overlap["old_idle"] >= 0
    assert record["lost"] == 0 and record["gapless"] and record["connected"]

    # A wakes up and heartbeats on the old session's behalf before it reads the close: counted, not answered
    await a.heartbeat()
    snap = await sim.wait_until(lambda s: s["total"]["frames_after_takeover"] == 1, 5)
    record, shard = snap["sessions"][session_id], snap["shards"]["0"]
    assert record["frames_after_takeover"] == 1 and shard["frames_after_takeover"] == 1
    late = shard["takeovers"][1]
    assert late["event"] == "frame_after_takeover" and late["session"] == session_id and late["op"] == 1
    assert late["shard"] == 0
    assert late["at"] >= overlap["at"]
    assert shard["heartbeats"] == 0 and record["confirmed"] == seen[-1]  # nothing of it reached the session
    _, body = (await rest(f"{sim.admin_url}/stats"))[::2]
    over_http = json.loads(body)
    assert over_http["total"]["overlapping_resumes"] == 1 and over_http["total"]["frames_after_takeover"] == 1
    assert over_http["sessions"][session_id]["frames_after_takeover"] == 1

    a.ws.transport.resume_reading()
    ended = await a.ended()
    assert ended.code == 4000 and ended.reason == "session resumed on another connection"
    assert ended.received == []  # no ACK for the late heartbeat
    await sim.wait_until(lambda s: s["shards"]["0"]["open_connections"] == 1, 5)  # A answered the close: gone
    await b.heartbeat()  # the new owner is unaffected
    await b.recv_until(op=11)
    snap = sim.stats.snapshot()
    assert snap["sessions"][session_id]["state"] == "active" and snap["sessions"][session_id]["lost"] == 0
    assert snap["total"]["frames_after_takeover"] == 1 and snap["total"]["violations"] == 0


async def test_a_superseded_connection_that_never_answers_is_dropped_after_the_linger(make_sim, gw):
    sim = await make_sim(takeover_linger=0.2)
    a, session_id, seen = await streamed(sim, gw, 1)
    a.ws.transport.pause_reading()  # frozen for good
    b = await gw(sim.resume_url)
    await b.resume(sim.token, session_id, seen[-1])
    await b.recv_until(t="RESUMED")
    snap = await sim.wait_until(lambda s: s["shards"]["0"]["open_connections"] == 1, 5)
    assert snap["shards"]["0"]["connections"] == 2 and snap["shards"]["0"]["closes"] == {"4000": 1}
    assert snap["total"]["overlapping_resumes"] == 1 and snap["total"]["frames_after_takeover"] == 0
    assert snap["sessions"][session_id]["connected"]


async def test_the_old_owner_taking_the_session_back_is_another_overlap(sim, gw):
    a, session_id, seen = await streamed(sim, gw, 1)
    b = await gw(sim.resume_url)
    await b.resume(sim.token, session_id, seen[-1])
    resumed, _ = await b.recv_until(t="RESUMED")
    assert (await a.ended()).code == 4000
    a2 = await gw(sim.resume_url)  # the woken host resumes instead of standing down
    await a2.resume(sim.token, session_id, resumed["s"])
    await a2.recv_until(t="RESUMED")
    snap = sim.stats.snapshot()
    assert snap["total"]["overlapping_resumes"] == 2 and snap["sessions"][session_id]["resumes"] == 2
    assert [t["event"] for t in snap["shards"]["0"]["takeovers"]] == ["overlapping_resume"] * 2
    assert (await b.ended()).code == 4000



async def test_a_resume_after_the_old_client_sent_its_close_is_no_overlap(make_sim, gw):
    sim = await make_sim(ignore_close=True)  # the sim never answers A's close: its TCP connection stays open
    a, session_id, seen = await streamed(sim, gw, 1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(a.ws.close(4000), 0.3)
    await sim.wait_until(lambda s: s["shards"]["0"]["closes"].get("client 4000 ignored") == 1)
    b = await gw(sim.resume_url)
    await b.resume(sim.token, session_id, seen[-1])
    await b.recv_until(t="RESUMED")
    snap = sim.stats.snapshot()
    assert snap["shards"]["0"]["open_connections"] == 2  # A's socket is open, but its client had left
    assert snap["total"]["overlapping_resumes"] == 0 and snap["shards"]["0"]["takeovers"] == []
