"""Several hosts, one bot, on Redis (issue 8): real `python -m cluster run` processes, one per host, sharing a
redis-server of the test's own, against the strict simulator."""

import asyncio
import os
import signal
import sys

import pytest

SHARDS = 24


@pytest.fixture
def sim_options():
    return dict(shards=SHARDS, max_concurrency=4, identify_window=1.0, events_per_second=5.0, heartbeat_interval=1000)


def active(s):
    return sum(1 for r in s["sessions"].values() if r["state"] == "active")


class Hosts:
    """Supervisor processes of one cluster; each host's stderr is kept for the assertions."""

    def __init__(self, sim, redis_server, tmp_path):
        self.sim, self.redis, self.tmp = sim, redis_server, tmp_path
        self.procs = {}

    def args(self, name, *extra):
        return ["-m", "cluster", "run", "--handler", "cluster.example:ExampleHandler", "--workers", "2",
                "--gateway-url", self.sim.url, "--api-url", self.sim.api_url, "--identify-window", "1",
                "--coordinator", self.redis.url, "--cluster-name", "acceptance",
                "--state-file", str(self.tmp / f"{name}.json"), "--http-port", "0", "--report-interval", "0.2",
                "--no-status-line", "--log-level", "WARNING", *extra]

    async def start(self, name, *extra, env=None):
        env = {**os.environ, "DISCORD_TOKEN": self.sim.token, "HOSTNAME": f"machine-{name}", **(env or {})}
        self.procs[name] = await asyncio.create_subprocess_exec(sys.executable, *self.args(name, *extra), env=env,
                                                                stderr=asyncio.subprocess.PIPE)
        return self.procs[name]

    async def run_to_end(self, name, *extra, timeout=30, env=None):
        proc = await self.start(name, *extra, env=env)
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
        return proc.returncode, err.decode()

    async def stop(self, name, timeout=30):
        proc = self.procs.pop(name)
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
        return proc.returncode, err.decode()

    async def stop_all(self):
        results = {}
        for name in list(self.procs):
            results[name] = await self.stop(name)
        return results


@pytest.fixture
async def hosts(sim, redis_server, tmp_path):
    h = Hosts(sim, redis_server, tmp_path)
    yield h
    for proc in h.procs.values():
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


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
    proc = await hosts.start("h0", "--shard-range", "0-23")
    async with asyncio.timeout(30):
        while b"unavailable" not in (line := await proc.stderr.readline()):
            assert line, "the host exited instead of waiting for Redis"
    assert proc.returncode is None
    redis_server.start()
    snap = await sim.wait_until(lambda s: active(s) == SHARDS, 60)
    assert snap["total"]["violations"] == 0
    code, err = await hosts.stop("h0")
    assert code == 0, err


async def test_a_host_killed_with_sigkill_restarts_in_place_once_its_record_lapses(sim, hosts):
    """The pod's container restarts after kill -9: its own stale record (same machine) is waited out for host_ttl,
    not refused; another machine's live record is refused at once (test above)."""
    first = await hosts.start("h0", "--shard-range", "0-23", "--host-ttl", "3", "--state-save-interval", "0.2")
    await sim.wait_until(lambda s: active(s) == SHARDS, 60)
    first.kill()
    await first.wait()
    await sim.wait_until(lambda s: active(s) == 0, 30)  # its workers closed their shards once it was gone
    second = await hosts.start("h0", "--shard-range", "0-23", "--host-ttl", "3")
    async with asyncio.timeout(30):
        while b"waiting up to 3 s for its record to expire" not in (line := await second.stderr.readline()):
            assert line, "the restarted host exited instead of waiting for its predecessor's record"
    snap = await sim.wait_until(lambda s: active(s) == SHARDS, 60)
    assert snap["total"]["violations"] == 0
    code, err = await hosts.stop("h0")
    assert code == 0, err


async def test_a_wrong_password_or_a_bad_url_is_one_line_and_exit_2(sim, hosts, tmp_path):
    from redis_process import RedisServer
    secret = "right-pa55word"
    guarded = RedisServer(tmp_path, password=secret).start()
    try:
        hosts.redis = type("R", (), {"url": guarded.url.replace(secret, "wrong-pa55word")})()
        code, err = await hosts.run_to_end("h0", "--shard-range", "0-23")
        assert code == 2, err
        assert "refused the login" in err and "wrong-pa55word" not in err and secret not in err
        assert len(err.strip().splitlines()) <= 2, err
        hosts.redis = type("R", (), {"url": f"http://:{secret}@127.0.0.1:{guarded.port}/0"})()
        code, err = await hosts.run_to_end("h1", "--shard-range", "0-23")
        assert code == 2 and "must be a redis:// or rediss:// URL" in err and secret not in err, err
    finally:
        guarded.stop()
