"""Chaos controls, from Python and through the admin HTTP API under /_sim/."""

from __future__ import annotations

import asyncio
import json
import zlib

import pytest
from sim_client import rest


async def connected(sim, gw, compress=None, shard=(0, 1)):
    c = await gw(sim.url, compress=compress)
    ready = await c.ready(sim.token, shard=shard)
    return c, ready["d"]["session_id"]


def admin(sim, action: str, shard: int = 0, method: str = "POST"):
    return rest(f"{sim.admin_url}/shards/{shard}/{action}", method=method)


async def test_reconnect_sends_op7_then_closes_4000_if_the_client_stays(make_sim, gw):
    sim = await make_sim(reconnect_close_after=0.2)
    c, session_id = await connected(sim, gw)
    assert sim.reconnect(0) == 1
    p, _ = await c.recv_until(op=7)
    assert p == {"t": None, "s": None, "op": 7, "d": None}
    ended = await c.ended()
    assert ended.code == 4000
    snap = sim.stats.snapshot()
    assert snap["sessions"][session_id]["state"] == "detached"  # still resumable
    assert snap["total"]["violations"] == 0


@pytest.mark.parametrize("resumable", [True, False])
async def test_invalidate_sends_op9(make_sim, gw, resumable):
    sim = await make_sim(identify_window=0.0)
    c, session_id = await connected(sim, gw)
    assert sim.invalidate(0, resumable=resumable) == 1
    p, _ = await c.recv_until(op=9)
    assert p["d"] is resumable
    state = sim.stats.snapshot()["sessions"][session_id]["state"]
    if resumable:
        assert state == "active"
    else:
        assert state == "invalidated"
        ready = await c.ready(sim.token)  # the socket stays open for a new Identify
        assert ready["d"]["session_id"] != session_id


async def test_zombie_stops_acks(sim, gw):
    c, _ = await connected(sim, gw)
    assert sim.zombie(0) == 1
    await c.heartbeat()
    await sim.wait_until(lambda s: s["shards"]["0"]["heartbeats"] == 1, 5)  # received, not ACKed
    sim.zombie(0, on=False)
    await c.heartbeat()
    await c.recv_until(op=11)
    await c.send({"op": 43, "d": {"guild_id": "1", "fields": ["status"]}})
    _, between = await c.recv_until(t="CHANNEL_INFO")
    assert all(p["op"] != 11 for p in between)  # exactly one ACK came for the two heartbeats


async def test_drop_without_close_frame_keeps_session(sim, gw):
    c, session_id = await connected(sim, gw)
    assert sim.drop(0) == 1
    ended = await c.ended()
    assert ended.code is None  # no close frame
    snap = await sim.wait_until(lambda s: s["sessions"][session_id]["state"] == "detached", 5)
    assert snap["shards"]["0"]["open_connections"] == 0


@pytest.mark.parametrize("code, state", [(4321, "invalidated"), (4000, "detached")])
async def test_close_with_any_code(sim, gw, code, state):
    c, session_id = await connected(sim, gw)
    assert sim.close(0, code, "chaos") == 1
    ended = await c.ended()
    assert (ended.code, ended.reason) == (code, "chaos")
    assert sim.stats.snapshot()["sessions"][session_id]["state"] == state


async def test_request_heartbeat(sim, gw):
    c, _ = await connected(sim, gw)
    sim.request_heartbeat(0)
    p, _ = await c.recv_until(op=1)
    assert p["d"] is None


async def test_corrupt_json_opcode_event(sim, gw):
    c, _ = await connected(sim, gw)
    await c.recv_until(t="GUILD_CREATE")
    await c.recv_until(t="GUILD_CREATE")
    sim.corrupt(0, "json")
    raw = await asyncio.wait_for(c.ws.recv(), 5)
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    sim.corrupt(0, "opcode")
    assert (await c.recv())["op"] == 99
    before = c.seq
    sim.corrupt(0, "event")
    p = await c.recv()
    assert p["t"] == "SIM_UNKNOWN_EVENT" and p["s"] == before + 1  # a real dispatch, in sequence
    with pytest.raises(ValueError):
        sim.corrupt(0, "nonsense")


async def test_corrupt_compressed_breaks_the_inflater(sim, gw):
    c, _ = await connected(sim, gw, compress="zlib-stream")
    sim.corrupt(0, "compressed")
    with pytest.raises(zlib.error):
        while True:
            await c.recv()


async def test_pause_and_unpause_the_stream(make_sim, gw):
    sim = await make_sim(events_per_second=500)
    c, session_id = await connected(sim, gw)
    await sim.wait_until(lambda s: s["sessions"][session_id]["dispatched"] > 10, 5)
    assert sim.pause(0) == 1
    paused_at = sim.stats.snapshot()["sessions"][session_id]["dispatched"]
    await asyncio.sleep(0.2)  # proving an absence: ~10 stream ticks at 500/s must add nothing
    assert sim.stats.snapshot()["sessions"][session_id]["dispatched"] == paused_at
    sim.unpause(0)
    await sim.wait_until(lambda s: s["sessions"][session_id]["dispatched"] > paused_at + 10, 5)


