"""Live resharding against the simulator with real worker processes (issue 10): 8 -> 16 shards under the shared
guild stream with every message delivered exactly once and no guild served by both sets at once, the 4011 path
with --auto-reshard, and the rollbacks (budget short: refused before anything starts; a new shard refused
fatally: the old set goes on)."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections import Counter, defaultdict

import pytest
from cluster_testing import running, until
from stream_log import delivered

from cluster.reshard import ReshardRefused
from sim import Simulator

HANDLER = "stream_log:IdLog"
FAST = dict(identify_window=0.3, heartbeat_interval=1000)


async def all_delivered(sim, path, since: int | None = None, timeout: float = 20.0) -> list[tuple]:
    """Stop the stream and wait until every id it emitted (after ``since``) reached a handler."""
    sim.config.guild_events_per_second = 0  # read by the in-process stream at its next tick, on this event loop
    emitted = set(sim.guild_event_log(since)["ids"])
    emitted = {int(i) for i in emitted}
    await until(lambda: emitted <= {d[0] for d in delivered(path)}, timeout, "every emitted message delivered")
    return [d for d in delivered(path) if d[0] in emitted]


def set_times(got: list[tuple], old_total: int) -> tuple[dict[int, float], dict[int, float]]:
    """Per guild, when the old set (``old_total`` shards) delivered its last event and when the new set its first."""
    last_old, first_new = defaultdict(float), defaultdict(lambda: float("inf"))
    for _, guild, total, at in got:
        if total == old_total:
            last_old[guild] = max(last_old[guild], at)
        else:
            first_new[guild] = min(first_new[guild], at)
    return last_old, first_new


KINDS = "MESSAGE_CREATE,MESSAGE_UPDATE,MESSAGE_REACTION_ADD,TYPING_START"
INTENTS = 1 | 1 << 9 | 1 << 10 | 1 << 11  # GUILDS, GUILD_MESSAGES, GUILD_MESSAGE_REACTIONS, GUILD_MESSAGE_TYPING


async def test_8_to_16_shards_under_steady_traffic_loses_and_repeats_nothing(tmp_path, id_log):
    """Every kind of the stream, with and without a creation id, message ids up to 0.3 s older than their dispatch
    (out of order) and each session getting each event up to 50 ms late: each one delivered exactly once."""
    async with Simulator(shards=8, max_concurrency=4, guilds_per_shard=4, guild_event_kinds=KINDS,
                         guild_event_id_skew=0.3, guild_event_jitter=0.05, **FAST) as sim:
        async with running(sim, HANDLER, tmp_path, shards=8, shards_per_worker=4, identify_window=0.3,
                           intents=INTENTS) as (sup, _):
            await until(lambda: sup.active_shards() == 8, 30, "8 shards active")
            sim.delay(7, 0.6)  # old shard 7 lags: the others pass the cut well before it, and must hold meanwhile
            sim.config.guild_events_per_second = 150
            await until(lambda: sim.guild_events.total >= 100, 10, "traffic before the reshard")
            phases = []
            sup._rt.listeners.append(lambda event, **info: phases.append(info["phase"])
                                     if event == "reshard_phase" else None)
            await sup.reshard(16)
            await until(lambda: sup.snapshot().reshard.phase in ("done", "rolled_back"), 60, "the reshard's end")
            snap = sup.snapshot()
            assert snap.reshard.phase == "done", snap.reshard.reason
            assert phases == ["warming", "cutting_over", "closing_old", "done"]
            assert snap.shard_total == 16 and len(snap.shards) == 16
            await until(lambda: sup.active_shards() == 16, 10, "16 shards active")
            total = sim.guild_events.total
            await until(lambda: sim.guild_events.total >= total + 100, 10, "traffic after the reshard")
            got = await all_delivered(sim, id_log)
            stats = sim.stats.snapshot()
            sessions = dict(sup.sessions)
    log = sim.guild_event_log()
    emitted = [int(i) for i in log["ids"]]
    kinds = Counter(e["type"] for e in log["events"])
    assert sorted(kinds) == sorted(KINDS.split(",")) and min(kinds.values()) >= 75  # a quarter of each kind
    assert sorted(emitted) != emitted  # message ids reached the sessions out of order
    records = stats["sessions"]  # the sessions the cluster would resume are the new set's, none of the old
    assert sorted(sessions) == list(range(16))
    assert {s: records[i.session_id]["shard"] for s, i in sessions.items()} == {s: [s, 16] for s in range(16)}
    counts = Counter(d[0] for d in got)
    assert len(emitted) >= 300 and sorted(counts) == sorted(emitted)  # every emitted event reached a handler
    assert [i for i, n in counts.items() if n > 1] == []  # and only one
    by_set = Counter(d[2] for d in got)
    assert by_set[8] > 0 and by_set[16] > 0  # both sets delivered part of the stream
    last_old, first_new = set_times(got, 8)
    assert [g for g in last_old if last_old[g] > first_new[g]] == []  # no guild from two sets: the old set's came first
    # the new handlers got each guild's GUILD_CREATE once, at the switch, before that guild's first message
    creates = [(g, at) for _, g, total, at in delivered(id_log, guilds=True) if total == 16]
    assert sorted(g for g, _ in creates) == sorted(last_old) and len(creates) == 32
    assert [g for g, at in creates if at > first_new[g]] == []
    sets = stats["sets"]
    assert sets["8"]["identifies"] == 8 and sets["16"]["identifies"] == 16
    assert stats["total"]["identifies"] == 24 and stats["total"]["max_complete_sets"] >= 2
    assert sets["8"]["sessions"] == {"closed": 8} and sets["8"]["closes"].get("client 1000") == 8
    saved = json.loads((tmp_path / "state.json").read_text())  # the next start resumes the new set
    assert saved["shard_total"] == 16 and sorted(i["shard_id"] for i in saved["sessions"]) == list(range(16))


async def test_a_budget_too_short_is_refused_before_anything_starts(tmp_path, id_log):
    """remaining 39: 8 identified, 31 left; 16 more would leave 15, below the pacing threshold (2 x margin 8)."""
    async with Simulator(shards=8, max_concurrency=4, session_remaining=39, **FAST) as sim:
        async with running(sim, HANDLER, tmp_path, shards=8, shards_per_worker=4, identify_window=0.3) as (sup, _):
            await until(lambda: sup.active_shards() == 8, 30, "8 shards active")
            pids = {w.pid for w in sup.snapshot().workers}
            with pytest.raises(ReshardRefused, match="budget too low: 31 identifies left, 16 new shards would "
                                                     "leave 15, below the pacing threshold of 16"):
                await sup.reshard(16)
            snap = sup.snapshot()
            assert snap.reshard is None and sup.status()["reshard"] == {"phase": "idle"}
            assert {w.pid for w in snap.workers} == pids and snap.shard_total == 8
            with pytest.raises(ReshardRefused, match="only grows"):
                await sup.reshard(8)
            stats = sim.stats.snapshot()
    assert stats["total"]["identifies"] == 8 and set(stats["sets"]) == {"8"}  # no new shard ever connected


async def test_a_new_shard_refused_fatally_rolls_back_and_the_old_set_serves_on(tmp_path, id_log):
    """The simulator takes shard counts that are multiples of 8 only: the 12-shard set is closed with 4010."""
    async with Simulator(shards=8, max_concurrency=4, shard_multiple=8, guilds_per_shard=2, **FAST) as sim:
        async with running(sim, HANDLER, tmp_path, shards=8, shards_per_worker=4, identify_window=0.3,
                           http_token="s3cret") as (sup, task):
            await until(lambda: sup.active_shards() == 8, 30, "8 shards active")
            sim.config.guild_events_per_second = 100
            code, out, err = await _cli("--url", sup.http_url, "--shards", "12", token="s3cret")
            assert code == 11 and out.startswith("resharding from 8 to 12 shards\n"), (out, err)
            assert re.fullmatch(r"cluster: reshard rolled back: new shard \d+ closed fatally \(close code 4010\); "
                                r"the 8 old shards run on", err.strip()), err
            snap = sup.snapshot()
            assert snap.reshard.phase == "rolled_back" and "closed fatally (close code 4010)" in snap.reshard.reason
            assert not task.done() and snap.shard_total == 8 and sup.active_shards() == 8
            assert sup.status()["reshard"]["phase"] == "rolled_back"
            from cluster.metrics import render_snapshot
            metrics = render_snapshot(snap).decode()
            assert 'cluster_reshard_phase{phase="rolled_back"} 1.0' in metrics
            assert 'cluster_reshard_phase{phase="idle"} 0.0' in metrics
            assert "cluster_reshard_target_shards 12.0" in metrics
            since = sim.guild_event_log()["last_id"]
            total = sim.guild_events.total
            await until(lambda: sim.guild_events.total >= total + 50, 10, "traffic after the rollback")
            got = await all_delivered(sim, id_log, int(since))
            stats = sim.stats.snapshot()
    assert got and {d[2] for d in got} == {8}  # the old set delivered everything emitted after the rollback
    assert max(Counter(d[0] for d in got).values()) == 1
    assert stats["sets"]["8"]["identifies"] == 8 and stats["sets"]["8"]["sessions"] == {"active": 8}


async def test_4011_with_auto_reshard_grows_the_cluster_by_itself(tmp_path, id_log):
    """4 shards of 4 guilds, at most 5 guilds a shard, one recommended shard per 4 guilds: 8 more guilds close every
    shard with 4011, and --auto-reshard moves to Discord's new recommendation, 6 shards."""
    async with Simulator(shards=4, max_concurrency=2, guilds_per_shard=4, max_guilds_per_shard=5,
                         recommended_guilds_per_shard=4, **FAST) as sim:
        async with running(sim, HANDLER, tmp_path, shards_per_worker=4, identify_window=0.3,
                           auto_reshard=True) as (sup, task):
            await until(lambda: sup.active_shards() == 4, 30, "4 shards active")
            assert sup.snapshot().shard_total == 4
            sim.add_guilds(8)
            await until(lambda: sup.snapshot().reshard is not None
                        and sup.snapshot().reshard.phase in ("done", "rolled_back"), 60, "the reshard's end")
            snap = sup.snapshot()
            assert snap.reshard.phase == "done", snap.reshard.reason
            assert not task.done() and snap.shard_total == 6
            await until(lambda: sup.active_shards() == 6, 10, "6 shards active")
            ids = sim.emit_guild_events(24)  # the bot serves every guild again
            await until(lambda: set(ids) <= {d[0] for d in delivered(id_log)}, 10, "the new set delivers")
            stats = sim.stats.snapshot()
    assert stats["sets"]["4"]["closes"].get("4011") == 4 and stats["sets"]["6"]["identifies"] == 6


