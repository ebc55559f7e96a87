"""The decisions of live resharding across hosts (cluster.reshard_plan): each host's new part, who takes part, and
the leader's next step. Fast: no socket, no process."""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from cluster.error import ConfigError, ReshardRefused
from cluster.hosts import HostRecord
from cluster.leases import Lease, fair, plan, quota
from cluster.reshard_plan import (ClusterPhase, ClusterReshard, Step, check_hosts, check_leased, follower_step,
                                  leader_step, new_blocks, new_part)


def host(hid: str, first: int, last: int, total: int = 8) -> HostRecord:
    return HostRecord(host_id=hid, first=first, last=last, shard_total=total, pid=1, hostname="h")


def record(**kw) -> ClusterReshard:
    args = dict(epoch=3, old_total=8, new_total=16, leader="a", hosts=("a", "b"), phase=ClusterPhase.WARMING,
                warm_deadline=100.0, cut_timeout=10.0)
    return ClusterReshard(**(args | kw))


def test_a_host_index_takes_its_part_of_the_new_count():
    assert new_part(range(0, 4), 8, 16, host_index=0, host_count=2) == range(0, 8)
    assert new_part(range(4, 8), 8, 16, host_index=1, host_count=2) == range(8, 16)
    assert new_part(range(6, 9), 9, 12, host_index=2, host_count=3) == range(8, 12)


def test_a_shard_range_scales_and_the_scaled_ranges_still_tile_the_new_count():
    olds = [range(0, 3), range(3, 5), range(5, 8)]
    news = [new_part(r, 8, 12) for r in olds]
    assert news == [range(0, 4), range(4, 7), range(7, 12)]
    assert new_part(range(8), 8, 16) == range(16)  # one host runs everything: everything again
    with pytest.raises(ConfigError, match="scale to no shard"):
        new_part(range(0, 1), 8, 4)


def test_every_live_host_takes_part_and_together_they_must_cover_the_shards():
    assert check_hosts([host("b", 4, 7), host("a", 0, 3)], 8) == ["a", "b"]
    with pytest.raises(ReshardRefused, match="shards 4-7 of 8 have no live host"):
        check_hosts([host("a", 0, 3)], 8)
    with pytest.raises(ReshardRefused, match="shards 0-3 of 8 have no live host"):
        check_hosts([host("b", 4, 7)], 8)
    with pytest.raises(ReshardRefused, match="of a 16-shard layout, not 8"):
        check_hosts([host("a", 0, 3), host("b", 4, 7, total=16)], 8)
    with pytest.raises(ReshardRefused, match="no live host"):
        check_hosts([], 8)


def test_the_leader_cuts_once_every_host_is_warm():
    assert leader_step(record(warm=frozenset({"a"})), ["a", "b"], 1.0) == (Step.NONE, "")
    assert leader_step(record(warm=frozenset({"a", "b"})), ["a", "b"], 1.0) == (Step.CUT, "")


def test_the_leader_goes_once_every_host_passed_or_the_cut_timeout_is_over():
    cutting = record(phase=ClusterPhase.CUTTING_OVER, warm=frozenset({"a", "b"}), cut_at=5.0, go_deadline=15.0)
    assert leader_step(cutting, ["a", "b"], 6.0) == (Step.NONE, "")
    assert leader_step(cutting, ["a", "b", "c"], 6.0)[0] is Step.NONE  # a host that takes no part changes nothing
    assert leader_step(replace(cutting, passed=frozenset({"a", "b"})), ["a", "b"], 6.0) == (Step.GO, "")
    step, why = leader_step(replace(cutting, passed=frozenset({"a"}), marked=frozenset({"a", "b"})), ["a", "b"], 15.0)
    assert step is Step.GO and "host b did not report its old shards past the cut within 10 s" in why


def test_the_leader_rolls_back_if_a_host_new_shards_never_passed_their_markers_by_the_cut_timeout():
    """Then no old set was told to mark (it delivered everything): a rollback loses nothing, a switch would."""
    cutting = record(phase=ClusterPhase.CUTTING_OVER, warm=frozenset({"a", "b"}), cut_at=5.0, go_deadline=15.0,
                     marked=frozenset({"a"}))
    assert not cutting.all_marked and replace(cutting, marked=frozenset({"a", "b", "c"})).all_marked
    assert not replace(cutting, phase=ClusterPhase.GO, marked=frozenset({"a", "b"})).all_marked
    assert leader_step(cutting, ["a", "b"], 14.9) == (Step.NONE, "")
    assert leader_step(cutting, ["a", "b"], 15.0) == (
        Step.ROLL_BACK, "the new shards of host b did not pass their cutover markers within 10 s")


