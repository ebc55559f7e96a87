"""Crash loops, the session budget guard, hung workers and fatal gateway codes."""

import asyncio
import os
import signal
import sys

import pytest

from cluster import ExitCode
from cluster_testing import http_get, running, until
from shard import EventTypeFlags


@pytest.fixture
def sim_options():
    return dict(shards=4, max_concurrency=4, identify_window=1.0, events_per_second=2.0)


async def test_crash_looping_handler_import_gives_up_with_a_clear_message(sim, tmp_path, caplog):
    async with running(sim, "cluster_broken_handler:Handler", tmp_path, workers=2, restart_min_alive=30,
                       restart_max_failures=3, fresh=True) as (sup, task):
        code = await asyncio.wait_for(task, 60)
    assert code == ExitCode.HANDLER_IMPORT
    assert "failed 3 times in a row" in sup.exit_message
    assert "missing_dependency" in sup.exit_message
    assert sim.stats.snapshot()["total"]["identifies"] == 0


async def test_crash_loop_after_ready_stops_before_the_budget_safety_margin(tmp_path):
    from sim import Simulator

    async with Simulator(shards=4, max_concurrency=4, identify_window=0.2, session_limit=40) as sim:
        async with running(sim, "cluster_handlers:CrashOnReady", tmp_path, workers=1, identify_window=0.2,
                           restart_max_failures=100, restart_min_alive=30, budget_reserve=20,
                           budget_pace_below=0, fresh=True) as (sup, task):
            code = await asyncio.wait_for(task, 90)
        assert code == ExitCode.SESSION_BUDGET
        assert "below the safety margin of 20" in sup.exit_message
        assert "crash-looping" in sup.exit_message
        spent = sim.stats.snapshot()["total"]["identifies"]
    assert 8 <= spent <= 20  # several loops happened, and the margin was never touched


async def test_hung_worker_is_killed_and_its_shards_resume(sim, tmp_path):
    from cluster_handlers import Freeze, Quiet  # the class itself: pickled to the workers

    async with running(sim, Quiet, tmp_path, workers=2, ipc_heartbeat_interval=0.2,
                       ipc_heartbeat_missed=5, fresh=True) as (sup, task):
        await until(lambda: sup.active_shards() == 4, what="bring-up")
        # resumable after the kill
        await until(lambda: all(s in sup.sessions for s in range(4)), what="session reports")
        old = sup.workers[1]
        replies = await sup.broadcast(Freeze(1, 60.0), timeout=0.5)
        assert replies[0].ok and "timed out" in replies[1].error
        await sim.wait_until(lambda s: s["total"]["resumes"] >= 2, timeout=20)
        await until(lambda: sup.active_shards() == 4, what="recovery")
        assert old.exitcode == -signal.SIGKILL and sup.workers[1].pid != old.pid
        assert sup.restarts[(1, "unresponsive")] == 1
        assert sim.stats.snapshot()["total"]["identifies"] == 4


async def test_healthz_reports_a_silent_worker_and_recovers_when_it_answers_again(sim, tmp_path):
    from cluster_handlers import Freeze, Quiet

    async def until_healthz(check, what):
        deadline = asyncio.get_running_loop().time() + 20
        while not check(*(reply := await asyncio.to_thread(http_get, sup.http_url + "/healthz"))):
            assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}: {reply}"
            await asyncio.sleep(0.05)

    # Never killed for silence here (1,000 missed beats), so /healthz alone shows the hang and the recovery.
    async with running(sim, Quiet, tmp_path, workers=2, ipc_heartbeat_interval=0.2,
                       ipc_heartbeat_missed=1000, fresh=True) as (sup, task):
        await until(lambda: sup.active_shards() == 4 and sup.http_url is not None, what="bring-up")
        await until_healthz(lambda code, text: code == 200 and text == "ok\n", "healthy")
        pid = sup.workers[1].pid
        replies = await sup.broadcast(Freeze(1, 4.0), timeout=0.3)
        assert replies[0].ok and "timed out" in replies[1].error
        await until_healthz(lambda code, text: code == 503 and "worker 1 has not answered IPC heartbeats" in text
                            and "worker 0" not in text, "the frozen worker reported")
        await until_healthz(lambda code, text: code == 200, "healthy again once the worker answers")
        assert sup.workers[1].pid == pid and not sup.restarts  # reported, not restarted


