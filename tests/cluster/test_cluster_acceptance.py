"""The issue's acceptance tests: a real supervisor, real worker processes, the strict simulator."""

import asyncio
import json
import os
import signal
import sys
import time

from cluster_testing import running, until


def totals(sim):
    return sim.stats.snapshot()["total"]


async def test_bring_up_16_shards_4_workers(sim, tmp_path):
    async with running(sim, "cluster.example:ExampleHandler", tmp_path, workers=4, fresh=True) as (sup, task):
        await until(lambda: sup.active_shards() == 16, what="16 active shards")
        t = totals(sim)
        assert t["identifies"] == 16
        assert t["concurrency_violations"] == 0 and t["violations"] == 0
        assert sorted(len(w.shard_ids) for w in sup.workers.values()) == [4, 4, 4, 4]
        assert len({w.pid for w in sup.workers.values()} | {os.getpid()}) == 5


async def test_kill_9_worker_resumes_without_identifies_or_loss(sim, tmp_path):
    async with running(sim, "cluster.example:ExampleHandler", tmp_path, workers=4, fresh=True) as (sup, task):
        await until(lambda: sup.active_shards() == 16, what="bring-up")
        # A steady stream flows and the victim's sessions reach the supervisor past their GUILD_CREATEs.
        await until(lambda: all(s in sup.sessions and sup.sessions[s].seq > 5 for s in (4, 5, 6, 7)),
                    what="session reports for the victim's shards")
        victim = sup.workers[1]
        os.kill(victim.pid, signal.SIGKILL)
        snap = await sim.wait_until(lambda s: s["total"]["resumes"] >= 4, timeout=15)
        await until(lambda: sup.active_shards() == 16 and sup.workers[1].pid != victim.pid, what="recovery")
        assert victim.process.exitcode == -signal.SIGKILL  # confirmed dead (reaped) before the respawn
        resumed = {r["shard"][0] for r in snap["sessions"].values() if r["resumes"]}
        assert resumed == {4, 5, 6, 7}
        at_resume = {sid: r["dispatched"] for sid, r in snap["sessions"].items() if r["resumes"]}
        await sim.wait_until(lambda s: all(s["sessions"][sid]["dispatched"] >= n + 5 and s["sessions"][sid]["connected"]
                                           for sid, n in at_resume.items()), timeout=15)  # the stream flows on
        t = totals(sim)
        assert t["identifies"] == 16 and t["concurrency_violations"] == 0
        assert sup.restarts[(1, "killed")] == 1
    sessions = sim.stats.snapshot()["sessions"]
    assert all(r["lost"] == 0 for r in sessions.values()), {k: r for k, r in sessions.items() if r["lost"]}


async def test_sigterm_then_restart_resumes_every_shard_from_state_file(sim, tmp_path):
    """Two real `python -m cluster run` processes: SIGTERM writes the state file, the next one resumes;
    then `cluster restart --rolling --pid` (SIGHUP) resumes every session once more."""
    env = {**os.environ, "DISCORD_TOKEN": sim.token}
    args = ["-m", "cluster", "run", "--handler", "cluster.example:ExampleHandler", "--workers", "4",
            "--gateway-url", sim.url, "--api-url", sim.api_url, "--identify-window", "1",
            "--state-file", str(tmp_path / "state.json"), "--http-port", "0", "--report-interval", "0.2",
            "--no-status-line", "--log-level", "WARNING"]

    async def start():
        return await asyncio.create_subprocess_exec(sys.executable, *args, env=env, stderr=asyncio.subprocess.PIPE)

    first = await start()
    await sim.wait_until(lambda s: sum(1 for r in s["sessions"].values() if r["state"] == "active") == 16, 30)
    first.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(first.communicate(), 30)
    assert first.returncode == 0, err.decode()
    assert (tmp_path / "state.json").exists()

    second = await start()
    try:
        snap = await sim.wait_until(lambda s: s["total"]["resumes"] == 16 and all(
            r["state"] == "active" for r in s["sessions"].values()), 30)
        assert snap["total"]["identifies"] == 16
        # and a rolling restart through the CLI (SIGHUP to the supervisor) resumes them all again
        cli = await asyncio.create_subprocess_exec(sys.executable, "-m", "cluster", "restart", "--rolling",
                                                   "--pid", str(second.pid), stdout=asyncio.subprocess.PIPE)
        out, _ = await cli.communicate()
        assert cli.returncode == 0 and b"rolling restart requested" in out
        snap = await sim.wait_until(lambda s: s["total"]["resumes"] == 32 and all(
            r["state"] == "active" for r in s["sessions"].values()), 60)
        assert snap["total"]["identifies"] == 16
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(second.communicate(), 30)
    assert second.returncode == 0, err.decode()
    assert all(r["lost"] == 0 for r in sim.stats.snapshot()["sessions"].values())