def test_the_leader_rolls_back_for_a_dead_host_or_the_warm_up_deadline():
    step, why = leader_step(record(warm=frozenset({"a", "b"})), ["a"], 1.0)
    assert step is Step.ROLL_BACK and "host b left the registry" in why
    cutting = record(phase=ClusterPhase.CUTTING_OVER, cut_at=5.0, go_deadline=15.0, passed=frozenset({"a", "b"}))
    assert leader_step(cutting, ["b"], 6.0)[0] is Step.ROLL_BACK  # before go, even with everything passed
    step, why = leader_step(record(warm=frozenset({"a"})), ["a", "b"], 100.0)
    assert step is Step.ROLL_BACK and "did not warm up in time on host b" in why
    for phase in (ClusterPhase.GO, ClusterPhase.ROLLED_BACK):  # nothing after the end, dead hosts or not
        assert leader_step(record(phase=phase), [], 1000.0) == (Step.NONE, "")


def test_the_other_hosts_roll_back_when_the_leader_is_gone_or_stalls():
    assert follower_step(record(), ["a", "b"], 1.0) == (Step.NONE, "")
    step, why = follower_step(record(), ["b"], 1.0)
    assert step is Step.ROLL_BACK and "the leader, host a, left the registry" in why
    assert follower_step(record(), ["a", "b"], 109.9)[0] is Step.NONE  # the leader's own deadline comes first
    assert follower_step(record(), ["a", "b"], 110.0)[0] is Step.ROLL_BACK
    cutting = record(phase=ClusterPhase.CUTTING_OVER, cut_at=5.0, go_deadline=15.0)
    assert follower_step(cutting, ["a", "b"], 24.9)[0] is Step.NONE
    step, why = follower_step(cutting, ["a", "b"], 25.0)
    assert step is Step.ROLL_BACK and "did not move the reshard on" in why
    assert follower_step(record(phase=ClusterPhase.GO), [], 1000.0) == (Step.NONE, "")


def refusal(hosts: list[HostRecord]) -> str:
    with pytest.raises(ReshardRefused) as e:
        check_hosts(hosts, 8)
    return str(e.value)


def test_the_host_check_refusals_in_full_and_an_overlap_names_its_shard():
    assert refusal([host("a", 0, 3), host("b", 4, 7, total=16)]) == (
        "host b (h, pid 1) runs shards 4-7 of a 16-shard layout, not 8: wait until every host runs the cluster's "
        "layout")
    assert refusal([host("a", 0, 4), host("b", 4, 7)]) == (
        "shard 4 of 8 have no live host (or two): every host of the cluster must be up to reshard")
    assert refusal([host("b", 4, 7)]) == (
        "shards 0-3 of 8 have no live host (or two): every host of the cluster must be up to reshard")
    assert refusal([host("a", 0, 3)]) == (
        "shards 4-7 of 8 have no live host: every host of the cluster must be up to reshard")


def test_a_range_that_scales_to_nothing_is_named_in_the_error():
    with pytest.raises(ConfigError) as e:
        new_part(range(2, 3), 8, 4)
    assert str(e.value) == "shards 2-2 of 8 scale to no shard of 4"


def test_the_leader_names_every_host_it_waited_for():
    three = dict(hosts=("a", "b", "c"))
    assert leader_step(record(**three), ["a"], 1.0) == (
        Step.ROLL_BACK, "host b, c left the registry (its record expired) before the switch")
    assert leader_step(record(**three, warm=frozenset({"a"})), ["a", "b", "c"], 100.0) == (
        Step.ROLL_BACK, "the new set did not warm up in time on host b, c")
    cutting = record(**three, phase=ClusterPhase.CUTTING_OVER, cut_at=5.0, go_deadline=15.0, passed=frozenset({"a"}),
                     marked=frozenset({"a", "b", "c"}))
    assert leader_step(cutting, ["a", "b", "c"], 15.0) == (
        Step.GO, "host b, c did not report its old shards past the cut within 10 s; switching anyway")
    assert leader_step(replace(cutting, marked=frozenset({"a"})), ["a", "b", "c"], 15.0) == (
        Step.ROLL_BACK, "the new shards of host b, c did not pass their cutover markers within 10 s")