class _Served:
    """Just what the HTTP endpoint needs of a supervisor, for its answers that do not reach one."""

    def __init__(self, refuse: str | None = None) -> None:
        from cluster.config import ClusterConfig

        self.config = ClusterConfig()
        self.asked: list[int | None] = []
        self.refuse = refuse

    def snapshot(self):
        raise AssertionError("not asked")

    def rolling_restart(self) -> bool:
        return False

    async def reshard(self, shards=None):
        self.asked.append(shards)
        raise ReshardRefused(self.refuse or "no")


async def test_post_reshard_needs_the_token_and_a_count_and_says_why_it_refuses():
    from cluster.http import Endpoint

    off = Endpoint(_Served(), "127.0.0.1", None)
    code, _, body = await off.route("POST", "/reshard", {"host": "127.0.0.1"})
    assert code == 403 and b"POST /reshard is off" in body and b"SIGHUP" not in body
    sup = _Served("a reshard is already running")
    on = Endpoint(sup, "127.0.0.1", "s3cret")
    good = {"host": "127.0.0.1:9100", "authorization": "Bearer s3cret"}
    assert (await on.route("POST", "/reshard", {"host": "127.0.0.1", "authorization": "Bearer nope"}))[0] == 401
    assert (await on.route("GET", "/reshard", good))[0] == 405
    for query in ("shards=", "shards=-4", "shards=4x", "shards=0", "shards=4&shards=8"):
        code, _, body = await on.route("POST", "/reshard?" + query, good)
        assert code == 400 and b"shards must be one positive whole number" in body, query
    assert sup.asked == []
    assert await on.route("POST", "/reshard?shards=16", good) == (
        409, "text/plain", b"reshard refused: a reshard is already running\n")
    assert await on.route("POST", "/reshard", good) == (409, "text/plain", b"reshard refused: a reshard is already "
                                                                           b"running\n")
    assert sup.asked == [16, None]


