"""The per-worker handler API and the supervisor's HTTP endpoints, against the simulator."""

import asyncio
import json
import os
import re
import sys

import pytest

from cluster_testing import http_get, running, until


@pytest.fixture
def sim_options():
    return dict(shards=4, max_concurrency=4, identify_window=1.0, events_per_second=20.0)


async def test_handler_gets_events_with_their_shard_survives_errors_and_blocking(sim, tmp_path, capfd):
    from cluster_handlers import AskBroadcast, Count

    async with running(sim, "cluster_handlers:Recorder", tmp_path, workers=2, fresh=True) as (sup, task):
        await until(lambda: sup.active_shards() == 4, what="bring-up")
        # GUILD_CREATE raises in the handler (2 guilds per shard); the shards keep delivering
        await until(lambda: all(w.handler_errors == 4 for w in sup.workers.values()), what="handler errors")
        await until(lambda: sup.workers[0].blocked >= 1, what="blocked loop reported")
        replies = await sup.broadcast(Count(), timeout=5)
        assert [r.worker_id for r in replies] == [0, 1] and all(r.ok for r in replies)
        for r in replies:
            assert r.value["shard_ok"]
            assert r.value["events"]["READY"] == 2 and r.value["events"]["MESSAGE_CREATE"] > 0
        assert sup.active_shards() == 4
        shards = sim.stats.snapshot()["shards"]
        assert all(shards[str(n)]["commands"].get("3") == 1 for n in range(4))  # op 3 sent through each shard
        # a worker broadcasts to every worker (itself included) and asks the supervisor
        replies = await sup.broadcast(AskBroadcast(), timeout=10)
        for r in replies:
            assert r.value["workers"] == [0, 1] and r.value["messages"] > 0 and r.value["active"] == 4
    err = capfd.readouterr().err
    assert "handler failed on GUILD_CREATE" in err and "RuntimeError: handler bug" in err
    assert "event loop blocked" in err and "cluster_handlers.py" in err
    assert "in handler on_event(MESSAGE_CREATE) for shard " in err  # what was running when it blocked


async def test_http_endpoints_and_status_cli(sim, tmp_path):
    async with running(sim, "cluster.example:ExampleHandler", tmp_path, workers=2, fresh=True) as (sup, task):
        await until(lambda: sup.http_url is not None, what="HTTP server")
        base = sup.http_url
        assert base.startswith("http://127.0.0.1:")
        code, text = await asyncio.to_thread(http_get, base + "/readyz")
        active = re.fullmatch(r"([0-4])/4 shards active\n", text)
        assert active is not None, text
        assert (code, active[1] == "4") in ((503, False), (200, True))  # ready exactly when all 4 are active
        await until(lambda: sup.active_shards() == 4, what="bring-up")
        assert (await asyncio.to_thread(http_get, base + "/readyz")) == (200, "4/4 shards active\n")
        assert (await asyncio.to_thread(http_get, base + "/healthz"))[0] == 200
        families = ("cluster_gateway_events_total", "cluster_ipc_rtt_seconds", "cluster_worker_rss_bytes",
                    "cluster_identify_wait_seconds_bucket", "cluster_shard_latency_seconds")
        deadline = asyncio.get_running_loop().time() + 20
        while True:  # until the workers' reports (event counts) and IPC pings (RTTs) have come in
            code, metrics = await asyncio.to_thread(http_get, base + "/metrics")
            assert code == 200
            if all(family in metrics for family in families):
                break
            assert asyncio.get_running_loop().time() < deadline, [f for f in families if f not in metrics]
            await asyncio.sleep(0.05)
        for line in ('cluster_shard_state{shard="3",state="ACTIVE"} 1.0',
                     'cluster_identifies_total{reason="initial"} 4.0', "cluster_identify_queue_depth 0.0",
                     'cluster_worker_up{worker="1"} 1.0', "cluster_session_start_remaining 996.0"):
            assert line in metrics, line
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "cluster", "status", "--url", base,
                                                    stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        text = out.decode()
        assert proc.returncode == 0
        assert text.startswith("4/4 shards active")
        assert text.count("ACTIVE") == 4 and "WORKER" in text and "running" in text
        code, _ = await asyncio.to_thread(http_get, base + "/nope")
        assert code == 404


async def test_sync_handler_methods_teardown_and_a_user_call_answered_by_the_supervisor(sim, tmp_path, monkeypatch):
    """The README's promises: handler methods may be plain functions; ``ctx.request`` with a user-defined call
    is answered by the supervisor's handler; ``teardown`` runs in every worker after its shards closed."""
    from cluster_handlers import Count, Greeter

    monkeypatch.setenv("CLUSTER_TEST_TEARDOWN_DIR", str(tmp_path))  # spawned workers inherit it
    async with running(sim, "cluster_handlers:SyncHandler", tmp_path, supervisor_handler=Greeter(), workers=2,
                       fresh=True) as (sup, task):
        await until(lambda: sup.active_shards() == 4, what="bring-up")
        deadline = asyncio.get_running_loop().time() + 20
        while True:  # until each worker's READYs were answered by the supervisor
            replies = await sup.broadcast(Count(), timeout=5)
            assert [r.worker_id for r in replies] == [0, 1] and all(r.ok for r in replies), replies
            if all(len(r.value["answers"]) == 2 for r in replies):
                break
            assert asyncio.get_running_loop().time() < deadline, replies
            await asyncio.sleep(0.05)
        for r in replies:
            assert r.value["answers"] == [f"worker {r.worker_id}, this is the supervisor (pid {os.getpid()})"] * 2
            assert r.value["events"]["READY"] == 2 and r.value["events"]["GUILD_CREATE"] == 4
    assert await asyncio.wait_for(task, 1) == 0
    for worker in (0, 1):
        report = json.loads((tmp_path / f"{worker}.json").read_text())
        assert report["closed"] == [True, True]  # teardown ran after its two shards closed
        assert report["events"]["READY"] == 2
