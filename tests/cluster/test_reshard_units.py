"""The pure parts of live resharding: the cutover gate (cluster.cutover) and the reshard's decisions
(cluster.reshard), without sockets or processes."""

import math

import msgspec
import pytest

from cluster.cutover import (DISCORD_EPOCH_MS, NewGate, OldGate, ResumedGate, Verdict, creation_id, digest,
                             snowflake_at, snowflake_time)
from cluster.reshard import (Action, Phase, Reshard, ReshardRefused, auto_target, check_start, cut_late_reason,
                             warm_timeout)
from shard.wire import InvalidSession

D, H, K = Verdict.DELIVER, Verdict.HOLD, Verdict.DROP
ACK = "GATEWAY_HEARTBEAT_ACK"


def msg(i):
    return "MESSAGE_CREATE", {"id": str(i), "guild_id": "1"}


def test_snowflakes_and_creation_ids():
    assert snowflake_at(DISCORD_EPOCH_MS / 1000 + 1.5) == 1500 << 22
    assert snowflake_at(0) == 0
    assert creation_id(*msg(42)) == 42
    assert creation_id("INTERACTION_CREATE", {"id": "7"}) == 7
    assert creation_id("MESSAGE_UPDATE", {"id": "7"}) is None  # an update's id is the message's, not the event's
    assert creation_id("MESSAGE_CREATE", {"id": "x1"}) is None and creation_id("MESSAGE_CREATE", None) is None
    assert creation_id("MESSAGE_CREATE", {"id": True}) is None and creation_id("MESSAGE_CREATE", {"id": -3}) is None

    class Message(msgspec.Struct):  # a handler may register a Struct for MESSAGE_CREATE
        id: int

    assert creation_id("MESSAGE_CREATE", Message(9)) == 9


def test_an_old_shard_delivers_before_the_cut_and_holds_from_its_marker():
    passed = []
    gate = OldGate(100, on_pass=lambda: passed.append(True))
    assert [gate.admit(*msg(i)) for i in (98, 99)] == [D, D]
    assert gate.admit("TYPING_START", {}) is D  # no id, before the marker
    assert gate.admit(*msg(100)) is H and not gate.passed  # the new set's; it never marks an old shard
    assert gate.admit("TYPING_START", {}) is D and len(gate.digests) == 2
    gate.marker.heartbeats_sent(1)
    assert gate.admit(ACK, None) is D and gate.passed and passed == [True]
    assert gate.admit("TYPING_START", {}) is H and gate.admit(*msg(101)) is H  # everything after the marker,
    assert gate.admit(*msg(99)) is D  # but a message created before the cut, however late: the new set drops it
    gate.ended = True  # go: the new set delivers
    assert gate.admit(*msg(101)) is K and gate.admit("TYPING_START", {}) is K
    assert passed == [True]


def _deliveries(old_stream, new_stream):
    """Plays both sets' gates to the end of a cutover at 1000 (go): every label delivered, in order."""
    old, new = OldGate(1000), NewGate()
    new.admit("READY", {"guilds": []})
    assert new.arm(1000)
    old.marker.heartbeats_sent(2)
    new.marker.heartbeats_sent(2)
    delivered, held = [], []
    for gate, stream, kept in ((old, old_stream, []), (new, new_stream, held)):
        for label, event in stream:
            verdict = gate.admit(*event)
            if verdict is D:
                delivered.append(label)
            elif verdict is H:
                kept.append((label, event))
    old.ended = True  # go: the old set drops what it held, the new set delivers its own but what the old delivered
    new.old_delivered(old.digests)
    return delivered + [label for label, event in held if not new.delivered_by_old(*event)]


@pytest.mark.parametrize("old_stream", [
    [("m1001", msg(1001)), ("m999", msg(999)), ("ack", (ACK, None)), ("ack", (ACK, None))],  # out of order
    [("ack", (ACK, None)), ("ack", (ACK, None)), ("m999", msg(999))],  # dispatched after the cut's ACKs
], ids=["ids-out-of-order", "after-the-ack"])
def test_a_message_created_before_the_cut_but_arriving_past_the_marker_is_delivered_once(old_stream):
    new_stream = [("ack", (ACK, None)), ("ack", (ACK, None)), ("m1001", msg(1001)), ("m999", msg(999))]
    got = _deliveries(old_stream, new_stream)
    assert got.count("m999") == 1 and got.count("m1001") == 1, got


def test_heartbeat_acks_mark_a_quiet_shard_past_the_cut():
    gate = OldGate(100)
    assert gate.admit(ACK, None) is D and not gate.passed  # an ACK before the cut's heartbeats counts for nothing
    gate.marker.heartbeats_sent(2)
    assert gate.admit(ACK, None) is D and not gate.passed  # answers the shard's own beat from before the cut
    assert gate.admit("PRESENCE_UPDATE", {}) is D
    assert gate.admit(ACK, None) is D and gate.passed
    assert gate.admit("PRESENCE_UPDATE", {}) is H


def test_a_new_shard_warms_up_with_every_guild_of_its_ready():
    warm = []
    gate = NewGate(on_warm=lambda: warm.append(True))
    assert gate.admit(*msg(5)) is K  # the old set delivers it
    assert gate.admit("READY", {"guilds": [{"id": "1", "unavailable": True}, {"id": "2", "unavailable": True}]}) is H
    assert gate.admit("GUILD_CREATE", {"id": "1"}) is H and not warm
    assert gate.admit("GUILD_CREATE", {"id": "2"}) is H and warm == [True] and gate.warm
    assert gate.admit("GUILD_CREATE", {"id": "3"}) is H and warm == [True]  # once
    assert gate.admit("TYPING_START", {}) is K


def test_a_shard_without_guilds_is_warm_at_ready():
    warm = []
    gate = NewGate(on_warm=lambda: warm.append(True))
    gate.admit("READY", {"guilds": []})
    assert warm == [True]