async def _cli(*args: str, token: str | None = None) -> tuple[int, str, str]:
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTER_")}
    if token is not None:
        env["CLUSTER_HTTP_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "cluster", "reshard", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    return proc.returncode, out.decode(), err.decode()


async def test_the_reshard_command_prints_the_phases_and_exits_with_the_outcome(tmp_path, id_log):
    async with Simulator(shards=4, max_concurrency=4, guilds_per_shard=2, **FAST) as sim:
        async with running(sim, HANDLER, tmp_path, shards=4, shards_per_worker=4, identify_window=0.3,
                           http_token="s3cret") as (sup, _):
            await until(lambda: sup.active_shards() == 4, 30, "4 shards active")
            url = ("--url", sup.http_url)
            code, out, err = await _cli(*url, "--shards", "8", token="wrong")
            assert code == 1 and err.strip() == ("cluster: a valid Authorization: Bearer <token> header is required "
                                                 "(HTTP 401)"), err
            code, out, err = await _cli(*url, "--shards", "6", token="s3cret")
            assert code == 10 and err.strip() == ("cluster: reshard refused: the shard count must be a positive "
                                                  "multiple of max_concurrency 4, got 6 (HTTP 409)"), err
            code, out, err = await _cli(*url, token="s3cret")  # Discord recommends the 4 shards that run
            assert code == 10 and "the cluster runs 4 shards; a reshard only grows it (asked for 4)" in err, err
            code, out, err = await _cli(*url, "--shards", "8", token="s3cret")
            assert code == 0, err
            lines = out.splitlines()
            assert lines[0] == "resharding from 4 to 8 shards" and lines[-1].startswith("done: 8 shards; switched ")
            assert any("warming:" in line for line in lines) and "Traceback" not in err
            assert sup.snapshot().shard_total == 8
            from cluster.cli import format_status
            status = format_status(sup.status()).splitlines()
            assert status[1].startswith("reshard 4 -> 8 shards: done · 8/8 new shards ready · 4/4 old shards past ")
            await sup.reshard(16)  # again: the new set's identify keys take the range the first set had
            await until(lambda: sup.snapshot().reshard.phase in ("done", "rolled_back"), 60, "the second reshard")
            assert sup.snapshot().reshard.phase == "done" and sup.snapshot().shard_total == 16
            await until(lambda: sup.active_shards() == 16, 10, "16 shards active")
            stats = sim.stats.snapshot()
    assert [stats["sets"][n]["identifies"] for n in ("4", "8", "16")] == [4, 8, 16]
    assert stats["sets"]["8"]["sessions"] == {"closed": 8}


async def test_a_stop_during_the_warm_up_rolls_back_and_saves_the_old_sessions(tmp_path, id_log):
    async with Simulator(shards=8, max_concurrency=2, guilds_per_shard=2, **FAST) as sim:
        async with running(sim, HANDLER, tmp_path, shards=8, shards_per_worker=4, identify_window=0.3) as (sup, task):
            await until(lambda: sup.active_shards() == 8, 30, "8 shards active")
            await sup.reshard(16)
            await until(lambda: sup.snapshot().reshard.ready >= 2, 30, "new shards warming up")
            sup.stop()  # what SIGTERM does
            assert await asyncio.wait_for(task, 30) == 0
            snap = sup.snapshot()
            stats = sim.stats.snapshot()
    assert snap.reshard.phase == "rolled_back" and snap.reshard.reason == "the supervisor is stopping"
    new = stats["sets"]["16"]
    assert set(new["sessions"]) == {"closed"} and new["closes"].get("client 1000") == new["sessions"]["closed"]
    assert stats["sets"]["8"]["sessions"] == {"detached": 8}  # closed resumably, as every stop does
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["shard_total"] == 8 and len(saved["sessions"]) == 8


async def test_auto_reshard_follows_discords_recommendation_when_it_grows_past_the_margin(tmp_path, id_log):
    """Started with 2 shards where Discord recommends 8 (4x, past the 50% margin): the periodic check reshards."""
    async with Simulator(shards=8, max_concurrency=2, guilds_per_shard=1, **FAST) as sim:
        async with running(sim, HANDLER, tmp_path, shards=2, identify_window=0.3, auto_reshard=True,
                           auto_reshard_interval=0.5) as (sup, task):
            await until(lambda: sup.snapshot().reshard is not None
                        and sup.snapshot().reshard.phase in ("done", "rolled_back"), 60, "the reshard's end")
            snap = sup.snapshot()
            assert snap.reshard.phase == "done" and (snap.reshard.old_total, snap.shard_total) == (2, 8)
            checks = sim.stats.rest_requests  # only the auto-reshard check asks Discord now
            await until(lambda: sim.stats.rest_requests >= checks + 3, 20, "three more checks")  # 8 of 8: nothing to do
            assert sup.snapshot().reshard.new_total == 8 and not task.done()
            stats = sim.stats.snapshot()
    assert stats["sets"]["2"]["identifies"] == 2 and stats["sets"]["8"]["identifies"] == 8


async def test_a_new_worker_killed_while_warming_is_restarted_and_the_switch_still_loses_nothing(tmp_path, id_log):
    import signal

    async with Simulator(shards=4, max_concurrency=2, guilds_per_shard=4, identify_window=1.0,
                         heartbeat_interval=1000) as sim:
        async with running(sim, HANDLER, tmp_path, shards=4, shards_per_worker=4, identify_window=1.0,
                           restart_backoff_base=4.0, restart_backoff_cap=4.0) as (sup, _):
            await until(lambda: sup.active_shards() == 4, 30, "4 shards active")
            sim.config.guild_events_per_second = 100
            # new workers 0 (shards 0-3) and 1 (shards 4-7); two buckets, 1 s apart: shards 6 and 7 identify 2 s after
            # shard 3, so the kill below comes well before the new set can be warm, and worker 0 is restarted 4 s
            # later (the backoff), after every shard was warm: the cut must wait for it
            await sup.reshard(8)
            rs = sup._resharder
            await until(lambda: rs.child is not None and 0 in rs.child.workers
                        and rs.child.shards[3].state == "ACTIVE", 30, "new worker 0's shards up")
            assert sup.snapshot().reshard.phase == "warming"
            victim = rs.child.workers[0]
            os.kill(victim.pid, signal.SIGKILL)
            await until(lambda: sup.snapshot().reshard.phase in ("done", "rolled_back"), 60, "the reshard's end")
            assert sup.snapshot().reshard.phase == "done", sup.snapshot().reshard.reason
            assert victim.exited.done() and sup.snapshot().workers[0].pid != victim.pid
            got = await all_delivered(sim, id_log)
    emitted = [int(i) for i in sim.guild_event_log()["ids"]]
    counts = Counter(d[0] for d in got)
    assert sorted(counts) == emitted and max(counts.values()) == 1


async def test_a_budget_that_runs_low_during_the_warm_up_rolls_back_instead_of_stopping_the_cluster(tmp_path, id_log):
    async with Simulator(shards=4, max_concurrency=2, guilds_per_shard=2, identify_window=1.0,
                         heartbeat_interval=1000) as sim:
        async with running(sim, HANDLER, tmp_path, shards=4, shards_per_worker=4, identify_window=1.0) as (sup, task):
            await until(lambda: sup.active_shards() == 4, 30, "4 shards active")
            await sup.reshard(8)
            await until(lambda: sup.snapshot().reshard.ready >= 1, 30, "a new shard warm")
            budget = sup._rt.coordinator.budget  # as if a refresh showed identifies spent elsewhere meanwhile
            budget.remaining = budget.reserve
            await until(lambda: sup.snapshot().reshard.phase in ("done", "rolled_back"), 30, "the reshard's end")
            snap = sup.snapshot()
            assert snap.reshard.phase == "rolled_back" and "the session budget refused new shard" in snap.reshard.reason
            assert not task.done() and snap.shard_total == 4 and sup.active_shards() == 4
            ids = sim.emit_guild_events(8)  # the old set serves on
            await until(lambda: set(ids) <= {d[0] for d in delivered(id_log)}, 10, "the old set delivers")


async def test_an_old_shard_closed_fatally_during_a_reshard_that_rolls_back_stops_the_cluster(tmp_path, id_log):
    """4014 closes shard 0 of both sets while the new set warms up: the new shard's rolls the reshard back, and the
    old shard's is not forgotten: the cluster exits with the documented code, as it does outside a reshard."""
    async with Simulator(shards=4, max_concurrency=2, guilds_per_shard=2, **FAST) as sim:
        async with running(sim, HANDLER, tmp_path, shards=4, shards_per_worker=4, identify_window=0.3) as (sup, task):
            await until(lambda: sup.active_shards() == 4, 30, "4 shards active")
            await sup.reshard(8)
            rs = sup._resharder
            await until(lambda: 0 in rs.last.warm, 30, "new shard 0 warm")
            sim.close(0, 4014)
            code = await asyncio.wait_for(task, 30)
            snap = sup.snapshot()
    assert snap.reshard.phase == "rolled_back" and "new shard 0 closed fatally" in snap.reshard.reason
    assert code == 5 and sup.exit_message.startswith("shard 0: "), sup.exit_message


def _at_phase(sup, phase: str, act) -> None:
    """Run ``act()`` in the supervisor's own step that enters ``phase`` (the cut is then CUT_LEAD ahead)."""
    sup._rt.listeners.append(lambda event, **info: act() if event == "reshard_phase" and info["phase"] == phase
                             else None)


async def test_an_old_worker_killed_during_the_cutover_is_restarted_gated_and_nothing_is_lost(tmp_path, id_log):
    """Old worker 0 dies as the cut is sent: it is restarted (1 s backoff), resumes behind the same cut, delivers
    what came before it and passes; the switch waits for it. Before, its shards counted as passed at once and its
    guilds' messages up to the switch were lost (no rollback could restart it either)."""
    import signal

    async with Simulator(shards=4, max_concurrency=2, guilds_per_shard=4, **FAST) as sim:
        async with running(sim, HANDLER, tmp_path, shards=4, shards_per_worker=2, identify_window=0.3) as (sup, _):
            await until(lambda: sup.active_shards() == 4, 30, "4 shards active")
            sim.config.guild_events_per_second = 100
            victim = sup._rt.workers[0]
            _at_phase(sup, "cutting_over", lambda: os.kill(victim.pid, signal.SIGKILL))
            await sup.reshard(8)
            await until(lambda: sup.snapshot().reshard.phase in ("done", "rolled_back"), 60, "the reshard's end")
            snap = sup.snapshot()
            assert snap.reshard.phase == "done", snap.reshard.reason
            assert victim.exited.done() and not snap.reshard.reason  # the switch did not have to be forced
            got = await all_delivered(sim, id_log)
    emitted = [int(i) for i in sim.guild_event_log()["ids"]]
    assert sorted(set(d[0] for d in got)) == emitted  # (a resumed session may replay what its killed worker got)


async def test_a_new_worker_killed_after_go_before_it_delivered_what_it_held_loses_and_repeats_nothing(
        tmp_path, id_log, monkeypatch):
    """A new worker's handler stops at the first event it gets after go, so its shards still hold what came after
    the cut, and it is killed there. Restarted, it resumes before what its shards held, gated again: every event is
    delivered exactly once. Before, it resumed from its last report, past the held events (lost) or before the cut
    (the old set's events delivered again)."""
    import signal

    block = tmp_path / "blocked.pid"
    monkeypatch.setenv("RESHARD_BLOCK", str(block))
    monkeypatch.setenv("RESHARD_BLOCK_TOTAL", "8")
    async with Simulator(shards=4, max_concurrency=2, guilds_per_shard=4, guild_event_kinds=KINDS, **FAST) as sim:
        async with running(sim, "reshard_handlers:BlockingIdLog", tmp_path, shards=4, shards_per_worker=4,
                           identify_window=0.3, intents=INTENTS, restart_backoff_base=0.2,
                           restart_backoff_cap=0.2) as (sup, task):
            await until(lambda: sup.active_shards() == 4, 30, "4 shards active")
            sim.config.guild_events_per_second = 150
            await sup.reshard(8)
            await until(block.exists, 60, "a new worker's handler blocked after go")
            await until(lambda: block.read_text().strip(), 5, "its pid written")
            victim = int(block.read_text())
            assert sup.snapshot().reshard.phase in ("closing_old", "done")
            os.kill(victim, signal.SIGKILL)
            await until(lambda: sup.snapshot().reshard.phase == "done", 30, "the reshard's end")
            await until(lambda: victim not in {w.pid for w in sup.snapshot().workers}
                        and sup.active_shards() == 8, 30, "the new worker restarted")
            total = sim.guild_events.total
            await until(lambda: sim.guild_events.total >= total + 50, 10, "traffic after the restart")
            got = await all_delivered(sim, id_log)
            stats = sim.stats.snapshot()
            assert not task.done()
    emitted = [int(i) for i in sim.guild_event_log()["ids"]]
    counts = Counter(d[0] for d in got)
    assert sorted(counts) == sorted(emitted) and len(emitted) >= 200  # none lost
    assert [i for i, n in counts.items() if n > 1] == []  # none twice
    sets = stats["sets"]
    assert (sets["4"]["identifies"], sets["8"]["identifies"]) == (4, 8) and sets["8"]["resumes"] >= 4  # it resumed


async def test_a_rollback_after_the_cut_leaves_the_old_set_fully_serving_even_with_an_old_worker_killed(
        tmp_path, id_log):
    """Old worker 0 and new worker 1 die in the cutover: the reshard rolls back, and the old worker is restarted
    (it used to stay dead: the cutover had barred old workers from restarting)."""
    import signal

    async with Simulator(shards=4, max_concurrency=2, guilds_per_shard=2, **FAST) as sim:
        async with running(sim, HANDLER, tmp_path, shards=4, shards_per_worker=2, identify_window=0.3) as (sup, task):
            await until(lambda: sup.active_shards() == 4, 30, "4 shards active")
            sim.delay(3, 1.0)  # old shard 3 passes the cut late: the new worker's death comes before the switch
            rs, old = sup._resharder, sup._rt.workers[0]

            def kill() -> None:
                os.kill(old.pid, signal.SIGKILL)
                os.kill(rs.child.workers[1].pid, signal.SIGKILL)

            _at_phase(sup, "cutting_over", kill)
            await sup.reshard(8)
            await until(lambda: sup.snapshot().reshard.phase in ("done", "rolled_back"), 60, "the reshard's end")
            snap = sup.snapshot()
            assert snap.reshard.phase == "rolled_back"
            assert "new worker 1 exited during the cutover" in snap.reshard.reason
            sim.delay(3, 0)
            await until(lambda: sup.active_shards() == 4, 30, "the old set's 4 shards active again")
            assert sup._rt.workers[0] is not old and sup.snapshot().shard_total == 4 and not task.done()
            ids = sim.emit_guild_events(8)  # every guild is served again
            await until(lambda: set(ids) <= {d[0] for d in delivered(id_log)}, 10, "the old set delivers")


async def test_a_new_shard_that_loses_its_session_during_the_cutover_rolls_back(tmp_path, id_log):
    """Op 9 (not resumable) on shard 0 as the cut is sent: the new shard 0 re-identifies, and its guilds' events
    until its new READY would reach neither set, so the reshard rolls back (it used to switch and lose them)."""
    async with Simulator(shards=4, max_concurrency=2, guilds_per_shard=4, **FAST) as sim:
        async with running(sim, HANDLER, tmp_path, shards=4, shards_per_worker=4, identify_window=0.3) as (sup, task):
            await until(lambda: sup.active_shards() == 4, 30, "4 shards active")
            sim.config.guild_events_per_second = 100
            _at_phase(sup, "cutting_over", lambda: sim.invalidate(0, resumable=False))
            await sup.reshard(8)
            await until(lambda: sup.snapshot().reshard.phase in ("done", "rolled_back"), 60, "the reshard's end")
            snap = sup.snapshot()
            assert snap.reshard.phase == "rolled_back", snap.reshard.reason
            assert snap.reshard.reason == "new shard 0 lost its session during the cutover"
            await until(lambda: sup.active_shards() == 4, 30, "the old set's 4 shards active")
            assert snap.shard_total == 4 and not task.done()


async def test_the_next_start_keeps_the_resharded_count_over_a_lower_configured_one(tmp_path, id_log):
    """The state file written after a reshard to 8 shards: a start with --shards 4 runs 8 (and says so) instead of
    throwing the sessions away and identifying 4 that Discord would refuse again."""
    from cluster.state import grown_total, save_sessions, token_user_id

    async with Simulator(shards=4, max_concurrency=2, guilds_per_shard=2, **FAST) as sim:
        bot = token_user_id(sim.token)
        save_sessions(tmp_path / "state.json", 8, [], user_id=bot)
        assert grown_total(tmp_path / "state.json", 8, user_id=bot) is None  # not larger
        assert grown_total(tmp_path / "state.json", 4, user_id=bot + 1) is None  # another bot's
        async with running(sim, HANDLER, tmp_path, shards=4, shards_per_worker=4, identify_window=0.3) as (sup, _):
            await until(lambda: sup.active_shards() == 8, 30, "8 shards active")
            assert sup.snapshot().shard_total == 8


@pytest.mark.parametrize("shards", ["0", "-8"])
async def test_the_reshard_command_refuses_a_shard_count_below_one_as_a_config_error(shards):
    code, out, err = await _cli("--url", "http://127.0.0.1:9", "--shards", shards, token="s3cret")
    assert (code, out) == (2, "") and err == f"cluster: config error: --shards must be a positive whole number, got " \
                                             f"{int(shards)}\n", err


async def test_an_old_shard_that_does_not_pass_the_cut_in_time_forces_the_switch_and_says_why(tmp_path, id_log):
    """Old shard 3 lags 3 s behind a 1 s cut timeout: the switch goes ahead without it, with the reason."""
    async with Simulator(shards=4, max_concurrency=2, guilds_per_shard=2, **FAST) as sim:
        async with running(sim, HANDLER, tmp_path, shards=4, shards_per_worker=4, identify_window=0.3,
                           reshard_cut_timeout=1.0) as (sup, task):
            await until(lambda: sup.active_shards() == 4, 30, "4 shards active")
            _at_phase(sup, "cutting_over", lambda: sim.delay(3, 3.0, num_shards=4))
            await sup.reshard(8)
            await until(lambda: sup.snapshot().reshard.phase in ("done", "rolled_back"), 60, "the reshard's end")
            snap = sup.snapshot()
            sim.delay(3, 0)
            assert snap.reshard.phase == "done" and snap.reshard.passed == 3, snap.reshard
            assert snap.reshard.reason == ("old shards 3 did not pass the cut within 1 s; switching anyway (their "
                                           "guilds may see an event twice or not at all)")
            assert snap.shard_total == 8 and not task.done()


async def test_a_new_shard_that_does_not_pass_its_marker_in_time_rolls_back_and_the_old_set_lost_nothing(
        tmp_path, id_log):
    """New shard 3 lags 3 s behind a 1 s cut timeout: the old set was never told to mark (it delivered everything),
    so the reshard rolls back rather than switch to a new set that would miss what came before its marker."""
    async with Simulator(shards=4, max_concurrency=2, guilds_per_shard=2, guild_event_kinds=IDLESS, **FAST) as sim:
        async with running(sim, HANDLER, tmp_path, shards=4, shards_per_worker=4, identify_window=0.3,
                           reshard_cut_timeout=1.0, intents=INTENTS) as (sup, task):
            await until(lambda: sup.active_shards() == 4, 30, "4 shards active")
            sim.config.guild_events_per_second = 100
            _at_phase(sup, "cutting_over", lambda: sim.delay(3, 3.0, num_shards=8))
            await sup.reshard(8)
            await until(lambda: sup.snapshot().reshard.phase in ("done", "rolled_back"), 60, "the reshard's end")
            snap = sup.snapshot()
            assert snap.reshard.phase == "rolled_back" and snap.reshard.passed == 0, snap.reshard
            assert snap.reshard.reason == ("new shards 3 did not pass their cutover marker within 1 s (the old set was "
                                           "never marked and delivered everything)")
            got = await all_delivered(sim, id_log)
            assert snap.shard_total == 4 and not task.done()
    counts = Counter(d[0] for d in got)
    assert len(counts) >= 100 and [i for i, n in counts.items() if n > 1] == []
    assert {d[2] for d in got} == {4}


IDLESS = "MESSAGE_UPDATE,MESSAGE_REACTION_ADD,TYPING_START"


async def test_a_new_set_with_heartbeat_round_trips_longer_than_any_fixed_margin_loses_nothing(tmp_path, id_log):
    """Every new shard's heartbeat ACK comes 0.6 s late (its marker with it), under a stream of events without a
    creation id only (split by the markers alone). The old set marks only once every new shard passed, so nothing
    falls between the markers unseen; with the old set marking a fixed 0.25 s after the cut, what the gateway sent
    in between reached neither set."""
    async with Simulator(shards=4, max_concurrency=2, guilds_per_shard=4, guild_event_kinds=IDLESS, **FAST) as sim:
        async with running(sim, HANDLER, tmp_path, shards=4, shards_per_worker=2, identify_window=0.3,
                           intents=INTENTS) as (sup, _):
            await until(lambda: sup.active_shards() == 4, 30, "4 shards active")
            sim.config.guild_events_per_second = 150
            await until(lambda: sim.guild_events.total >= 50, 10, "traffic before the reshard")
            slowed = []
            _at_phase(sup, "cutting_over", lambda: slowed.extend(sim.ack_delay(s, 0.6, num_shards=8) for s in range(8)))
            await sup.reshard(8)
            await until(lambda: sup.snapshot().reshard.phase in ("done", "rolled_back"), 60, "the reshard's end")
            snap = sup.snapshot()
            assert snap.reshard.phase == "done" and not snap.reshard.reason, snap.reshard
            assert slowed == [1] * 8
            total = sim.guild_events.total
            await until(lambda: sim.guild_events.total >= total + 50, 10, "traffic after the reshard")
            got = await all_delivered(sim, id_log)
    kinds = Counter(e["type"] for e in sim.guild_event_log()["events"])
    assert sorted(kinds) == sorted(IDLESS.split(","))
    counts = Counter(d[0] for d in got)
    assert len(counts) >= 150 and [i for i, n in counts.items() if n > 1] == []  # every one delivered, once
    by_set = Counter(d[2] for d in got)
    assert by_set[4] > 0 and by_set[8] > 0
