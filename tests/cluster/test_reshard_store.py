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