def test_an_armed_new_shard_holds_from_the_cut_and_goes_live():
    gate = NewGate()
    gate.admit(*msg(50))
    assert gate.arm(100)
    assert gate.admit(*msg(99)) is K and gate.admit("TYPING_START", {}) is K  # before its marker: the old set's
    assert gate.admit(*msg(100)) is H and gate.passed
    assert gate.admit("TYPING_START", {}) is H
    gate.mode = "flushing"
    assert gate.admit(*msg(99)) is K and gate.admit(*msg(101)) is H  # a late copy of an old-set event is dropped
    gate.mode = "live"
    assert gate.admit(*msg(99)) is K and gate.admit(*msg(102)) is D and gate.admit("TYPING_START", {}) is D


def test_a_cut_that_comes_after_an_event_past_it_is_too_late():
    gate = NewGate()
    gate.admit(*msg(150))
    assert not gate.arm(100)
    assert NewGate().arm(100)


@pytest.mark.parametrize("kw, words", [
    (dict(running=True), "already running"),
    (dict(partial=True), "only part of the shards"),
    (dict(target=8), "only grows"),
    (dict(target=4), "only grows"),
    (dict(target=18), "multiple of max_concurrency 4"),
    (dict(remaining=30), "below the pacing threshold of 16"),
    (dict(remaining=30, reserve=20, pace_below=10), "below the safety margin of 20"),
])
def test_a_reshard_that_must_not_start_is_refused_with_the_reason(kw, words):
    args = dict(current=8, target=16, max_concurrency=4, remaining=1000, reserve=8, pace_below=16, running=False) | kw
    with pytest.raises(ReshardRefused, match=words):
        check_start(**args)


def test_the_budget_check_allows_exactly_down_to_its_floor():
    check_start(current=8, target=16, max_concurrency=4, remaining=32, reserve=8, pace_below=16, running=False)
    with pytest.raises(ReshardRefused):
        check_start(current=8, target=16, max_concurrency=4, remaining=31, reserve=8, pace_below=16, running=False)


def test_auto_targets():
    assert auto_target(8, 12, 4, margin=0.5, sharding_required=False) is None  # 12 is not 50% more than 8
    assert auto_target(8, 13, 4, margin=0.5, sharding_required=False) == 16
    assert auto_target(8, 8, 4, margin=0.5, sharding_required=True) == 16  # 4011: grow even if Discord says 8
    assert auto_target(8, 30, 4, margin=0.5, sharding_required=True) == 32
    assert auto_target(4, 1, 4, margin=0.0, sharding_required=True) == 8  # the recommendation lags: double


def reshard(old=4, new=8, now=0.0):
    r = Reshard(old, new, now, warm_deadline=now + 60, cut_timeout=10)
    r.workers_started()
    return r


def test_the_phases_of_a_reshard_that_succeeds():
    r = reshard()
    assert r.phase is Phase.WARMING and r.running
    assert [r.shard_warm(s) for s in range(7)] == [Action.NONE] * 7
    assert r.shard_warm(3) is Action.NONE and r.shard_warm(99) is Action.NONE  # repeated, unknown
    assert r.shard_warm(7) is Action.CUT
    r.cut_sent(1000.5, now=5.0)
    assert r.phase is Phase.CUTTING_OVER and r.next_deadline() == 15.0
    assert [r.old_passed(s) for s in (0, 1, 2)] == [Action.NONE] * 3
    assert r.tick(6.0) is Action.NONE
    assert r.old_passed(3) is Action.GO
    r.switched(6.5)
    assert r.phase is Phase.CLOSING_OLD and r.running and r.new_lost("late") is Action.NONE  # no rollback after go
    r.finished(7.0)
    assert r.phase is Phase.DONE and not r.running and r.next_deadline() == math.inf


def test_it_rolls_back_before_go_and_switches_anyway_after_the_cut_timeout():
    r = reshard()
    assert r.new_lost("new shard 3 closed fatally") is Action.ROLL_BACK and "shard 3" in r.reason
    r = reshard()
    assert r.tick(59.0) is Action.NONE and r.tick(60.0) is Action.ROLL_BACK and "0/8" in r.reason
    r = reshard()
    for s in range(8):
        r.shard_warm(s)
    r.cut_sent(0.0, now=1.0)
    assert [r.new_shard_passed(s) for s in range(8)] == [Action.NONE] * 7 + [Action.MARK]
    r.old_passed(0)
    assert r.tick(10.9) is Action.NONE
    assert r.tick(11.0) is Action.GO and "1, 2, 3" in r.reason
    r = reshard()
    r.cut_sent(0.0, now=1.0)
    assert r.new_lost("new worker 1 exited during the cutover") is Action.ROLL_BACK


def test_auto_reshard_works_with_static_ranges_and_assign_auto():
    from cluster.config import ClusterConfig, ConfigError

    assert ClusterConfig(auto_reshard=True, coordinator="redis://127.0.0.1:6379/0", assign="auto",
                         shards_per_worker=4).auto_reshard
    assert ClusterConfig(auto_reshard=True, coordinator="redis://127.0.0.1:6379/0", host_index=0, host_count=2)
    with pytest.raises(ConfigError, match="auto_reshard_interval and reshard_cut_timeout must be > 0"):
        ClusterConfig(auto_reshard_interval=0)
    assert ClusterConfig(auto_reshard=True).auto_reshard_margin == 0.5


def test_the_warm_up_deadline_follows_the_identify_schedule():
    assert warm_timeout(128, 16, 1.0) == 4 * 8 + 60


