"""Edges of the pure cluster modules that mutation testing (``make mutate``) found untested: the exit code
of each fatal close code, the session budget at its reserve, the coordinator's windows, the restart
policy's exact delays, and the state file's filters."""

import dataclasses
import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from cluster.budget import SessionBudget
from cluster.coordination import CoordinationSetup, CoordinationStats, local_coordination
from cluster.exitcodes import ExitCode, for_close_code
from cluster.identify import Defer, Grant, IdentifyCoordinator, Refuse
from cluster.layout import round_up, split, split_range
from cluster.restart import Backoff, GiveUp, Restart, RestartPolicy
from cluster.state import load_sessions, save_sessions
from ipc.protocol import (IdentifyCancel, IdentifyDone, IdentifyRequest, IdentifyStarted, IdentifyUnused,
                          SessionInfo)


def coord(mc=4, total=1000, remaining=None, reserve=0, window=5.0, hold=15.0, **kw):
    return IdentifyCoordinator(mc, SessionBudget(total, remaining, 86400.0, reserve=reserve, **kw),
                               window=window, hold_timeout=hold, slack=0.0, lead=0.0)


def grants(decisions):
    return [d.shard_id for d in decisions if isinstance(d, Grant)]


class FixedRandom:
    def __init__(self, value):
        self.value = value

    def random(self):
        return self.value


# ---- exit codes ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("close", "code"), [
    (4004, ExitCode.AUTHENTICATION_FAILED), (4013, ExitCode.DISALLOWED_INTENTS), (4014, ExitCode.DISALLOWED_INTENTS),
    (4010, ExitCode.SHARDING_REJECTED), (4011, ExitCode.SHARDING_REJECTED), (4012, ExitCode.SHARDING_REJECTED),
    (4000, ExitCode.ERROR), (None, ExitCode.ERROR)])
def test_each_fatal_close_code_has_its_exit_code_and_names_itself(close, code):
    exit_code, message = for_close_code(close)
    assert exit_code is code
    assert str(close) in message
    assert (int(ExitCode.AUTHENTICATION_FAILED), int(ExitCode.DISALLOWED_INTENTS), int(ExitCode.SHARDING_REJECTED),
            int(ExitCode.CRASH_LOOP)) == (4, 5, 6, 7)  # documented in the README; operators script on them


# ---- session budget ------------------------------------------------------------------------------

def test_budget_defaults():
    b = SessionBudget()
    assert (b.total, b.remaining, b.reserve, b.pace_below, b.spent) == (1000, 1000, 0, 0, 0)
    assert b.reset_in(0.0) == 86400.0
    assert SessionBudget(reserve=5).pace_below == 10


def test_budget_counts_spends_and_refunds_one_at_a_time():
    b = SessionBudget(10, 5, 100.0)
    b.spend(0.0)
    b.spend(0.0)
    assert (b.remaining, b.spent) == (3, 2)
    b.refund()
    assert (b.remaining, b.spent) == (4, 1)


def test_budget_refills_at_the_reset_and_schedules_the_next_a_day_later():
    b = SessionBudget(10, 0, 100.0)
    assert b.available(100.0) == 10
    assert b.reset_in(100.0) == 86400.0
    assert b.reset_in(86499.5) == 0.5


def test_refusal_says_when_the_budget_resets():
    b = SessionBudget(100, 3, 7200.0, reserve=3)
    d = b.check(0.0)
    assert d.allowed is False and d.refused is True and d.not_before == 7200.0
    assert "3 of 100 identifies left" in d.reason and "safety margin of 3" in d.reason
    assert "resets in 2.0 h" in d.reason
    assert "resets in 1.1 h" in SessionBudget(100, 3, 3780.0, reserve=3).check(0.0).reason  # 1.05 h, rounded


