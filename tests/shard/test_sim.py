"""Every behaviour of the Shard, against the strict local simulator (`sim/`)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from shard import (CloseFrame, Config, EventTypeFlags, GatewayError, InMemoryQueue, Intents, RequestGuildMembers,
                   Session, ShardId, ShardState, UpdatePresence, create_recommended)
from shard.close_codes import close_reason
from shard.error import ErrorKind
from shard.metrics import register_collector
from shard.protocol import RESUME_URL_ATTEMPTS
from sim import Simulator

from shard_helpers import Recorder, call, feed_backlog, shard_stats

pytestmark = pytest.mark.timeout(60)

FAST = {"identify_window": 0.2, "heartbeat_interval": 1000, "session_ttl": 30.0}


def no_violations(snap: dict[str, Any]) -> bool:
    return snap["total"]["violations"] == 0


async def ready(rec: Recorder, n: int = 1) -> None:
    await rec.wait_for(lambda r: r.count("READY") >= n)


# ---- connect, identify, heartbeat -----------------------------------------------------------------

async def test_identify_ready_guilds_and_state(shards) -> None:
    async with Simulator(**FAST) as sim:
        shard = shards(sim)
        assert shard.state == ShardState.Disconnected(0)
        rec = Recorder(shard)
        await rec.wait_for(lambda r: r.count("GUILD_CREATE") == 2)
        assert rec.types()[:2] == ["GATEWAY_HELLO", "READY"]
        ready_event = rec.events[1]
        assert ready_event.seq == 1 and ready_event.data.resume_gateway_url == sim.resume_url
        assert shard.state == ShardState.ACTIVE
        assert shard.session is not None and shard.session.id == ready_event.data.session_id
        assert shard.resume_url == sim.resume_url
        snap = sim.stats.snapshot()
        assert shard_stats(snap)["identifies"] == 1 and no_violations(snap)
        await rec.stop()


async def test_heartbeats_carry_last_sequence_even_without_a_consumer(shards) -> None:
    async with Simulator(events_per_second=50, **FAST) as sim:
        shard = shards(sim, max_pending_events=10_000)
        shard.start()  # nobody calls next_event: heartbeating must go on by itself
        snap = await sim.wait_until(lambda s: shard_stats(s)["heartbeats"] >= 3, timeout=15)
        sess = next(iter(snap["sessions"].values()))
        assert sess["confirmed"] > 1  # heartbeats carried sequence numbers received meanwhile
        assert shard_stats(snap)["connections"] == 1 and no_violations(snap)
        lat = shard.latency
        assert lat.periods >= 2 and lat.average is not None and len(lat.recent) >= 2
        assert lat.sent is not None and lat.received is not None


async def test_server_heartbeat_request_is_answered_at_once(shards) -> None:
    async with Simulator(identify_window=0.2, heartbeat_interval=60_000) as sim:
        shard = shards(sim)
        rec = Recorder(shard)
        await ready(rec)
        before = shard_stats(sim.stats.snapshot())["heartbeats"]
        await call(sim.request_heartbeat(0))
        await sim.wait_until(lambda s: shard_stats(s)["heartbeats"] > before, timeout=2)
        await rec.wait_for(lambda r: "GATEWAY_HEARTBEAT" in r.types())
        await rec.stop()


# ---- zombie, reconnect, invalid session ----------------------------------------------------------

async def test_zombie_connection_resumes_to_resume_url(shards) -> None:
    async with Simulator(**FAST) as sim:
        shard = shards(sim)
        rec = Recorder(shard)
        await ready(rec)
        await call(sim.zombie(0, True))
        snap = await sim.wait_until(lambda s: shard_stats(s)["resumes"] >= 1, timeout=10)
        stats = shard_stats(snap)
        assert stats["identifies"] == 1
        assert not any(k in stats["closes"] for k in ("client 1000", "client 1001"))
        assert no_violations(snap)  # also: the Resume went to resume_gateway_url
        await rec.wait_for(lambda r: "RESUMED" in r.types())
        closes = [e.data for e in rec.events if e.type == "GATEWAY_CLOSE"]
        assert closes == [CloseFrame(1006, "")]
        assert shard.state == ShardState.ACTIVE
        await rec.stop()


async def test_op7_reconnect_resumes(shards) -> None:
    async with Simulator(**FAST) as sim:
        shard = shards(sim)
        rec = Recorder(shard)
        await ready(rec)
        await call(sim.reconnect(0))
        snap = await sim.wait_until(lambda s: shard_stats(s)["resumes"] == 1, timeout=10)
        assert shard_stats(snap)["identifies"] == 1 and "client 4000" in shard_stats(snap)["closes"]
        assert no_violations(snap)
        await rec.wait_for(lambda r: "RESUMED" in r.types())
        assert "GATEWAY_RECONNECT" in rec.types()
        await rec.stop()


async def test_invalid_session_resumable_resumes(shards) -> None:
    async with Simulator(**FAST) as sim:
        shard = shards(sim)
        rec = Recorder(shard)
        await ready(rec)
        await call(sim.invalidate(0, True))
        snap = await sim.wait_until(lambda s: shard_stats(s)["resumes"] == 1, timeout=10)
        assert shard_stats(snap)["identifies"] == 1 and no_violations(snap)
        await rec.stop()


async def test_invalid_session_not_resumable_identifies_after_a_wait(shards) -> None:
    async with Simulator(**FAST) as sim:
        shard = shards(sim)
        rec = Recorder(shard)
        await ready(rec)
        await call(sim.invalidate(0, False))
        snap = await sim.wait_until(lambda s: shard_stats(s)["identifies"] == 2, timeout=10)
        assert shard_stats(snap)["resumes"] == 0 and no_violations(snap)
        await ready(rec, 2)
        invalid = [e for e in rec.events if e.type == "GATEWAY_INVALID_SESSION"]
        assert invalid and invalid[0].data.resumable is False
        await rec.stop()


async def test_invalid_session_default_delay_is_one_to_five_seconds() -> None:
    cfg = Config("t", 0)
    assert cfg.invalid_session_delay == (1.0, 5.0)


# ---- close codes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("code", [4004, 4010, 4011, 4012, 4013, 4014])
async def test_fatal_close_codes_stop_the_shard(shards, code: int) -> None:
    async with Simulator(**FAST) as sim:
        shard = shards(sim)
        rec = Recorder(shard)
        await ready(rec)
        await call(sim.close(0, code))
        await rec.wait_for(lambda r: any(e.is_fatal() for e in r.errors))
        fatal = rec.errors[-1]
        assert fatal.close_code == code and fatal.kind is ErrorKind.FATALLY_CLOSED
        assert fatal.reason.startswith(close_reason(code))  # the plain-English reason for this code
        assert shard.state == ShardState.FATALLY_CLOSED
        with pytest.raises(GatewayError) as again:
            await shard.next_event()
        assert again.value.is_fatal()
        await asyncio.sleep(0.2)  # a reconnect would have happened by now (backoff_base 0.05)
        assert shard_stats(sim.stats.snapshot())["connections"] == 1
        async for _ in shard:  # iteration ends after a fatal close
            pytest.fail("no events after a fatal close")


@pytest.mark.parametrize("code", [4003, 4005, 4007, 4008, 4009])
async def test_session_ending_close_codes_identify(shards, code: int) -> None:
    """The reference's close policy. The simulator keeps a session resumable after 4005 and 4008 (Discord does
    not say it ends), so a Resume there would succeed and be counted: this test would catch one."""
    async with Simulator(**FAST) as sim:
        shard = shards(sim)
        rec = Recorder(shard)
        await ready(rec)
        await call(sim.close(0, code))
        snap = await sim.wait_until(lambda s: shard_stats(s)["identifies"] == 2, timeout=10)
        assert shard_stats(snap)["resumes"] == 0 and no_violations(snap)
        assert not any(e.is_fatal() for e in rec.errors)
        await rec.stop()


@pytest.mark.parametrize("how", ["4000", "4001", "1000", "drop"])
async def test_other_closes_and_transport_errors_resume(shards, how: str) -> None:
    async with Simulator(**FAST) as sim:
        shard = shards(sim)
        rec = Recorder(shard)
        await ready(rec)
        if how == "drop":
            await call(sim.drop(0))
        else:
            await call(sim.close(0, int(how)))
        snap = await sim.wait_until(lambda s: shard_stats(s)["resumes"] == 1, timeout=10)
        assert shard_stats(snap)["identifies"] == 1 and no_violations(snap)
        await rec.wait_for(lambda r: "RESUMED" in r.types())
        expected = 1006 if how == "drop" else int(how)
        assert [e.data.code for e in rec.events if e.type == "GATEWAY_CLOSE"] == [expected]
        await rec.stop()


# ---- backoff and timeouts ------------------------------------------------------------------------

async def test_failed_connects_back_off_with_growing_attempts(shards) -> None:
    async with Simulator(refuse_connections=4, **FAST) as sim:
        shard = shards(sim, backoff_base=0.02, backoff_max=0.1)
        seen: list[int] = []
        for _ in range(4):
            with pytest.raises(GatewayError) as info:
                await asyncio.wait_for(shard.next_event(), 5)
            assert info.value.kind is ErrorKind.RECONNECT and not info.value.is_fatal()
            seen.append(shard.state.reconnect_attempts)
        assert seen == [1, 2, 3, 4]
        rec = Recorder(shard)
        await ready(rec)  # the fifth connect gets through
        assert shard.state == ShardState.ACTIVE and shard.state.reconnect_attempts == 0
        snap = sim.stats.snapshot()
        assert shard_stats(snap)["connections"] == 1 and shard_stats(snap)["identifies"] == 1 and no_violations(snap)
        await rec.stop()


async def test_a_network_blip_keeps_the_session(shards) -> None:
    """Connects failing for a while (refused here; an outage of our own network fails them all) do not cost the
    session: each try of the gateway URL (after RESUME_URL_ATTEMPTS failures at the resume URL) fails too, so
    the session is kept, and the Resume goes to the resume URL once it answers, never to the gateway URL."""
    refused = 2 * (RESUME_URL_ATTEMPTS + 1)  # the gateway URL is tried (and refused) twice
    async with Simulator(**FAST) as sim:
        shard = shards(sim, backoff_base=0.02, backoff_max=0.1)
        rec = Recorder(shard)
        await ready(rec)
        sim.config.refuse_connections = refused
        await call(sim.drop(0))
        await rec.wait_for(lambda r: "RESUMED" in r.types() or r.count("READY") == 2)
        snap = sim.stats.snapshot()
        assert (shard_stats(snap)["identifies"], shard_stats(snap)["resumes"]) == (1, 1)
        assert [e.kind for e in rec.errors] == [ErrorKind.RECONNECT] * refused
        assert no_violations(snap)  # in particular no Resume sent to the main gateway URL
        [sess] = snap["sessions"].values()
        assert sess["resumes"] == 1 and sess["lost"] == 0
        await rec.stop()


async def test_an_unreachable_resume_url_identifies_at_the_gateway_url(shards) -> None:
    """The resume host is down while the gateway URL answers: after RESUME_URL_ATTEMPTS failed connects to the
    resume URL the shard identifies at the gateway URL (the reference: "If you can't resume, [...] use the
    cached URL and Identify"), without a Resume there."""
    async with Simulator(**FAST) as sim:
        shard = shards(sim)
        rec = Recorder(shard)
        await ready(rec)
        first = shard.session
        sim.config.refuse_resume_connections = 100
        await call(sim.drop(0))
        await rec.wait_for(lambda r: "RESUMED" in r.types() or r.count("READY") == 2)
        assert sim.config.refuse_resume_connections == 100 - RESUME_URL_ATTEMPTS  # then never the resume URL again
        snap = sim.stats.snapshot()
        assert (shard_stats(snap)["identifies"], shard_stats(snap)["resumes"]) == (2, 0) and no_violations(snap)
        assert [e.kind for e in rec.errors] == [ErrorKind.RECONNECT] * RESUME_URL_ATTEMPTS
        assert first is not None and shard.session is not None and shard.session.id != first.id
        await rec.stop()


async def test_connect_timeout(shards) -> None:
    async with Simulator(silent_handshake=True, **FAST) as sim:
        shard = shards(sim, connect_timeout=0.2)
        with pytest.raises(GatewayError) as info:
            await asyncio.wait_for(shard.next_event(), 5)
        assert info.value.kind is ErrorKind.RECONNECT and "timed out" in info.value.reason
        sim.config.silent_handshake = False
        rec = Recorder(shard)
        await ready(rec)  # and it keeps trying
        await rec.stop()


async def test_close_handshake_timeout(shards) -> None:
    """A gateway that never answers our close frame: the shard drops the connection after close_timeout."""
    async with Simulator(ignore_close=True, **FAST) as sim:
        shard = shards(sim, close_timeout=0.3)
        rec = Recorder(shard)
        await ready(rec)
        await rec.stop()
        session = await asyncio.wait_for(shard.close(CloseFrame.RESUME), 5)
        assert session is not None
        snap = await sim.wait_until(lambda s: s["total"]["open_connections"] == 0)  # the shard dropped it itself
        assert shard_stats(snap)["closes"] == {"client 4000 ignored": 1}


# ---- identify queue ------------------------------------------------------------------------------

async def test_identify_queue_buckets_respect_max_concurrency(shards) -> None:
    async with Simulator(shards=4, max_concurrency=2, identify_window=0.3, heartbeat_interval=5000) as sim:
        queue = InMemoryQueue(max_concurrency=2, interval=0.35)
        recs = [Recorder(shards(sim, n, 4, queue=queue)) for n in range(4)]
        for rec in recs:
            await ready(rec)
        snap = sim.stats.snapshot()
        assert snap["total"]["identifies"] == 4
        assert snap["total"]["concurrency_violations"] == 0 and no_violations(snap)
        assert queue.outcomes == {0: True, 1: True, 2: True, 3: True}
        for rec in recs:
            await rec.stop()


async def test_identify_queue_without_spacing_is_caught_by_sim(shards) -> None:
    """Negative control: with no spacing the simulator answers op 9; the shard recovers through the queue."""
    async with Simulator(shards=2, max_concurrency=1, identify_window=0.3, heartbeat_interval=5000) as sim:
        bad = WatchedQueue(sim, max_concurrency=1, interval=0.0)
        recs = [Recorder(shards(sim, n, 2, queue=bad)) for n in range(2)]
        await sim.wait_until(lambda s: s["total"]["concurrency_violations"] >= 1, timeout=10)
        for rec in recs:
            await ready(rec)
        refused = [n for what, n, ready_ in bad.calls if what == "identified" and ready_ is False]
        assert len(refused) >= 1  # the op 9 was reported to the queue as a failed Identify...
        assert bad.outcomes == {0: True, 1: True}  # ...and both shards identified in the end
        for rec in recs:
            await rec.stop()


class WatchedQueue(InMemoryQueue):
    """An InMemoryQueue that snapshots the simulator at every grant, and logs what the shards report."""

    def __init__(self, sim: Simulator, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.sim = sim
        self.at_grant: dict[int, dict[str, Any]] = {}
        self.calls: list[tuple[str, int, Any]] = []

    async def enqueue(self, shard_id: int) -> None:
        self.calls.append(("enqueue", shard_id, None))
        await super().enqueue(shard_id)
        self.at_grant[shard_id] = self.sim.stats.snapshot()
        self.calls.append(("granted", shard_id, None))

    def identified(self, shard_id: int, ready: bool) -> None:
        super().identified(shard_id, ready)
        self.calls.append(("identified", shard_id, ready))

    def unused(self, shard_id: int) -> None:
        super().unused(shard_id)
        self.calls.append(("unused", shard_id, None))


async def test_shards_wait_for_their_identify_turn_without_a_connection(shards) -> None:
    """Shards queued for Identify hold no gateway connection (and so send no heartbeats) until their turn."""
    async with Simulator(shards=4, max_concurrency=1, identify_window=0.3, heartbeat_interval=5000) as sim:
        queue = WatchedQueue(sim, max_concurrency=1, interval=0.35)
        made = [shards(sim, n, 4, queue=queue) for n in range(4)]
        recs = [Recorder(shard) for shard in made]
        await ready(recs[0])
        # Shard 3 is still waiting its turn (two more turns come first): Identifying, with no connection.
        assert made[3].state == ShardState.IDENTIFYING and made[3].latency.sent is None
        snap = sim.stats.snapshot()
        assert snap["total"]["open_connections"] <= 3 and snap["total"]["connections"] <= 3
        assert shard_stats(snap, 3)["open_connections"] == 0 and shard_stats(snap, 3)["heartbeats"] == 0
        for rec in recs:
            await ready(rec)
        # At the moment shard k got its turn, exactly k connections had ever been opened (one per earlier
        # turn): none of the queued shards had connected.
        for k in range(4):
            at = queue.at_grant[k]
            assert at["total"]["connections"] == k and at["total"]["open_connections"] <= k
            assert shard_stats(at, k)["connections"] == 0 and shard_stats(at, k)["open_connections"] == 0
        snap = sim.stats.snapshot()
        assert snap["total"]["identifies"] == 4 and snap["total"]["connections"] == 4
        assert snap["total"]["concurrency_violations"] == 0 and no_violations(snap)
        assert queue.outcomes == {0: True, 1: True, 2: True, 3: True} and queue.unused_grants == 0
        for rec in recs:
            await rec.stop()


async def test_a_granted_turn_whose_connect_fails_is_given_back_and_retried(shards) -> None:
    async with Simulator(max_concurrency=1, identify_window=0.3, heartbeat_interval=5000, refuse_connections=1) as sim:
        queue = WatchedQueue(sim, max_concurrency=1, interval=0.35)
        rec = Recorder(shards(sim, queue=queue))
        await ready(rec)
        assert rec.errors and rec.errors[0].kind is ErrorKind.RECONNECT  # the failed connect
        # The first turn was granted, the connect failed before Identify: reported as a failed identify (a
        # cluster coordinator frees the slot) and refunded; the shard then waited for a new turn.
        assert queue.calls == [("enqueue", 0, None), ("granted", 0, None), ("identified", 0, False),
                               ("unused", 0, None), ("enqueue", 0, None), ("granted", 0, None),
                               ("identified", 0, True)]
        assert queue.unused_grants == 1 and queue.remaining == 999 and queue.granted == 2
        snap = sim.stats.snapshot()
        assert snap["total"]["identifies"] == 1 and snap["total"]["concurrency_violations"] == 0
        assert no_violations(snap) and snap["total"]["connections"] == 1 and sim.config.refuse_connections == 0
        await rec.stop()


async def test_close_while_waiting_for_the_identify_turn(shards) -> None:
    async with Simulator(shards=2, max_concurrency=1, identify_window=0.3, heartbeat_interval=5000) as sim:
        queue = WatchedQueue(sim, max_concurrency=1, interval=60.0)  # shard 1's turn never comes in this test
        first, second = shards(sim, 0, 2, queue=queue), shards(sim, 1, 2, queue=queue)
        first.start()  # first in the queue
        second.start()
        rec = Recorder(first)
        await ready(rec)
        assert ("enqueue", 1, None) in queue.calls and second.state == ShardState.IDENTIFYING
        assert sim.stats.snapshot()["total"]["connections"] == 1  # shard 1 waits without a connection
        assert await asyncio.wait_for(second.close(), 5) is None  # cancels the wait (cancel-safe)
        with pytest.raises(GatewayError) as info:
            await asyncio.wait_for(second.next_event(), 5)
        assert info.value.kind is ErrorKind.CLOSED
        assert queue.granted == 1 and ("granted", 1, None) not in queue.calls
        assert not [c for c in queue.calls if c[0] == "identified" and c[1] == 1]  # never granted: nothing to report
        assert sim.stats.snapshot()["total"]["connections"] == 1
        await rec.stop()


# ---- ratelimiter and payload size ----------------------------------------------------------------

async def test_ratelimiter_keeps_under_the_gateway_limit(shards) -> None:
    async with Simulator(identify_window=0.2, heartbeat_interval=41250) as sim:
        shard = shards(sim, send_queue_size=200)
        rec = Recorder(shard)
        await ready(rec)
        rl = shard.ratelimiter
        assert rl is not None and rl.max == 117 and rl.available() == 116  # Identify took one
        for i in range(130):
            await shard.command(UpdatePresence(status="online" if i % 2 else "idle"))
        snap = await sim.wait_until(lambda s: shard_stats(s)["commands"].get("3", 0) >= 116, timeout=10)
        await asyncio.sleep(0.3)  # proving an absence: the other 14 stay queued until the window passes
        snap = sim.stats.snapshot()
        assert shard_stats(snap)["commands"]["3"] == 116  # the rest wait for the window
        assert shard_stats(snap)["ratelimit_closes"] == 0 and no_violations(snap)
        assert rl.available() == 0 and rl.next_available() > 0
        await rec.stop()


@pytest.mark.parametrize("ratelimit", [True, False])
async def test_a_command_queued_while_the_connection_closes_waits_for_the_next_one(shards, ratelimit: bool) -> None:
    """While a connection closes (op 7 here; also op 9, a bad Hello, a zombie) the sender waits: it used to spin,
    taking a permit of the closing connection's ratelimiter per pass (or burning CPU without one), and then
    slept about 60 s on that spent ratelimiter after the Resume."""
    async with Simulator(**FAST) as sim:
        shard = shards(sim, ratelimit_messages=ratelimit)
        rec = Recorder(shard)
        await ready(rec)
        await shard.command(UpdatePresence(status="idle"))
        await sim.wait_until(lambda s: shard_stats(s)["commands"].get("3", 0) == 1)
        closing_rl = shard.ratelimiter
        sim.config.ignore_close = True  # our close frame gets no reply: the shard gives up after close_timeout
        await call(sim.reconnect(0))
        await rec.wait_for(lambda r: "GATEWAY_RECONNECT" in r.types())
        assert shard._active is not None and not shard._active.is_set()  # the sender waits, does not spin
        await shard.command(UpdatePresence(status="dnd"))
        await rec.wait_for(lambda r: "RESUMED" in r.types())
        sim.config.ignore_close = False
        await sim.wait_until(lambda s: shard_stats(s)["commands"].get("3", 0) == 2, timeout=10)  # bounds a failure
        if closing_rl is not None:
            assert closing_rl.max - closing_rl.available() == 2  # the Identify and the first command
            assert shard.ratelimiter is not closing_rl
        snap = sim.stats.snapshot()
        assert shard_stats(snap)["resumes"] == 1 and no_violations(snap)
        await rec.stop()


async def test_a_command_waiting_for_a_permit_goes_out_on_the_next_connection(shards) -> None:
    """A command that waits for a permit of a spent ratelimiter goes out as soon as a new connection (with a
    ratelimiter of its own) is Active, not when the old one would have had a permit again (up to 60 s)."""
    async with Simulator(**FAST) as sim:
        shard = shards(sim)
        rec = Recorder(shard)
        await ready(rec)
        rl = shard.ratelimiter
        assert rl is not None
        room = rl.available()  # the Identify took one
        for _ in range(room + 1):
            await shard.command(UpdatePresence(status="idle"))
        await sim.wait_until(lambda s: shard_stats(s)["commands"].get("3", 0) == room)
        assert rl.available() == 0 and rl.next_available() > 50  # the last one waits for this window
        await call(sim.reconnect(0))
        await rec.wait_for(lambda r: "RESUMED" in r.types())
        await sim.wait_until(lambda s: shard_stats(s)["commands"].get("3", 0) == room + 1, timeout=10)
        snap = sim.stats.snapshot()
        assert shard_stats(snap)["ratelimit_closes"] == 0 and no_violations(snap)
        await rec.stop()


async def test_oversized_payload_refused_client_side(shards) -> None:
    async with Simulator(**FAST) as sim:
        shard = shards(sim)
        rec = Recorder(shard)
        await ready(rec)
        with pytest.raises(GatewayError) as info:
            await shard.send('{"op":3,"d":{"status":"online","afk":false,"since":null,"activities":[{"name":"'
                             + "x" * 4096 + '"}]}}')
        assert info.value.kind is ErrorKind.PAYLOAD_TOO_LARGE and "4096" in str(info.value)
        with pytest.raises(GatewayError):
            shard.sender().send_nowait("x" * 5000)
        snap = sim.stats.snapshot()
        assert no_violations(snap) and shard_stats(snap)["connections"] == 1
        await rec.stop()


async def test_commands_reach_the_gateway(shards) -> None:
    async with Simulator(privileged_intents=33026, **FAST) as sim:
        shard = shards(sim, intents=Intents.GUILDS | Intents.GUILD_MEMBERS)
        rec = Recorder(shard)
        await rec.wait_for(lambda r: r.count("GUILD_CREATE") == 2)
        gid = rec.events[-1].data["id"]
        await shard.command(RequestGuildMembers(gid, query="", nonce="n1"))
        await shard.sender().command(UpdatePresence(status="dnd"))
        await rec.wait_for(lambda r: "GUILD_MEMBERS_CHUNK" in r.types())
        snap = await sim.wait_until(lambda s: shard_stats(s)["commands"].get("3") == 1)
        assert no_violations(snap)
        await rec.stop()


async def test_bounded_send_queue(shards) -> None:
    async with Simulator(**FAST) as sim:
        shard = shards(sim, send_queue_size=2)
        sender = shard.sender()
        sender.command_nowait(UpdatePresence())
        sender.command_nowait(UpdatePresence())
        with pytest.raises(GatewayError) as info:
            sender.command_nowait(UpdatePresence())
        assert info.value.kind is ErrorKind.SEND_QUEUE_FULL
        rec = Recorder(shard)
        await sim.wait_until(lambda s: shard_stats(s)["commands"].get("3") == 2)  # sent once Active
        await rec.stop()


# ---- compression ---------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["zlib", "zlib-ng"])
async def test_zlib_messages_split_across_frames(shards, backend: str) -> None:
    async with Simulator(zlib_chunk=64, guild_size="medium", events_per_second=50, **FAST) as sim:
        shard = shards(sim, zlib_backend=backend)
        rec = Recorder(shard)
        await rec.wait_for(lambda r: r.count("GUILD_CREATE") == 2 and r.count("MESSAGE_CREATE") >= 5)
        assert not rec.errors
        assert shard.inflater_stats()[1] > 100_000
        await rec.stop()


async def test_zstd_stream(shards) -> None:
    async with Simulator(events_per_second=50, **FAST) as sim:
        shard = shards(sim, compression="zstd-stream")
        rec = Recorder(shard)
        await rec.wait_for(lambda r: r.count("GUILD_CREATE") == 2 and r.count("MESSAGE_CREATE") >= 5)
        assert not rec.errors and no_violations(sim.stats.snapshot())
        await rec.stop()


async def test_uncompressed(shards) -> None:
    async with Simulator(**FAST) as sim:
        shard = shards(sim, compression=None)
        rec = Recorder(shard)
        await rec.wait_for(lambda r: r.count("GUILD_CREATE") == 2)
        assert not rec.errors
        await rec.stop()


@pytest.mark.parametrize("compression", ["zlib-stream", "zstd-stream"])
async def test_corrupted_stream_gives_non_fatal_error_then_resume(shards, compression: str) -> None:
    async with Simulator(events_per_second=20, **FAST) as sim:
        shard = shards(sim, compression=compression)
        rec = Recorder(shard)
        await ready(rec)
        await call(sim.corrupt(0, "compressed"))
        await rec.wait_for(lambda r: any(e.kind is ErrorKind.COMPRESSION for e in r.errors))
        assert not any(e.is_fatal() for e in rec.errors)
        snap = await sim.wait_until(lambda s: shard_stats(s)["resumes"] == 1, timeout=10)
        assert shard_stats(snap)["identifies"] == 1
        await rec.wait_for(lambda r: "RESUMED" in r.types())
        n = rec.count("MESSAGE_CREATE")
        await rec.wait_for(lambda r: r.count("MESSAGE_CREATE") > n + 2)  # the fresh inflater works
        await rec.stop()


async def test_bad_json_unknown_opcode_and_unknown_event(shards) -> None:
    async with Simulator(**FAST) as sim:
        shard = shards(sim)
        rec = Recorder(shard)
        await ready(rec)
        await call(sim.corrupt(0, "json"))
        await rec.wait_for(lambda r: any(e.kind is ErrorKind.DESERIALIZING for e in r.errors))
        await call(sim.corrupt(0, "opcode"))
        await call(sim.corrupt(0, "event"))
        await rec.wait_for(lambda r: "SIM_UNKNOWN_EVENT" in r.types())
        assert not any(e.is_fatal() for e in rec.errors)
        assert shard_stats(sim.stats.snapshot())["connections"] == 1
        await rec.stop()


# ---- decoding ------------------------------------------------------------------------------------

class Message(msgspec.Struct):
    id: str
    channel_id: str


async def test_event_filter_and_registered_struct(shards) -> None:
    async with Simulator(events_per_second=100, **FAST) as sim:
        shard = shards(sim, event_types=EventTypeFlags.READY | EventTypeFlags.MESSAGE_CREATE,
                       event_structs={"MESSAGE_CREATE": Message})
        rec = Recorder(shard)
        await rec.wait_for(lambda r: r.count("MESSAGE_CREATE") >= 5)
        assert set(rec.types()) == {"READY", "MESSAGE_CREATE"}
        assert all(isinstance(e.data, Message) for e in rec.events if e.type == "MESSAGE_CREATE")
        assert shard.metrics.events.get("GUILD_CREATE") == 2  # counted, but never decoded or delivered
        await rec.stop()


async def test_stdlib_json_decoder(shards) -> None:
    async with Simulator(events_per_second=50, **FAST) as sim:
        shard = shards(sim, decoder="json", event_structs={"MESSAGE_CREATE": Message})
        rec = Recorder(shard)
        await rec.wait_for(lambda r: r.count("MESSAGE_CREATE") >= 3)
        assert isinstance(rec.events[1].data.session_id, str)
        assert all(isinstance(e.data, Message) for e in rec.events if e.type == "MESSAGE_CREATE")
        await rec.stop()


async def test_next_message_returns_raw_text_and_close_frames(shards) -> None:
    async with Simulator(**FAST) as sim:
        shard = shards(sim, event_types=EventTypeFlags.READY | EventTypeFlags.GATEWAY_CLOSE)
        text = await asyncio.wait_for(shard.next_message(), 5)
        assert isinstance(text, str) and '"READY"' in text
        await call(sim.close(0, 4000))
        frame = await asyncio.wait_for(shard.next_message(), 5)
        assert frame == CloseFrame(4000, "closed by chaos control")


async def test_next_message_forwards_the_stream_exactly_and_next_event_still_decodes(shards) -> None:
    """A forwarding consumer gets every message's exact text (in raw mode `d` is not decoded up front);
    switching back to next_event still gives decoded events."""
    async with Simulator(**{**FAST, "events_per_second": 400.0}) as sim:
        shard = shards(sim)
        first = await asyncio.wait_for(shard.next_event(), 5)  # GATEWAY_HELLO, decoded as usual
        assert first.type == "GATEWAY_HELLO"
        texts = [await asyncio.wait_for(shard.next_message(), 5) for _ in range(200)]
        payloads = [json.loads(t) for t in texts]
        seqs = [p["s"] for p in payloads if p["op"] == 0]
        assert payloads[0]["t"] == "READY" and seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 150
        assert any(p["t"] == "MESSAGE_CREATE" and isinstance(p["d"]["content"], str) for p in payloads)
        event = await asyncio.wait_for(shard.next_event(), 5)
        while event.seq is None:
            event = await asyncio.wait_for(shard.next_event(), 5)
        assert event.seq == seqs[-1] + 1 and isinstance(event.data, dict) and event.data["id"]
        assert shard.session is not None and shard.session.sequence >= event.seq


# ---- sessions across processes -------------------------------------------------------------------

async def test_resume_across_restart_with_saved_session(shards) -> None:
    async with Simulator(events_per_second=50, **FAST) as sim:
        first = shards(sim)
        rec = Recorder(first)
        await rec.wait_for(lambda r: r.count("MESSAGE_CREATE") >= 3)
        await rec.stop()
        session = await first.close(CloseFrame.RESUME)
        resume_url = first.resume_url
        assert isinstance(session, Session) and resume_url == sim.resume_url
        saved = session.to_json()  # what a process would write to disk

        second = shards(sim, session=Session.from_json(saved), resume_url=resume_url)
        rec2 = Recorder(second)
        await rec2.wait_for(lambda r: "RESUMED" in r.types())
        snap = sim.stats.snapshot()
        assert shard_stats(snap)["identifies"] == 1 and shard_stats(snap)["resumes"] == 1 and no_violations(snap)
        seqs = [e.seq for e in rec2.events if e.seq is not None]
        assert seqs[0] == session.sequence + 1  # continues where the first process stopped: no gap, no repeat
        await rec2.stop()


async def test_handled_session_replays_what_the_consumer_has_not_finished(shards) -> None:
    """`handled_session` (what a worker reports for resuming after a crash, and what close returns) stops before the
    event the consumer holds (the last one it was given, until it asks for the next), else before the first one still
    queued: a resume from it delivers them again, the one being handled included (at least once)."""
    async with Simulator(session_ttl=30.0, identify_window=0.2) as sim:  # default heartbeat: no ACK events
        shard = shards(sim)
        assert shard.handled_session is None
        shard.start()

        async def received(seq: int) -> None:  # the shard parses unread data by itself within 50 ms (it has no
            async with asyncio.timeout(10):    # event to await for that: poll, bounded)
                while True:
                    if shard.session is not None and shard.session.sequence >= seq:
                        return
                    await asyncio.sleep(0.01)

        await received(1)  # READY and the GUILD_CREATEs queued: none taken, all replayed
        assert shard.handled_session == Session(shard.session.id, 0)
        while (event := await shard.next_event()).seq is None:
            pass
        assert event.type == "READY" and shard.handled_session == Session(shard.session.id, event.seq - 1)
        while (event := await shard.next_event()).type != "GUILD_CREATE":
            pass
        sim.emit_guild_events(4)
        dispatched = (await sim.wait_until(lambda s: s["total"]["dispatched"] >= event.seq + 4))["total"]["dispatched"]
        await received(dispatched)
        assert shard.session.sequence == dispatched  # everything received; the handled point lags behind
        while (event := await shard.next_event()).type != "MESSAGE_CREATE":
            pass
        first = event.seq
        assert shard.handled_session == Session(shard.session.id, first - 1)
        assert (await shard.next_event()).seq == first + 1
        assert shard.handled_session.sequence == first
        assert json.loads(await shard.next_message())["s"] == first + 2  # raw mode holds its message the same way
        assert shard.handled_session.sequence == first + 1
        assert (await shard.__anext__()).seq == first + 3  # and `async for`'s fast path
        handled = shard.handled_session
        assert handled.sequence == first + 2 and shard.session.sequence == dispatched == first + 3
        session = await shard.close(CloseFrame.RESUME)  # while the consumer still holds first + 3
        assert session == handled

        again = Recorder(shards(sim, session=session, resume_url=shard.resume_url))
        await again.wait_for(lambda r: "RESUMED" in r.types())  # sent after the replayed events
        assert [e.seq for e in again.events if e.type == "MESSAGE_CREATE"] == [first + 3]  # the unfinished one again
        await again.stop()


@pytest.mark.parametrize("code", [1000, 1001])
async def test_close_normal_or_going_away_ends_the_session(shards, code: int) -> None:
    """Discord invalidates the session on a 1000 or 1001 close: close() returns no Session, so the next
    start identifies instead of sending a Resume the gateway would refuse."""
    async with Simulator(**FAST) as sim:
        queue = InMemoryQueue(interval=FAST["identify_window"] + 0.05)  # one identify window for both starts
        shard = shards(sim, queue=queue)
        rec = Recorder(shard)
        await ready(rec)
        session = await shard.close(CloseFrame(code, "bye"))
        assert session is None and shard.session is None
        snap = await sim.wait_until(lambda s: f"client {code}" in shard_stats(s)["closes"])
        assert no_violations(snap)
        await rec.wait_for(lambda r: any(e.kind is ErrorKind.CLOSED for e in r.errors))
        await rec.stop()

        again = Recorder(shards(sim, session=session, resume_url=shard.resume_url, queue=queue))
        await ready(again)
        snap = sim.stats.snapshot()
        assert (shard_stats(snap)["identifies"], shard_stats(snap)["resumes"]) == (2, 0) and no_violations(snap)
        await again.stop()


# ---- slow consumers, metrics, helpers, tokens ----------------------------------------------------

async def test_a_long_backlog_does_not_starve_the_event_loop(shards) -> None:
    """A consumer working through a large backlog yields to the event loop about every 1,000 events, so the
    other shards and the timers of a busy worker still run. The backlog (6,144 MESSAGE_CREATEs, the
    simulator's flood segment) is handed to the READY shard as if its socket had read it all at once."""
    async with Simulator(session_ttl=30.0, identify_window=0.2) as sim:  # default heartbeat: no ACK arrives
        shard = shards(sim)
        conn, fed = await feed_backlog(shard, 6)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.get_running_loop().create_task(ticker())
        await asyncio.sleep(0)
        ticks = 0
        seen = 0
        while seen < fed:  # (the GUILD_CREATE after READY comes first)
            seen += (await shard.next_event()).type == "MESSAGE_CREATE"
        task.cancel()
        assert ticks >= 4  # without the yields: 0 (the backlog never runs dry, so the consumer never waits)
        conn.transport.abort()


@pytest.mark.parametrize("read", ["next_event", "next_message"])
async def test_reading_stays_paused_while_a_backlog_of_bytes_waits(shards, read) -> None:
    """Over 1 MiB of unprocessed bytes pauses reading until the backlog is nearly worked off, whichever
    way the consumer reads (next_message once resumed reading whenever few events were queued, and under
    a fast flood its buffer grew without bound). The backlog (12 flood segments, about 2 MB) is handed to
    the READY shard as if its socket had read it."""
    from shard.shard import _RESUME_BYTES

    async with Simulator(session_ttl=30.0, identify_window=0.2) as sim:  # default heartbeat: no ACK arrives
        shard = shards(sim)
        conn, fed = await feed_backlog(shard, 12)
        assert conn.paused  # the shard's own decision: over 1 MiB waits unprocessed
        receive = getattr(shard, read)
        received = 0
        while shard._protocol.pending > _RESUME_BYTES:
            await receive()
            received += 1
            pending = shard._protocol.pending
            assert conn.paused or pending < _RESUME_BYTES, f"reading resumed with {pending} bytes unprocessed"
        while conn.paused:  # and it resumes once the backlog is nearly worked off
            await receive()
            received += 1
        assert received < fed
        conn.transport.abort()


async def test_slow_consumer_pauses_reading_without_losing_events(shards) -> None:
    async with Simulator(events_per_second=400, **FAST) as sim:
        shard = shards(sim, max_pending_events=50)
        shard.start()
        await sim.wait_until(lambda s: shard_stats(s)["heartbeats"] >= 3, timeout=15)
        assert shard_stats(sim.stats.snapshot())["connections"] == 1  # no zombie false positive
        seqs = []
        while len(seqs) < 600:
            event = await asyncio.wait_for(shard.next_event(), 5)
            if event.seq is not None:
                seqs.append(event.seq)
        assert seqs == list(range(1, len(seqs) + 1))


async def test_metrics_are_exported_per_shard(shards) -> None:
    async with Simulator(events_per_second=50, **FAST) as sim:
        shard = shards(sim, number=0, total=1)
        registry = CollectorRegistry()
        register_collector(registry).add(shard)
        rec = Recorder(shard)
        await rec.wait_for(lambda r: r.count("MESSAGE_CREATE") >= 3)
        await call(sim.reconnect(0))
        await rec.wait_for(lambda r: "RESUMED" in r.types())
        resumed_at = rec.types().index("RESUMED")
        await rec.wait_for(lambda r: "GATEWAY_HEARTBEAT_ACK" in r.types()[resumed_at:])  # latency is per connection
        text = generate_latest(registry).decode()
        assert 'shard_gateway_events_received_total{shard="0",type="GUILD_CREATE"} 2.0' in text
        assert 'shard_gateway_reconnects_total{reason="reconnect",shard="0"} 1.0' in text
        assert 'shard_gateway_state{shard="0",state="active"} 1.0' in text
        assert "shard_gateway_latency_seconds{" in text
        assert "shard_gateway_inflater_bytes_in_total{" in text and "shard_gateway_inflater_buffer_bytes{" in text
        await rec.stop()


async def test_create_recommended_uses_gateway_bot(shards) -> None:
    async with Simulator(shards=3, max_concurrency=3, **FAST) as sim:
        made = await create_recommended(sim.token, lambda sid: Config(sim.token, Intents.GUILDS, metrics=False),
                                        api_url=sim.api_url)
        assert [s.id for s in made] == [ShardId(n, 3) for n in range(3)]
        queue = made[0].config.queue
        assert isinstance(queue, InMemoryQueue) and queue.max_concurrency == 3
        assert all(s.config.queue is queue for s in made)
        assert made[0].config.gateway_url.startswith("ws://127.0.0.1")
        recs = [Recorder(s) for s in made]
        for rec in recs:
            await ready(rec)
        for s in made:
            await s.close()


async def test_token_never_logged_or_shown(shards, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with Simulator(**FAST) as sim:
        shard = shards(sim)
        rec = Recorder(shard)
        await ready(rec)
        await call(sim.reconnect(0))
        await rec.wait_for(lambda r: "RESUMED" in r.types())
        await call(sim.close(0, 4004))
        await rec.wait_for(lambda r: any(e.is_fatal() for e in r.errors))
        texts = [r.getMessage() for r in caplog.records] + [repr(shard), repr(shard.config), str(shard.config.token)]
        texts += [str(e) for e in rec.errors] + [repr(e) for e in rec.errors] + [repr(e) for e in rec.events]
        assert all(sim.token not in t for t in texts)