def test_a_warm_new_shard_that_loses_its_session_is_cold_until_it_warms_up_again():
    seen = []
    gate = NewGate(on_warm=lambda: seen.append("warm"), on_cold=lambda: seen.append("cold"))
    gate.admit("READY", {"guilds": [{"id": "1"}]})
    gate.admit("GUILD_CREATE", {"id": "1"})
    assert gate.admit("GATEWAY_INVALID_SESSION", InvalidSession(True)) is K and seen == ["warm"]  # it resumes
    gate.admit("GATEWAY_INVALID_SESSION", InvalidSession(False))
    assert seen == ["warm", "cold"] and not gate.warm
    gate.admit("READY", {"guilds": [{"id": "1"}]})  # the new session
    assert seen == ["warm", "cold"]
    gate.admit("GUILD_CREATE", {"id": "1"})
    assert seen == ["warm", "cold", "warm"]
    gate.admit("READY", {"guilds": []})  # a READY without an op 9 seen first (a close that could not resume)
    assert seen == ["warm", "cold", "warm", "cold", "warm"]


def test_a_restarted_worker_that_resumed_the_warm_session_is_warm_at_resumed():
    seen = []
    gate = NewGate(on_warm=lambda: seen.append("warm"))
    assert gate.admit("RESUMED", None) is K and seen == ["warm"]
    cold = NewGate(on_warm=lambda: seen.append("again"))
    cold.admit("READY", {"guilds": [{"id": "1"}]})
    cold.admit("RESUMED", None)  # a resume before its guilds arrived does not make it warm
    assert seen == ["warm"]


def test_a_new_shard_cold_before_the_cut_must_warm_again_and_after_it_rolls_back():
    r = Reshard(4, 8, 0.0, warm_deadline=100.0)
    r.workers_started()
    for s in range(7):
        r.shard_warm(s)
    assert r.shard_cold(3) is Action.NONE and 3 not in r.warm and r.phase is Phase.WARMING
    assert r.shard_warm(7) is Action.NONE  # 7 of 8: no cut yet
    assert r.shard_warm(3) is Action.CUT
    r.cut_sent(1.0, 1.0)
    assert r.shard_cold(5) is Action.ROLL_BACK and r.reason == "new shard 5 lost its session during the cutover"


JOIN = "GUILD_MEMBER_ADD", {"guild_id": "1", "user": {"id": "5"}}


def test_an_event_without_id_between_the_two_markers_is_delivered_once():
    """The new set's marker comes first (the old set beats once every new shard passed): a member who joins between
    them reaches both sets, and the new set drops its copy at go (the old set's digest)."""
    old = [("join", JOIN), ("ack", (ACK, None)), ("ack", (ACK, None))]
    new = [("ack", (ACK, None)), ("ack", (ACK, None)), ("join", JOIN)]
    assert _deliveries(old, new).count("join") == 1
    # an identical payload twice, the first between the markers: the old set delivers one, the new set the other
    got = _deliveries(old, [*new, ("join2", JOIN)])
    assert [label for label in got if label != "ack"] == ["join", "join2"]


def test_the_old_set_marker_is_its_heartbeat_ack_alone_but_ids_split_at_the_cut():
    gate = OldGate(1000)
    assert gate.admit(*msg(1050)) is H and not gate.passed  # the new set's message, before the old set's marker
    assert gate.admit(*JOIN) is D and len(gate.digests) == 1
    assert gate.admit(*msg(10**9)) is H and not gate.passed  # no creation id marks it, however late
    assert gate.admit(*JOIN) is D and len(gate.digests) == 2
    gate.marker.heartbeats_sent(1)
    assert gate.admit(ACK, None) is D and gate.passed
    assert gate.admit(*JOIN) is H and len(gate.digests) == 2
    assert digest(*JOIN) == gate.digests[0] != digest("GUILD_MEMBER_REMOVE", JOIN[1])


def test_a_guild_create_decoded_into_a_registered_struct_counts_for_the_warm_up():
    class Guild(msgspec.Struct):
        id: str

    class Ready(msgspec.Struct):
        guilds: list[Guild]

    warm = []
    gate = NewGate(on_warm=lambda: warm.append(True))
    gate.admit("READY", Ready([Guild("1"), Guild("2")]))
    gate.admit("GUILD_CREATE", Guild("1"))
    assert warm == []
    gate.admit("GUILD_CREATE", {"id": "2"})
    assert warm == [True]


def test_an_event_types_filter_without_ready_or_guild_create_is_refused_before_anything_starts():
    ok = dict(current=4, target=8, max_concurrency=4, remaining=1000, reserve=5, pace_below=10, running=False,
              )
    check_start(**ok, filtered_out=frozenset())
    with pytest.raises(ReshardRefused, match=r"^the shards' event_types filter drops GUILD_CREATE and READY, which "
                                             r"live resharding needs .*: add them to event_types$"):
        check_start(**ok, filtered_out=frozenset({"READY", "GUILD_CREATE"}))


def test_a_cut_that_comes_too_late_says_by_how_much_and_blames_the_clock():
    at = DISCORD_EPOCH_MS / 1000 + 1000.0
    gate = NewGate()
    gate.admit(*msg(snowflake_at(at + 1.25)))  # Discord's clock is 1.25 s ahead of this host's
    assert not gate.arm(snowflake_at(at))
    assert snowflake_time(gate.max_seen) - at == pytest.approx(1.25)
    reason = cut_late_reason(3, 1.25, 0.5)
    assert reason.startswith("new shard 3 got the cut too late: it had already received a message created 1.250 s "
                             "after the cut time, which was set 0.5 s ahead") and "clock" in reason and "NTP" in reason