async def test_bad_token_exits_with_code_4(sim, tmp_path):
    from cluster import ClusterConfig, Supervisor

    cfg = ClusterConfig(gateway_url=sim.url, api_url=sim.api_url, http_port=None,
                        state_file=str(tmp_path / "s.json"))
    sup = Supervisor(cfg, token="not-the-token", handle_signals=False)
    assert await sup.run() == ExitCode.AUTHENTICATION_FAILED
    assert "token is invalid" in sup.exit_message


async def test_disallowed_intents_exit_with_code_5(sim, tmp_path):
    # GUILD_MEMBERS (1 << 1) is privileged; the simulator allows none by default
    async with running(sim, None, tmp_path, workers=1, intents=(1 << 0) | (1 << 1), fresh=True) as (sup, task):
        code = await asyncio.wait_for(task, 30)
    assert code == ExitCode.DISALLOWED_INTENTS
    assert "4014" in sup.exit_message


async def test_shard_count_refused_by_discord_exits_with_code_6(tmp_path):
    from sim import Simulator

    # a "large bot" whose shard count must be a multiple of 8: 4 shards are refused with 4010
    async with Simulator(shards=4, max_concurrency=4, identify_window=1.0, shard_multiple=8) as sim:
        async with running(sim, None, tmp_path, workers=1, fresh=True) as (sup, task):
            code = await asyncio.wait_for(task, 30)
    assert code == ExitCode.SHARDING_REJECTED
    assert "4010" in sup.exit_message and "multiple" in sup.exit_message


@pytest.mark.parametrize(("close", "expected"), [(4004, ExitCode.AUTHENTICATION_FAILED),
                                               (4013, ExitCode.DISALLOWED_INTENTS),
                                               (4011, ExitCode.SHARDING_REJECTED), (4012, ExitCode.SHARDING_REJECTED)])
async def test_fatal_gateway_close_exits_with_its_code(sim, tmp_path, close, expected):
    """The gateway closes one running shard with a fatal code (not the REST check at start-up)."""
    async with running(sim, None, tmp_path, workers=2, fresh=True) as (sup, task):
        await until(lambda: sup.active_shards() == 4, what="bring-up")
        assert sim.close(3, close, "chaos") == 1
        code = await asyncio.wait_for(task, 30)
    assert code == expected
    assert sup.exit_message.startswith("shard 3: ") and f"({close})" in sup.exit_message


async def test_worker_crash_loop_exits_with_code_7(sim, tmp_path):
    async with running(sim, "cluster_handlers:DieInSetup", tmp_path, workers=1, restart_min_alive=30,
                       restart_max_failures=2, fresh=True) as (sup, task):
        code = await asyncio.wait_for(task, 30)
    assert code == ExitCode.CRASH_LOOP
    assert "worker 0 failed 2 times in a row" in sup.exit_message and "crash loop" in sup.exit_message
    assert sim.stats.snapshot()["total"]["identifies"] == 0


async def test_handler_setup_failure_exits_with_code_9(sim, tmp_path):
    async with running(sim, "cluster_handlers:FailingSetup", tmp_path, workers=1, fresh=True) as (sup, task):
        code = await asyncio.wait_for(task, 30)
    assert code == ExitCode.HANDLER_SETUP
    assert "RuntimeError: database unreachable" in sup.exit_message
    assert sim.stats.snapshot()["total"]["identifies"] == 0  # setup runs before any shard connects