@pytest.mark.parametrize("hosts, blocks", [(["a", "b"], 4), (["b", "a", "c"], 4), (["a", "b", "c"], 32),
                                            (["x"], 5), (["a", "b", "c", "d", "e"], 3)])
def test_the_new_layouts_blocks_are_dealt_out_in_consecutive_runs_of_each_hosts_quota(hosts, blocks):
    parts = {h: new_blocks(h, hosts, blocks) for h in hosts}
    assert [b for h in sorted(hosts) for b in parts[h]] == list(range(blocks))  # they tile the blocks, in id order
    assert all(len(parts[h]) == quota(h, hosts, blocks) for h in hosts)
    assert fair([len(p) for p in parts.values()])
    leases = {b: Lease(b, h, 1, 10.0) for h, p in parts.items() for b in p}
    assert all(plan(h, hosts, leases, blocks) == plan(h, hosts, {}, 0) for h in hosts)  # nothing moves after the switch


def test_two_hosts_of_an_8_to_16_reshard_in_blocks_of_4_take_two_new_blocks_each():
    assert new_blocks("b", ["a", "b"], 4) == range(2, 4) and new_blocks("a", ["b", "a"], 4) == range(0, 2)
    assert new_blocks("a", ["a", "b", "c"], 2) == range(0, 1) and new_blocks("c", ["a", "b", "c"], 2) == range(2, 2)


def auto_host(hid: str, total: int = 8) -> HostRecord:
    return HostRecord(host_id=hid, first=0, last=-1, shard_total=total, pid=1, hostname="h")  # as --assign auto


def test_with_assign_auto_every_live_host_takes_part_once_every_old_block_runs_on_one_of_them():
    leases = {0: Lease(0, "b", 3), 1: Lease(1, "a", 1)}
    assert check_leased([auto_host("b"), auto_host("a"), auto_host("c")], leases, 8, 2) == ["a", "b", "c"]
    with pytest.raises(ReshardRefused) as e:
        check_leased([auto_host("a"), auto_host("b", 16)], leases, 8, 2)
    assert str(e.value) == ("host b (h, pid 1) leases its blocks of a 16-shard layout, not 8: wait until every host "
                            "runs the cluster's layout")
    with pytest.raises(ReshardRefused) as e:
        check_leased([auto_host("a")], leases, 8, 2)  # b's lease outlives its host: a failover is coming
    assert str(e.value) == ("block 0 of the 8 shards has no live owner (a failover is under way): try again once "
                            "every block runs")
    with pytest.raises(ReshardRefused) as e:
        check_leased([auto_host("a"), auto_host("b")], {1: leases[1]}, 8, 3)
    assert str(e.value).startswith("blocks 0, 2 of the 8 shards have no live owner")
    with pytest.raises(ReshardRefused) as e:
        check_leased([auto_host("a"), auto_host("b")], leases | {1: Lease(1, "a", 2, starting=True)}, 8, 2)
    assert str(e.value) == "block 1 of the 8 shards is still starting on a new owner: try again once every block runs"
    both = leases | {0: Lease(0, "b", 4, starting=True), 1: Lease(1, "a", 2, starting=True)}
    with pytest.raises(ReshardRefused) as e:
        check_leased([auto_host("a"), auto_host("b")], both, 8, 2)
    assert str(e.value) == ("blocks 0, 1 of the 8 shards are still starting on a new owner: try again once every "
                            "block runs")


def test_with_assign_auto_a_starting_lease_of_a_block_outside_the_layout_does_not_stop_a_reshard():
    leases = {0: Lease(0, "b", 3), 1: Lease(1, "a", 1), 2: Lease(2, "a", 2, starting=True)}  # block 2 of 8 blocks
    assert check_leased([auto_host("a"), auto_host("b")], leases, 8, 2) == ["a", "b"]
