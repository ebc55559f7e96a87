"""cluster/snapshot.py on its own: the identify-wait histogram, the phase and state names, readiness and the
``/status`` JSON, field by field.

Fast unit tests only (bench/mutation.py runs this file for every mutant of cluster/snapshot.py); a real
supervisor's snapshots are in test_cluster_snapshot.py."""

import dataclasses

from cluster.snapshot import (WAIT_BUCKETS, BlockSnapshot, ClusterSnapshot, CoordinationStats, ReshardSnapshot,
                              ShardPhase, ShardSnapshot, WaitHistogram, WorkerSnapshot, WorkerState)


def worker(worker_id=0, state=WorkerState.RUNNING, shards=range(0, 2)):
    return WorkerSnapshot(worker_id=worker_id, pid=100 + worker_id, state=state, generation=3, shards=shards,
                          rss=5_000_000, ipc_rtt=0.002, loop_lag=0.01, blocked=1, handler_errors=2,
                          consumer_errors=4, restarts=5)


def shard(shard_id, state=ShardPhase.ACTIVE, events=None):
    return ShardSnapshot(shard_id=shard_id, worker_id=0, state=state, latency=0.04, last_event_age=1.5,
                         session=True, events={} if events is None else events)


def cluster(shards, *, total=2, stopping=False, coordination=None, workers=()):
    return ClusterSnapshot(shard_total=total, max_concurrency=1, uptime=12.5, rolling=True, stopping=stopping,
                           coordination=coordination, identifies={"initial": 2}, identify_waits=(),
                           identify_wait_sum=0.0, restarts={}, errors={}, loop_lag=0.0, problems=(),
                           workers=tuple(workers), shards=tuple(shards))


def test_wait_histogram_buckets_are_inclusive_cumulative_and_end_in_inf():
    h = WaitHistogram()
    assert h.buckets() == (*((str(le), 0) for le in WAIT_BUCKETS), ("+Inf", 0)) and h.sum == 0.0
    for wait in (0.0, 0.1, 0.10001, 5.0, 300.0, 301.0, 1e9):
        h.record(wait)
    assert h.sum == 0.0 + 0.1 + 0.10001 + 5.0 + 300.0 + 301.0 + 1e9
    assert dict(h.buckets()) == {"0.1": 2, "0.5": 3, "1.0": 3, "2.5": 3, "5.0": 4, "10.0": 4, "30.0": 4,
                                 "60.0": 4, "300.0": 5, "+Inf": 7}
    assert [le for le, _ in h.buckets()][-1] == "+Inf"


def test_a_phase_this_supervisor_does_not_know_is_unknown():
    assert ShardPhase("ACTIVE") is ShardPhase.ACTIVE
    assert ShardPhase("SOME_NEW_PHASE") is ShardPhase.UNKNOWN
    assert ShardPhase("UNKNOWN") is ShardPhase.UNKNOWN


def test_a_worker_is_up_only_while_running():
    assert [worker(state=s).up for s in WorkerState] == [s is WorkerState.RUNNING for s in WorkerState]
    assert worker().up is True


def test_resumes_count_resumed_events():
    assert shard(0).resumes == 0
    assert shard(0, events={"READY": 1, "RESUMED": 3}).resumes == 3


def test_ready_needs_every_shard_active_and_not_stopping():
    assert cluster([shard(0), shard(1)]).ready is True
    assert cluster([shard(0), shard(1)]).active == 2
    assert cluster([shard(0), shard(1, ShardPhase.RESUMING)]).active == 1
    assert cluster([shard(0), shard(1, ShardPhase.RESUMING)]).ready is False
    assert cluster([shard(0), shard(1)], stopping=True).ready is False
    assert cluster([shard(0)], total=2).ready is True  # a host of several runs only its own shards
    assert cluster([shard(0)], total=2, coordination=CoordinationStats(
        queue_depth=0, budget_remaining=1, budget_total=1, budget_reserve=0, budget_reset_in=1.0, late_starts=0,
        unused_grants=0, expired_holds=0, coordinator_up=False)).ready is False  # Redis gone: not ready
    assert cluster([], total=0).ready is False  # no shards at all is not "all of them active"


def test_status_json_field_by_field():
    coord = CoordinationStats(queue_depth=3, budget_remaining=990, budget_total=1000, budget_reserve=10,
                              budget_reset_in=3600.0, late_starts=1, unused_grants=2, expired_holds=4)
    snap = cluster([shard(0, events={"RESUMED": 2}), shard(1, ShardPhase.QUEUED)], coordination=coord,
                   workers=[worker(0, shards=range(0, 2)), worker(1, WorkerState.DRAINING, range(2, 4))])
    assert snap.status() == {
        "shard_total": 2, "active": 1, "max_concurrency": 1, "uptime": 12.5, "rolling": True, "stopping": False,
        "identify_queue": 3,
        "session_budget": {"remaining": 990, "total": 1000, "reserve": 10, "reset_in": 3600.0},
        "late_starts": 1, "coordinator_up": True, "identifies": {"initial": 2},
        "workers": [
            {"id": 0, "pid": 100, "state": "running", "generation": 3, "shards": [0, 1], "rss": 5_000_000,
             "ipc_rtt": 0.002, "loop_lag": 0.01, "blocked": 1, "handler_errors": 2, "consumer_errors": 4,
             "restarts": 5},
            {"id": 1, "pid": 101, "state": "draining", "generation": 3, "shards": [2, 3], "rss": 5_000_000,
             "ipc_rtt": 0.002, "loop_lag": 0.01, "blocked": 1, "handler_errors": 2, "consumer_errors": 4,
             "restarts": 5}],
        "shards": [
            {"id": 0, "worker": 0, "state": "ACTIVE", "latency": 0.04, "last_event_age": 1.5, "session": True,
             "resumes": 2},
            {"id": 1, "worker": 0, "state": "QUEUED", "latency": 0.04, "last_event_age": 1.5, "session": True,
             "resumes": 0}],
        "reshard": {"phase": "idle"},
    }


