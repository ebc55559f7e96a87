"""A worker killed or drained with events received but not handled yet: they are handled after the resume.

The worker reports each shard's ``handled_session`` (up to the last event its handler finished), not the last
sequence received, and a drain closes the shard from the same point, so after a SIGKILL, OOM kill, unresponsive-worker
kill or drain the resume replays the backlog, and the event whose handler was running, instead of skipping them (at
least once). What comes twice after a kill: the events handled since the last session report (one report interval's).
"""

import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

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


async def _after_the_resume(sim: Simulator, sup: Any, folder: Path, victim: int) -> int:
    """Wait for the shard's resume, then for the handler to finish a message sent after it (the session delivers in
    order: by then it has had everything the resume replayed). Returns the new worker's pid."""
    await sim.wait_until(lambda s: s["total"]["resumes"] == 1, timeout=30)
    marker = sim.emit_guild_events(1)[0]
    await until(lambda: any(mid == marker for log in _handled(folder).values() for _, mid in log),
                timeout=30, what="the message sent after the resume")
    replacement = sup.workers[0].pid
    assert replacement != victim and sim.stats.snapshot()["total"]["identifies"] == 1
    return replacement


async def _hang_on(sim: Simulator, sup: Any, hang_at: int) -> tuple[list[int], int]:
    """Emit the burst once the shard is up; return its ids and the session the supervisor holds once a status report
    counts the hung message as taken (the session report made with it came first)."""
    await until(lambda: sup.active_shards() == 1 and 0 in sup.sessions, what="bring-up")
    emitted = sim.emit_guild_events(BURST)
    assert len(emitted) == BURST
    await until(lambda: sup.shards[0].events.get("MESSAGE_CREATE", 0) >= hang_at, what="the hung handler")
    assert sup.shards[0].events["MESSAGE_CREATE"] == hang_at
    return emitted, sup.sessions[0].seq


def _missing(emitted: list[int], logs: dict[int, list[tuple[int, int]]]) -> list[int]:
    handled = {mid for log in logs.values() for _, mid in log}
    return [mid for mid in emitted if mid not in handled]


@pytest.mark.parametrize("stop", ["SIGKILL", "rolling restart"])
async def test_the_unhandled_events_and_the_one_in_the_handler_come_again_after_the_resume(tmp_path, stop):
    """The handler hangs on the 10th message with 90 more queued behind it. Once the supervisor holds a session report
    from after that, the worker is killed, or drained by a rolling restart (which cancels the hung handler and closes
    the shard resumably): all 100 messages are handled, each once, the hung one first after the resume."""
    folder = tmp_path / "seqs"
    folder.mkdir()
    hang_at = 10
    async with Simulator(shards=1, identify_window=1.0, session_ttl=60.0) as sim:
        async with running(sim, SlowSeqLog(str(folder), 0.0, hang_at=hang_at), tmp_path, shards=1, workers=1,
                           fresh=True) as (sup, task):
            emitted, reported = await _hang_on(sim, sup, hang_at)
            victim = sup.workers[0].pid
            if stop == "SIGKILL":
                os.kill(victim, signal.SIGKILL)
            else:
                assert sup.rolling_restart()
            replacement = await _after_the_resume(sim, sup, folder, victim)

    logs = _handled(folder)
    missing = _missing(emitted, logs)
    assert not missing, f"{len(missing)} of {BURST} messages were never handled"
    assert [mid for _, mid in logs[victim]] == emitted[:hang_at - 1]
    assert reported == logs[victim][-1][0]  # the last one its handler finished: not the hung one, nor any received
    assert [mid for _, mid in logs[replacement]][:BURST - hang_at + 1] == emitted[hang_at - 1:]
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
            victim = sup.workers[0].pid
            os.kill(victim, signal.SIGKILL)
            replacement = await _after_the_resume(sim, sup, folder, victim)

    logs = _handled(folder)
    missing = _missing(emitted, logs)
    assert not missing, f"{len(missing)} of {BURST} messages were never handled"
    killed = logs[victim]
    counts = Counter(mid for log in logs.values() for _, mid in log)
    assert max(counts.values()) <= 2 and all(counts[mid] == 1 for seq, mid in killed if seq <= reported)
    twice = [(seq, mid) for seq, mid in killed if counts[mid] == 2]
    assert all(seq > reported for seq, _ in twice)
    assert twice == killed[len(killed) - len(twice):] == logs[replacement][:len(twice)]
    print(f"{len(killed)} handled before the kill, {sum(seq <= reported for seq, _ in killed)} of them reported; "
          f"{len(twice)} handled twice")