def test_pacing_starts_at_exactly_pace_below_and_spreads_what_is_left_until_the_reset():
    b = SessionBudget(100, 11, 86400.0, pace_below=10)
    assert b.check(0.0).allowed
    b.spend(0.0)
    d = b.check(1.0)  # 10 left, pace_below 10: paced
    assert d.allowed is False and d.refused is False
    assert d.not_before == pytest.approx((86400.0 - 1.0) / 10)
    assert "one per 8640 s" in d.reason


def test_pacing_with_one_identify_above_the_reserve_waits_the_whole_period():
    b = SessionBudget(100, 2, 1000.0, pace_below=10)
    b.spend(0.0)
    assert b.check(1.0).not_before == pytest.approx(999.0)


def test_pacing_allows_at_exactly_the_paced_time():
    b = SessionBudget(100, 3, 300.0, pace_below=10)
    b.spend(0.0)
    assert b.check(99.0).allowed is False
    assert b.check(100.0).allowed  # (300 - 100) / 2 = 100 s after the last spend


@settings(max_examples=150, deadline=None)
@given(reserve=st.integers(0, 5), above=st.integers(0, 6), mc=st.integers(1, 3), shards=st.integers(1, 12))
def test_the_budget_is_spent_down_to_exactly_its_reserve_and_never_below(reserve, above, mc, shards):
    """Drives the budget *to* its reserve (the invariant test above stays far from it): every request is
    granted until exactly ``reserve`` is left, then every later one is refused."""
    c = coord(mc=mc, total=1000, remaining=reserve + above, reserve=reserve, window=1.0, hold=2.0, pace_below=0)
    for s in range(shards):
        c.request(s, 0.0)
    granted, refused = [], []
    now = 0.0
    while c.depth and now < 100:
        for d in c.poll(now):
            (granted if isinstance(d, Grant) else refused).append(d.shard_id)
            assert not isinstance(d, Defer)
        for h in c.holders():
            c.done(h, True, now)
        now += 1.0
    assert len(granted) == min(shards, max(above, 0))
    assert c.budget.remaining == reserve + above - len(granted) >= reserve
    assert sorted(granted + refused) == list(range(shards))
    if refused:
        assert c.budget.remaining == reserve  # refused only once the next spend would cross the reserve


# ---- identify coordinator ------------------------------------------------------------------------

def test_coordinator_defaults_and_validation():
    c = IdentifyCoordinator(1, SessionBudget())
    assert c.window == 5.0 and c.slack == 0.05 and c.lead == 0.5 and c.hold_timeout == 15.0
    assert IdentifyCoordinator(1, SessionBudget(), hold_timeout=0.6).lead == 0.3  # the hold outlasts the lead
    with pytest.raises(ValueError, match=r"^max_concurrency must be >= 1$"):
        IdentifyCoordinator(0, SessionBudget())


def test_started_moves_the_window_when_no_outcome_follows():
    """The worker said the Identify is going out at 3.0, then died (cancel): the window runs from 3.0."""
    c = coord(mc=1)
    c.request(0, 0.0)
    c.request(1, 0.0)
    assert grants(c.poll(0.0)) == [0]
    c.started(0, 3.0)
    c.cancel(0)
    assert c.holders() == []
    assert grants(c.poll(5.0)) == []  # a no-op started() would let shard 1 identify 2 s after shard 0 did
    assert c.next_deadline(5.0) == 8.0
    assert grants(c.poll(8.0)) == [1]


def test_started_moves_the_window_when_the_hold_expires():
    c = coord(mc=1, hold=4.0)
    c.request(0, 0.0)
    c.request(1, 0.0)
    c.poll(0.0)
    c.started(0, 3.0)
    assert grants(c.poll(5.0)) == [] and c.expired_holds == 1
    assert grants(c.poll(8.0)) == [1]


def test_a_stale_started_from_a_shard_that_no_longer_holds_changes_nothing():
    c = coord(mc=1)
    c.request(0, 0.0)
    c.request(1, 0.0)
    c.poll(0.0)
    c.done(0, True, 0.1)
    c.started(0, 3.0)  # late IPC message
    assert grants(c.poll(5.1)) == [1]