async def test_delay_adds_latency_and_keeps_order(sim, gw):
    c, _ = await connected(sim, gw)
    await c.recv_until(t="GUILD_CREATE")
    await c.recv_until(t="GUILD_CREATE")
    assert sim.delay(0, 0.3) == 1
    loop = asyncio.get_running_loop()
    start = loop.time()
    await c.heartbeat()
    await c.send({"op": 43, "d": {"guild_id": "1", "fields": ["status"]}})
    assert (await c.recv())["op"] == 11
    assert loop.time() - start >= 0.3  # a lower bound the sim guarantees (cannot flake)
    assert (await c.recv())["t"] == "CHANNEL_INFO"
    sim.delay(0, 0)


async def test_ack_delay_answers_one_session_s_heartbeats_after_what_it_sent_meanwhile(make_sim, gw):
    """A long round trip of one shard set's session: events generated after the heartbeat reached the gateway come
    before its ACK; the same shard number of another count is untouched."""
    sim = await make_sim(shards=2, max_concurrency=2, identify_window=0.0)
    slow, _ = await connected(sim, gw, shard=(1, 2))
    other, _ = await connected(sim, gw, shard=(1, 4))
    assert sim.ack_delay(1, 0.3, num_shards=8) == 0
    assert sim.ack_delay(1, 0.3, num_shards=2) == 1
    for c in (slow, other):
        await c.heartbeat()
        await c.send({"op": 43, "d": {"guild_id": "1", "fields": ["status"]}})
    _, before = await slow.recv_until(op=11)
    assert "CHANNEL_INFO" in [p.get("t") for p in before]  # answered after the beat, delivered before its ACK
    _, before = await other.recv_until(op=11)
    assert "CHANNEL_INFO" not in [p.get("t") for p in before]  # undelayed: the ACK first
    await other.recv_until(t="CHANNEL_INFO")
    status, _, body = await admin(sim, "ack-delay?seconds=0&shards=2", shard=1)
    assert status == 200 and json.loads(body)["affected"] == 1
    await slow.heartbeat()
    await slow.send({"op": 43, "d": {"guild_id": "1", "fields": ["status"]}})
    _, before = await slow.recv_until(op=11)
    assert "CHANNEL_INFO" not in [p.get("t") for p in before]
    for query, message in (("ack-delay?seconds=nan", "ack delay must be a finite number of seconds >= 0, got nan"),
                           ("ack-delay?seconds=1&shards=-2", "shards must be a non-negative integer, got '-2'")):
        status, _, body = await admin(sim, query, shard=1)
        assert status == 400 and json.loads(body) == {"message": message}
    assert sim.sessions[next(iter(sim.sessions))].ack_delay == 0.0


# ---- the same controls over HTTP ------------------------------------------------------------------


async def test_admin_api_chaos(make_sim, gw):
    sim = await make_sim(shards=2, max_concurrency=2, identify_window=0.0, reconnect_close_after=30.0)
    c, session_id = await connected(sim, gw, shard=(1, 2))

    async def post(action: str, shard: int = 1) -> dict:
        status, head, body = await admin(sim, action, shard)
        assert status == 200 and head["content-type"] == "application/json", body
        return json.loads(body)

    assert await post("reconnect") == {"shard": 1, "action": "reconnect", "affected": 1}
    assert (await c.recv_until(op=7))[0]["op"] == 7
    assert (await post("invalidate?resumable=true"))["affected"] == 1
    assert (await c.recv_until(op=9))[0]["d"] is True
    assert (await post("heartbeat"))["affected"] == 1
    assert (await c.recv_until(op=1))[0]["op"] == 1
    await post("corrupt?kind=opcode")
    assert (await c.recv_until(op=99))[0]["d"] == {"sim": True}
    await post("zombie?on=true")
    assert sim.connections_of(1)[0].zombie
    await post("zombie?on=false")
    assert not sim.connections_of(1)[0].zombie
    await post("delay?seconds=0.25")
    assert sim.connections_of(1)[0].delay == 0.25
    await post("delay?seconds=0")
    assert (await post("pause"))["affected"] == 1
    assert sim.sessions[session_id].stream_paused
    await post("unpause")
    assert not sim.sessions[session_id].stream_paused
    assert (await post("reconnect", shard=0))["affected"] == 0  # nobody on shard 0
    assert await post("close?code=4100&reason=bye") == {"shard": 1, "action": "close", "affected": 1}
    ended = await c.ended()
    assert (ended.code, ended.reason) == (4100, "bye")

    d, _ = await connected(sim, gw, shard=(0, 2))
    assert (await post("drop", shard=0))["affected"] == 1
    assert (await d.ended()).code is None


