"""Several hosts, one bot, on Redis (issue 8): real `python -m cluster run` processes, one per host, sharing a
redis-server of the test's own, against the strict simulator."""

import asyncio

import pytest

from hosts_testing import active, hosts_of, identified_again, sessions_saved

SHARDS = 24


@pytest.fixture
def sim_options():
    return dict(shards=SHARDS, max_concurrency=4, identify_window=1.0, events_per_second=5.0, heartbeat_interval=1000)


@pytest.fixture
async def hosts(sim, redis_server, tmp_path):
    async with hosts_of(sim, redis_server.url, tmp_path, "--workers", "2", "--cluster-name", "acceptance") as h:
        yield h


async def test_three_hosts_bring_up_24_shards_once_each_with_no_violation(sim, hosts):
    for i in range(3):
        await hosts.start(f"h{i}", "--host-index", str(i), "--host-count", "3")
    snap = await sim.wait_until(lambda s: active(s) == SHARDS, 60)
    assert snap["total"]["identifies"] == SHARDS
    assert snap["total"]["violations"] == 0
    assert all(snap["shards"][str(s)]["identifies"] == 1 for s in range(SHARDS))  # every shard READY once
    for name, (code, err) in (await hosts.stop_all()).items():
        assert code == 0, f"{name}: {err}"


async def test_overlapping_ranges_and_a_different_shard_count_are_refused(sim, hosts):
    await hosts.start("a", "--shard-range", "0-11")
    await sim.wait_until(lambda s: s["total"]["identifies"] >= 1, 30)
    code, err = await hosts.run_to_end("b", "--shard-range", "8-23")
    assert code == 2, err
    assert "overlap those of a live host" in err and "runs shards 0-11" in err
    assert len(err.strip().splitlines()) <= 2, err  # the log line and the CLI's one line
    code, err = await hosts.run_to_end("c", "--shard-range", "12-23", "--shards", "32")
    assert code == 2, err
    assert "started with 32 shards, but the cluster has 24" in err
    code, err = await hosts.run_to_end("d", "--host-index", "auto", "--host-count", "2", env={"HOSTNAME": "laptop"})
    assert code == 2 and "needs a host name ending in -<ordinal>" in err, err
    code, err = await hosts.run_to_end("e", "--host-index", "auto", "--host-count", "3", env={"HOSTNAME": "bot-1"})
    assert code == 2 and "shards 8-15 overlap" in err, err  # the pod's ordinal 1 of 3: shards 8-15
    code, _ = await hosts.stop("a")
    assert code == 0


async def test_redis_killed_and_restarted_during_bring_up_and_steady_state(sim, hosts, redis_server):
    for i in range(3):
        await hosts.start(f"h{i}", "--host-index", str(i), "--host-count", "3")
    await sim.wait_until(lambda s: s["total"]["identifies"] >= 4, 60)
    redis_server.kill()  # during bring-up
    await asyncio.sleep(1.5)  # an outage of some length (Redis is gone: nothing to await)
    redis_server.start()
    snap = await sim.wait_until(lambda s: active(s) == SHARDS, 90)
    assert snap["total"]["violations"] == 0
    redis_server.kill()  # steady state: every shard keeps running
    await asyncio.sleep(1.5)
    redis_server.start()
    snap = sim.stats.snapshot()
    assert active(snap) == SHARDS and snap["total"]["violations"] == 0
    assert snap["total"]["identifies"] == SHARDS
    for name, (code, err) in (await hosts.stop_all()).items():
        assert code == 0, f"{name}: {err}"
        assert err.count("coordinator unavailable") <= 2, err  # one line per outage, not per retry
    assert all(r["lost"] == 0 for r in sim.stats.snapshot()["sessions"].values())


async def test_readyz_and_metrics_say_when_the_coordinator_is_away(sim, redis_server, tmp_path):
    from cluster_testing import http_get, running, until
    async with running(sim, "cluster.example:ExampleHandler", tmp_path, workers=2, fresh=True,
                       coordinator=redis_server.url, cluster_name="probe", metrics_cache_interval=0) as (sup, _):
        await until(lambda: sup.active_shards() == SHARDS, 60, "every shard active")
        status, body = await asyncio.to_thread(http_get, sup.http_url + "/readyz")
        assert status == 200, body
        redis_server.kill()
        await until(lambda: not sup.snapshot().coordinator_up, 10, "the coordinator seen down")
        status, body = await asyncio.to_thread(http_get, sup.http_url + "/readyz")
        assert status == 503 and "coordinator unavailable" in body
        _, metrics = await asyncio.to_thread(http_get, sup.http_url + "/metrics")
        assert "cluster_coordinator_up 0.0" in metrics
        assert sup.active_shards() == SHARDS  # running shards keep running
        redis_server.start()
        await until(lambda: sup.snapshot().coordinator_up, 10, "the coordinator back")
        status, body = await asyncio.to_thread(http_get, sup.http_url + "/readyz")
        assert status == 200, body
        _, metrics = await asyncio.to_thread(http_get, sup.http_url + "/metrics")
        assert "cluster_coordinator_up 1.0" in metrics and "cluster_coordinator_errors_total" in metrics