def test_cancelling_a_waiting_shard_leaves_the_holder_alone():
    c = coord(mc=1)
    c.request(0, 0.0)
    c.request(1, 0.0)
    c.poll(0.0)
    c.cancel(1)
    assert c.holders() == [0] and c.waiting() == []
    c.request(2, 0.0, "resume failed")
    assert c.waiting() == [2]


def test_a_busy_bucket_does_not_stop_the_others_and_grants_carry_their_reason():
    c = coord(mc=2)
    c.request(0, 0.0)
    c.poll(0.0)
    c.request(1, 2.0)
    c.request(3, 2.0, "resume failed")
    out = c.poll(3.0)
    assert [(d.shard_id, d.waited, d.reason) for d in out] == [(1, 1.0, "initial")]
    c.done(1, True, 3.0)
    out = c.poll(8.0)
    assert [(d.shard_id, d.reason) for d in out] == [(3, "resume failed")]


def test_each_expired_hold_is_counted():
    c = coord(mc=2, hold=1.0)
    for s in (0, 1):
        c.request(s, 0.0)
    c.poll(0.0)
    c.poll(1.0)
    assert c.expired_holds == 2 and c.holders() == []


def test_refusal_reaches_every_bucket_in_one_poll():
    c = coord(mc=2, total=100, remaining=3, reserve=3)
    for s in range(4):
        c.request(s, 0.0)
    out = c.poll(0.0)
    assert sorted(d.shard_id for d in out if isinstance(d, Refuse)) == [0, 1, 2, 3]
    assert c.depth == 0


def test_a_deferral_does_not_stop_later_buckets_from_expiring_their_holds():
    c = coord(mc=2, total=100, remaining=11, pace_below=10, hold=15.0)
    c.request(1, 0.0)
    assert grants(c.poll(0.0)) == [1]  # bucket 1 holds until 15.0; 10 left: pacing starts
    c.request(0, 20.0)
    out = c.poll(20.0)
    assert [type(d) for d in out] == [Defer]
    assert c.expired_holds == 1 and c.holders() == []  # bucket 1 was still visited
    c.request(3, 21.0)
    c.poll(21.0)  # both buckets deferred now
    assert c.depth == 2


def test_a_deferred_bucket_does_not_stop_later_buckets_from_expiring_their_holds():
    c = coord(mc=2, total=100, remaining=11, pace_below=10, hold=15.0)
    c.request(1, 0.0)
    c.poll(0.0)
    c.request(0, 10.0)
    assert [type(d) for d in c.poll(10.0)] == [Defer]  # deferred until ~8640 s
    c.poll(16.0)  # bucket 0 is skipped for the deferral; bucket 1's hold expires
    assert c.expired_holds == 1 and c.holders() == []


def test_unused_grant_frees_a_slot_still_held_and_counts_each_refund():
    c = coord(mc=1, total=10)
    for s in (0, 1, 2):
        c.request(s, 0.0)
    assert grants(c.poll(0.0)) == [0]
    c.unused(0)  # its connection failed before it could even report an outcome
    assert c.holders() == []
    assert grants(c.poll(0.0)) == [1]
    c.unused(1)
    assert c.unused_grants == 2 and c.budget.available(0.0) == 10


def test_only_a_grant_not_yet_reported_counts_a_late_start_and_each_counts_once():
    """started() after the hold expired is a late start, once per grant; a stale started() after the grant was
    given back (unused) or its worker cancelled it is not."""
    c = coord(mc=2, window=5.0, hold=2.0)
    for s in (0, 1):
        c.request(s, 0.0)
    assert grants(c.poll(0.0)) == [0, 1]
    c.poll(2.0)  # both holds expire
    c.started(0, 3.0)
    c.started(0, 3.5)  # a repeated report
    c.started(1, 4.0)
    assert c.late_starts == 2 and c.expired_holds == 2
    c = coord(mc=2, window=5.0, hold=2.0)
    for s in (0, 1):
        c.request(s, 0.0)
    assert grants(c.poll(0.0)) == [0, 1]
    c.unused(0)  # shard 0's connection failed before its Identify
    c.cancel(1)  # shard 1's worker died
    c.poll(2.0)
    c.started(0, 3.0)
    c.started(1, 3.0)
    assert c.late_starts == 0