async def test_handler_that_fails_to_import_in_the_supervisor_exits_with_code_3(tmp_path):
    env = {**os.environ, "DISCORD_TOKEN": "x"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cluster", "run", "--handler", "no_such_module_xyz:Handler", "--http-port", "0",
        "--state-file", str(tmp_path / "s.json"), env=env, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == ExitCode.HANDLER_IMPORT
    assert "no_such_module_xyz" in err.decode() and "HANDLER_IMPORT" in err.decode()


async def test_config_error_exits_with_code_2(tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cluster", "run", "--workers", "2", "--shards-per-worker", "2",
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == ExitCode.CONFIG and "not both" in err.decode()


async def test_zombie_shard_is_restarted_by_the_supervisor_and_resumes(tmp_path):
    from sim import Simulator

    # everything the simulator sends to shard 2 is held back 60 s: no ACKs, no events. The shard's own
    # zombie check waits a whole heartbeat interval (41 s); the supervisor sees the silence first.
    async with Simulator(shards=4, max_concurrency=4, identify_window=1.0, events_per_second=10.0) as sim:
        async with running(sim, None, tmp_path, workers=2, shard_stuck_timeout=3.0, fresh=True) as (sup, task):
            await until(lambda: sup.active_shards() == 4, what="bring-up")
            await until(lambda: 2 in sup.sessions, what="shard 2's session report")  # resumable after the restart
            assert sim.delay(2, 60.0) == 1
            snap = await sim.wait_until(
                lambda s: any(r["shard"][0] == 2 and r["resumes"] for r in s["sessions"].values()), timeout=30)
            assert snap["total"]["identifies"] == 4
            await until(lambda: sup.active_shards() == 4, what="shard 2 back")


QUIET_FILTER = {"event_types": EventTypeFlags.READY | EventTypeFlags.MESSAGE_CREATE,  # the README's example
                "heartbeat_interval_range": (0.1, 120.0)}  # the simulator's 300 ms as it is


async def test_a_quiet_shard_whose_filter_drops_heartbeat_acks_is_not_taken_for_a_zombie(tmp_path):
    """A healthy shard that receives nothing but heartbeat ACKs, which its event_types filter drops: the ACKs are its
    signs of life all the same (it was restarted every shard_stuck_timeout, forever)."""
    from sim import Simulator

    async with Simulator(shards=1, identify_window=1.0, heartbeat_interval=300, events_per_second=0) as sim:
        async with running(sim, "cluster_handlers:Quiet", tmp_path, shards=1, workers=1, shard_stuck_timeout=2.0,
                           fresh=True, shard_options=QUIET_FILTER) as (sup, task):
            await sim.wait_until(lambda s: s["total"]["identifies"] == 1, timeout=20)
            # 20 heartbeats ACKed: 6 s, three stuck timeouts of a shard that received nothing else
            snap = await sim.wait_until(lambda s: s["total"]["heartbeats"] >= 20, timeout=30)
            assert snap["total"]["connections"] == 1
            assert sum(sup.restarts.values()) == 0 and sup.active_shards() == 1


async def test_a_shard_whose_handler_is_wedged_is_restarted_though_its_heartbeats_are_acked(tmp_path):
    """The other side of the above: a consumer stuck in its handler shows no life however healthy the connection
    (the shard keeps processing ACKs in the background), so the supervisor restarts the shard, which resumes."""
    from sim import Simulator

    async with Simulator(shards=1, identify_window=1.0, heartbeat_interval=300, events_per_second=5.0) as sim:
        async with running(sim, "cluster_handlers:Wedged", tmp_path, shards=1, workers=1, shard_stuck_timeout=1.5,
                           fresh=True, shard_options=QUIET_FILTER) as (sup, task):
            snap = await sim.wait_until(lambda s: s["total"]["resumes"] >= 1, timeout=30)
            assert snap["total"]["identifies"] == 1


async def test_fresh_ignores_a_usable_state_file(sim, tmp_path):
    """A state file that a normal start resumes from: ``fresh=True`` identifies every shard anyway."""
    async with running(sim, None, tmp_path, workers=2, fresh=True) as (sup, task):
        await until(lambda: sup.active_shards() == 4 and len(sup.sessions) == 4, what="bring-up")
    assert (tmp_path / "state.json").exists()
    async with running(sim, None, tmp_path, workers=2, fresh=True) as (sup, task):
        await until(lambda: sup.active_shards() == 4 and len(sup.sessions) == 4, what="fresh bring-up")
        t = sim.stats.snapshot()["total"]
        assert (t["identifies"], t["resumes"]) == (8, 0)
    async with running(sim, None, tmp_path, workers=2) as (sup, task):  # the control: the file was usable
        snap = await sim.wait_until(lambda s: s["total"]["resumes"] == 4, timeout=20)
        assert snap["total"]["identifies"] == 8
