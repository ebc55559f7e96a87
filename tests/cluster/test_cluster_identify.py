"""The identify coordinator and the session budget guard (pure logic, injected clock)."""

import math

import pytest
from hypothesis import given, settings, strategies as st

from cluster.budget import SessionBudget
from cluster.identify import Defer, Grant, IdentifyCoordinator, Refuse


def coord(mc=4, total=1000, remaining=None, reserve=0, window=5.0, hold=15.0, **kw):
    return IdentifyCoordinator(mc, SessionBudget(total, remaining, 86400.0, reserve=reserve, **kw),
                               window=window, hold_timeout=hold, slack=0.0, lead=0.0)


def grants(decisions):
    return [d.shard_id for d in decisions if isinstance(d, Grant)]


def test_one_grant_per_bucket_and_buckets_in_parallel():
    c = coord(mc=4)
    for s in range(8):
        c.request(s, 0.0)
    assert grants(c.poll(0.0)) == [0, 1, 2, 3]
    assert c.depth == 4
    for s in range(4):
        c.done(s, True, 0.5)
    assert grants(c.poll(5.49)) == []
    assert c.next_deadline(1.0) == 5.5
    assert grants(c.poll(5.5)) == [4, 5, 6, 7]


def test_slot_is_held_until_ready_even_after_the_window():
    c = coord(mc=1)
    c.request(0, 0.0)
    c.request(1, 0.0)
    assert grants(c.poll(0.0)) == [0]
    assert grants(c.poll(6.0)) == []  # shard 0 has not reported READY
    c.done(0, True, 7.0)
    assert grants(c.poll(7.0)) == []
    assert grants(c.poll(12.0)) == [1]


def test_hold_expires_after_timeout():
    c = coord(mc=1, hold=10.0)
    c.request(0, 0.0)
    c.request(1, 0.0)
    c.poll(0.0)
    assert c.next_deadline(1.0) == 10.0
    assert grants(c.poll(10.0)) == [1]
    assert c.expired_holds == 1


def test_window_counts_from_the_latest_of_grant_start_and_outcome():
    c = coord(mc=1)
    c.request(0, 0.0)
    c.request(1, 0.0)
    c.poll(0.0)
    c.started(0, 0.8)  # IPC / loop latency between grant and send
    c.done(0, True, 0.9)
    assert grants(c.poll(5.0)) == []
    assert grants(c.poll(5.8)) == []  # READY came at 0.9: the gateway may have read the Identify that late
    assert grants(c.poll(5.9)) == [1]


def test_an_outcome_proves_the_window_and_needs_no_slack():
    """READY (or INVALID_SESSION) means the gateway had processed the Identify: the bucket's next grant comes
    exactly one window after it, without the slack that covers a send nobody saw arrive."""
    c = IdentifyCoordinator(1, SessionBudget(), window=5.0, hold_timeout=15.0, slack=0.05, lead=0.0)
    for s in (0, 1, 2):
        c.request(s, 0.0)
    assert grants(c.poll(0.0)) == [0]
    c.started(0, 0.1)
    c.done(0, True, 0.2)
    assert c.next_deadline(0.2) == 5.2
    assert grants(c.poll(5.19)) == []
    assert grants(c.poll(5.2)) == [1]
    c.started(1, 5.3)
    c.cancel(1)  # its worker died after the send: no outcome proves when the gateway read it
    assert c.next_deadline(5.3) == pytest.approx(10.35)
    assert grants(c.poll(10.32)) == []
    assert grants(c.poll(10.35)) == [2]


def test_a_ready_at_the_instant_of_its_grant_proves_the_window():
    """READY on the grant's own tick (a coarse clock) still proves the window: the next grant needs no slack."""
    c = IdentifyCoordinator(1, SessionBudget(), window=5.0, hold_timeout=15.0, slack=0.05, lead=0.0)
    for s in (0, 1):
        c.request(s, 0.0)
    assert grants(c.poll(0.0)) == [0]
    c.done(0, True, 0.0)
    assert c.next_deadline(0.0) == 5.0
    assert grants(c.poll(5.0)) == [1]


def test_a_request_while_holding_is_a_failed_attempt_and_keeps_the_slack():
    """A shard that asks again while it holds its slot (INVALID_SESSION, a close) had no READY: its window
    restarts then, with the slack."""
    c = IdentifyCoordinator(1, SessionBudget(), window=5.0, hold_timeout=15.0, slack=0.05, lead=0.0)
    c.request(0, 0.0)
    assert grants(c.poll(0.0)) == [0]
    c.request(0, 1.0, "invalid_session")
    assert c.holders() == [] and c.next_deadline(1.0) == pytest.approx(6.05)
    assert grants(c.poll(6.04)) == []
    assert grants(c.poll(6.05)) == [0]