def test_a_guild_left_during_the_warm_up_is_not_brought_back_at_the_switch():
    gate = NewGate()
    assert gate.admit("READY", {"guilds": [{"id": "1"}, {"id": "2"}, {"id": "3"}]}) is H
    for g in ("1", "2", "3"):
        assert gate.admit("GUILD_CREATE", {"id": g}) is H
    assert gate.admit("GUILD_DELETE", {"id": "1"}) is K  # the bot left guild 1: the old set delivers this
    assert gate.admit("GUILD_DELETE", {"id": "2", "unavailable": True}) is K  # an outage, not a leave
    gate.admit("GUILD_DELETE", {"id": "3"})
    gate.admit("GUILD_CREATE", {"id": "3"})  # and joined again: that GUILD_CREATE is current
    assert gate.arm(1000)
    gate.old_delivered([])
    assert [g for g in ("1", "2", "3") if not gate.delivered_by_old("GUILD_CREATE", {"id": g})] == ["2", "3"]


def refusal(**kw):
    args = dict(current=8, target=16, max_concurrency=4, remaining=1000, reserve=8, pace_below=16, running=False) | kw
    with pytest.raises(ReshardRefused) as e:
        check_start(**args)
    return str(e.value)


def test_each_refusal_names_its_cause_and_how_to_fix_it_in_full():
    assert refusal(filtered_out=frozenset({"READY", "GUILD_CREATE"})) == (
        "the shards' event_types filter drops GUILD_CREATE and READY, which live resharding needs to tell when the "
        "new shards are ready: add them to event_types")
    assert refusal(partial=True) == (
        "this host runs only part of the shards (--shard-range or --host-index) without a --coordinator: live "
        "resharding needs the whole cluster on one host, or every host on one coordinator")
    assert refusal(running=True) == "a reshard is already running (or a rolling restart)"
    assert refusal(target=0) == "the shard count must be a positive multiple of max_concurrency 4, got 0"
    assert refusal(target=8) == "the cluster runs 8 shards; a reshard only grows it (asked for 8)"
    assert refusal(remaining=30) == ("session start budget too low: 30 identifies left, 16 new shards would leave "
                                     "14, below the pacing threshold of 16")
    assert refusal(remaining=30, reserve=16, pace_below=16) == (
        "session start budget too low: 30 identifies left, 16 new shards would leave 14, below the safety margin of 16")


def test_the_warm_up_deadline_scales_with_the_identify_window():
    assert warm_timeout(128, 16, 5.0) == 4 * 8 * 5.0 + 60


def test_the_deadline_reasons_give_the_time_taken_and_every_late_old_shard():
    r = Reshard(4, 8, 100.0, warm_deadline=160.0, cut_timeout=10)
    r.workers_started()
    r.shard_warm(0)
    assert r.tick(161.0) is Action.ROLL_BACK
    assert r.reason == "the new set did not warm up in time (1/8 shards ready after 61 s)"
    r = Reshard(12, 24, 0.0, warm_deadline=60.0, cut_timeout=2.5)
    r.cut_sent(0.0, now=1.0)
    r.new_passed.update(range(24))
    r.old_passed(0)
    assert r.tick(3.5) is Action.GO
    assert r.reason == ("old shards 1, 2, 3, 4, 5, 6, 7, 8 and 3 more did not pass the cut within 2.5 s; switching "
                        "anyway (their guilds may see an event twice or not at all)")
    r = reshard()
    r.rolled_back(42.0)
    assert r.phase is Phase.ROLLED_BACK and r.finished_at == 42.0 and not r.running


def test_a_fresh_new_gate_reports_its_state_as_the_worker_reads_it():
    gate = NewGate()
    assert gate.mode == "warming" and gate.warm is False and gate.passed is False
    assert gate.arm(1)  # nothing seen while warming: any cut is in time
    assert gate.mode == "armed" and gate.passed is False
    assert OldGate(100).passed is False
    assert creation_id("MESSAGE_CREATE", {"id": 0}) == 0 and creation_id("MESSAGE_CREATE", {"id": -1}) is None


def test_a_cut_at_an_id_already_seen_while_warming_is_too_late():
    gate = NewGate()
    gate.admit(*msg(100))
    assert not gate.arm(100)  # the message with the cut's own id was dropped (the old set did not deliver it)


def test_a_guild_delete_before_any_ready_does_not_make_a_new_shard_warm():
    warm = []
    gate = NewGate(on_warm=lambda: warm.append(True))
    gate.admit("GUILD_DELETE", {"id": "5"})
    assert warm == [] and not gate.warm


def test_an_armed_new_shard_passes_its_marker_at_the_heartbeat_acks_after_the_cut():
    gate = NewGate()
    gate.arm(100)
    gate.marker.heartbeats_sent(2)
    assert gate.admit(ACK, None) is K and not gate.passed
    assert gate.admit(ACK, None) is K and gate.passed  # the marker's own ACK: before the marker, not held
    assert gate.admit("TYPING_START", {}) is H


def test_a_flushing_new_shard_holds_an_event_without_id_even_before_its_marker():
    gate = NewGate()
    gate.arm(100)
    gate.mode = "flushing"
    assert gate.admit("TYPING_START", {}) is H and not gate.passed


class GuildGone(msgspec.Struct):
    id: str
    unavailable: bool = False


class Bare(msgspec.Struct):
    id: str


def test_a_guild_delete_in_a_struct_leaves_the_guild_only_when_it_is_not_an_outage():
    gate = NewGate()
    gate.admit("READY", None)  # a payload without guilds: nothing to wait for
    assert gate.warm
    gate.admit("GUILD_DELETE", GuildGone("7", unavailable=True))  # an outage: the guild stays
    assert not gate.delivered_by_old("GUILD_CREATE", {"id": "7"})
    gate.admit("GUILD_DELETE", Bare("8"))  # no unavailable flag: the bot left
    assert gate.delivered_by_old("GUILD_CREATE", {"id": "8"})
    gate.admit("GUILD_CREATE", None)  # a payload without id changes nothing
    assert gate.warm


