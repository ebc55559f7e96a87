"""Automatic failover and rebalancing across hosts (issue 9): real `python -m cluster run --assign auto`
processes (each in its own process group, like a machine), one redis-server of the test's own, the strict
simulator. Lease TTL 3 s; the simulator's heartbeat interval is long enough that a frozen host's sessions
outlive the freeze (its missed-heartbeat close would end them for good)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.request
from collections import Counter

import pytest
from redis.exceptions import ConnectionError  # noqa: A004 - redis's, not the builtin

from cluster.coordination.redis_conn import connect
from cluster.hosts import read_hosts
from cluster.leases import parse_lease

SHARDS = 24
BLOCKS = 6
TTL = 3.0
NS = "shardstack:failover:"


@pytest.fixture
def sim_options():
    return dict(shards=SHARDS, max_concurrency=4, identify_window=1.0, events_per_second=5.0, heartbeat_interval=6000)


def active(s):
    return sum(1 for r in s["sessions"].values() if r["state"] == "active")


class Hosts:
    """Supervisor processes of one cluster, each the leader of its own process group (a machine)."""

    def __init__(self, sim, redis_server, tmp_path):
        self.sim, self.redis, self.tmp = sim, redis_server, tmp_path
        self.procs = {}

    async def start(self, name, ttl=TTL):
        args = ["-m", "cluster", "run", "--handler", "cluster.example:ExampleHandler", "--assign", "auto",
                "--shards-per-worker", "4", "--lease-ttl", str(ttl), "--host-ttl", "5",
                "--gateway-url", self.sim.url, "--api-url", self.sim.api_url, "--identify-window", "1",
                "--coordinator", self.redis.url, "--cluster-name", "failover", "--state-save-interval", "0.5",
                "--state-file", str(self.tmp / f"{name}.json"), "--http-port", "0", "--report-interval", "0.2",
                "--no-status-line", "--log-level", "WARNING"]
        env = {**os.environ, "DISCORD_TOKEN": self.sim.token, "HOSTNAME": f"machine-{name}"}
        self.procs[name] = await asyncio.create_subprocess_exec(sys.executable, *args, env=env,
                                                                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        return self.procs[name]

    async def stop(self, name, timeout=30):
        proc = self.procs.pop(name)
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
        return proc.returncode, err.decode()

    def killpg(self, name, sig):
        os.killpg(self.procs[name].pid, sig)


@pytest.fixture
async def hosts(sim, redis_server, tmp_path):
    h = Hosts(sim, redis_server, tmp_path)
    yield h
    for proc in h.procs.values():
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()


@pytest.fixture
async def redis(redis_server):
    c = await connect(redis_server.url)
    yield c
    await c.aclose()


async def owners(redis) -> dict[int, str]:
    raws = await redis.mget([f"{NS}lease:{b}" for b in range(BLOCKS)])
    return {b: lease.owner for b, raw in enumerate(raws) if (lease := parse_lease(b, raw)) is not None}


async def wait_leases(redis, pred, timeout):
    """Poll the leases in Redis (another process's state: nothing to await) until ``pred(owners)``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = await owners(redis)
        except ConnectionError:  # the test's own client, across a Redis restart
            got = None
        if got is not None and pred(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"leases never got there: {got}")
        await asyncio.sleep(0.2)


def spread(got, n):
    counts = Counter(got.values())
    return len(got) == BLOCKS and len(counts) == n and max(counts.values()) - min(counts.values()) <= 1


def clean(snap):
    assert snap["total"]["violations"] == 0
    assert snap["total"]["lost"] == 0 and snap["total"]["gapless"], snap["sessions"]
    assert snap["total"]["frames_after_takeover"] == 0


async def three_hosts(sim, hosts, redis, ttl=TTL):
    for name in ("a", "b", "c"):
        await hosts.start(name, ttl)
    got = await wait_leases(redis, lambda g: spread(g, 3), 60)
    await sim.wait_until(lambda s: active(s) == SHARDS, 60)
    return got


async def test_three_hosts_spread_the_blocks_evenly_with_one_identify_per_shard(sim, hosts, redis):
    await three_hosts(sim, hosts, redis)
    snap = sim.stats.snapshot()
    assert snap["total"]["identifies"] == SHARDS
    clean(snap)
    errs = []
    for name in ("a", "b", "c"):
        code, err = await hosts.stop(name)
        errs.append(err)
        assert code == 0, err
    assert await owners(redis) == {}, errs  # every lease released on the way out
    snap = sim.stats.snapshot()
    assert snap["total"]["identifies"] == SHARDS  # the leaving hosts' blocks moved by resume
    clean(snap)


async def test_kill_9_of_a_host_resumes_its_shards_on_the_survivors(sim, hosts, redis):
    got = await three_hosts(sim, hosts, redis)
    victim = next(iter(got.values()))
    name = next(n for n, p in hosts.procs.items() if victim.startswith(f"machine-{n}-"))
    hosts.killpg(name, signal.SIGKILL)
    await wait_leases(redis, lambda g: spread(g, 2) and victim not in g.values(), TTL + 10)
    snap = await sim.wait_until(lambda s: active(s) == SHARDS, 30)
    assert snap["total"]["identifies"] == SHARDS  # resumed, not identified
    clean(snap)
    # visible: each survivor's /status shows the blocks, owners and lease ages, /metrics the failovers
    survivors = [h for h in await read_hosts(redis, NS) if h.host_id != victim]
    now = await owners(redis)
    deadline = time.monotonic() + 10
    while True:  # each host shows the leases as it last read them (every TTL / 3): poll its /status
        statuses = [json.loads(await asyncio.to_thread(fetch, h.http_url + "/status")) for h in survivors]
        if all({b["block"]: b["owner"] for b in st["blocks"]} == now for st in statuses):
            break
        assert time.monotonic() < deadline, statuses
        await asyncio.sleep(0.2)
    for h, st in zip(survivors, statuses, strict=True):
        assert all(0 <= b["lease_age"] <= TTL for b in st["blocks"])
        assert {b["block"] for b in st["blocks"] if b["mine"]} == {b for b, o in now.items() if o == h.host_id}
    moves = [(m["event"], m["reason"]) for st in statuses for m in st["lease_moves"]]
    assert moves.count(("failover", "lease_expired")) >= 1 and ("claim", "failover") in moves
    metrics = "".join([await asyncio.to_thread(fetch, h.http_url + "/metrics") for h in survivors])
    assert 'cluster_lease_moves_total{event="failover",reason="lease_expired"}' in metrics


def fetch(url):
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - the test's own supervisor
        return resp.read().decode()


async def test_a_frozen_host_is_taken_over_and_stands_down_without_a_frame(sim, hosts, redis):
    got = await three_hosts(sim, hosts, redis)
    victim = next(iter(got.values()))
    name = next(n for n, p in hosts.procs.items() if victim.startswith(f"machine-{n}-"))
    hosts.killpg(name, signal.SIGSTOP)
    await wait_leases(redis, lambda g: spread(g, 2) and victim not in g.values(), TTL + 20)
    snap = await sim.wait_until(lambda s: s["total"]["overlapping_resumes"] >= 8 and active(s) == SHARDS, 60)
    hosts.killpg(name, signal.SIGCONT)
    await wait_leases(redis, lambda g: spread(g, 3), 60)  # it rejoins as a new host: blocks move back to it
    snap = await sim.wait_until(lambda s: active(s) == SHARDS, 30)
    assert snap["total"]["identifies"] == SHARDS
    clean(snap)
    takeovers = [t for r in snap["shards"].values() for t in r["takeovers"]]
    assert len(takeovers) == snap["total"]["overlapping_resumes"] >= 8
    assert all(t["old_idle"] >= TTL * 0.75 for t in takeovers), takeovers  # the old owner was silent: frozen


async def test_a_joining_host_gets_blocks_and_a_leaving_one_gives_them_back_without_identifies(sim, hosts, redis):
    await three_hosts(sim, hosts, redis)
    await hosts.start("d")
    await wait_leases(redis, lambda g: spread(g, 4), 60)
    snap = await sim.wait_until(lambda s: active(s) == SHARDS, 30)
    assert snap["total"]["identifies"] == SHARDS
    code, err = await hosts.stop("a")
    assert code == 0, err
    await wait_leases(redis, lambda g: spread(g, 3), 30)
    snap = await sim.wait_until(lambda s: active(s) == SHARDS, 30)
    assert snap["total"]["identifies"] == SHARDS
    assert snap["total"]["overlapping_resumes"] == 0  # every move was a drain, then a resume
    clean(snap)


async def test_a_redis_restart_takes_no_block_over(sim, hosts, redis, redis_server):
    ttl = 6.0  # a host stops its blocks TTL - margin = 4.5 s after its last renewal (at most 2 s before the kill)
    before = await three_hosts(sim, hosts, redis, ttl)
    resumes = sim.stats.snapshot()["total"]["resumes"]  # the first host's blocks moved to the others by resume
    redis_server.kill()
    await asyncio.sleep(1.0)  # an outage well within that (Redis is gone: nothing to await)
    redis_server.start()
    await wait_leases(redis, lambda g: g == before, 15)  # written back by their owners, epochs and all
    await asyncio.sleep(ttl)  # a lease-TTL of steady state in which a wrong takeover would show
    assert await owners(redis) == before
    snap = sim.stats.snapshot()
    assert active(snap) == SHARDS and snap["total"]["identifies"] == SHARDS
    assert snap["total"]["overlapping_resumes"] == 0 and snap["total"]["resumes"] == resumes  # no shard dropped
    clean(snap)