def test_a_failed_outcome_proves_nothing_and_keeps_the_slack():
    """A close after the Identify was written is no proof the gateway had read it (it may still): slack."""
    c = IdentifyCoordinator(1, SessionBudget(), window=5.0, hold_timeout=15.0, slack=0.05, lead=0.0)
    for s in (0, 1):
        c.request(s, 0.0)
    assert grants(c.poll(0.0)) == [0]
    c.started(0, 0.1)
    c.done(0, False, 0.2)
    assert c.next_deadline(0.2) == pytest.approx(5.25)


def test_an_unproven_window_keeps_its_slack_through_expiry_late_starts_and_unused_grants():
    c = IdentifyCoordinator(1, SessionBudget(), window=5.0, hold_timeout=2.0, slack=0.05, lead=0.0)
    for s in (0, 1, 2, 3):
        c.request(s, 0.0)
    assert grants(c.poll(0.0)) == [0]
    assert grants(c.poll(2.0)) == []  # the hold expired: no outcome proves the window of the grant at 0.0
    assert c.next_deadline(2.0) == 5.05
    assert grants(c.poll(5.05)) == [1]
    c.started(1, 5.6)
    c.started(0, 5.78)  # shard 0's expired grant wrote its Identify late (it was already counted as sent)
    c.done(1, True, 5.8)  # shard 1's outcome proves its own Identify, not shard 0's late one
    assert c.next_deadline(5.8) == pytest.approx(10.83)
    assert grants(c.poll(10.82)) == []
    assert grants(c.poll(10.84)) == [2]
    c.done(2, False, 10.9)
    c.unused(2)  # given back unused: the bucket's window is what it was before shard 2's grant
    assert c.next_deadline(10.9) == pytest.approx(10.83)
    assert grants(c.poll(10.9)) == [3]


def test_a_grant_comes_lead_seconds_early_and_carries_the_windows_end():
    """The next shard is granted `lead` before the window ends, to connect meanwhile; its Identify waits for
    `not_before`, the window's end, and an early grant's own window counts from then, not from the grant."""
    c = IdentifyCoordinator(1, SessionBudget(), window=5.0, hold_timeout=15.0, slack=0.05, lead=0.5)
    for s in (0, 1, 2):
        c.request(s, 0.0)
    assert c.poll(0.0) == [Grant(0, 0.0, "initial", 0.0)]  # a free bucket: at once
    c.done(0, True, 1.0)
    assert c.next_deadline(1.0) == 5.5
    assert c.poll(5.49) == []
    assert c.poll(5.5) == [Grant(1, 5.5, "initial", 6.0)]
    c.cancel(1)  # its worker died: the Identify may have gone out, at 6.0 at the earliest
    assert c.next_deadline(5.6) == pytest.approx(6.0 + 5.05 - 0.5)
    assert grants(c.poll(10.54)) == []
    [g] = c.poll(10.55)
    assert g.shard_id == 2 and g.not_before == pytest.approx(11.05)


def test_failed_identify_restarts_the_window():
    c = coord(mc=1)
    c.request(0, 0.0)
    c.request(1, 0.0)
    c.poll(0.0)
    c.done(0, False, 3.0)  # INVALID_SESSION: maybe we were too fast; slow down
    assert grants(c.poll(5.0)) == []
    assert grants(c.poll(8.0)) == [1]


def test_an_identify_written_after_its_hold_expired_still_moves_the_window():
    c = coord(mc=1, window=5.0, hold=15.0)
    for s in (0, 1, 2):
        c.request(s, 0.0)
    assert grants(c.poll(0.0)) == [0]
    assert grants(c.poll(15.0)) == [1]  # shard 0 never reported: its hold expired
    c.started(0, 16.0)  # ...yet its Identify went out (a shard whose connect_timeout exceeds the hold)
    c.done(1, True, 16.5)
    assert c.late_starts == 1
    assert grants(c.poll(20.5)) == []  # shard 2 keeps its distance from shard 0's Identify too
    assert grants(c.poll(21.5)) == [2]


def test_queue_orders_by_shard_id_and_ignores_duplicates():
    c = coord(mc=2)
    for s in (6, 2, 4, 0, 2):
        c.request(s, 0.0)
    order = []
    t = 0.0
    while c.depth:
        for s in grants(c.poll(t)):
            order.append(s)
            c.done(s, True, t)
        t += 5.0
    assert order == [0, 2, 4, 6]


def test_cancel_releases_waiting_and_held_slots():
    c = coord(mc=1)
    c.request(0, 0.0)
    c.request(1, 0.0)
    c.poll(0.0)
    c.cancel(1)
    c.cancel(0)
    assert c.depth == 0 and c.holders() == [] and c.next_deadline(0.0) is None