def test_an_invalid_session_without_its_flag_counts_as_resumable_and_a_lost_session_is_cold():
    gate = NewGate()
    gate.admit("READY", {"guilds": []})
    gate.admit("GATEWAY_INVALID_SESSION", None)
    assert gate.warm is True
    gate.admit("GATEWAY_INVALID_SESSION", InvalidSession(resumable=False))
    assert gate.warm is False


def test_digests_tell_payloads_apart_and_fit_a_64_bit_ipc_integer():
    a, b = digest("TYPING_START", {"user_id": "1"}), digest("TYPING_START", {"user_id": "2"})
    assert a != b
    assert all(0 <= d < 2**64 for d in (a, b))
    assert msgspec.msgpack.decode(msgspec.msgpack.encode([a, b])) == [a, b]


def test_the_new_set_drops_each_event_the_old_set_delivered_once_per_copy_and_never_by_creation_id():
    gate = NewGate()
    typing, message = ("TYPING_START", {"user_id": "1"}), msg(5)
    gate.old_delivered([digest(*typing), digest(*typing), digest(*message)])
    assert [gate.delivered_by_old(*typing) for _ in range(3)] == [True, True, False]
    assert not gate.delivered_by_old(*message)  # split by its id, not by digest


def test_auto_target_stays_for_a_recommendation_of_one_shard():
    assert auto_target(1, 1, 1, margin=0.0, sharding_required=False) is None
    assert auto_target(1, 0, 1, margin=0.0, sharding_required=False) is None


def test_the_late_cut_reason_gives_the_default_lead():
    assert "which was set 0.5 s ahead on this host's clock" in cut_late_reason(3, 1.25)


def test_a_forced_go_lists_up_to_eight_late_old_shards_then_counts_the_rest():
    def late(old_total: int, passed: int) -> str:
        r = Reshard(old_total, 2 * old_total, 0.0, warm_deadline=60.0, cut_timeout=1)
        r.cut_sent(0.0, now=0.0)
        r.new_passed.update(range(2 * old_total))
        for s in range(passed):
            r.old_passed(s)
        assert r.tick(1.0) is Action.GO
        return r.reason.split(" did not pass")[0]

    assert late(4, 1) == "old shards 1, 2, 3"
    assert late(8, 0) == "old shards 0, 1, 2, 3, 4, 5, 6, 7"
    assert late(9, 0) == "old shards 0, 1, 2, 3, 4, 5, 6, 7 and 1 more"


def test_one_shard_is_refused_as_not_growing_the_cluster():
    assert refusal(current=1, target=1, max_concurrency=1) == (
        "the cluster runs 1 shards; a reshard only grows it (asked for 1)")


def test_the_old_set_marks_only_once_every_new_shard_passed_its_marker_and_a_new_set_that_never_does_rolls_back():
    r = reshard()
    assert r.new_shard_passed(7) is Action.NONE and not r.new_marked  # before the cut: not counted
    for s in range(8):
        r.shard_warm(s)
    r.cut_sent(0.0, now=1.0)
    assert [r.new_shard_passed(s) for s in range(7)] == [Action.NONE] * 7 and not r.new_marked
    assert r.new_shard_passed(3) is Action.NONE and r.new_shard_passed(99) is Action.NONE  # repeated, unknown
    assert r.tick(11.0) is Action.ROLL_BACK and r.phase is Phase.CUTTING_OVER  # the driver rolls back on it
    assert r.reason == ("new shards 7 did not pass their cutover marker within 10 s (the old set was never marked "
                        "and delivered everything)")
    assert r.new_shard_passed(7) is Action.MARK and r.new_marked
    assert r.new_shard_passed(7) is Action.NONE  # once
    assert [r.old_passed(s) for s in range(3)] == [Action.NONE] * 3 and r.old_passed(3) is Action.GO


def test_an_identical_payload_before_the_new_marker_and_after_the_old_one_is_still_delivered_once_each():
    """The old set delivers the first copy (before both markers, the new set drops it) and holds the second (after
    both): the new set must deliver the second, not take it for the first (one digest, two events)."""
    old = [("join1", JOIN), ("ack", (ACK, None)), ("ack", (ACK, None)), ("join2", JOIN)]
    new = [("join1", JOIN), ("ack", (ACK, None)), ("ack", (ACK, None)), ("join2", JOIN)]
    assert [label for label in _deliveries(old, new) if label != "ack"] == ["join1", "join2"]


def test_identical_payloads_on_both_sides_of_both_markers_count_exactly():
    """Copies 1-2 before the new marker (old delivers), 3-4 between the markers (both), 5 after both (new only)."""
    joins = [(f"join{i}", JOIN) for i in range(1, 6)]
    acks = [("ack", (ACK, None))] * 2
    old = joins[:4] + acks + joins[4:]
    new = joins[:2] + acks + joins[2:]
    assert [label for label in _deliveries(old, new) if label != "ack"] == [f"join{i}" for i in range(1, 6)]
    # a gateway event (the marker's ACKs) never counts: only what the old set could have delivered
    gate = NewGate()
    gate.arm(1000)
    gate.admit(ACK, None)
    gate.old_delivered([digest(ACK, None)])
    assert gate.delivered_by_old(ACK, None)


def test_a_new_shard_records_the_sequence_its_marker_came_after():
    gate = NewGate()
    assert gate.admit("READY", {"guilds": []}, 1) is H and gate.marker_seq is None
    gate.arm(100)
    gate.marker.heartbeats_sent(2)
    assert gate.admit("TYPING_START", {}, 2) is K and gate.admit(ACK, None) is K
    assert gate.admit("TYPING_START", {}, 3) is K and gate.admit(ACK, None) is K
    assert gate.passed and gate.marker_seq == 3  # the ACKs carry no sequence number: the last dispatch before them
    assert gate.dropped == [digest("TYPING_START", {})] * 2  # reported with it (the old set's, before its marker)
    assert gate.admit("TYPING_START", {}, 4) is H and gate.marker_seq == 3
    by_id = NewGate()
    by_id.arm(100)
    assert by_id.admit("TYPING_START", {}, 7) is K and by_id.admit(*msg(100), 8) is H
    assert by_id.marker_seq == 7  # the message past the cut is the marker: after it
    first = NewGate()
    first.arm(100)
    assert first.admit(*msg(100), 1) is H and first.marker_seq == 0  # nothing came before it


