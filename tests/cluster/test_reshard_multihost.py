"""Live resharding across hosts through a real redis-server (issue 10, item 3): two hosts of 4 shards each move
together to two hosts of 8 under the shared guild stream, with every message delivered exactly once; the new layout
is agreed in Redis, so a host started later with the old count refuses; a failure on any host before the switch
rolls every host back; a budget too short for the cluster is refused before anything starts.

Each host is a real supervisor (in this process) with real worker processes against the strict simulator."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import pytest
from cluster_testing import FAST as FAST_CFG
from cluster_testing import running, until
from hosts_testing import host_env
from redis_process import free_port
from test_reshard import FAST, HANDLER, INTENTS, KINDS, _cli, all_delivered, delivered

from cluster.config import ClusterConfig
from cluster.coordination.redis_conn import connect
from cluster.error import CoordinatorUnavailable
from cluster.reshard import ReshardRefused
from cluster.supervisor import Supervisor
from sim import Simulator

pytestmark = pytest.mark.usefixtures("id_log")


@contextlib.asynccontextmanager
async def two_hosts(sim, redis_url, tmp_path, shards=8, **options):
    """Hosts 0 and 1 of 2 of an 8-shard cluster (4 shards each, one worker each; or ``shards``) on one Redis."""
    common = dict(coordinator=redis_url, shards=shards, shards_per_worker=shards // 2, identify_window=0.3,
                  host_count=2, report_interval=0.2, **options)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with running(sim, HANDLER, tmp_path / "a", host_index=0, **common) as (a, task_a), \
            running(sim, HANDLER, tmp_path / "b", host_index=1, **common) as (b, task_b):
        await until(lambda: a.active_shards() == shards // 2 and b.active_shards() == shards // 2, 30,
                    "both hosts' shards active")
        yield a, b, task_a, task_b


def ended(*sups):
    return lambda: all(s.snapshot().reshard is not None and s.snapshot().reshard.phase in ("done", "rolled_back")
                       for s in sups)


async def redis_value(url, pattern):
    client = await connect(url)
    try:
        keys = await client.keys(pattern)
        return {k.decode(): await client.get(k) if await client.type(k) == b"string" else await client.hgetall(k)
                for k in keys}
    finally:
        await client.aclose()


async def test_two_hosts_move_from_8_to_16_shards_together_losing_and_repeating_nothing(tmp_path, id_log,
                                                                                        redis_server):
    """Every kind of the stream: a guild's old shard and new shard may run on two hosts (old shard 5's guilds go to
    new shards 5 and 13), so what the old sets delivered without a creation id at the cut must reach every host's
    new set."""
    async with Simulator(shards=8, max_concurrency=4, guilds_per_shard=4, guild_event_kinds=KINDS, **FAST) as sim:
        async with two_hosts(sim, redis_server.url, tmp_path, intents=INTENTS) as (a, b, task_a, task_b):
            sim.config.guild_events_per_second = 150
            await until(lambda: sim.guild_events.total >= 100, 10, "traffic before the reshard")
            await a.reshard(16)  # host A got the command; host B takes part by the record in Redis
            await until(ended(a, b), 60, "the reshard's end on both hosts")
            for sup in (a, b):
                snap = sup.snapshot()
                assert snap.reshard.phase == "done", snap.reshard.reason
                assert snap.shard_total == 16
            assert sorted(a.shards) == list(range(8)) and sorted(b.shards) == list(range(8, 16))
            status = a.status()["reshard"], b.status()["reshard"]  # each host shows its part and the leader
            assert [s["shards"] for s in status] == [[0, 7], [8, 15]] and {s["ready"] for s in status} == {8}
            assert {s["leader"] for s in status} == {a.host.host_id} and status[0]["epoch"] == status[1]["epoch"]
            await until(lambda: a.active_shards() == 8 and b.active_shards() == 8, 10, "16 shards active")
            total = sim.guild_events.total
            await until(lambda: sim.guild_events.total >= total + 100, 10, "traffic after the reshard")
            got = await all_delivered(sim, id_log)
            stats = sim.stats.snapshot()
            hosts = {}

            async def moved():  # in Redis, not just in each supervisor: a record deleted before its host wrote the
                hosts.update(await redis_value(redis_server.url, "shardstack:*:host:*"))  # new one comes back old
                return sorted(_json(h)["shard_total"] for h in hosts.values()) == [16, 16]

            for _ in range(100):
                hosts.clear()
                if await moved():
                    break
                await asyncio.sleep(0.1)
            client = await connect(redis_server.url)
            try:  # a Redis that lost the registry gets each host's record back as it is now, the new range
                await client.delete(*hosts)
            finally:
                await client.aclose()
            rewritten = {}

            async def registered():
                rewritten.update(await redis_value(redis_server.url, "shardstack:*:host:*"))
                return len(rewritten) == 2

            for _ in range(100):
                if await registered():
                    break
                await asyncio.sleep(0.1)
            await until(lambda: len(a.sessions) == 8 and len(b.sessions) == 8, 10, "the new sessions")
            sessions = {}

            async def saved():
                sessions.update(await redis_value(redis_server.url, "shardstack:*:session:*"))
                return all(v.get(b"shard_total") == b"16" for v in sessions.values()) and len(sessions) == 16

            for _ in range(100):  # the next report interval writes the new set's sessions
                sessions.clear()
                if await saved():
                    break
                await asyncio.sleep(0.1)
            assert not task_a.done() and not task_b.done()

            # a host started later with the old count refuses with a clear error
            late = Supervisor(ClusterConfig(**{**FAST_CFG, "gateway_url": sim.url, "api_url": sim.api_url,
                                               "state_file": str(tmp_path / "late.json"),
                                               "coordinator": redis_server.url, "shards": 8, "host_index": 0,
                                               "host_count": 2}),
                              token=sim.token, handler=HANDLER, handle_signals=False)
            assert await late.run() == 2
            assert "started with 8 shards, but the cluster has 16" in late.exit_message
    layout = await redis_value(redis_server.url, "shardstack:*:layout")
    assert list(layout.values()) == [b"16,4"]
    assert len(sessions) == 16 and {int(v[b"shard_id"]) for v in sessions.values()} == set(range(16))
    for found in (hosts, rewritten):
        assert sorted((h["first"], h["last"], h["shard_total"]) for h in map(_json, found.values())) == [
            (0, 7, 16), (8, 15, 16)]
    emitted = [int(i) for i in sim.guild_event_log()["ids"]]
    counts = {}
    for d in got:
        counts[d[0]] = counts.get(d[0], 0) + 1
    assert len(emitted) >= 200 and sorted(counts) == sorted(emitted)  # every emitted message reached a handler
    assert [i for i, n in counts.items() if n > 1] == []  # and only one
    assert {d[2] for d in got} == {8, 16}  # both sets delivered part of the stream
    sets = stats["sets"]
    assert sets["8"]["identifies"] == 8 and sets["16"]["identifies"] == 16 and stats["total"]["identifies"] == 24
    assert sets["8"]["sessions"] == {"closed": 8} and sets["8"]["closes"].get("client 1000") == 8
    assert stats["total"]["concurrency_violations"] == 0


async def test_a_host_stopping_before_the_switch_rolls_every_host_back(tmp_path, id_log, redis_server):
    async with Simulator(shards=8, max_concurrency=4, guilds_per_shard=2, **FAST) as sim:
        async with two_hosts(sim, redis_server.url, tmp_path) as (a, b, task_a, task_b):
            sim.config.guild_events_per_second = 100
            await a.reshard(16)
            await until(lambda: b.snapshot().reshard is not None, 10, "host B joining the reshard")
            b.stop()  # SIGTERM on host B while the new set warms up
            await until(ended(a), 30, "the reshard's end on host A")
            snap = a.snapshot()
            assert snap.reshard.phase == "rolled_back", snap.reshard.reason
            assert "the supervisor is stopping" in snap.reshard.reason
            assert snap.shard_total == 8 and sorted(a.shards) == [0, 1, 2, 3] and not task_a.done()
            await until(lambda: a.active_shards() == 4, 10, "host A's old shards")
            record = await redis_value(redis_server.url, "shardstack:*:reshard")
            layout = await redis_value(redis_server.url, "shardstack:*:layout")
            before = len(delivered(id_log))
            await until(lambda: len(delivered(id_log)) > before + 20, 10, "host A's old set delivering on")
    assert [v[b"phase"] for v in record.values()] == [b"rolled_back"]
    assert list(layout.values()) == [b"8,4"]


async def test_a_new_shard_closed_fatally_on_one_host_rolls_every_host_back_and_the_old_sets_serve_on(
        tmp_path, id_log, redis_server):
    """Host B's new shard 12 (a shard only the 16-shard set has) is closed with 4010 as soon as it identified: B
    rolls the cluster back, and host A, the leader, whose new set was fine, closes its new set too."""
    async with Simulator(shards=8, max_concurrency=4, guilds_per_shard=2, **FAST) as sim:
        async with two_hosts(sim, redis_server.url, tmp_path) as (a, b, task_a, task_b):
            sim.config.guild_events_per_second = 100
            await a.reshard(16)
            await sim.wait_until(lambda s: any(r["shard"] == [12, 16] for r in s["sessions"].values()), 30)
            assert sim.close(12, 4010) == 1
            await until(ended(a, b), 30, "the reshard's end on both hosts")
            reasons = {}
            for name, sup in (("a", a), ("b", b)):
                snap = sup.snapshot()
                assert snap.reshard.phase == "rolled_back" and snap.shard_total == 8, snap.reshard
                reasons[name] = snap.reshard.reason
                await until(lambda sup=sup: sup.active_shards() == 4, 10, "the old set's shards")
            assert reasons["b"] == "new shard 12 closed fatally (close code 4010)"
            assert reasons["a"] == f"rolled back by the cluster: host {b.host.host_id}: {reasons['b']}"
            assert not task_a.done() and not task_b.done()
            layout = await redis_value(redis_server.url, "shardstack:*:layout")
            record = await redis_value(redis_server.url, "shardstack:*:reshard")
            before = len(delivered(id_log))
            await until(lambda: len(delivered(id_log)) > before + 20, 10, "the old sets delivering on")
            stats = sim.stats.snapshot()
    assert list(layout.values()) == [b"8,4"] and [v[b"phase"] for v in record.values()] == [b"rolled_back"]
    assert stats["sets"]["8"]["sessions"] == {"active": 8}  # the old sets never stopped
    assert stats["sets"]["16"]["closes"].get("client 1000", 0) >= 1  # the new sets were closed for good


async def test_a_cluster_budget_too_short_is_refused_before_anything_starts(tmp_path, id_log, redis_server):
    """remaining 39: 8 identified across both hosts, 31 left; 16 more would leave 15, below 2 x margin 8."""
    async with Simulator(shards=8, max_concurrency=4, session_remaining=39, **FAST) as sim:
        async with two_hosts(sim, redis_server.url, tmp_path) as (a, b, _, _):
            await sim.wait_until(lambda s: s["total"]["identifies"] == 8, 10)  # host B's own view may lag: Redis has 31
            with pytest.raises(ReshardRefused, match="budget too low: 31 identifies left, 16 new shards would "
                                                     "leave 15, below the pacing threshold of 16"):
                await b.reshard(16)
            record = await redis_value(redis_server.url, "shardstack:*:reshard")
            stats = sim.stats.snapshot()
    assert record == {} and set(stats["sets"]) == {"8"} and stats["total"]["identifies"] == 8


def _json(raw):
    import json
    return json.loads(raw)



async def test_4011_on_both_hosts_with_auto_reshard_moves_the_cluster_once(tmp_path, id_log, redis_server):
    """4 shards of 4 guilds on 2 hosts, at most 5 guilds a shard, one recommended shard per 4 guilds: 8 more guilds
    close every shard with 4011 on both hosts; one host begins the reshard to 6 shards, the other joins it."""
    async with Simulator(shards=4, max_concurrency=2, guilds_per_shard=4, max_guilds_per_shard=5,
                         recommended_guilds_per_shard=4, **FAST) as sim:
        common = dict(coordinator=redis_server.url, shards_per_worker=2, identify_window=0.3, host_count=2,
                      report_interval=0.2, auto_reshard=True)
        async with running(sim, HANDLER, tmp_path, host_index=0, **common) as (a, task_a), \
                running(sim, HANDLER, tmp_path, host_index=1, **common) as (b, task_b):
            await until(lambda: a.active_shards() == 2 and b.active_shards() == 2, 30, "both hosts' shards active")
            sim.add_guilds(8)
            await until(ended(a, b), 60, "the reshard's end on both hosts")
            for sup in (a, b):
                snap = sup.snapshot()
                assert snap.reshard.phase == "done", snap.reshard.reason
                assert snap.shard_total == 6
            assert sorted(a.shards) == [0, 1, 2] and sorted(b.shards) == [3, 4, 5]
            assert not task_a.done() and not task_b.done()
            await until(lambda: a.active_shards() == 3 and b.active_shards() == 3, 10, "6 shards active")
            ids = sim.emit_guild_events(24)  # the bot serves every guild again
            await until(lambda: set(ids) <= {d[0] for d in delivered(id_log)}, 10, "the new set delivers")
            stats = sim.stats.snapshot()
    assert stats["sets"]["6"]["identifies"] == 6  # one reshard, not two
    assert list((await redis_value(redis_server.url, "shardstack:*:layout")).values()) == [b"6,2"]


@pytest.mark.parametrize("killed", ["follower", "leader"])
async def test_a_host_killed_before_the_switch_rolls_the_others_back_once_its_record_expires(tmp_path, id_log,
                                                                                             redis_server, killed):
    """Host A here, host B a `python -m cluster run` process killed with SIGKILL while the new set warms up: its
    registry record expires after --host-ttl, and the cluster rolls back: by the leader A if B only took part, by
    A itself if B led the reshard (it got the command)."""
    port = free_port()
    async with Simulator(shards=8, max_concurrency=4, guilds_per_shard=2, identify_window=1.0,
                         heartbeat_interval=1000) as sim:
        env = host_env(sim, {"RESHARD_ID_LOG": str(id_log), "CLUSTER_HTTP_TOKEN": "s3cret"})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cluster", "run", "--handler", HANDLER, "--shards", "8", "--shards-per-worker", "4",
            "--host-index", "1", "--host-count", "2", "--host-ttl", "2", "--gateway-url", sim.url, "--api-url",
            sim.api_url, "--identify-window", "1", "--http-port", str(port), "--no-status-line", "--log-level",
            "ERROR", "--coordinator", redis_server.url, env=env, stderr=asyncio.subprocess.DEVNULL)
        try:
            async with running(sim, HANDLER, tmp_path, coordinator=redis_server.url, shards=8, shards_per_worker=4,
                               host_index=0, host_count=2) as (a, task_a):
                await sim.wait_until(lambda s: s["total"]["identifies"] == 8, 30)
                await until(lambda: a.active_shards() == 4, 10, "host A's shards")
                if killed == "follower":
                    await a.reshard(16)
                else:  # host B gets the command
                    code, out, err = await _cli("--url", f"http://127.0.0.1:{port}", "--shards", "16", "--no-wait",
                                                token="s3cret")
                    assert code == 0, (out, err)
                part = (lambda n: n >= 8) if killed == "follower" else (lambda n: n < 8)
                await sim.wait_until(lambda s: any(r["shard"][1] == 16 and part(r["shard"][0])
                                                   for r in s["sessions"].values()), 30)  # the survivor's part runs
                assert a.snapshot().reshard.phase == "warming"
                proc.kill()
                await until(ended(a), 30, "the reshard's end on host A")
                snap = a.snapshot()
                assert snap.reshard.phase == "rolled_back", snap.reshard.reason
                assert ("the leader, host" if killed == "leader" else "host") in snap.reshard.reason
                assert "left the registry" in snap.reshard.reason
                assert snap.shard_total == 8 and not task_a.done()
                await until(lambda: a.active_shards() == 4, 10, "host A's old shards")
                record = await redis_value(redis_server.url, "shardstack:*:reshard")
                layout = await redis_value(redis_server.url, "shardstack:*:layout")
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    assert [v[b"phase"] for v in record.values()] == [b"rolled_back"]
    assert list(layout.values()) == [b"8,4"]


async def test_after_redis_lost_its_data_the_next_reshard_moves_every_host_again(tmp_path, id_log, redis_server):
    """The reshard epoch counter restarts at 1 in a Redis restarted empty, while host B has seen epoch 1 already: B
    must still join the next reshard (a record is known by its epoch and a random id, not by a higher epoch)."""
    async with Simulator(shards=4, max_concurrency=2, guilds_per_shard=2, **FAST) as sim:
        async with two_hosts(sim, redis_server.url, tmp_path, shards=4) as (a, b, task_a, task_b):
            await a.reshard(6)
            await until(ended(a, b), 60, "the first reshard's end on both hosts")
            assert [s.snapshot().reshard.phase for s in (a, b)] == ["done", "done"]
            assert {s.status()["reshard"]["epoch"] for s in (a, b)} == {1}
            redis_server.kill()
            redis_server.start()  # empty: the epoch counter starts again
            hosts = {}
            for _ in range(200):  # the registry loops write both hosts' records again
                hosts = await redis_value(redis_server.url, "shardstack:*:host:*")
                if len(hosts) == 2:
                    break
                await asyncio.sleep(0.1)
            assert sorted(_json(h)["shard_total"] for h in hosts.values()) == [6, 6]
            await a.reshard(8)
            await until(ended(a), 60, "the second reshard's end on host A")
            assert a.snapshot().reshard.phase == "done", a.snapshot().reshard.reason  # B joined: the cluster switched
            await until(lambda: b.snapshot().reshard.new_total == 8 and ended(b)(), 30, "the end on host B")
            for sup in (a, b):
                snap = sup.snapshot()
                assert snap.reshard.phase == "done", snap.reshard.reason
                assert snap.shard_total == 8 and sup.status()["reshard"]["epoch"] == 1
            assert sorted(a.shards) == [0, 1, 2, 3] and sorted(b.shards) == [4, 5, 6, 7]
            assert not task_a.done() and not task_b.done()


async def test_a_failed_passed_report_is_made_again_at_the_next_step_not_at_the_cut_timeout(tmp_path, id_log,
                                                                                             redis_server):
    """Host B's first report of its old shards past the cut fails (Redis trouble on that one call): B reports again at
    its next step, and the cluster switches because every host passed, long before the 60 s cut timeout would force
    it ("switching anyway")."""
    async with Simulator(shards=4, max_concurrency=2, guilds_per_shard=2, **FAST) as sim:
        async with two_hosts(sim, redis_server.url, tmp_path, shards=4, reshard_cut_timeout=60.0) as (a, b, ta, tb):
            store = b._resharder._store
            report, calls = store.report, []

            async def failing_once(record, what, digests=()):
                calls.append(what)
                if what == "passed" and calls.count("passed") == 1:
                    raise CoordinatorUnavailable("coordinator redis://127.0.0.1 unavailable: injected")
                return await report(record, what, digests)

            store.report = failing_once
            await a.reshard(6)
            await until(lambda: calls.count("passed") == 2 and ended(a, b)(), 40, "the reshard's end on both hosts")
            for sup in (a, b):
                snap = sup.snapshot()
                assert snap.reshard.phase == "done" and snap.reshard.reason == "", snap.reshard
                assert snap.shard_total == 6
            assert not ta.done() and not tb.done()


async def test_a_host_that_finds_the_record_gone_after_the_cluster_switched_switches_too(tmp_path, id_log,
                                                                                          redis_server):
    """Host B reported its old shards past the cut, then could not read the record (Redis trouble on its reads) until
    the cluster had switched and the record had left Redis: the layout in Redis says the cluster switched, so B
    switches too instead of rolling back alone (a split layout that nothing would heal)."""
    async with Simulator(shards=4, max_concurrency=2, guilds_per_shard=2, **FAST) as sim:
        async with two_hosts(sim, redis_server.url, tmp_path, shards=4, reshard_cut_timeout=60.0) as (a, b, ta, tb):
            store = b._resharder._store
            read, report, blind = store.read, store.report, asyncio.Event()

            async def reported(record, what, digests=()):
                done = await report(record, what, digests)
                if what == "passed" and done:
                    blind.set()
                return done

            async def failing_read():
                if blind.is_set():
                    raise CoordinatorUnavailable("coordinator redis://127.0.0.1 unavailable: injected")
                return await read()

            store.read, store.report = failing_read, reported
            await a.reshard(6)
            await until(ended(a), 40, "the switch on host A")
            assert a.snapshot().reshard.phase == "done" and b.snapshot().reshard.phase == "cutting_over"
            client = await connect(redis_server.url)
            try:
                assert await client.delete(*await client.keys("shardstack:*:reshard")) == 1
            finally:
                await client.aclose()
            store.read = read
            blind.clear()
            await until(ended(b), 30, "the reshard's end on host B")
            snap = b.snapshot()
            assert snap.reshard.phase == "done" and snap.shard_total == 6, snap.reshard
            assert "the reshard record left Redis, but the cluster had switched to 6 shards" in snap.reshard.reason
            assert sorted(a.shards) == [0, 1, 2] and sorted(b.shards) == [3, 4, 5]
            assert not ta.done() and not tb.done()
