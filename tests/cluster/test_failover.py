"""Automatic failover and rebalancing across hosts (issue 9): real `python -m cluster run --assign auto`
processes (each in its own process group, like a machine), one redis-server of the test's own, the strict
simulator. Lease TTL 3 s. The shards heartbeat every 6 s, so a frozen host that was not fenced would owe a
heartbeat when it wakes; the simulator closes a connection only after 60 s without one (Discord's interval is
41 s: the README's rule of a TTL well under it), so that a frozen host's sessions outlive the freeze however
slowly a loaded machine brings the takeover about (a 4009 close would end them for good)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter

import pytest
from redis.exceptions import ConnectionError  # noqa: A004 - redis's, not the builtin

from cluster.coordination.redis_conn import connect
from cluster.hosts import read_hosts
from cluster.leases import layout_ns, lease_key, parse_lease
from cluster_testing import http_get
from hosts_testing import active, hosts_of, identified_again, sessions_saved

SHARDS = 24
BLOCKS = 6
TTL = 3.0
NS = "shardstack:failover:"


@pytest.fixture
def sim_options():
    return dict(shards=SHARDS, max_concurrency=4, identify_window=1.0, events_per_second=5.0, heartbeat_interval=6000,
                heartbeat_grace=60.0)


@pytest.fixture
async def hosts(sim, redis_server, tmp_path):
    async with hosts_of(sim, redis_server.url, tmp_path, "--assign", "auto", "--shards-per-worker", "4",
                        "--lease-ttl", str(TTL), "--host-ttl", "5", "--cluster-name", "failover",
                        "--state-save-interval", "0.5") as h:
        yield h


@pytest.fixture
async def redis(redis_server):
    c = await connect(redis_server.url)
    yield c
    await c.aclose()


async def owners(redis) -> dict[int, str]:
    raws = await redis.mget([lease_key(layout_ns(NS, SHARDS), b) for b in range(BLOCKS)])
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
    assert snap["total"]["violations"] == 0, identified_again(snap)
    assert snap["total"]["lost"] == 0 and snap["total"]["gapless"], snap["sessions"]
    assert snap["total"]["frames_after_takeover"] == 0


def owner_of_block_0(hosts, got):
    """(name, registry id) of the host that holds block 0 in ``got`` (block -> owner)."""
    return next(n for n in hosts.procs if got[0].startswith(f"machine-{n}-")), got[0]


async def three_hosts(sim, hosts, redis, ttl=TTL):
    for name in ("a", "b", "c"):
        await hosts.start(name, "--lease-ttl", str(ttl))
    got = await wait_leases(redis, lambda g: spread(g, 3), 60)
    await sim.wait_until(lambda s: active(s) == SHARDS, 60)
    await sessions_saved(hosts.redis_url, NS, SHARDS)  # a host killed or frozen from now on has saved them all
    return got


async def test_three_hosts_spread_the_blocks_evenly_with_one_identify_per_shard(sim, hosts, redis):
    await three_hosts(sim, hosts, redis)
    snap = sim.stats.snapshot()
    assert snap["total"]["identifies"] == SHARDS, identified_again(snap)
    clean(snap)
    errs = []
    for name in ("a", "b", "c"):
        code, err = await hosts.stop(name)
        errs.append(err)
        assert code == 0, err
    assert await owners(redis) == {}, errs  # every lease released on the way out
    snap = sim.stats.snapshot()
    assert snap["total"]["identifies"] == SHARDS, identified_again(snap)  # the leaving hosts' blocks moved by resume
    clean(snap)


async def test_kill_9_of_a_host_resumes_its_shards_on_the_survivors(sim, hosts, redis):
    got = await three_hosts(sim, hosts, redis)
    name, victim = owner_of_block_0(hosts, got)
    hosts.killpg(name, signal.SIGKILL)
    await wait_leases(redis, lambda g: spread(g, 2) and victim not in g.values(), TTL + 10)
    snap = await sim.wait_until(lambda s: active(s) == SHARDS, 30)
    assert snap["total"]["identifies"] == SHARDS, identified_again(snap)  # resumed, not identified
    clean(snap)
    # visible: each survivor's /status shows the blocks, owners and lease ages, /metrics the failovers
    survivors = [h for h in await read_hosts(redis, NS) if h.host_id != victim]
    now = await owners(redis)
    deadline = time.monotonic() + 10
    while True:  # each host shows the leases as it last read them (every TTL / 3): poll its /status
        statuses = [json.loads((await asyncio.to_thread(http_get, h.http_url + "/status"))[1]) for h in survivors]
        if all({b["block"]: b["owner"] for b in st["blocks"]} == now for st in statuses):
            break
        assert time.monotonic() < deadline, statuses
        await asyncio.sleep(0.2)
    for h, st in zip(survivors, statuses, strict=True):
        assert all(0 <= b["lease_age"] <= TTL for b in st["blocks"])
        assert {b["block"] for b in st["blocks"] if b["mine"]} == {b for b, o in now.items() if o == h.host_id}
    moves = [(m["event"], m["reason"]) for st in statuses for m in st["lease_moves"]]
    assert moves.count(("failover", "lease_expired")) >= 1 and ("claim", "failover") in moves
    metrics = "".join([(await asyncio.to_thread(http_get, h.http_url + "/metrics"))[1] for h in survivors])
    assert 'cluster_lease_moves_total{event="failover",reason="lease_expired"}' in metrics


async def test_a_frozen_host_is_taken_over_and_stands_down_without_a_frame(sim, hosts, redis):
    got = await three_hosts(sim, hosts, redis)
    name, victim = owner_of_block_0(hosts, got)
    hosts.killpg(name, signal.SIGSTOP)
    await wait_leases(redis, lambda g: spread(g, 2) and victim not in g.values(), TTL + 20)
    snap = await sim.wait_until(lambda s: s["total"]["overlapping_resumes"] >= 8 and active(s) == SHARDS, 60)
    hosts.killpg(name, signal.SIGCONT)
    await wait_leases(redis, lambda g: spread(g, 3), 60)  # it rejoins as a new host: blocks move back to it
    snap = await sim.wait_until(lambda s: active(s) == SHARDS, 30)
    assert snap["total"]["identifies"] == SHARDS, identified_again(snap)
    clean(snap)
    takeovers = [t for r in snap["shards"].values() for t in r["takeovers"]]
    assert len(takeovers) == snap["total"]["overlapping_resumes"] >= 8
    assert all(t["old_idle"] >= TTL * 0.75 for t in takeovers), takeovers  # the old owner was silent: frozen


async def test_joining_hosts_get_blocks_one_at_a_time_and_a_leaving_one_gives_them_back_without_identifies(
        sim, hosts, redis):
    await hosts.start("a")
    await wait_leases(redis, lambda g: len(g) == BLOCKS and len(set(g.values())) == 1, 60)
    await sim.wait_until(lambda s: active(s) == SHARDS, 60)
    peak = 0

    def reconnecting(snap):  # every change of the simulator's sessions passes here while the blocks move
        nonlocal peak
        peak = max(peak, sum(1 for r in snap["sessions"].values() if r["state"] == "detached"))
        return False

    watcher = asyncio.ensure_future(sim.wait_until(reconnecting, 300))
    try:
        for name in ("b", "c", "d"):
            await hosts.start(name)
        await wait_leases(redis, lambda g: spread(g, 4), 120)  # 4 of a's 6 blocks move: 2, 2, 1, 1
        snap = await sim.wait_until(lambda s: active(s) == SHARDS, 30)
    finally:
        watcher.cancel()
    assert 0 < peak <= 4, peak  # one block (4 shards) reconnecting at a time, in the whole cluster
    assert snap["total"]["identifies"] == SHARDS, identified_again(snap)
    code, err = await hosts.stop("a")
    assert code == 0, err
    await wait_leases(redis, lambda g: spread(g, 3), 30)
    snap = await sim.wait_until(lambda s: active(s) == SHARDS, 30)
    assert snap["total"]["identifies"] == SHARDS, identified_again(snap)
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