def test_a_new_shard_reports_its_session_before_the_first_event_it_holds_until_it_is_live():
    gate = NewGate()
    assert gate.resume_seq(10) == 10  # nothing decided yet: what the shard received
    gate.admit("READY", {"guilds": []}, 1)
    gate.admit("TYPING_START", {}, 2)
    assert gate.resume_seq(9) == 2  # received but not yet decided on: replayed after a restart
    assert gate.resume_seq(1) == 1  # never past what it received
    gate.arm(100)
    gate.admit("TYPING_START", {}, 3)
    assert gate.resume_seq(9) == 3
    assert gate.admit(*msg(100), 4) is H and gate.admit("TYPING_START", {}, 5) is H
    assert gate.admit(*msg(99), 6) is K
    assert gate.resume_seq(9) == 3  # before the first event held after the cut: the warm-up READY is not counted
    gate.mode = "flushing"
    gate.released(1)  # the warm-up READY handed over: before the cap, nothing moves
    gate.released(None)
    assert gate.resume_seq(9) == 3
    gate.released(4)
    assert gate.resume_seq(9) == 4
    assert gate.admit("TYPING_START", {}, 7) is H  # held behind: the cap stays at the last one handed over
    gate.released(5)
    assert gate.resume_seq(9) == 5
    gate.released(3)  # never backwards
    assert gate.resume_seq(9) == 5
    gate.mode = "live"
    assert gate.resume_seq(9) == 9


def test_a_flushing_new_shard_that_held_nothing_before_go_caps_its_session_at_its_first_hold():
    gate = NewGate()
    gate.arm(100)
    gate.admit("TYPING_START", {}, 5)
    gate.mode = "flushing"
    assert gate.resume_seq(8) == 5
    gate.released(5)  # no event of the cut held yet: nothing to move
    assert gate.resume_seq(8) == 5
    assert gate.admit("TYPING_START", {}, 6) is H and gate.admit("TYPING_START", {}, 7) is H
    assert gate.resume_seq(8) == 5


def test_a_resumed_gate_splits_the_replay_by_sequence_number_and_ends_at_resumed():
    done = []
    typing, other = ("TYPING_START", {"user_id": "1"}), ("TYPING_START", {"user_id": "2"})
    gate = ResumedGate(100, 5, [digest(*typing), digest(*typing), digest(*other)], [digest(*typing), digest(*other)],
                       on_done=lambda: done.append(True))  # the old set delivered 2 typing, the shard had dropped 1
    assert gate.admit(*msg(99), 3) is K and gate.admit(*msg(100), 3) is D  # creation ids by the cut, at any sequence
    assert gate.admit(*msg(99), 9) is K and gate.admit(*msg(101), 9) is D
    assert gate.admit(*other, 4) is K and gate.admit(*other, 5) is K  # up to the marker: the old set's
    assert gate.admit(*other, 6) is D
    assert gate.admit(*typing, 7) is K and gate.admit(*typing, 8) is D  # the old set delivered one copy
    assert gate.admit(ACK, None, None) is D and gate.admit("GATEWAY_HELLO", {}, None) is D
    assert done == [] and gate.done is False
    assert gate.admit("RESUMED", {}, 10) is D and done == [True] and gate.done
    assert gate.admit(*msg(99), 11) is D and gate.admit(*other, 2) is D  # ungated: live events
    assert done == [True]


def test_a_resumed_gate_ends_at_a_new_ready_and_without_a_marker_loses_nothing():
    done = []
    gate = ResumedGate(100, None, [digest("TYPING_START", {})], on_done=lambda: done.append(True))
    assert gate.marker_seq is None
    assert gate.admit("TYPING_START", {}, 1) is D  # no marker known: delivered, may repeat, never lost
    assert gate.admit(*msg(99), 2) is K
    assert gate.admit("READY", {"guilds": []}, 1) is D and done == [True]


def _stream(cut):
    """A new shard's session: (type, data, seq or None) from READY through the cut, its marker (the message past the
    cut) and go."""
    t = [("READY", {"guilds": [{"id": "1"}]}, 1), ("GUILD_CREATE", {"id": "1"}, 2),
         ("TYPING_START", {"n": 1}, 3), (*msg(cut - 5), 4)]  # the warm-up: the old set's
    armed = [("TYPING_START", {"n": 2}, 5), (*msg(cut + 1), 6), (*msg(cut - 1), 7), ("TYPING_START", {"n": 3}, 8),
             (ACK, None, None), (ACK, None, None),
             ("TYPING_START", {"n": 4}, 9), (*msg(cut + 2), 10), ("TYPING_START", {"n": 5}, 11),
             ("TYPING_START", {"n": 6}, 12)]
    after = [("TYPING_START", {"n": 7}, 13), (*msg(cut - 2), 14), (*msg(cut + 3), 15)]  # after go
    return t, armed, after


