"""Observers read a frozen, typed ClusterSnapshot: /status, /metrics and the probes show it, a scrape changes
nothing in the supervisor, and the shards' consumer errors and the coordinator's late starts are shown."""

import asyncio
import dataclasses
import json

import pytest

from cluster.coordination import IdentifyCoordinator, SessionBudget
from cluster.metrics import MetricsPage, render_snapshot
from cluster.snapshot import ClusterSnapshot, ShardPhase, WaitHistogram, WorkerState
from cluster_hostile_handlers import RaisingDecode
from cluster_testing import http_get, running, until

TYPING = 1 << 11


def _metric(page: bytes, prefix: str) -> float:
    line = next(line for line in page.decode().splitlines() if line.startswith(prefix))
    return float(line.rsplit(" ", 1)[1])


@pytest.fixture
def sim_options():
    return dict(shards=2, max_concurrency=2, identify_window=1.0, events_per_second=50.0)


async def test_consumer_errors_are_in_the_snapshot_status_and_metrics(sim, tmp_path):
    async with running(sim, RaisingDecode, tmp_path, workers=1, intents=513 | TYPING, fresh=True) as (sup, _):
        await until(lambda: sup.active_shards() == 2 and sup.workers[0].consumer_errors >= 2, what="errors")
        snap = sup.snapshot()
        assert snap.workers[0].consumer_errors >= 2 and snap.workers[0].state is WorkerState.RUNNING
        code, body = await asyncio.to_thread(http_get, sup.http_url + "/status")
        assert code == 200 and json.loads(body)["workers"][0]["consumer_errors"] >= 2
        code, text = await asyncio.to_thread(http_get, sup.http_url + "/metrics")
        assert _metric(text.encode(), 'cluster_consumer_errors_total{worker="0"}') >= 2


async def test_a_scrape_changes_nothing_and_every_page_shows_the_same_waits(sim, tmp_path):
    async with running(sim, None, tmp_path, workers=1, fresh=True) as (sup, _):
        await until(lambda: sup.active_shards() == 2, what="bring-up")
        first = sup.snapshot()
        assert isinstance(first, ClusterSnapshot) and all(s.state is ShardPhase.ACTIVE for s in first.shards)
        with pytest.raises(dataclasses.FrozenInstanceError):
            first.stopping = True  # type: ignore[misc]
        pages = [await MetricsPage(sup.snapshot, 0.0).get() for _ in range(2)]  # two scrapers, one after the other
        for page in pages:
            assert _metric(page, "cluster_identify_wait_seconds_count ") == 2
        assert sup.snapshot().identify_waits == first.identify_waits
        status = json.loads((await asyncio.to_thread(http_get, sup.http_url + "/status"))[1])
        assert status["active"] == 2 and {s["state"] for s in status["shards"]} == {"ACTIVE"}
        assert status["late_starts"] == 0 and {w["state"] for w in status["workers"]} == {"running"}


def test_late_starts_reach_the_snapshot_status_and_metrics():
    coord = IdentifyCoordinator(1, SessionBudget(100), window=1.0, hold_timeout=2.0)
    coord.request(0, 0.0)
    assert [type(d).__name__ for d in coord.poll(0.0)] == ["Grant"]
    coord.poll(2.5)  # the hold expired before the Identify was written
    coord.started(0, 3.0)
    stats = coord.stats(3.0)
    assert stats.late_starts == 1 and stats.expired_holds == 1
    snap = ClusterSnapshot(shard_total=1, max_concurrency=1, uptime=3.0, rolling=False, stopping=False,
                           coordination=stats, identifies={}, identify_waits=WaitHistogram().buckets(),
                           identify_wait_sum=0.0, restarts={}, errors={}, loop_lag=0.0, problems=(), workers=(),
                           shards=())
    assert snap.status()["late_starts"] == 1
    assert _metric(render_snapshot(snap), "cluster_identify_late_starts_total ") == 1
