"""Block leases for --assign auto (issue 9): the pure plan (fair shares, one handoff at a time, no lease taken
before it expires) and the Redis scripts (claim with a fencing epoch, renew, release, a Redis that lost its
data), against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.coordination.redis_conn import connect
from cluster.leases import (
    Lease,
    LeaseStore,
    Plan,
    Renewal,
    Takeover,
    blocks,
    deadline_after,
    epoch_key,
    fair,
    lease_key,
    margin,
    parse_lease,
    plan,
    quota,
    renew_interval,
    starting_key,
)

NS = "shardstack:test:"


# --- pure ------------------------------------------------------------------------------------

def test_blocks_are_worker_sized_ranges():
    assert blocks(24, 4) == [range(i, i + 4) for i in range(0, 24, 4)]
    assert blocks(10, 4) == [range(4), range(4, 8), range(8, 10)]
    assert blocks(8, None) == [range(8)]


def test_quota_splits_the_remainder_over_the_first_hosts_by_id():
    hosts = ["a", "b", "c", "d"]
    assert [quota(h, hosts, 6) for h in hosts] == [2, 2, 1, 1]
    assert sum(quota(h, hosts, 7) for h in hosts) == 7
    assert quota("z", [], 6) == 6  # alone, even before its own record is read


def test_the_timing_stops_a_host_before_its_lease_can_expire():
    ttl = 3.0
    assert deadline_after(100.0, ttl) == 100.0 + ttl - margin(ttl)
    assert 0 < margin(ttl) < ttl - renew_interval(ttl)  # a renewal is due well before the host must stop


def leases(owners: dict[int, str]) -> dict[int, Lease]:
    return {b: Lease(b, o, 1) for b, o in owners.items()}


def test_three_hosts_claim_six_free_blocks_two_each():
    held: dict[int, str] = {}
    hosts = ["a", "b", "c"]
    for h in hosts:  # one after another, as they start
        for b in plan(h, hosts, leases(held), 6).claim:
            held[b] = h
    assert sorted(held) == list(range(6))
    assert sorted(list(held.values()).count(h) for h in hosts) == [2, 2, 2]


def test_a_dead_hosts_blocks_are_claimed_only_once_its_leases_are_gone():
    held = {0: "a", 1: "a", 2: "b", 3: "b", 4: "c", 5: "c"}
    # c is gone from the host list but its leases have not expired yet: nothing to take
    assert plan("a", ["a", "b"], leases(held), 6) == Plan()
    free = {b: o for b, o in held.items() if o != "c"}
    assert plan("a", ["a", "b"], leases(free), 6).claim == (4,)
    assert plan("b", ["a", "b"], leases(free), 6).claim == (5,)


def test_a_newcomer_gets_blocks_by_handoffs_one_at_a_time():
    held = {b: ("a" if b < 3 else "b") for b in range(6)}
    hosts = ["a", "b", "c"]
    assert plan("c", hosts, leases(held), 6) == Plan()  # nothing free: it waits for a handoff
    moves = plan("a", hosts, leases(held), 6)
    assert moves == Plan(hand_off=2)
    assert plan("b", hosts, leases(held), 6) == Plan()  # as loaded as a: the lowest id gives first
    assert plan("a", hosts, leases(held), 6, handing_off=True) == Plan()  # one at a time
    del held[2]  # released: nothing more moves until it is claimed
    assert plan("b", hosts, leases(held), 6) == Plan() and plan("c", hosts, leases(held), 6).claim == (2,)
    held[2] = "c"
    claimed = {b: Lease(b, o, 1, starting=b == 2) for b, o in held.items()}  # c's shards of block 2 not active yet
    assert plan("b", hosts, claimed, 6) == Plan()  # the next move waits until the last moved block runs again
    assert plan("b", hosts, leases(held), 6) == Plan(hand_off=5)  # now the most loaded


def test_a_host_leaving_leaves_its_blocks_to_the_others():
    held = {b: h for b, h in zip(range(6), "aabbcc", strict=True)}
    for b in (4, 5):
        del held[b]  # c released them on SIGTERM
    hosts = ["a", "b"]
    claims = {h: plan(h, hosts, leases(held), 6).claim for h in hosts}
    assert sorted(claims["a"] + claims["b"]) == [4, 5]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12), st.lists(st.sampled_from("abcdef"), min_size=1, max_size=6, unique=True),
       st.randoms(use_true_random=False))
def test_planning_converges_to_fair_shares_with_every_block_held(block_count, hosts, rnd):
    held: dict[int, str] = {}
    for _ in range(10 * block_count + 10):  # hosts act in any order; a handoff frees the block at once
        h = rnd.choice(hosts)
        p = plan(h, hosts, leases(held), block_count)
        for b in p.claim:
            assert b not in held
            held[b] = h
        if p.hand_off is not None:
            assert held[p.hand_off] == h
            del held[p.hand_off]
    for h in hosts:  # a last full round
        for b in plan(h, hosts, leases(held), block_count).claim:
            held[b] = h
    assert sorted(held) == list(range(block_count))
    assert fair([list(held.values()).count(h) for h in hosts])


def test_parse_lease_refuses_what_is_not_a_lease():
    assert parse_lease(3, b"7:host-1:x", 2.5) == Lease(3, "host-1:x", 7, 2.5)
    for raw in (None, b"", b"7", b"x:host", b"7:"):
        assert parse_lease(0, raw) is None
    assert Lease(0, "a", 1, remaining=1.0).age(3.0) == 2.0


# --- Redis -----------------------------------------------------------------------------------

@pytest.fixture
async def client(redis_server):
    c = await connect(redis_server.url)
    yield c
    await c.aclose()


async def test_claim_gives_a_new_larger_epoch_to_each_tenure(client):
    a, b = LeaseStore(client, NS, "a", ttl=3.0), LeaseStore(client, NS, "b", ttl=3.0)
    e1, how = await a.claim(0)
    assert (e1, how) == (1, Takeover.NEW)
    assert await b.claim(0) is None  # held
    assert 0 < await client.pttl(lease_key(NS, 0)) <= 3000
    assert await a.release(0, e1)
    e2, how = await b.claim(0)
    assert (e2, how) == (2, Takeover.HANDOFF)
    await client.delete(lease_key(NS, 0))  # expired
    assert await a.claim(0) == (3, Takeover.FAILOVER)
    held = await a.read(2)
    assert list(held) == [0] and (held[0].owner, held[0].epoch) == ("a", 3) and 0 < held[0].remaining <= 3.0


async def test_a_fenced_out_host_can_neither_renew_nor_release(client):
    a, b = LeaseStore(client, NS, "a", ttl=3.0), LeaseStore(client, NS, "b", ttl=3.0)
    old, _ = await a.claim(0)
    await client.delete(lease_key(NS, 0))  # as if it expired while a was paused
    new, how = await b.claim(0)
    assert how == Takeover.FAILOVER
    assert new > old
    assert await a.renew({0: old}) == {0: Renewal.LOST}
    assert not await a.release(0, old)
    assert await a.renew({}) == {}
    assert (await b.read(1))[0].owner == "b"
    assert await b.renew({0: new}) == {0: Renewal.RENEWED}


async def test_a_renewal_writes_back_a_lease_redis_lost_with_the_same_epoch(client, redis_server):
    a = LeaseStore(client, NS, "a", ttl=3.0)
    epochs = {blk: (await a.claim(blk))[0] for blk in range(3)}
    redis_server.proc.kill()
    redis_server.proc.wait()
    redis_server.start()
    for _ in range(3):  # the client reconnects on the next command
        try:
            await client.ping()
            break
        except Exception:  # noqa: BLE001 - the first command after a restart may fail
            await asyncio.sleep(0.1)
    assert await a.renew(epochs) == {blk: Renewal.RESTORED for blk in range(3)}
    assert {blk: lease.epoch for blk, lease in (await a.read(3)).items()} == epochs
    assert int(await client.get(epoch_key(NS, 0))) >= epochs[0]
    assert await LeaseStore(client, NS, "b", ttl=3.0).claim(0) is None
    assert await a.renew(epochs) == {blk: Renewal.RENEWED for blk in range(3)}


def test_assign_auto_needs_a_coordinator_and_no_static_range():
    from cluster.config import ClusterConfig, ConfigError, load_config

    url = "redis://127.0.0.1:6379/0"
    cfg = load_config({"assign": "auto", "coordinator": url, "shards_per_worker": "4", "lease_ttl": "3"}, env={})
    assert (cfg.assign, cfg.lease_ttl) == ("auto", 3.0)
    assert (ClusterConfig().assign, ClusterConfig().lease_ttl) == ("static", 10.0)
    env = {"CLUSTER_ASSIGN": "auto", "CLUSTER_COORDINATOR": url, "CLUSTER_LEASE_TTL": "5"}  # a pod's ConfigMap
    assert (load_config({}, env=env).assign, load_config({}, env=env).lease_ttl) == ("auto", 5.0)
    for flags, message in (({"assign": "auto"}, "needs a coordinator"),
                           ({"assign": "auto", "coordinator": url, "shard_range": "0-3"}, "give no shard_range"),
                           ({"assign": "auto", "coordinator": url, "workers": "2"}, "shards_per_worker"),
                           ({"assign": "sometimes"}, "assign must be static or auto"),
                           ({"lease_ttl": "0.5"}, "lease_ttl must be >= 1")):
        with pytest.raises(ConfigError, match=message):
            load_config(flags, env={})


def test_status_and_the_status_table_show_blocks_owners_and_lease_ages():
    from cluster.cli import format_status
    from cluster.snapshot import BlockSnapshot, ClusterSnapshot

    snap = ClusterSnapshot(
        shard_total=8, max_concurrency=1, uptime=1.0, rolling=False, stopping=False, coordination=None,
        identifies={}, identify_waits=(), identify_wait_sum=0.0, restarts={}, errors={}, loop_lag=0.0, problems=(),
        workers=(), shards=(), blocks=(BlockSnapshot(0, 0, 3, "host-a", 4, 0.5, True),
                                       BlockSnapshot(1, 4, 7, None, None, None, False)),
        lease_moves={("claim", "failover"): 1, ("failover", "lease_expired"): 1})
    st = snap.status()
    assert st["blocks"][0] == {"block": 0, "shards": [0, 3], "owner": "host-a", "epoch": 4, "lease_age": 0.5,
                               "mine": True}
    assert {"event": "failover", "reason": "lease_expired", "count": 1} in st["lease_moves"]
    assert snap.ready  # a host of --assign auto without blocks is a ready standby
    text = format_status(st)
    assert "     0 0-3             4      0.5s  host-a (this host)" in text and "(free)" in text
    assert "lease moves: claim failover 1, failover lease_expired 1" in text


async def test_a_renewal_crossing_the_release_does_not_bring_the_lease_back(client):
    """The renewal loop and a handoff run at once: a renewal sent before the release and run after it finds the key
    gone, but the block was given up, not lost by Redis (a leaving host left one lease behind)."""
    a = LeaseStore(client, NS, "a", ttl=3.0)
    epoch, _ = await a.claim(0)
    assert await a.release(0, epoch)
    assert await a.renew({0: epoch}) == {0: Renewal.LOST}
    assert await a.read(1) == {}
    assert await LeaseStore(client, NS, "b", ttl=3.0).claim(0) == (epoch + 1, Takeover.HANDOFF)


async def test_a_late_renewal_does_not_write_back_over_a_later_tenure(client):
    """Another host had the block since (claimed, then released or expired): the old epoch is not written back."""
    a, b = LeaseStore(client, NS, "a", ttl=3.0), LeaseStore(client, NS, "b", ttl=3.0)
    old, _ = await a.claim(0)
    await client.delete(lease_key(NS, 0))  # expired while a was paused
    new, _ = await b.claim(0)
    assert await b.release(0, new)
    assert await a.renew({0: old}) == {0: Renewal.LOST}
    assert await a.read(1) == {}


async def test_a_claimed_block_is_starting_until_its_owner_renews_it_as_started(client):
    a = LeaseStore(client, NS, "a", ttl=3.0)
    epoch, _ = await a.claim(0)
    assert (await a.read(1))[0].starting
    assert await a.renew({0: epoch}, starting={0}) == {0: Renewal.RENEWED}
    assert (await a.read(1))[0].starting and 0 < await client.pttl(starting_key(NS, 0)) <= 3000
    assert await a.renew({0: epoch}) == {0: Renewal.RENEWED}  # its shards are active
    assert not (await a.read(1))[0].starting and not await client.exists(starting_key(NS, 0))
    await client.set(starting_key(NS, 0), epoch - 1)  # a mark left by an earlier tenure is not this one's
    assert not (await a.read(1))[0].starting
    await a.started(0, epoch)  # nor is it removed by this one
    assert await client.get(starting_key(NS, 0)) == str(epoch - 1).encode()
    assert await a.renew({0: epoch}, starting={0}) == {0: Renewal.RENEWED}
    await a.started(0, epoch)  # the shards are active: said at once, not at the next renewal
    assert not (await a.read(1))[0].starting


# --- a live reshard's new layout (cluster.blocks.BlockKeeper.reserve / retire) -----------------

async def test_a_reshards_keeper_claims_its_share_of_the_new_layout_plans_nothing_and_releases_it_on_retire(client):
    from cluster.blocks import BlockKeeper
    from cluster.config import ClusterConfig
    from cluster.leases import layout_ns, released_key
    from cluster.restart import RestartPolicy
    from cluster.runtime import Runtime
    from cluster.workers import Workers

    rt = Runtime(ClusterConfig(), stop=lambda code, message: None, token=lambda: "")
    rt.shard_total = 16
    workers = Workers(rt, None, handler=None, shard_options={}, on_packet=lambda handle, packet: None)

    async def load(shards):
        raise AssertionError("a reserved block has no session to load")

    async def save(sessions):
        raise AssertionError("nothing is saved")

    new = layout_ns(NS, 16)
    keeper = BlockKeeper(rt, workers, LeaseStore(client, new, "a", ttl=3.0), client=client, ns=NS, host_ttl=5.0,
                         shards_per_worker=4, load=load, save=save, policy=lambda b: RestartPolicy(f"worker {b}"))
    await LeaseStore(client, layout_ns(NS, 8), "a", ttl=3.0).claim(1)  # block 1 of the old layout: another key
    await keeper.reserve(range(1, 3))
    assert sorted(keeper.held) == [1, 2] and not keeper.planning
    assert workers.may_run(1) and not workers.may_run(0)  # the new workers of its blocks only may start
    await keeper.tick()  # renewed, and the free blocks 0 and 3 of this lone host's share are not claimed
    got = await keeper.leases.read(4)
    assert sorted(got) == [1, 2] and all(le.owner == "a" and le.epoch == 1 and le.starting for le in got.values())
    assert keeper.fence(5) == (lease_key(new, 1), "1:a") and keeper.fence(0)[1] == "-"
    await keeper.retire()
    assert await keeper.leases.read(4) == {} and keeper.held == {} and not workers.may_run(1)
    assert [await client.get(released_key(new, b)) for b in (1, 2)] == [b"1", b"1"]
    assert keeper.moves == {("claim", "reshard"): 2, ("release", "resharded"): 2}
    assert await client.exists(lease_key(layout_ns(NS, 8), 1))  # the old layout's lease is untouched


async def test_a_lease_held_under_the_keys_before_layouts_stops_a_host_of_this_version_from_starting(client):
    from cluster.error import ConfigError
    from cluster.leases import check_no_legacy_leases, layout_ns

    await LeaseStore(client, layout_ns(NS, 8), "new", ttl=3.0).claim(0)  # this version's own keys are fine
    await check_no_legacy_leases(client, NS, 2)
    await client.set(f"{NS}lease:1", "4:old-host", px=3000)  # as an earlier version writes it
    with pytest.raises(ConfigError) as e:
        await check_no_legacy_leases(client, NS, 2)
    assert str(e.value) == (
        "1 block lease(s) under shardstack:test:lease:<block> are held by hosts of an earlier shardstack version (its "
        "leases are not keyed by layout): stop every host of that version before starting this one (no rolling "
        "update across this change)")


async def test_a_block_past_its_deadline_is_neither_renewed_nor_written_back(client):
    """Past a block's deadline (its renewals failed for ttl - margin, or the host was paused) the guard stops it and
    the host writes nothing more for it: a renewal sent before the guard's next check must not extend its lease,
    nor write it back once expired. It did, and the host let the block go with its lease still in Redis (a
    stopping host left a lease behind it for a TTL)."""
    import time

    from cluster.blocks import BlockKeeper
    from cluster.config import ClusterConfig
    from cluster.restart import RestartPolicy
    from cluster.runtime import Runtime
    from cluster.workers import Workers

    async def nothing(*args):
        return {}

    rt = Runtime(ClusterConfig(), stop=lambda code, message: None, token=lambda: "unused")
    rt.shard_total = 12
    workers = Workers(rt, None, handler=None, shard_options={}, on_packet=lambda handle, packet: None)
    keeper = BlockKeeper(rt, workers, LeaseStore(client, NS, "a", ttl=3.0), client=client, ns=NS, host_ttl=5.0,
                         shards_per_worker=4, load=nothing, save=nothing, policy=lambda block: RestartPolicy("w"))
    epochs = {blk: (await keeper.leases.claim(blk))[0] for blk in range(3)}
    now = time.monotonic()
    keeper.held.update(epochs)
    keeper.deadline.update({0: now - 0.1, 1: now - 0.1, 2: now + 2.0})  # 0 and 1 past their deadline
    await client.delete(lease_key(NS, 0))  # expired meanwhile
    for blk in (1, 2):
        await client.pexpire(lease_key(NS, blk), 1000)
    await keeper.renew()
    assert not await client.exists(lease_key(NS, 0))  # not written back
    assert 0 < await client.pttl(lease_key(NS, 1)) <= 1000  # not extended
    assert await client.pttl(lease_key(NS, 2)) > 1000 and keeper.deadline[2] > now + 2.0  # renewed


# --- a layout the cluster switched away from (a host that joined during a reshard) -------------

async def test_a_claim_of_a_layout_the_cluster_switched_away_from_is_refused(client):
    """Review finding 2: once a reshard's go made the cluster's layout (``<ns>layout``) 24 shards, a block of the old
    12-shard layout released by a switched host must not be claimed by a host still planning the old layout (its
    sessions went at go: it would identify and run those guilds twice). The claim script checks the layout."""
    from cluster.hosts import layout_key
    from cluster.leases import LayoutMoved, layout_ns

    old_ns, new_ns = layout_ns(NS, 12), layout_ns(NS, 24)
    old = LeaseStore(client, old_ns, "c", ttl=3.0, layout=(layout_key(NS), 12))
    new = LeaseStore(client, new_ns, "c", ttl=3.0, layout=(layout_key(NS), 24))
    assert await old.claim(0) == (1, Takeover.NEW)  # no layout stored (a flushed Redis): nothing refused
    await client.set(layout_key(NS), "12,4")
    assert await old.claim(1) == (1, Takeover.NEW)  # the cluster's layout: claimed
    with pytest.raises(LayoutMoved):
        await new.claim(0)  # the new layout is not the cluster's before go...
    assert await new.claim(0, reshard=True) == (1, Takeover.NEW)  # ...but a reshard reserves its blocks before go
    await client.set(layout_key(NS), "24,4")  # go
    with pytest.raises(LayoutMoved) as e:
        await old.claim(2)
    assert e.value.layout == "24,4"
    assert not await client.exists(lease_key(old_ns, 2), epoch_key(old_ns, 2), starting_key(old_ns, 2))
    assert sorted(await old.read(3)) == [0, 1]  # nothing written, no epoch spent
    assert await new.claim(1) == (1, Takeover.NEW)
    assert await old.renew({0: 1, 1: 1}) == {0: Renewal.RENEWED, 1: Renewal.RENEWED}  # held ones run until released


def claiming_keeper(client, shard_total: int, owner: str):
    """A keeper of the ``shard_total``-shard layout for ``owner`` (blocks of 4, its store checking the cluster's layout)
    whose claims stop at loading their sessions (CancelledError, from :meth:`BlockKeeper.tick`): no worker starts.
    Returns it and the list of the shard ranges it loaded."""
    from cluster.blocks import BlockKeeper
    from cluster.config import ClusterConfig
    from cluster.hosts import layout_key
    from cluster.leases import layout_ns
    from cluster.restart import RestartPolicy
    from cluster.runtime import Runtime
    from cluster.workers import Workers

    loaded: list[range] = []

    async def load(shards):
        loaded.append(shards)
        raise asyncio.CancelledError

    async def save(sessions):
        raise AssertionError("nothing is saved")

    rt = Runtime(ClusterConfig(), stop=lambda code, message: None, token=lambda: "unused")
    rt.shard_total = shard_total
    workers = Workers(rt, None, handler=None, shard_options={}, on_packet=lambda handle, packet: None)
    store = LeaseStore(client, layout_ns(NS, shard_total), owner, ttl=3.0, layout=(layout_key(NS), shard_total))
    keeper = BlockKeeper(rt, workers, store, client=client, ns=NS, host_ttl=5.0, shards_per_worker=4, load=load,
                         save=save, policy=lambda block: RestartPolicy("w"))
    return keeper, loaded


async def test_a_keeper_of_an_old_layout_claims_no_block_once_the_cluster_resharded(client):
    """The joining host of review finding 2, deterministically: its old-layout keeper plans 3 blocks with 2 of them
    free (the switched host released them) while the cluster's layout is already the new one; it claims nothing and
    keeps ticking (the resharder's layout poll retires it); with the old layout still the cluster's it claims them."""
    from cluster.hosts import layout_key
    from cluster.leases import layout_ns

    keeper, loaded = claiming_keeper(client, 12, "c")
    store, old_ns = keeper.leases, layout_ns(NS, 12)
    await LeaseStore(client, old_ns, "b", ttl=3.0).claim(2)  # B has not switched yet
    await client.set(layout_key(NS), "24,4")  # go: A switched and released blocks 0 and 1
    await keeper.tick()
    assert keeper.held == {} and keeper.layout_moved and loaded == [] and not keeper.moves
    assert sorted(await store.read(3)) == [2]
    await client.set(layout_key(NS), "12,4")  # (the same keeper while the old layout is still the cluster's)
    with pytest.raises(asyncio.CancelledError):
        await keeper.tick()
    assert loaded == [range(0, 4)] and keeper.moves[("claim", "new")] == 1  # claimed (given back: no sessions)


async def test_a_host_of_an_earlier_version_started_later_stops_this_hosts_claims_and_is_reported(client, caplog):
    """Review finding 4: the start's check cannot see a host of an earlier version started later, which leases
    blocks under the keys before layouts (``<ns>lease:<block>``) while this version runs them. The keeper checks at
    each tick: it keeps what it runs, claims nothing while they are held, logs an error (once per count, and once a
    minute), and ``/status`` and ``/metrics`` show the count."""
    import dataclasses
    import logging

    from cluster.metrics import render_snapshot
    from cluster.snapshot import ClusterSnapshot

    keeper, loaded = claiming_keeper(client, 8, "a")
    store = keeper.leases
    await client.set(f"{NS}lease:1", "4:old-host", px=30_000)  # as an earlier version writes it
    with caplog.at_level(logging.ERROR, logger="cluster"):
        await keeper.tick()
        await keeper.tick()  # the same count: not logged again before a minute
    assert keeper.legacy == 1 and keeper.held == {} and loaded == [] and await store.read(2) == {}
    assert caplog.text.count("1 block lease(s) under shardstack:test:lease:<block> are held by hosts of an earlier "
                             "shardstack version (started after this one)") == 1
    snap = ClusterSnapshot(
        shard_total=8, max_concurrency=1, uptime=1.0, rolling=False, stopping=False, coordination=None,
        identifies={}, identify_waits=(("+Inf", 0.0),), identify_wait_sum=0.0, restarts={}, errors={}, loop_lag=0.0,
        problems=(), workers=(), shards=(), blocks=keeper.view, lease_moves=dict(keeper.moves),
        legacy_leases=keeper.legacy)
    assert snap.status()["legacy_leases"] == 1
    assert b"cluster_legacy_leases 1.0" in render_snapshot(snap)
    assert b"cluster_legacy_leases 0.0" in render_snapshot(dataclasses.replace(snap, legacy_leases=0))
    await client.delete(f"{NS}lease:1")  # stopped
    with pytest.raises(asyncio.CancelledError):
        await keeper.tick()
    assert keeper.legacy == 0 and loaded == [range(0, 4)]  # claims again


async def test_a_layout_left_behind_loses_its_counters_once_no_lease_of_it_is_left(client):
    """Review finding 10: a layout's epoch counters and released markers had no TTL and stayed forever after a
    reshard (or a rollback) left it. They go once the cluster's layout is another and no lease of it is left; until
    then they stay (a lease of it may still be renewed, and its epochs must not go back). A renewal finding a lease
    of such a layout gone writes nothing back (it would undo the deletion), as a claim does not."""
    from cluster.hosts import layout_key
    from cluster.leases import LayoutMoved, layout_ns, released_key

    old_ns = layout_ns(NS, 8)
    a, b = (LeaseStore(client, old_ns, h, ttl=3.0, layout=(layout_key(NS), 8)) for h in ("a", "b"))
    await client.set(layout_key(NS), "8,1")
    ea, _ = await a.claim(0)
    eb, _ = await b.claim(1)
    assert await a.release(0, ea)
    assert not await a.forget(2)  # the cluster's layout: kept
    await client.set(layout_key(NS), "16,1")  # go
    assert not await a.forget(2)  # b still holds block 1
    assert await client.exists(epoch_key(old_ns, 0), released_key(old_ns, 0), epoch_key(old_ns, 1)) == 3
    await client.delete(lease_key(old_ns, 1))  # b's lease "lost" while b is within its deadline...
    assert await b.renew({1: eb}) == {1: Renewal.LOST}  # ...is not written back: the layout moved on
    assert await b.forget(2)
    assert not await client.keys(f"{old_ns}*")
    with pytest.raises(LayoutMoved):
        await a.claim(0)
    assert not await client.keys(f"{old_ns}*")
    await client.delete(layout_key(NS))  # a Redis that lost its data: nothing is forgotten without a layout
    await LeaseStore(client, old_ns, "c", ttl=3.0).claim(0)
    await client.delete(lease_key(old_ns, 0))
    assert not await a.forget(2) and await client.exists(epoch_key(old_ns, 0))


async def test_no_block_is_handed_off_while_a_reshard_runs_in_the_cluster(client):
    """Review finding 2 (the rest of the window): a host that takes part in a reshard is frozen only once it joins
    it (at its next poll of the record), and a host that joined the cluster meanwhile never is: an old block handed
    off in between runs on a host that is not in the record, past the switch. No host hands off while the record's
    phase is warming or cutting over; it does once the reshard is over."""
    from cluster.hosts import new_record, try_register_host
    from cluster.reshard_plan import reshard_key

    keeper, _ = claiming_keeper(client, 8, "a")
    saved: list[object] = []

    async def save(sessions):
        saved.append(sessions)

    keeper.save = save
    for host in ("a", "b"):
        assert await try_register_host(client, NS, new_record(host, range(0), 8)) is None
    for block in (0, 1):
        keeper.held[block] = (await keeper.leases.claim(block))[0]
        keeper.deadline[block] = float("inf")
    for phase in ("warming", "cutting_over"):
        await client.hset(reshard_key(NS), "phase", phase)
        await keeper.tick()
        assert keeper.moving is None and sorted(keeper.held) == [0, 1], phase
    await client.hset(reshard_key(NS), "phase", "go")
    await keeper.tick()
    assert keeper.moving == 1  # b is below its share: a hands it one block
    await keeper._moving_task
    assert sorted(keeper.held) == [0] and keeper.moves[("handoff", "rebalance")] == 1