async def test_the_coordination_interface_applies_reports_in_order_and_decides():
    c = coord(mc=2, total=100, window=5.0, hold=15.0)
    await c.report([(0.0, IdentifyRequest(0)), (0.0, IdentifyRequest(1, "resume failed")),
                    (0.5, IdentifyRequest(2)), (0.5, IdentifyRequest(3))])
    assert c.busy() == {0, 1, 2, 3}
    assert await c.decide(1.0) == [Grant(0, 1.0, "initial"), Grant(1, 1.0, "resume failed")]
    assert c.busy() == {0, 1, 2, 3}  # two hold their buckets, two wait
    await c.report([(2.0, IdentifyStarted(0)), (3.0, IdentifyDone(0, True)), (3.0, IdentifyUnused(1)),
                    (3.0, IdentifyCancel(2))])
    assert c.busy() == {3} and c.budget.available(3.0) == 99 and c.unused_grants == 1
    assert await c.decide(3.0) == [Grant(3, 2.5, "initial")]  # shard 1's bucket: no Identify went out
    await c.report([(3.0, IdentifyRequest(0, "again")), (4.0, IdentifyStarted(3)), (4.0, IdentifyCancel(3)),
                    (4.0, IdentifyRequest(1))])
    assert await c.decide(7.9) == [] and c.next_deadline(7.9) == 8.0  # 5 s from shard 0's READY at 3.0
    assert await c.decide(8.0) == [Grant(0, 5.0, "again")]
    assert await c.decide(9.0) == [Grant(1, 5.0, "initial")]  # 5 s from shard 3's Identify (its worker died after)


async def test_the_coordination_interface_passes_an_outcome_on_as_reported():
    """A reported READY proves its window (the next grant comes one window later); a reported failure keeps the
    slack."""
    c = IdentifyCoordinator(1, SessionBudget(), window=5.0, hold_timeout=15.0, slack=0.05, lead=0.0)
    await c.report([(0.0, IdentifyRequest(s)) for s in (0, 1, 2)])
    assert grants(await c.decide(0.0)) == [0]
    await c.report([(0.1, IdentifyStarted(0)), (0.2, IdentifyDone(0, True))])
    assert grants(await c.decide(5.19)) == []
    assert grants(await c.decide(5.2)) == [1]
    await c.report([(5.3, IdentifyStarted(1)), (5.4, IdentifyDone(1, False))])
    assert grants(await c.decide(10.44)) == []
    assert grants(await c.decide(10.45)) == [2]


async def test_stats_and_budget_refresh_through_the_interface():
    c = coord(mc=1, total=100, remaining=50, reserve=7, window=1.0, hold=1.0)
    for s in (0, 1, 2):
        c.request(s, 0.0)
    c.poll(0.0)
    c.poll(1.0)  # shard 0's hold expires; shard 1 is granted
    c.started(0, 1.5)
    c.unused(1)
    assert c.stats(3600.0) == CoordinationStats(queue_depth=1, budget_remaining=49, budget_total=100,
                                                budget_reserve=7, budget_reset_in=82800.0, late_starts=1,
                                                unused_grants=1, expired_holds=1)
    await c.refresh_budget(2000, 1500, 600.0, 3600.0)
    assert c.stats(3700.0) == CoordinationStats(1, 1500, 2000, 7, 500.0, 1, 1, 1)


