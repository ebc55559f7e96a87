"""The worker's lease fence (issue 9, item 3): past its deadline a worker dies without sending another byte,
also when it wakes from a SIGSTOP that outlived its deadline (its timers are overdue then). Real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cluster.fence import Fence

HERE = Path(__file__).parent


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_deadline_only_moves_forward_and_is_inactive_until_given():
    clock, expired = FakeClock(), []
    fence = Fence(clock=clock, expire=lambda: expired.append(clock.now))
    fence.check()
    assert not fence.expired() and expired == []
    fence.extend(1_000_000.0)  # far ahead: the watcher thread sleeps
    fence.extend(50.0)  # a late, older deadline does not shorten it
    assert fence.deadline == 1_000_000.0
    clock.now = 1_000_000.0
    assert fence.expired()
    fence.check()
    assert expired == [1_000_000.0]


def start_child(ttl: float) -> tuple[subprocess.Popen[bytes], socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, str(HERE / "fence_child.py"), str(server.getsockname()[1]), str(ttl)],
                             stdout=subprocess.PIPE, env=env)
    conn, _ = server.accept()
    server.close()
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    return child, conn


def drain(conn: socket.socket) -> bytes:
    conn.setblocking(False)
    out = b""
    try:
        while chunk := conn.recv(65536):
            out += chunk
    except BlockingIOError:
        pass
    return out


def test_a_worker_past_its_deadline_is_killed():
    child, conn = start_child(0.3)
    try:
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        conn.close()
        child.kill()


def test_a_worker_woken_after_its_deadline_sends_not_a_byte():
    child, conn = start_child(2.0)
    try:
        conn.settimeout(5)
        assert conn.recv(16)  # it is sending
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(0.1)  # let what it wrote before the stop arrive
        drain(conn)
        deadline_passed = time.monotonic() + 2.5
        while time.monotonic() < deadline_passed:  # stopped past its deadline: nothing to await
            time.sleep(0.1)
        assert drain(conn) == b""
        os.kill(child.pid, signal.SIGCONT)
        assert child.wait(timeout=10) == -signal.SIGKILL
        conn.setblocking(True)
        conn.settimeout(5)
        assert conn.recv(65536) == b""  # closed, and not one heartbeat after the wake-up
    finally:
        conn.close()
        child.kill()