@pytest.mark.parametrize("handed", range(8))
def test_a_new_worker_restarted_after_go_delivers_exactly_what_the_lost_gate_would_have(handed):
    """The gate holds, go comes, the worker hands ``handed`` held events over and dies; the restart resumes after the
    reported sequence, and the replay through a ResumedGate delivers just the rest of what one gate delivers."""
    cut = 1000
    warm, armed, after = _stream(cut)
    delivered_by_old = [digest("TYPING_START", {"n": 2}), digest("TYPING_START", {"n": 4})]  # 4: between the markers
    gate = NewGate()
    held = []
    for t, d, seq in warm:
        if gate.admit(t, d, seq) is H:
            held.append((t, d, seq))
    gate.arm(cut)
    gate.marker.heartbeats_sent(2)
    for t, d, seq in armed:
        if gate.admit(t, d, seq) is H:
            held.append((t, d, seq))
    gate.mode = "flushing"
    gate.old_delivered(delivered_by_old)
    for t, d, seq in after:
        if gate.admit(t, d, seq) is H:
            held.append((t, d, seq))
    session = after[-1][2]
    # what one gate delivers, had the worker lived: every held event the old set did not deliver
    whole = NewGate()
    whole._old_delivered.update(delivered_by_old)
    expected = [e for e in held if not whole.delivered_by_old(e[0], e[1])]
    assert [e[2] for e in expected if e[0] != ACK] == [1, 2, 6, 8, 10, 11, 12, 13, 15]
    got = []
    for t, d, seq in held[:handed]:  # the worker hands over some, then dies
        if not gate.delivered_by_old(t, d):
            got.append((t, d, seq))
        gate.released(seq)
    resume = gate.resume_seq(session)
    replay = [e for e in warm + armed + after if e[2] is not None and e[2] > resume]
    regated = ResumedGate(cut, gate.marker_seq, delivered_by_old, gate.dropped)
    got += [e for e in replay if regated.admit(*e) is D]
    assert regated.admit("RESUMED", {}, session + 1) is D and regated.done
    assert gate.marker_seq == 5  # the message past the cut (seq 6) is the marker; the ACKs after it are held
    # every dispatch once, in order (the held ACKs are not replayed; nor are the warm-up READY and GUILD_CREATE: a
    # restarted worker's handler gets RESUMED instead, as after any restart)
    dispatches = [e for e in got if e[2] is not None]
    assert dispatches == [e for e in expected if e[2] is not None and (e[2] > 2 or e in got)]


@pytest.mark.parametrize("reported", range(4, 18))
def test_a_session_reported_before_the_marker_resumes_into_a_replay_the_gate_splits_by_its_marker(reported):
    """The worker's last session report came ``reported`` events into the stream (before the marker, or later), and it
    died after go before handing anything over: the replay from that report delivers each held event once and none of
    the old set's (those up to the marker, and the copy it delivered between the markers)."""
    cut = 1000
    warm, armed, after = _stream(cut)
    delivered_by_old = [digest("TYPING_START", {"n": 2}), digest("TYPING_START", {"n": 4})]
    gate = NewGate()
    resume = None
    step = (None, None, None)  # the cut, then go
    for i, (t, d, seq) in enumerate([*warm, step, *armed, step, *after]):
        if i == reported:  # the shard received a few more events already (consumed after the report)
            resume = gate.resume_seq(gate.last_seq + 3)
        if t is None:
            if gate.marker is None:
                gate.arm(cut)
                gate.marker.heartbeats_sent(2)
            else:
                gate.mode = "flushing"
                gate.old_delivered(delivered_by_old)
            continue
        gate.admit(t, d, seq)
    assert resume is not None
    replay = [e for e in warm + armed + after if e[2] is not None and e[2] > resume]
    regated = ResumedGate(cut, gate.marker_seq, delivered_by_old, gate.dropped)
    assert [e[2] for e in replay if regated.admit(*e) is D] == [6, 8, 10, 11, 12, 13, 15]


def test_a_new_shard_restarted_in_its_worker_drops_the_replay_of_what_it_decided_on_already():
    gate = NewGate()
    gate.admit("READY", {"guilds": []}, 1)
    gate.arm(100)
    assert gate.admit(*msg(100), 2) is H and gate.admit("TYPING_START", {}, 3) is H
    assert gate.resume_seq(3) == 1  # the shard resumes after 1: 2 and 3 come again, and are held already
    assert gate.admit(*msg(100), 2) is K and gate.admit("TYPING_START", {}, 3) is K
    assert gate.admit("RESUMED", {}, 4) is H and gate.admit("TYPING_START", {}, 5) is H
    assert gate.admit("READY", {"guilds": []}, 1) is H and gate.last_seq == 1  # a new session: from 1 again
    assert gate.admit("TYPING_START", {}, 2) is H


def _old_stream(cut):
    """An old shard's session at a cutover at ``cut``: (type, data, seq or None) up to its marker (the ACK), then
    after it: held messages past the cut and events without an id, and a message from before the cut that came late
    (delivered)."""
    before = [("TYPING_START", {"n": 1}, 1), (*msg(cut - 1), 2), ("TYPING_START", {"n": 2}, 3), (ACK, None, None)]
    after = [(*msg(cut + 1), 4), ("TYPING_START", {"n": 3}, 5), (*msg(cut - 2), 6), ("TYPING_START", {"n": 4}, 7),
             (*msg(cut + 2), 8)]
    return before, after


def _old_gate(cut, events, beats=1):
    """A fresh old gate fed ``events`` (its marker heartbeats sent first): (the gate, delivered, held)."""
    gate = OldGate(cut)
    gate.marker.heartbeats_sent(beats)
    delivered, held = [], []
    for event in events:
        verdict = gate.admit(*event)
        (delivered if verdict is D else held if verdict is H else []).append(event)
    return gate, delivered, held