def children(pid):
    """Live child processes of ``pid`` (from /proc; zombies count as gone)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_supervisor_killed_with_sigkill_is_followed_by_one_that_resumes(sim, tmp_path):
    """kill -9 of the supervisor itself (no SIGTERM, no final save): its workers close their shards
    resumably and exit, and the state file it kept saving lets the next supervisor resume every session."""
    state = tmp_path / "state.json"
    env = {**os.environ, "DISCORD_TOKEN": sim.token}
    first = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cluster", "run", "--handler", "cluster.example:ExampleHandler", "--workers", "4",
        "--gateway-url", sim.url, "--api-url", sim.api_url, "--identify-window", "1", "--state-file", str(state),
        "--state-save-interval", "0.2", "--report-interval", "0.2", "--http-port", "0", "--no-status-line",
        "--log-level", "WARNING", env=env)
    try:
        await sim.wait_until(lambda s: sum(1 for r in s["sessions"].values() if r["state"] == "active") == 16, 30)
        deadline = time.monotonic() + 20
        while True:  # the running supervisor has saved all 16 sessions
            try:
                if len(json.loads(state.read_bytes())["sessions"]) == 16:
                    break
            except (OSError, ValueError):
                pass
            assert time.monotonic() < deadline, "no state file with 16 sessions"
            await asyncio.sleep(0.05)
        workers = children(first.pid)  # the 4 workers (and multiprocess's helper process, if any)
        assert len(workers) >= 4
    finally:
        first.kill()
        await first.wait()
    await sim.wait_until(lambda s: not any(r["state"] == "active" for r in s["sessions"].values()), 30)
    await until(lambda: not any(map(alive, workers)), what="every process of the killed supervisor to exit")
    async with running(sim, "cluster.example:ExampleHandler", tmp_path, workers=4) as (sup, task):
        snap = await sim.wait_until(lambda s: s["total"]["resumes"] == 16 and all(
            r["state"] == "active" for r in s["sessions"].values()), 30)
        assert snap["total"]["identifies"] == 16 and snap["total"]["concurrency_violations"] == 0
    assert all(r["lost"] == 0 for r in sim.stats.snapshot()["sessions"].values())


async def test_rolling_restart_spends_zero_identifies(sim, tmp_path):
    async with running(sim, "cluster.example:ExampleHandler", tmp_path, workers=4, fresh=True) as (sup, task):
        await until(lambda: sup.active_shards() == 16, what="bring-up")
        pids = {w.worker_id: w.pid for w in sup.workers.values()}
        done = asyncio.Event()
        sup.listeners.append(lambda event, **_: event == "rolling_done" and done.set())
        assert sup.rolling_restart()
        assert not sup.rolling_restart()  # one at a time
        await asyncio.wait_for(done.wait(), 60)
        assert all(sup.workers[w].pid != pid for w, pid in pids.items())
        assert sup.active_shards() == 16
        t = totals(sim)
        assert t["identifies"] == 16 and t["resumes"] == 16
        assert sup.identifies == {"initial": 16}
    assert all(r["lost"] == 0 for r in sim.stats.snapshot()["sessions"].values())


async def test_new_shards_connect_only_when_their_identify_turn_nears(tmp_path):
    """max_concurrency 1: six shards identify one per window; a shard waiting for its slot holds no
    connection (the shard takes its identify turn before connecting): at most the granted one is
    connected and not identified yet."""
    from sim import Simulator

    async with Simulator(shards=6, max_concurrency=1, identify_window=0.5) as sim:
        async with running(sim, None, tmp_path, workers=1, identify_window=0.5, fresh=True) as (sup, task):
            waiting, queued = [], set()
            while sup.active_shards() < 6:
                t = totals(sim)
                waiting.append(t["open_connections"] - t["identifies"])
                queued |= {v.shard_id for v in sup.shards.values() if v.state == "QUEUED"}
                await asyncio.sleep(0.05)
                assert not task.done()
            assert max(waiting) <= 1  # was 2 when workers paced connects; now no queued shard is connected
            assert {3, 4, 5} <= queued  # reported as waiting for their turn (not stuck)
            assert totals(sim)["concurrency_violations"] == 0
