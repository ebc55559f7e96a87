from ipc import HeartbeatMonitor, SessionDiff, SessionInfo


def test_heartbeat_rtt_and_death():
    m = HeartbeatMonitor(interval=1.0, missed_limit=3, now=0.0)
    n1 = m.ping(0.0)
    assert m.pong(n1, 0.25) == 0.25 and m.rtt == 0.25
    assert m.pong(n1, 0.3) is None  # duplicate
    m.ping(1.0)
    m.ping(2.0)
    assert m.missed(2.9) == 2 and not m.dead(3.2)
    assert m.dead(3.25)


def test_late_pong_clears_older_pings():
    m = HeartbeatMonitor(interval=1.0, missed_limit=3)
    a, b = m.ping(0.0), m.ping(1.0)
    assert m.pong(b, 1.1) is not None
    assert m.pong(a, 1.2) is None


def test_session_diff_reports_only_changes():
    d = SessionDiff()
    s0, s1 = SessionInfo(0, "a", 1, "ws://r"), SessionInfo(1, "b", 5)
    assert d.changes([s0, s1]) == [s0, s1]
    assert d.changes([s0, s1]) == []
    s0b = SessionInfo(0, "a", 9, "ws://r")
    assert d.changes([s0b, s1]) == [s0b]
    d.forget(1)
    assert d.changes([s0b, s1]) == [s1]