def test_an_old_shard_reports_its_session_before_the_first_event_it_holds_until_go():
    before, after = _old_stream(100)
    gate, delivered, held = _old_gate(100, before)
    assert gate.resume_seq(3) == 3 and gate.passed  # nothing held: what its consumer handled
    gate, delivered, held = _old_gate(100, before + after)
    assert [e[2] for e in held] == [4, 5, 7, 8] and [e[2] for e in delivered if e[2]] == [1, 2, 3, 6]
    assert gate.resume_seq(8) == 3  # before the first held event, whatever was delivered after it
    assert gate.resume_seq(2) == 2  # never past what its consumer handled
    gate.released(None)
    gate.released(4)
    assert gate.resume_seq(8) == 4
    gate.released(2)  # never backwards
    assert gate.resume_seq(8) == 4
    gate.ended = False  # a rollback: still capped while the held events are handed over
    assert gate.resume_seq(8) == 4
    gate.ended = True  # go: the new set delivers what it held
    assert gate.resume_seq(8) == 8
    assert OldGate(100).resume_seq(5) == 5 and ResumedGate(100, 3, []).resume_seq(5) == 5


@pytest.mark.parametrize("handed", range(5))
def test_an_old_worker_restarted_at_a_rollback_delivers_every_held_event(handed):
    """The old shard holds events after its marker; a rollback starts and its worker hands ``handed`` of them over,
    then dies. Restarted (ungated: the cutover ended), it resumes after the reported sequence: every event is delivered,
    and only the message from before the cut that came after the first held event twice (at least once)."""
    before, after = _old_stream(100)
    gate, delivered, held = _old_gate(100, before + after)
    gate.ended = False
    for event in held[:handed]:
        delivered.append(event)
        gate.released(event[2])
    resume = gate.resume_seq(8)
    delivered += [e for e in before + after if e[2] is not None and e[2] > resume]  # the replay, ungated
    seqs = [e[2] for e in delivered if e[2] is not None]
    assert sorted(set(seqs)) == list(range(1, 9))  # none lost
    assert [s for s in set(seqs) if seqs.count(s) > 1] == ([6] if handed < 3 else [])


def test_an_old_worker_restarted_during_the_cutover_holds_the_replay_again_and_a_rollback_delivers_it():
    """Killed while holding, the old worker is restarted gated by the same cut and mark: its shard resumes before the
    first held event, the replay before its new marker is delivered (its digests reported: the new set drops those at
    go), messages past the cut held again; the rollback hands those over. Nothing is lost."""
    before, after = _old_stream(100)
    gate, delivered, held = _old_gate(100, before + after)
    replay = [e for e in before + after if e[2] is not None and e[2] > gate.resume_seq(8)]
    again, redelivered, reheld = _old_gate(100, [*replay, (ACK, None, None), ("TYPING_START", {"n": 5}, 9)])
    assert again.passed and [e[2] for e in reheld] == [4, 8, 9] and again.resume_seq(9) == 3
    assert again.digests == [digest("TYPING_START", {"n": 3}), digest("TYPING_START", {"n": 4})]
    seqs = [e[2] for e in delivered + redelivered + reheld if e[2] is not None]  # reheld: the rollback hands over
    assert sorted(set(seqs)) == list(range(1, 10)) and [s for s in set(seqs) if seqs.count(s) > 1] == [6]


def test_the_cut_timeout_runs_from_the_cut_and_a_forced_switch_keeps_its_reason_when_the_cluster_goes():
    """Across hosts, a host sees the cut ~1.5 s before it is due: its cut timeout runs from the cut, as the record's
    go_deadline; and the record's go (no reason: every host passed) does not hide this host's forced switch."""
    r = reshard()
    for s in range(8):
        r.shard_warm(s)
    r.cut_sent(1001.5, now=5.0, lead=1.5)
    assert r.next_deadline() == 16.5  # 5 + 1.5 + 10: the cut's time plus the cut timeout
    for s in range(8):
        r.new_shard_passed(s)
    assert r.tick(15.0) is Action.NONE
    assert r.tick(16.5) is Action.GO and r.reason.startswith("old shards 0, 1, 2, 3 did not pass the cut within 10 s")
    forced = r.reason
    r.cluster_go("")
    assert r.reason == forced
    r.cluster_go("host b did not report its old shards past the cut within 10 s; switching anyway")
    assert r.reason == f"{forced}; host b did not report its old shards past the cut within 10 s; switching anyway"
    r = reshard()
    r.cut_sent(1000.5, now=5.0)
    r.cluster_go("")  # every host passed: nothing forced
    assert r.reason == ""


def test_a_hosts_reshard_progress_counts_its_own_part_and_names_the_new_shards_not_past_their_markers():
    """``cluster reshard``'s wait loop and ``cluster status`` read one host's /status: across hosts its counts are
    that host's part (an empty part shows 0, not a range [0, -1]); in the cutover, the unmarked new shards show."""
    from cluster.cli import _reshard_line, _reshard_progress  # noqa: PLC0415
    from cluster.snapshot import ReshardSnapshot  # noqa: PLC0415

    part = ReshardSnapshot("cutting_over", 8, 16, 8, 2, 3.0, None, "", shards=(8, 15), epoch=2, leader="a",
                           unmarked=tuple(range(8, 18))).status()
    assert part["shards"] == [8, 15] and part["unmarked"] == list(range(8, 18))
    assert _reshard_progress(part) == ("8/8 of this host's new shards ready · 2 of this host's old "
                                       "shards past the cut · new shards 8, 9, 10, 11, 12, 13, 14, 15 and 2 more not "
                                       "past their markers")
    empty = ReshardSnapshot("warming", 8, 16, 0, 0, 1.0, None, "", shards=(0, -1), epoch=2, leader="a").status()
    assert empty["shards"] == [] and "unmarked" not in empty
    assert _reshard_progress(empty).startswith("0/0 of this host's new shards ready")
    alone = ReshardSnapshot("done", 4, 8, 8, 4, 2.0, 1.5, "").status()
    assert _reshard_line(alone) == ["reshard 4 -> 8 shards: done · 8/8 new shards ready · 4/4 old shards past the cut "
                                    "· 2.0 s"]