def test_status_without_a_coordinator_yet():
    status = cluster([shard(0)], total=1).status()
    assert (status["identify_queue"], status["session_budget"], status["late_starts"]) == (0, None, 0)
    assert status["active"] == 1 and status["workers"] == []


def test_status_lists_every_host_as_published_and_nothing_without_a_coordinator():
    hosts = ({"host": "a", "shards": [0, 1], "active": 2}, {"host": "b", "shards": [2, 3], "active": 0})
    status = dataclasses.replace(cluster([shard(0)]), hosts=hosts).status()
    assert status["hosts"] == [{"host": "a", "shards": [0, 1], "active": 2},
                               {"host": "b", "shards": [2, 3], "active": 0}]
    status["hosts"][0]["active"] = 99  # a copy: editing the JSON leaves the snapshot alone
    assert hosts[0]["active"] == 2
    assert dataclasses.replace(cluster([shard(0)]), hosts=()).status()["hosts"] == []  # none published yet
    assert "hosts" not in cluster([shard(0)]).status()  # no shared coordinator: no hosts key at all


def test_status_lists_every_block_and_this_hosts_lease_moves_in_order():
    blocks = (BlockSnapshot(block=0, first=0, last=15, owner="host-a", epoch=7, lease_age=1.25, mine=True),
              BlockSnapshot(block=1, first=16, last=23, owner=None, epoch=None, lease_age=None, mine=False))
    moves = {("loss", "expired"): 1, ("claim", "free"): 2, ("claim", "expired"): 3}
    status = dataclasses.replace(cluster([shard(0)]), blocks=blocks, lease_moves=moves).status()
    assert status["blocks"] == [
        {"block": 0, "shards": [0, 15], "owner": "host-a", "epoch": 7, "lease_age": 1.25, "mine": True},
        {"block": 1, "shards": [16, 23], "owner": None, "epoch": None, "lease_age": None, "mine": False}]
    assert status["lease_moves"] == [{"event": "claim", "reason": "expired", "count": 3},
                                     {"event": "claim", "reason": "free", "count": 2},
                                     {"event": "loss", "reason": "expired", "count": 1}]
    no_moves = dataclasses.replace(cluster([shard(0)]), blocks=(), lease_moves=None).status()
    assert (no_moves["blocks"], no_moves["lease_moves"]) == ([], [])  # auto assignment, nothing held or moved yet
    assert "blocks" not in cluster([shard(0)]).status() and "lease_moves" not in cluster([shard(0)]).status()
    assert status["legacy_leases"] == 0
    assert dataclasses.replace(cluster([shard(0)]), blocks=(), legacy_leases=2).status()["legacy_leases"] == 2
    assert "legacy_leases" not in cluster([shard(0)]).status()


def test_status_shows_the_latest_reshard_field_by_field_with_this_hosts_part_across_hosts():
    one = ReshardSnapshot(phase="cutting_over", old_total=4, new_total=8, ready=8, passed=3, elapsed=12.5,
                          switch_after=None, reason="", unmarked=(5, 7))
    assert dataclasses.replace(cluster([shard(0)]), reshard=one).status()["reshard"] == {
        "phase": "cutting_over", "from": 4, "to": 8, "ready": 8, "passed": 3, "elapsed": 12.5, "switch_after": None,
        "reason": "", "unmarked": [5, 7]}  # the new shards not past their markers: only while cutting over
    assert "unmarked" not in dataclasses.replace(one, phase="warming").status()
    assert dataclasses.replace(one, shards=(8, 7)).status()["shards"] == []  # a host with no new block
    assert dataclasses.replace(one, shards=(8, 8)).status()["shards"] == [8, 8]  # a part of one shard
    hosts = ReshardSnapshot(phase="rolled_back", old_total=8, new_total=16, ready=4, passed=8, elapsed=30.0,
                            switch_after=20.5, reason="why", shards=(8, 15), epoch=3, leader="host-a")
    assert hosts.status() == {
        "phase": "rolled_back", "from": 8, "to": 16, "ready": 4, "passed": 8, "elapsed": 30.0, "switch_after": 20.5,
        "reason": "why", "shards": [8, 15], "epoch": 3, "leader": "host-a"}