async def test_admin_api_stats_config_and_errors(sim, gw):
    c, session_id = await connected(sim, gw)
    status, head, body = await rest(f"{sim.admin_url}/stats")
    assert status == 200 and head["content-type"] == "application/json"
    snap = json.loads(body)
    assert snap["total"]["identifies"] == 1 and session_id in snap["sessions"]
    assert snap["sessions"][session_id]["gapless"] is True
    assert set(snap["shards"]["0"]) >= {"connections", "identifies", "resumes", "heartbeats", "violations",
                                        "concurrency_violations", "ratelimit_closes", "dispatched"}
    status, _, body = await rest(f"{sim.admin_url}/config")
    cfg = json.loads(body)
    assert status == 200 and cfg["token"] == "<redacted>" and sim.token not in body.decode()
    assert (await admin(sim, "reconnect", method="GET"))[0] == 405
    assert (await admin(sim, "explode"))[0] == 404
    assert (await admin(sim, "corrupt?kind=nonsense"))[0] == 400
    assert (await admin(sim, "close?code=abc"))[0] == 400
    assert (await rest(f"{sim.admin_url}/shards/x/drop", method="POST"))[0] == 400
    assert (await rest(f"{sim.admin_url}/nothing"))[0] == 404
    # none of that touched the connection
    await c.heartbeat()
    assert (await c.recv_until(op=11))[0]["op"] == 11


@pytest.mark.parametrize("code", [70000, 999, 1005, 1006, 5000])
async def test_close_with_an_unsendable_code_is_refused(sim, gw, code):
    """A close code that cannot go on the wire is a 400 (ValueError in Python), and the session is untouched."""
    c, session_id = await connected(sim, gw)
    with pytest.raises(ValueError):
        sim.close(0, code)
    status, _, _ = await admin(sim, f"close?code={code}")
    assert status == 400
    assert sim.stats.snapshot()["sessions"][session_id]["state"] == "active"
    await c.heartbeat()
    assert (await c.recv_until(op=11))[0]["op"] == 11


# ---- chaos at connect and close time (SimConfig fields, also settable on a running simulator) -----

UPGRADE = (b"GET /?v=10&encoding=json HTTP/1.1\r\nHost: sim\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


async def test_refuse_connections_drops_the_next_n_handshakes(make_sim, gw):
    sim = await make_sim(refuse_connections=2)
    for _ in range(2):
        reader, writer = await asyncio.open_connection(sim.config.host, sim.port)
        writer.write(UPGRADE)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # dropped: no 101, no close frame
        writer.close()
    assert sim.config.refuse_connections == 0
    c, _ = await connected(sim, gw)  # the third connects normally
    t = sim.stats.snapshot()["total"]
    assert (t["connections"], t["identifies"], t["violations"]) == (1, 1, 0)
    status, _, _ = await rest(f"{sim.api_url}/gateway")  # REST was never refused
    assert status == 200


async def test_refuse_resume_connections_drops_only_handshakes_to_the_resume_url(make_sim, gw):
    sim = await make_sim(refuse_resume_connections=2)
    c, session_id = await connected(sim, gw)  # the main gateway URL answers
    c.drop()
    snap = await sim.wait_until(lambda s: s["sessions"][session_id]["state"] == "detached", 5)
    for _ in range(2):
        reader, writer = await asyncio.open_connection(sim.config.host, sim.port)
        writer.write(UPGRADE.replace(b"GET /?", b"GET /resume-gateway/?"))
        assert await asyncio.wait_for(reader.read(), 5) == b""  # dropped: no 101, no close frame
        writer.close()
    assert sim.config.refuse_resume_connections == 0
    r = await gw(sim.resume_url)  # the third connects normally
    await r.resume(sim.token, session_id, snap["sessions"][session_id]["dispatched"])
    await r.recv_until(t="RESUMED")
    t = sim.stats.snapshot()["total"]
    assert (t["connections"], t["identifies"], t["resumes"], t["violations"]) == (2, 1, 1, 0)


async def test_silent_handshake_never_answers_until_switched_off(make_sim, gw):
    sim = await make_sim(silent_handshake=True)
    reader, writer = await asyncio.open_connection(sim.config.host, sim.port)
    writer.write(UPGRADE)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.3)  # nothing comes, and the connection stays open
    assert not reader.at_eof() and sim.stats.snapshot()["total"]["connections"] == 0
    writer.close()
    sim.config.silent_handshake = False
    await connected(sim, gw)


async def test_ignore_close_leaves_the_client_waiting_for_the_answer(make_sim, gw):
    sim = await make_sim(ignore_close=True)
    c, session_id = await connected(sim, gw)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(c.ws.close(4000), 0.3)  # the close handshake never completes
    snap = await sim.wait_until(lambda s: s["shards"]["0"]["closes"].get("client 4000 ignored") == 1)
    assert snap["total"]["open_connections"] == 1  # the TCP connection stays until the client drops it
    c.drop()
    snap = await sim.wait_until(lambda s: s["total"]["open_connections"] == 0)
    assert snap["sessions"][session_id]["state"] == "detached"  # resumable, as after a 4000 close


@pytest.mark.parametrize("name", ["refuse_connections", "refuse_resume_connections"])
def test_refuse_connections_must_not_be_negative(name):
    from sim import SimConfig

    with pytest.raises(ValueError, match=f"{name} must be >= 0"):
        SimConfig(**{name: -1})
