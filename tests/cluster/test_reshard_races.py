"""Live resharding's races, each made to happen on purpose (issue 10): a 4011 while an ``--auto-reshard`` check
waits for Discord, a stop (SIGTERM) in the middle of the cutover while the old set holds events, and a worker that
reads its Cutover together with its Assign. Real worker processes against the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections import Counter

import multiprocess
from cluster_testing import RestGate, running, until
from stream_log import delivered
from test_reshard import FAST, HANDLER, _at_phase, all_delivered

from cluster.config import ClusterConfig
from cluster.worker import WorkerSpec, run_worker
from ipc import Channel
from ipc.framing import encode_frame
from ipc.protocol import (Assign, Assignment, CutMark, Cutover, CutoverEnd, CutPassed, Drain, Hello, IdentifyGrant,
                          IdentifyRequest, Packet, StatusReport, encode)
from sim import Simulator


async def test_a_4011_while_an_auto_reshard_check_waits_for_discord_reshards_once_it_is_answered(
        tmp_path, id_log, caplog):
    """The periodic check's GET /gateway/bot is held at a relay when shard 0 is closed with 4011: the 4011's own
    check returns at once (one is pending), so the pending one must act on it once answered: Discord recommends no
    more shards than run, and after a 4011 that means twice as many. It used to see no 4011 and stay at 4 shards,
    with shard 0 gone for good."""
    caplog.set_level(logging.WARNING, "cluster")
    async with Simulator(shards=4, max_concurrency=2, guilds_per_shard=2, **FAST) as sim, RestGate(sim) as gate:
        async with running(sim, HANDLER, tmp_path, shards=4, shards_per_worker=4, identify_window=0.3,
                           api_url=gate.url, auto_reshard=True, auto_reshard_interval=0.2) as (sup, task):
            await until(lambda: sup.active_shards() == 4, 30, "4 shards active")
            rs = sup._resharder
            gate.close()
            await gate.wait_held()  # a periodic check asks Discord, and waits
            assert rs._auto_pending and rs.last is None
            sim.close(0, 4011)
            await until(lambda: "shard 0: sharding required (4011)" in caplog.text, 30, "the 4011 reported")
            assert gate.held == 1 and rs.last is None  # the check still waits; nothing started
            gate.open()
            await until(lambda: rs.last is not None, 30, "a reshard started")
            await until(lambda: sup.snapshot().reshard.phase in ("done", "rolled_back"), 60, "the reshard's end")
            snap = sup.snapshot()
            assert snap.reshard.phase == "done", snap.reshard.reason
            assert (snap.reshard.old_total, snap.shard_total) == (4, 8) and not task.done()
            await until(lambda: sup.active_shards() == 8, 10, "8 shards active")
            ids = sim.emit_guild_events(8)  # every guild is served again, shard 0's too
            await until(lambda: set(ids) <= {d.id for d in delivered(id_log)}, 10, "the new set delivers")
            stats = sim.stats.snapshot()
    assert stats["sets"]["4"]["closes"].get("4011") == 1 and stats["sets"]["8"]["identifies"] == 8


async def test_a_stop_in_the_cutover_delivers_what_the_old_set_held_and_leaves_no_new_session(
        tmp_path, id_log, monkeypatch):
    """SIGTERM when old shards 0-2 passed the cut and hold a burst of messages (old shard 3 lags 8 s, so the switch
    waits for it), with a handler that takes 50 ms a message: the reshard rolls back, the old workers deliver what
    they held before they close, the new sessions are closed for good, and a restart resumes the old set with every
    message delivered exactly once. The old workers used to close as soon as the stop came, their held messages
    half delivered, and the saved sessions resumed past the rest. The reshard rolls back by itself, not by a cancel
    of its task (across hosts, a cancel that a Redis call swallowed let it go on and switch)."""
    monkeypatch.setenv("RESHARD_ID_LOG_DELAY", "0.05")
    # a heartbeat every 30 s: old shard 3's late ACKs never make it reconnect (and pass the cut) during the test
    async with Simulator(shards=4, max_concurrency=2, guilds_per_shard=4, identify_window=0.3,
                         heartbeat_interval=30_000) as sim:
        options = dict(shards=4, shards_per_worker=4, identify_window=0.3, shutdown_timeout=20.0)
        async with running(sim, HANDLER, tmp_path, **options) as (sup, task):
            await until(lambda: sup.active_shards() == 4, 30, "4 shards active")

            def lag_old_shard_3() -> None:  # before the cut's heartbeats: their ACKs come 8 s late
                for c in sim.connections_of(3):
                    if c.session.num_shards == 4:
                        c.delay = 8.0

            _at_phase(sup, "cutting_over", lag_old_shard_3)
            await sup.reshard(8)
            rs = sup._resharder
            await until(lambda: rs.last.passed == {0, 1, 2}, 30, "old shards 0-2 past the cut")
            before = _messages(sup, range(3))
            ids = sim.emit_guild_events(120)  # 30 a shard: shards 0-2 hold theirs
            await until(lambda: _messages(sup, range(3)) >= before + 90, 10, "old shards 0-2 holding the burst")
            assert rs.last.phase.value == "cutting_over" and not {d.id for d in delivered(id_log)} & set(ids)
            sup.stop()  # what SIGTERM does
            assert await asyncio.wait_for(task, 60) == 0
            assert not rs._task.cancelled()  # it rolled back by itself: a Redis call can swallow a cancel
            snap = sup.snapshot()
            stats = sim.stats.snapshot()
        assert snap.reshard.phase == "rolled_back" and snap.reshard.reason == "the supervisor is stopping"
        new = stats["sets"]["8"]
        assert new["sessions"] == {"closed": 8} and new["closes"].get("client 1000") == 8
        saved = json.loads((tmp_path / "state.json").read_text())
        assert saved["shard_total"] == 4 and sorted(s["shard_id"] for s in saved["sessions"]) == [0, 1, 2, 3]
        async with running(sim, HANDLER, tmp_path, **options) as (sup, _):
            await until(lambda: sup.active_shards() == 4, 30, "the old set resumed")
            got = await all_delivered(sim, id_log)
            stats = sim.stats.snapshot()
    counts = Counter(d.id for d in got)
    assert sorted(counts) == sorted(ids) and max(counts.values()) == 1  # each message delivered, once
    assert stats["sets"]["4"]["identifies"] == 4  # resumed, not identified again


async def test_an_old_worker_killed_holding_events_then_a_rollback_delivers_each_held_event_once(tmp_path, id_log):
    """Old shards 0-1 pass their markers and hold a burst of messages (old shard 3's marker ACK lags, so no switch
    comes), their worker is killed (SIGKILL) and restarted, then a new worker dies and the reshard rolls back: every
    message of the burst reaches a handler exactly once. The held events used to count as handled in the session the
    old worker reported, so its restart resumed past them and the rollback lost them."""
    # a heartbeat every 30 s: old shard 3's late ACK never makes it reconnect (and pass the cut) during the test
    async with Simulator(shards=4, max_concurrency=2, guilds_per_shard=4, identify_window=0.3,
                         heartbeat_interval=30_000) as sim:
        async with running(sim, HANDLER, tmp_path, shards=4, shards_per_worker=2, identify_window=0.3,
                           shutdown_timeout=20.0) as (sup, _):
            await until(lambda: sup.active_shards() == 4, 30, "4 shards active")
            _at_phase(sup, "cutting_over", lambda: sim.ack_delay(3, 120.0, num_shards=4))  # old shard 3 never passes
            await sup.reshard(8)
            rs = sup._resharder
            await until(lambda: {0, 1} <= rs.last.passed, 30, "old shards 0-1 past their markers")
            before = _messages(sup, range(2))
            ids = sim.emit_guild_events(80)  # 20 a shard: old shards 0-1 hold theirs
            # the worker reports its sessions right before the counts: they are reported as of the burst held
            await until(lambda: _messages(sup, range(2)) >= before + 40, 10, "old shards 0-1 holding the burst")
            early = [d for d in delivered(id_log) if d[0] in set(ids)]
            assert all((guild >> 22) % 4 == 3 for _, guild, *_ in early)  # only old shard 3 (not gated) delivers
            old = sup._rt.workers[0]
            os.kill(old.pid, signal.SIGKILL)
            await until(lambda: sup._rt.workers[0] is not old and all(
                sup._rt.shards[s].events.get("RESUMED", 0) >= 1 for s in (0, 1)), 30, "old worker 0 restarted, resumed")
            assert rs.last.phase.value == "cutting_over"
            new = next(iter(rs.child.workers.values()))
            os.kill(new.pid, signal.SIGKILL)  # a new worker lost in the cutover: the reshard rolls back
            await until(lambda: sup.snapshot().reshard.phase in ("done", "rolled_back"), 30, "the reshard's end")
            assert sup.snapshot().reshard.phase == "rolled_back", sup.snapshot().reshard.reason
            await until(lambda: set(ids) <= {d[0] for d in delivered(id_log)}, 20, "every burst message delivered")
            got = [d for d in delivered(id_log) if d[0] in set(ids)]
    counts = Counter(d[0] for d in got)
    assert sorted(counts) == sorted(ids) and max(counts.values()) == 1  # each message delivered, once


def _messages(sup, shards: range) -> int:
    """The MESSAGE_CREATE events the old set's ``shards`` received so far (their workers' reports)."""
    return sum(sup._rt.shards[s].events["MESSAGE_CREATE"] for s in shards)


@contextlib.asynccontextmanager
async def lone_worker(sim, handler: str):
    """One worker process with this test as its supervisor: (its channel, a queue of the packets it sends).
    Its identify requests are granted at once; it is drained at the end."""
    ctx = multiprocess.get_context("spawn")
    parent, child = ctx.Pipe(duplex=True)
    spec = WorkerSpec(0, sim.token, ClusterConfig().intents, handler, sim.url, report_interval=0.1,
                      log_level="WARNING")
    process = ctx.Process(target=run_worker, args=(spec, child), daemon=True)
    await asyncio.to_thread(process.start)
    child.close()
    packets: asyncio.Queue[Packet] = asyncio.Queue()

    def on_packet(packet: Packet) -> None:
        if isinstance(packet, IdentifyRequest):
            channel.send(IdentifyGrant(packet.shard_id))
        else:
            packets.put_nowait(packet)

    channel = await Channel.open(parent, on_packet, name="the test's supervisor end")
    try:
        yield channel, packets
    finally:
        if not channel.closed:
            channel.send(Drain())
        await asyncio.to_thread(process.join, 20)
        if process.exitcode is None:
            process.kill()
        channel.close()


async def next_packet(packets: asyncio.Queue[Packet], kind: type[Packet], timeout: float = 30.0) -> Packet:
    """The next packet of ``kind`` the worker sent (the others are skipped)."""
    async with asyncio.timeout(timeout):
        while not isinstance(packet := await packets.get(), kind):
            pass
    return packet


async def test_a_cutover_read_together_with_the_assign_gates_the_shards_the_assign_starts(id_log):
    """An old worker restarted during a cutover gets its Cutover (and, once every new shard passed, its CutMark) right
    after its Assign; read in one piece with it (one write here), it must gate the shards that Assign starts: they
    pass the cut and hold what comes after it until the cutover ends. It used to be applied to the worker's shards
    as they were, none yet: the worker delivered past the cut and never passed it."""
    async with Simulator(shards=2, max_concurrency=2, guilds_per_shard=2, **FAST) as sim:
        async with lone_worker(sim, HANDLER) as (channel, packets):
            await next_packet(packets, Hello)
            cut = time.time()  # passed by the time the shards are up, as for a worker restarted in the cutover
            assign = Assign(2, [Assignment(0), Assignment(1)], 2)
            channel._transport.write(encode_frame(encode(assign)) + encode_frame(encode(Cutover(cut, True)))
                                     + encode_frame(encode(CutMark(cut))))  # every new shard passed: the old set marks
            passed = [(await next_packet(packets, CutPassed)).shard_id for _ in range(2)]
            assert sorted(passed) == [0, 1]
            ids = sim.emit_guild_events(8)  # created after the cut: held
            received = 0
            while received < 8:  # both shards received them (the worker's reports count every event it read)
                report = await next_packet(packets, StatusReport)
                received += sum(s.events.get("MESSAGE_CREATE", 0) for s in report.shards)
            assert received == 8 and not {d.id for d in delivered(id_log)} & set(ids)
            ended = time.monotonic()
            channel.send(CutoverEnd(False))  # a rollback: the old set delivers what it held
            await until(lambda: set(ids) <= {d.id for d in delivered(id_log)}, 10, "the held messages delivered")
            assert all(d.at > ended for d in delivered(id_log) if d.id in ids)