def test_local_coordination_builds_the_coordinator_from_every_setting():
    setup = CoordinationSetup(max_concurrency=3, total=1000, remaining=400, reset_after=7200.0, reserve=20,
                              pace_below=100, window=2.0, hold_timeout=9.0, now=50.0)
    c = local_coordination(setup)
    assert (c.max_concurrency, c.window, c.slack, c.hold_timeout) == (3, 2.0, 0.05, 9.0)
    b = c.budget
    assert (b.total, b.remaining, b.reset_at, b.reserve, b.pace_below) == (1000, 400, 7250.0, 20, 100)
    assert local_coordination(dataclasses.replace(setup, pace_below=None)).budget.pace_below == 40


# ---- layout --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [((0, 4), "shards and max_concurrency must be >= 1"),
                                               ((4, 0), "shards and max_concurrency must be >= 1")])
def test_round_up_validates(args, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        round_up(*args)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(total=0), "total must be >= 1"),
    (dict(total=4, shards_per_worker=2, workers=2), "give shards_per_worker or workers, not both"),
    (dict(total=4, shards_per_worker=0), "shards_per_worker must be >= 1"),
    (dict(total=4, workers=0), "workers must be >= 1")])
def test_split_validates(kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        split(**kwargs)


def test_one_shard_per_worker():
    assert split(3, shards_per_worker=1) == [range(0, 1), range(1, 2), range(2, 3)]


def test_a_hosts_range_is_split_like_the_whole_cluster_and_shifted_to_its_start():
    assert split_range(range(8, 18), workers=3) == [range(8, 12), range(12, 15), range(15, 18)]
    assert split_range(range(8, 18), shards_per_worker=4) == [range(8, 12), range(12, 16), range(16, 18)]
    assert split_range(range(5, 7)) == [range(5, 7)]  # one worker runs the host's shards
    assert split_range(range(0, 4), workers=2) == split(4, workers=2)  # the first host is split(total)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(shards=range(4, 4)), "total must be >= 1"),
    (dict(shards=range(4, 8), shards_per_worker=2, workers=2), "give shards_per_worker or workers, not both"),
    (dict(shards=range(4, 8), shards_per_worker=0), "shards_per_worker must be >= 1"),
    (dict(shards=range(4, 8), workers=0), "workers must be >= 1")])
