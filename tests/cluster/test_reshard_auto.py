"""Live resharding under ``--assign auto`` (issue 10): two `python -m cluster run --assign auto` hosts (each in its
own process group, like a machine) on one redis-server of the test's own move from 8 shards in 2 blocks to 16 in 4
blocks under the simulator's guild stream with every event kind: every event delivered exactly once, no guild from
both sets at once, the new blocks leased two per host and the old leases released; then a host killed with SIGKILL
has its new-layout blocks resumed on the other with no identify. A host killed before the switch rolls the reshard
back, and the old layout serves on (its blocks fail over as usual) without losing an event."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter

import pytest
from cluster_testing import http_get, until
from hosts_testing import active, hosts_of, identified_again
from test_reshard import FAST, HANDLER, INTENTS, KINDS, _cli, all_delivered, delivered, set_times

from cluster.coordination.redis_conn import connect
from cluster.hosts import read_hosts
from cluster.leases import layout_ns, lease_key, parse_lease
from sim import Simulator

pytestmark = pytest.mark.usefixtures("id_log")

NS = "shardstack:autoreshard:"
TTL = 3.0
TOKEN = "s3cret"


@pytest.fixture
async def redis(redis_server):
    c = await connect(redis_server.url)
    yield c
    await c.aclose()


async def owners(redis, shards: int) -> dict[int, str]:
    """block -> owner of the leases of the ``shards``-shard layout (blocks of 4)."""
    raws = await redis.mget([lease_key(layout_ns(NS, shards), b) for b in range(shards // 4)])
    return {b: lease.owner for b, raw in enumerate(raws) if (lease := parse_lease(b, raw)) is not None}


async def poll(what: str, check, timeout: float):
    """Until the coroutine function ``check()`` returns something true (other processes' state: polled)."""
    deadline = time.monotonic() + timeout
    while not (got := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {got!r}"
        await asyncio.sleep(0.1)
    return got


async def status(redis, host_prefix: str) -> dict:
    """The /status of the live host whose registry id starts with ``host_prefix``."""
    record = next(h for h in await read_hosts(redis, NS) if h.host_id.startswith(host_prefix))
    code, body = await asyncio.to_thread(http_get, record.http_url + "/status")
    assert code == 200, body
    return json.loads(body)


async def two_hosts(hosts, redis, sim, *extra):
    for name in ("a", "b"):
        await hosts.start(name, *extra, env={"CLUSTER_HTTP_TOKEN": TOKEN})
    await poll("one old block a host", lambda: _spread(redis, 8, 2), 60)
    await sim.wait_until(lambda s: active(s) == 8, 60)


async def _spread(redis, shards: int, n: int) -> dict[int, str] | None:
    got = await owners(redis, shards)
    counts = Counter(got.values())
    return got if len(got) == shards // 4 and len(counts) == n and max(counts.values()) - min(counts.values()) <= 1 \
        else None


def host_options():
    return ("--assign", "auto", "--shards", "8", "--shards-per-worker", "4", "--lease-ttl", str(TTL), "--host-ttl",
            "5", "--cluster-name", "autoreshard", "--identify-window", "0.3", "--intents", str(INTENTS),
            "--log-level", "INFO")  # on failure, pytest shows each host's lease moves and reshard steps


@pytest.fixture
async def hosts(redis_server, tmp_path, sim):
    async with hosts_of(sim, redis_server.url, tmp_path, *host_options(), handler=HANDLER) as h:
        yield h


@pytest.fixture
async def sim():
    async with Simulator(shards=8, max_concurrency=4, guilds_per_shard=4, guild_event_kinds=KINDS,
                         guild_event_id_skew=0.3, guild_event_jitter=0.05, **FAST) as s:
        yield s


async def new_sessions_saved(redis) -> bool:
    keys = [f"{NS}session:{s}" for s in range(16)]
    async with redis.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.hget(k, "shard_total")
        return all(v == b"16" for v in await pipe.execute())


async def reshard_on_a(hosts, redis, sim, rate: int, *cli: str, host_options: tuple[str, ...] = ()) -> str:
    """Hosts A and B up, the stream at ``rate`` events a second for a while, then ``cluster reshard --shards 16`` with
    ``cli`` against host A (it leads; B takes part by the record in Redis): what it printed."""
    await two_hosts(hosts, redis, sim, *host_options)
    if rate:
        sim.config.guild_events_per_second = rate
        await until(lambda: sim.guild_events.total >= rate * 2 // 3, 10, "traffic before the reshard")
    url = next(h for h in await read_hosts(redis, NS) if h.host_id.startswith("machine-a-")).http_url
    code, out, err = await _cli("--url", url, "--shards", "16", *cli, token=TOKEN)
    assert code == 0, (out, err)
    return out


async def test_two_auto_hosts_move_from_8_to_16_shards_and_a_killed_host_resumes_on_the_other(
        sim, hosts, redis, id_log):
    out = await reshard_on_a(hosts, redis, sim, 150)
    assert out.splitlines()[-1].startswith("done: 16 shards"), out
    statuses = await poll("host B's reshard done", lambda: _both_done(redis), 30)
    assert [s["reshard"]["phase"] for s in statuses] == ["done", "done"], statuses
    new = await poll("the new blocks leased two a host", lambda: _spread(redis, 16, 2), 10)
    assert {o.split("-")[1] for o in new.values()} == {"a", "b"}
    assert await poll("the old leases released", lambda: _old_gone(redis), 10)
    # and the old layout's epoch counters and markers deleted by the last host to release (review finding 10)
    assert await poll("the old layout's lease keys deleted", lambda: _no_keys(redis, 8), 10)
    await sim.wait_until(lambda s: active(s) == 16, 30)
    total = sim.guild_events.total
    await until(lambda: sim.guild_events.total >= total + 100, 10, "traffic after the reshard")
    got = await all_delivered(sim, id_log)
    stats = sim.stats.snapshot()
    log = sim.guild_event_log()
    emitted = [int(i) for i in log["ids"]]
    assert sorted(Counter(e["type"] for e in log["events"])) == sorted(KINDS.split(","))
    counts = Counter(d[0] for d in got)
    assert len(emitted) >= 200 and sorted(counts) == sorted(emitted)  # every emitted event reached a handler
    kind = {int(e["id"]): e["type"] for e in log["events"]}
    assert [(i, kind.get(i)) for i, n in counts.items() if n > 1] == []  # and only one
    assert {d[2] for d in got} == {8, 16}  # both sets delivered part of the stream
    last_old, first_new = set_times(got, 8)
    assert [g for g in last_old if last_old[g] > first_new[g]] == []  # no guild from two sets: the old set's came first
    creates = [g for _, g, total, _ in delivered(id_log, guilds=True) if total == 16]
    assert sorted(creates) == sorted(last_old)  # each guild's GUILD_CREATE once to the new handlers, at the switch
    sets = stats["sets"]
    assert sets["8"]["identifies"] == 8 and sets["16"]["identifies"] == 16, identified_again(stats)
    assert stats["total"]["identifies"] == 24
    assert sets["8"]["sessions"] == {"closed": 8} and sets["8"]["closes"].get("client 1000") == 8
    assert stats["total"]["concurrency_violations"] == 0
    layout = await redis.get(f"{NS}layout")
    assert layout == b"16,4"

    # a host dies after the switch: its new-layout blocks resume on the survivor, no identify beyond the 24
    await poll("the new set's sessions saved", lambda: new_sessions_saved(redis), 10)
    hosts.killpg("b", signal.SIGKILL)
    survivor = await poll("host A holding every new block",
                          lambda: _spread(redis, 16, 1), TTL + 20)
    assert set(survivor.values()) == {o for o in new.values() if o.startswith("machine-a-")}
    snap = await sim.wait_until(lambda s: active(s) == 16, 30)
    assert snap["total"]["identifies"] == 24, identified_again(snap)
    assert snap["sets"]["16"]["resumes"] >= 8
    st = await poll("host A's /status showing the four blocks its own", lambda: _holds_all(redis), 10)
    assert st["shard_total"] == 16 and [b["shards"] for b in st["blocks"]] == [[0, 3], [4, 7], [8, 11], [12, 15]]


async def _holds_all(redis):
    st = await status(redis, "machine-a-")
    return st if sorted(b["block"] for b in st["blocks"] if b["mine"]) == [0, 1, 2, 3] else None


async def _both_done(redis):
    statuses = [await status(redis, f"machine-{n}-") for n in ("a", "b")]
    return statuses if all(s["reshard"] and s["reshard"]["phase"] in ("done", "rolled_back") for s in statuses) \
        else None


async def _old_gone(redis) -> bool:
    return not await owners(redis, 8)


async def _no_keys(redis, shards: int) -> bool:
    return not await redis.keys(f"{layout_ns(NS, shards)}*")


async def test_a_host_killed_before_the_switch_rolls_the_reshard_back_and_the_old_layout_serves_on(
        sim, hosts, redis, id_log):
    await reshard_on_a(hosts, redis, sim, 100, "--no-wait")
    await poll("host B's new blocks leased", lambda: _b_reserved(redis), 30)
    hosts.killpg("b", signal.SIGKILL)  # before the switch: B's new blocks are warming up
    st = await poll("the reshard's end on host A", lambda: _ended(redis), 30)
    assert st["reshard"]["phase"] == "rolled_back", st["reshard"]
    assert "left the registry" in st["reshard"]["reason"] and st["shard_total"] == 8
    record = await redis.hgetall(f"{NS}reshard")
    assert record[b"phase"] == b"rolled_back" and await redis.get(f"{NS}layout") == b"8,4"
    old = await poll("host A holding both old blocks", lambda: _spread(redis, 8, 1), TTL + 20)
    assert all(o.startswith("machine-a-") for o in old.values())
    assert await poll("the new leases gone", lambda: _new_gone(redis), 10)
    snap = await sim.wait_until(lambda s: sum(1 for r in s["sessions"].values()
                                              if r["state"] == "active" and r["shard"][1] == 8) == 8, 30)
    total = sim.guild_events.total
    await until(lambda: sim.guild_events.total >= total + 50, 10, "traffic after the rollback")
    got = await all_delivered(sim, id_log)
    emitted = {int(i) for i in sim.guild_event_log()["ids"]}
    assert {d[0] for d in got} == emitted  # no event lost: B's old block resumed on A
    assert {d[2] for d in got} == {8}  # the new set never delivered
    snap = sim.stats.snapshot()
    assert snap["sets"]["8"]["identifies"] == 8, identified_again(snap)  # the old block failed over by resume
    assert all(r["state"] != "active" for r in snap["sessions"].values() if r["shard"][1] == 16)


async def _b_reserved(redis) -> bool:
    return sum(1 for o in (await owners(redis, 16)).values() if o.startswith("machine-b-")) == 2


async def _new_gone(redis) -> bool:
    return not await owners(redis, 16)


async def _ended(redis):
    st = await status(redis, "machine-a-")
    return st if st["reshard"] and st["reshard"]["phase"] in ("done", "rolled_back") else None


async def test_a_host_joining_during_the_reshard_waits_for_its_end_then_gets_new_blocks_by_rebalancing(
        hosts, redis, id_log):
    """Identify windows of 2 s: the new set takes a few seconds to warm up, and host C registers meanwhile. It takes
    no part (the record names A and B), holds no block until the switch, then leases blocks of the 16-shard layout
    by the usual rebalancing (a handoff: a resume, no identify)."""
    sim = hosts.sim
    sim.config.identify_window = 2.0
    await reshard_on_a(hosts, redis, sim, 0, "--no-wait", host_options=("--identify-window", "2"))
    c = await hosts.start("c", "--identify-window", "2", env={"CLUSTER_HTTP_TOKEN": TOKEN})
    await poll("host C registered", lambda: _registered(redis, "machine-c-"), 30)
    record = await redis.hgetall(f"{NS}reshard")
    assert record[b"phase"] == b"warming" and b"machine-c-" not in record[b"hosts"]  # it came during the warm-up
    await c.wait_for("the cluster resharded from 8 to 16 shards without this host", 60)
    got = await poll("the new blocks spread over the three hosts", lambda: _spread(redis, 16, 3), 60)
    assert any(o.startswith("machine-c-") for o in got.values())
    snap = await sim.wait_until(lambda s: active(s) == 16, 30)
    assert snap["sets"]["8"]["identifies"] == 8 and snap["sets"]["16"]["identifies"] == 16, identified_again(snap)
    assert snap["total"]["identifies"] == 24  # C's block came by a handoff: resumed


async def _registered(redis, prefix: str) -> bool:
    return any(h.host_id.startswith(prefix) for h in await read_hosts(redis, NS))
