"""The reshard record's *marked* reports in Redis (cluster.reshard_store), against a redis-server of the test's own:
the old sets mark only once every host reported its new shards past their markers, and never on a stale report."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from cluster.reshard_plan import ClusterPhase
from cluster.reshard_store import ReshardStore

NS = "shardstack:t:"


async def test_every_host_must_report_marked_in_the_cutover_and_a_new_reshard_forgets_the_last_reports(redis_server):
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        a, b = (ReshardStore(client, redis_server.url, NS, h) for h in ("a", "b"))

        async def begin() -> None:
            epoch, remaining = await a.begin(8, 16, 4, ["a", "b"], warm_deadline=time.time() + 60, cut_timeout=10.0,
                                             budget_floor=0)
            assert epoch > 0 and remaining is None

        await begin()
        record = await a.read()
        assert record is not None and record.marked == frozenset()
        assert not await a.report(record, "marked")  # still warming: no cut, nothing to mark
        assert await a.cut(record, time.time() + 1.0)
        record = await a.read()
        assert await a.report(record, "marked")
        record = await b.read()
        assert record.phase is ClusterPhase.CUTTING_OVER and record.marked == {"a"} and not record.all_marked
        assert await b.report(record, "marked")
        record = await a.read()
        assert record.marked == {"a", "b"} and record.all_marked and record.passed == frozenset()
        assert await a.roll_back(record, "test")
        await begin()
        record = await a.read()
        assert record.marked == frozenset() and record.phase is ClusterPhase.WARMING
    finally:
        await client.aclose()


async def test_a_record_from_before_redis_lost_its_data_moves_nothing_of_the_new_one_of_the_same_epoch(redis_server):
    """Redis restarted empty counts epochs from 1 again: a host still holding the old epoch-1 record can neither report
    to nor roll back the new epoch-1 record, and idle hosts see another identity."""
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        a = ReshardStore(client, redis_server.url, NS, "a")
        assert await a.identity() == ""
        await a.begin(8, 16, 4, ["a", "b"], warm_deadline=time.time() + 60, cut_timeout=10.0, budget_floor=0)
        stale = await a.read()
        assert stale.epoch == 1 and await a.identity() == stale.identity
        await client.flushall()  # Redis lost its data
        await a.begin(8, 16, 4, ["a", "b"], warm_deadline=time.time() + 60, cut_timeout=10.0, budget_floor=0)
        fresh = await a.read()
        assert fresh.epoch == 1 and fresh.identity != stale.identity and await a.identity() == fresh.identity
        assert not await a.report(stale, "warm")
        assert not await a.roll_back(stale, "stale")
        assert not await a.cut(stale, time.time() + 1.0)
        record = await a.read()
        assert record.phase is ClusterPhase.WARMING and record.warm == frozenset()
        assert await a.report(record, "warm") and await a.roll_back(record, "test")
        assert (await a.read()).phase is ClusterPhase.ROLLED_BACK
    finally:
        await client.aclose()


async def test_a_passed_report_run_twice_appends_its_digests_once(redis_server):
    """The client runs a script again after a timeout: a host's digests counted twice would make every new set drop
    one more identical event than the old sets delivered."""
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        a, b = (ReshardStore(client, redis_server.url, NS, h) for h in ("a", "b"))
        await a.begin(8, 16, 4, ["a", "b"], warm_deadline=time.time() + 60, cut_timeout=10.0, budget_floor=0)
        assert await a.cut(await a.read(), time.time() + 1.0)
        record = await a.read()
        assert await a.report(record, "passed", [11, 11, 12])
        assert await a.report(record, "passed", [11, 11, 12])  # the same report, run again
        assert await b.report(record, "passed", [11])
        assert sorted(await a.digests()) == [11, 11, 11, 12]
        assert (await a.read()).passed == {"a", "b"}
    finally:
        await client.aclose()
