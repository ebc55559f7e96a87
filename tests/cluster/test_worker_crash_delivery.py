"""A worker killed with events received but not handled yet: they are handled after the resume (at least once).

The worker reports each shard's ``handled_session`` (up to the last event its handler finished), not the last
sequence received, so after a SIGKILL, OOM kill or unresponsive-worker kill the resume replays the backlog, and the
event whose handler was running, instead of skipping them. What comes twice: the events handled after the last
session report (at most one ``report_interval`` of them).
"""

import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

from cluster_handlers import SlowSeqLog
from cluster_testing import running, until
from sim import Simulator

BURST = 100  # MESSAGE_CREATEs received at once


def _handled(folder: Path) -> dict[int, list[tuple[int, int]]]:
    """(seq, message id) per MESSAGE_CREATE each worker process's handler finished, in order, by pid (whole lines
    only: a worker may be writing one)."""
    logs = {}
    for path in folder.glob("*.seqs"):
        lines = path.read_text().split("\n")[:-1]
        logs[int(path.stem)] = [(int(seq), int(mid)) for seq, mid in map(str.split, lines)]
    return logs


async def _kill_and_resume(sim: Simulator, sup: Any, folder: Path) -> tuple[int, int]:
    """SIGKILL the worker, wait for the shard's resume, then for the handler to finish a message sent after it (the
    session delivers in order: by then it has had everything the resume replayed). Returns the two workers' pids."""
    victim = sup.workers[0].pid
    os.kill(victim, signal.SIGKILL)
    await sim.wait_until(lambda s: s["total"]["resumes"] == 1, timeout=30)
    marker = sim.emit_guild_events(1)[0]
    await until(lambda: any(mid == marker for log in _handled(folder).values() for _, mid in log),
                timeout=30, what="the message sent after the resume")
    replacement = sup.workers[0].pid
    assert replacement != victim and sim.stats.snapshot()["total"]["identifies"] == 1
    return victim, replacement


def _missing(emitted: list[int], logs: dict[int, list[tuple[int, int]]]) -> list[int]:
    handled = {mid for log in logs.values() for _, mid in log}
    return [mid for mid in emitted if mid not in handled]


async def test_a_killed_workers_unhandled_events_and_the_one_in_its_handler_are_handled_after_the_resume(tmp_path):
    """The handler hangs on the 10th message with 90 more queued behind it; once the supervisor holds a session
    report from after that, the worker is killed: all 100 are handled, each once."""
    folder = tmp_path / "seqs"
    folder.mkdir()
    hang_at = 10
    async with Simulator(shards=1, identify_window=1.0, session_ttl=60.0) as sim:
        async with running(sim, SlowSeqLog(str(folder), 0.0, hang_at=hang_at), tmp_path, shards=1, workers=1,
                           fresh=True) as (sup, task):
            await until(lambda: sup.active_shards() == 1 and 0 in sup.sessions, what="bring-up")
            emitted = sim.emit_guild_events(BURST)
            assert len(emitted) == BURST
            # a status report that counts the 10th message as taken: the session report made with it came first
            await until(lambda: sup.shards[0].events.get("MESSAGE_CREATE", 0) >= hang_at, what="the hung handler")
            assert sup.shards[0].events["MESSAGE_CREATE"] == hang_at
            reported = sup.sessions[0].seq
            victim, replacement = await _kill_and_resume(sim, sup, folder)

    logs = _handled(folder)
    missing = _missing(emitted, logs)
    assert not missing, f"{len(missing)} of {BURST} messages were never handled"
    killed = logs[victim]
    assert [mid for _, mid in killed] == emitted[:hang_at - 1]
    assert reported == killed[-1][0]  # the last one its handler finished, not the one it was in, nor any received
    assert logs[replacement][0] == (reported + 1, emitted[hang_at - 1])  # the hung one, first after the resume
    assert Counter(mid for log in logs.values() for _, mid in log).most_common(1)[0][1] == 1  # no duplicates


async def test_a_worker_killed_behind_a_slow_handler_loses_nothing(tmp_path):
    """A handler doing 50 events/s with a backlog of 100 received at once; the worker is killed a few reports in.
    Every message is handled; the ones handled twice are those finished after the supervisor's last session report,
    handled again first after the resume."""
    folder = tmp_path / "seqs"
    folder.mkdir()
    async with Simulator(shards=1, identify_window=1.0, session_ttl=60.0) as sim:
        async with running(sim, SlowSeqLog(str(folder), 0.02), tmp_path, shards=1, workers=1,
                           fresh=True) as (sup, task):
            await until(lambda: sup.active_shards() == 1 and 0 in sup.sessions, what="bring-up")
            before = sup.sessions[0].seq
            emitted = sim.emit_guild_events(BURST)
            assert len(emitted) == BURST
            # on the old code the first report after the burst carried its last sequence received
            await until(lambda: sup.sessions[0].seq >= before + 5, what="a session report from the backlog")
            reported = sup.sessions[0].seq  # the replacement resumes from this one or a report still in the pipe
            victim, replacement = await _kill_and_resume(sim, sup, folder)

    logs = _handled(folder)
    missing = _missing(emitted, logs)
    assert not missing, f"{len(missing)} of {BURST} messages were never handled"
    killed = logs[victim]
    counts = Counter(mid for log in logs.values() for _, mid in log)
    assert max(counts.values()) <= 2 and all(counts[mid] == 1 for seq, mid in killed if seq <= reported)
    twice = [(seq, mid) for seq, mid in killed if counts[mid] == 2]
    assert all(seq > reported for seq, _ in twice)
    assert twice == killed[len(killed) - len(twice):] == logs[replacement][:len(twice)]
    print(f"{len(killed)} handled before the kill, {reported - before} of them reported; {len(twice)} handled twice")