def test_split_range_validates_like_split(kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        split_range(**kwargs)


# ---- restart policy ------------------------------------------------------------------------------

def test_backoff_is_half_fixed_half_random():
    b = Backoff(base=1.0, cap=60.0)
    assert b.delay(2, FixedRandom(0.0)) == 2.0
    assert b.delay(2, FixedRandom(0.5)) == 3.0
    assert b.delay(2, FixedRandom(0.999)) == pytest.approx(3.998)
    assert Backoff(base=1.0, cap=3.0).delay(5, FixedRandom(0.5)) == 2.25


def test_restart_policy_defaults():
    p = RestartPolicy("worker 0")
    assert (p.min_alive, p.max_failures, p.failures, p.started_at) == (30.0, 5, 0, None)


def test_restart_delays_are_exact_with_a_given_rng():
    p = RestartPolicy("worker 0", min_alive=10.0, max_failures=3, rng=FixedRandom(0.5))
    p.started(0.0)
    assert p.exited(10.0, "exit 1") == Restart(pytest.approx(0.075), 0)  # alive exactly min_alive: a long run
    p.started(20.0)
    assert p.exited(21.0, "exit 1") == Restart(0.75, 1)
    p.started(22.0)
    assert p.exited(23.0, "exit 1") == Restart(1.5, 2)
    p.started(24.0)
    give_up = p.exited(25.0, "exit 1")
    assert isinstance(give_up, GiveUp)
    assert give_up.message == ("worker 0 failed 3 times in a row, each within 10 s of starting (last: exit 1); "
                               "giving up (crash loop)")


def test_a_worker_that_never_started_counts_as_a_quick_failure():
    p = RestartPolicy("worker 1", min_alive=1.0, rng=FixedRandom(0.0))
    assert p.exited(50.0, "spawn failed") == Restart(0.5, 1)


# ---- state file ----------------------------------------------------------------------------------

def _write_state(path, total, shard_ids, saved_at):
    path.write_text(json.dumps({"version": 1, "saved_at": saved_at, "shard_total": total, "sessions": [
        {"shard_id": s, "session_id": f"s{s}", "seq": 1, "resume_url": None} for s in shard_ids]}))


def test_state_keeps_only_shards_of_this_run(tmp_path):
    path = tmp_path / "state.json"
    _write_state(path, 4, [-1, 0, 3, 4, 7], saved_at=1000.0)
    loaded, note = load_sessions(path, 4, ttl=120, now=1010.0)
    assert sorted(loaded) == [0, 3]
    assert "resuming 2 sessions" in note


def test_state_at_exactly_the_ttl_is_still_used(tmp_path):
    path = tmp_path / "state.json"
    save_sessions(path, 4, [SessionInfo(0, "a", 1)], now=1000.0)
    loaded, _ = load_sessions(path, 4, ttl=120, now=1120.0)
    assert list(loaded) == [0]


def test_state_uses_the_wall_clock_by_default(tmp_path):
    path = tmp_path / "a" / "b" / "state.json"  # missing directories are created
    save_sessions(path, 4, [SessionInfo(2, "a", 5)])
    loaded, note = load_sessions(path, 4, ttl=120)
    assert list(loaded) == [2] and "written 0 s ago" in note


def test_state_is_written_through_a_hidden_temp_file_beside_it(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    seen = []
    real = os.replace

    def replace(src, dst):
        seen.append(os.path.basename(src))
        assert os.path.dirname(src) == str(tmp_path)  # same filesystem: the rename is atomic
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    save_sessions(path, 4, [SessionInfo(0, "a", 1)], now=0.0)
    assert len(seen) == 1 and seen[0].startswith(".state.json.") and seen[0].endswith(".tmp")


def test_a_failed_rename_reports_its_own_error(tmp_path, monkeypatch):
    path = tmp_path / "state.json"

    def replace(src, dst):
        os.unlink(src)  # e.g. a network filesystem that moved the file and still failed
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match=r"^rename failed$"):
        save_sessions(path, 4, [SessionInfo(0, "a", 1)], now=0.0)
    assert list(tmp_path.iterdir()) == []


# ---- a shard's signs of life (the supervisor's zombie check) ------------------------------------------------

def test_liveness_counts_heartbeat_acks_only_while_the_consumer_waits():
    from cluster.liveness import Liveness

    live = Liveness(100.0)
    assert live.age(101.0, False, None) == 1.0
    assert live.age(150.0, True, None) == 0.0  # becoming Active is a sign of life: a long identify wait is none
    assert live.age(152.0, True, 151.5) == 0.5  # the consumer waits: an ACK (filtered out or not) counts
    assert live.age(152.0, True, 140.0) == 2.0  # an older ACK does not take it back
    live.waiting, live.taken = False, 153.0  # the consumer took an event at 153 and is in its handler since
    assert live.age(160.0, True, 159.0) == 7.0  # wedged: the connection's ACKs do not count
    live.waiting = True
    assert live.age(161.0, True, 160.5) == 0.5
    assert live.age(170.0, False, 160.5) == 9.5  # not Active: the age goes on (for the status page)
    assert live.age(171.0, True, None) == 0.0  # Active again (a new connection: no ACK yet)
    assert live.age(172.5, True, None) == 1.5


def test_liveness_of_a_shard_active_at_its_first_reading_counts_from_then():
    from cluster.liveness import Liveness

    live = Liveness(100.0)
    assert live.age(150.0, True, None) == 0.0  # it became Active since it started (after a long identify wait)
    assert live.age(151.0, True, None) == 1.0