def test_reidentify_while_holding_ends_previous_attempt():
    c = coord(mc=1)
    c.request(0, 0.0)
    c.poll(0.0)
    c.request(0, 2.0, "invalid_session")
    assert c.holders() == []
    (g,) = c.poll(7.0)
    assert g == Grant(0, 5.0, "invalid_session")


def test_refuses_below_safety_margin_with_clear_message():
    c = coord(mc=1, total=1000, remaining=12, reserve=10, pace_below=0)
    for s in range(4):
        c.request(s, 0.0)
    assert grants(c.poll(0.0)) == [0]
    c.done(0, True, 0.1)
    assert grants(c.poll(5.1)) == [1]
    c.done(1, True, 5.2)
    refused = [d for d in c.poll(10.2) if isinstance(d, Refuse)]
    assert [r.shard_id for r in refused] == [2, 3]
    assert "safety margin of 10" in refused[0].message and "10 of 1000" in refused[0].message
    assert c.budget.remaining == 10 and c.depth == 0


def test_paces_identifies_when_budget_is_low():
    c = coord(mc=4, total=1000, remaining=30, reserve=10, pace_below=40)
    # after one grant, 19 identifies above the reserve and 86400 s to reset: one per 4547 s
    for s in range(3):
        c.request(s, 0.0)
    d = c.poll(0.0)
    assert grants(d) == [0]
    (defer,) = [x for x in d if isinstance(x, Defer)][:1]
    assert math.isclose(defer.until, 86400 / (29 - 10), rel_tol=1e-6)
    assert "pacing" in defer.message
    assert grants(c.poll(100.0)) == []
    assert grants(c.poll(defer.until)) == [1]


def test_budget_refills_at_reset_and_refresh():
    b = SessionBudget(100, 5, reset_after=60.0, reserve=5)
    assert not b.check(0.0).allowed
    assert b.check(60.0).allowed and b.available(60.0) == 100
    b.refresh(1000, 999, 3600.0, 61.0)
    assert b.available(61.0) == 999 and math.isclose(b.reset_in(61.0), 3600.0)


@settings(max_examples=200, deadline=None)
@given(mc=st.integers(1, 4), shards=st.integers(1, 12), start=st.integers(10, 16),
       events=st.lists(st.tuples(st.sampled_from(["req", "start", "ok", "fail", "cancel", "tick"]),
                                 st.integers(0, 11), st.floats(0.0, 3.0)), max_size=60))
def test_invariants(mc, shards, start, events):
    """Windows, one holder per bucket, and the budget: it starts 0-6 identifies above its reserve of 10, so
    runs reach the reserve (with 40 left, none ever did, and an off-by-one at the reserve went unseen)."""
    window = 5.0
    c = coord(mc=mc, total=1000, remaining=start, reserve=10, window=window, hold=8.0)
    now = 0.0
    last_grant: dict[int, float] = {}
    spent = 0
    for kind, shard, dt in events:
        shard %= shards
        now += dt
        if kind == "req":
            c.request(shard, now)
        elif kind == "start":
            c.started(shard, now)
        elif kind in ("ok", "fail"):
            c.done(shard, kind == "ok", now)
        elif kind == "cancel":
            c.cancel(shard)
        for d in c.poll(now):
            if isinstance(d, Grant):
                bucket = d.shard_id % mc
                assert now - last_grant.get(bucket, -math.inf) >= window
                last_grant[bucket] = now
                spent += 1
        holders = c.holders()
        assert len({h % mc for h in holders}) == len(holders)
    assert c.budget.remaining == start - spent >= 10


def test_unused_grant_refunds_budget_and_window():
    c = coord(mc=1, total=10)
    for s in (0, 1):
        c.request(s, 0.0)
    assert grants(c.poll(0.0)) == [0]
    assert c.budget.available(0.0) == 9
    c.started(0, 0.1)
    c.done(0, False, 0.2)  # its connection failed before Hello
    assert grants(c.poll(0.3)) == []  # without the refund, shard 1 would wait a whole window
    c.unused(0)
    assert c.budget.available(0.3) == 10 and c.unused_grants == 1
    assert grants(c.poll(0.3)) == [1]  # Discord saw no Identify: the bucket is free again
    c.unused(0)  # a stale report for an older grant changes nothing
    assert c.budget.available(0.3) == 9 and c.unused_grants == 1


def test_budget_refund_never_exceeds_total():
    b = SessionBudget(5, 5, 86400.0)
    b.refund()
    assert b.available(0.0) == 5
    b.spend(0.0)
    b.refund()
    assert b.available(0.0) == 5 and b.spent == 0


def test_ipc_queue_reports_an_unused_grant_to_the_supervisor():
    from cluster.queue import IpcQueue
    from ipc.protocol import IdentifyUnused, decode, encode

    sent = []
    IpcQueue(sent.append).unused(3)
    assert sent == [IdentifyUnused(3)]
    assert decode(encode(sent[0])) == IdentifyUnused(3)