async def test_a_host_waits_for_an_unreachable_redis_at_start(sim, hosts, redis_server):
    redis_server.kill()
    host = await hosts.start("h0", "--shard-range", "0-23")
    await host.wait_for("unavailable", 30)  # it waits, it does not exit
    assert host.returncode is None
    redis_server.start()
    snap = await sim.wait_until(lambda s: active(s) == SHARDS, 60)
    assert snap["total"]["violations"] == 0
    code, err = await hosts.stop("h0")
    assert code == 0, err


async def test_a_host_killed_with_sigkill_restarts_in_place_once_its_record_lapses(sim, hosts):
    """The pod's container restarts after kill -9: its own stale record (same machine) is waited out for host_ttl,
    not refused; another machine's live record is refused at once (test above)."""
    # the restarted host must come while the record lives: 10 s after the kill, far more than a start takes
    first = await hosts.start("h0", "--shard-range", "0-23", "--host-ttl", "10", "--state-save-interval", "0.2")
    identifies = (await sim.wait_until(lambda s: active(s) == SHARDS, 60))["total"]["identifies"]
    await sessions_saved(hosts.redis_url, "shardstack:acceptance:", SHARDS)
    first.proc.kill()  # the supervisor only: its workers see it gone and close their shards resumably
    await first.proc.wait()
    second = await hosts.start("h0", "--shard-range", "0-23", "--host-ttl", "10")
    await second.wait_for("waiting up to 10 s for its record to expire", 30)  # waits, is not refused
    snap = await sim.wait_until(lambda s: active(s) == SHARDS, 60)
    assert snap["total"]["violations"] == 0
    assert snap["total"]["identifies"] == identifies, identified_again(snap)  # all resumed from Redis's sessions
    assert snap["total"]["overlapping_resumes"] == 0  # the old workers had closed their shards by then
    code, err = await hosts.stop("h0")
    assert code == 0, err


async def test_a_wrong_password_or_a_bad_url_is_one_line_and_exit_2(sim, hosts, tmp_path):
    from redis_process import RedisServer
    secret = "right-pa55word"
    guarded = RedisServer(tmp_path, password=secret).start()
    try:
        hosts.redis_url = guarded.url.replace(secret, "wrong-pa55word")
        code, err = await hosts.run_to_end("h0", "--shard-range", "0-23")
        assert code == 2, err
        assert "refused the login" in err and "wrong-pa55word" not in err and secret not in err
        assert len(err.strip().splitlines()) <= 2, err
        hosts.redis_url = f"http://:{secret}@127.0.0.1:{guarded.port}/0"
        code, err = await hosts.run_to_end("h1", "--shard-range", "0-23")
        assert code == 2 and "must be a redis:// or rediss:// URL" in err and secret not in err, err
    finally:
        guarded.stop()


async def test_a_host_whose_record_lapsed_while_another_took_its_shards_yields_them(redis_server, tmp_path):
    """Its registry record expired (a partition longer than host_ttl) and a replacement registered the same shards:
    at its next renewal the host stops its shards with a clear error and exit 2, and leaves the sessions that the
    other host stores alone (its own are not saved over them)."""
    from cluster import ExitCode
    from cluster.hosts import host_key, new_record, register_host
    from cluster_testing import running, until
    from sim import Simulator

    ns = "shardstack:lapse:"
    async with Simulator(shards=4, max_concurrency=4, identify_window=1.0, events_per_second=20.0) as sim:
        async with running(sim, None, tmp_path, workers=1, fresh=True, coordinator=redis_server.url,
                           cluster_name="lapse", state_save_interval=0) as (sup, task):
            await until(lambda: sup.active_shards() == 4 and len(sup.sessions) == 4, 60, "bring-up")
            client = sup._redis
            await client.delete(host_key(ns, sup.host.host_id))  # what its TTL did while it could not reach Redis
            await register_host(client, ns, new_record("replacement", range(0, 4), 4), ttl=30)
            for s in range(4):  # the replacement's sessions (it resumed or identified the shards)
                await client.hset(f"{ns}session:{s}", mapping={"session_id": f"theirs-{s}", "host": "replacement"})
            code = await asyncio.wait_for(task, 30)
        assert code == ExitCode.CONFIG
        assert "registry record expired" in sup.exit_message and "host replacement" in sup.exit_message
        await sim.wait_until(lambda s: s["total"]["open_connections"] == 0, 10)  # its shards stopped
    for s in range(4):
        assert await client.hget(f"{ns}session:{s}", "session_id") == f"theirs-{s}".encode()
