"""Issue 11: supervisor faults are contained, /metrics does not stall the supervisor, and the HTTP
endpoint refuses what it should (a real supervisor, real workers, the simulator, real sockets)."""

import asyncio
import errno
import http.client
import json
import logging
import os
import re
import resource
import signal
import sys
import threading
import time

import pytest

import cluster.metrics
from cluster import ClusterConfig, ExitCode
from cluster_testing import http_get, running, until
from ipc.protocol import Response

TOKEN = "s3cret-http-token-for-tests"


@pytest.fixture
def sim_options():
    return dict(shards=4, max_concurrency=4, identify_window=1.0, events_per_second=2.0)


# --- item 9: one exception no longer stops the cluster -----------------------------------------


async def test_truncated_gateway_bot_answer_during_the_budget_refresh_is_logged_counted_and_retried(
        sim, tmp_path, caplog):
    """The first GET /gateway/bot is whole; every refresh gets a body shorter than its Content-Length
    (urllib raises http.client.IncompleteRead, which is not an OSError)."""
    answers = []
    whole = json.dumps({"url": sim.url, "shards": 4, "session_start_limit": {
        "total": 1000, "remaining": 1000, "reset_after": 3_600_000, "max_concurrency": 4}}).encode()

    async def rest(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        body = whole if not answers else whole[:20]
        answers.append(len(body))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(whole) + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(rest, "127.0.0.1", 0)
    api = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/api/v10"
    caplog.set_level(logging.WARNING, "cluster")
    async with server, running(sim, None, tmp_path, workers=2, fresh=True, api_url=api,
                               budget_refresh_interval=0.05) as (sup, task):
        await until(lambda: len(answers) >= 4, what="three truncated refreshes")
        await until(lambda: sup.errors[("budget_refresh", "IncompleteRead")] >= 3, what="the failures counted")
        await until(lambda: sup.active_shards() == 4, what="bring-up")
        assert not task.done()
        assert "could not refresh the session budget" in caplog.text and "IncompleteRead" in caplog.text
        page = cluster.metrics.render_snapshot(cluster.metrics.snapshot(sup, cluster.metrics._Histogram()))
        assert b'cluster_supervisor_errors_total{error="IncompleteRead",where="budget_refresh"}' in page
    assert await task == ExitCode.OK


class _Emfile:
    """A multiprocess context whose next ``fails`` Pipe() calls run with RLIMIT_NOFILE lowered to 3:
    the kernel refuses the socketpair with EMFILE, as on a supervisor out of descriptors."""

    def __init__(self, ctx, fails):
        self.ctx, self.fails = ctx, fails

    def __getattr__(self, name):
        return getattr(self.ctx, name)

    def Pipe(self, *args, **kwargs):  # noqa: N802
        if self.fails <= 0:
            return self.ctx.Pipe(*args, **kwargs)
        self.fails -= 1
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (3, hard))
        try:
            return self.ctx.Pipe(*args, **kwargs)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_emfile_while_restarting_a_worker_is_retried_and_the_worker_comes_back(sim, tmp_path, caplog):
    caplog.set_level(logging.ERROR, "cluster")
    async with running(sim, None, tmp_path, workers=2, fresh=True) as (sup, task):
        await until(lambda: sup.active_shards() == 4, what="bring-up")
        await until(lambda: all(s in sup.sessions for s in range(4)), what="session reports")
        old = sup.workers[1]
        sup.mp = _Emfile(sup.mp, fails=2)
        os.kill(old.pid, signal.SIGKILL)
        await until(lambda: sup.workers[1] is not old and sup.workers[1].state.value == "running",
                    what="worker 1 restarted after two failed starts")
        await until(lambda: sup.active_shards() == 4, what="its shards back")
        assert sup.mp.fails == 0 and sup.errors[("spawn", "OSError")] == 2
        assert not task.done()
        assert caplog.text.count("could not start worker 1") == 2 and os.strerror(errno.EMFILE) in caplog.text
        assert sim.stats.snapshot()["total"]["identifies"] == 4  # the shards resumed
    assert await task == ExitCode.OK


@pytest.mark.parametrize("sim_options", [dict(shards=4, max_concurrency=1, identify_window=1.0,
                                              events_per_second=2.0)])
async def test_identify_grant_to_a_worker_whose_pipe_is_closing_does_not_stop_the_cluster(sim, tmp_path, caplog):
    """Worker 1 is stopped (SIGSTOP) with its pipe full, and its channel closed: the pipe is closing
    (written data still pending), so a send raises ChannelClosed, as for a worker on its way out.
    The identify pump then grants shard 2 or 3 (one identify per second) to it."""
    caplog.set_level(logging.WARNING, "cluster")
    async with running(sim, None, tmp_path, workers=2, fresh=True, max_concurrency=1,
                       ipc_heartbeat_missed=1000) as (sup, task):
        await until(lambda: sup.coordinator is not None and 3 in sup.coordinator.waiting()
                    and sup.workers.get(1) is not None and sup.workers[1].channel is not None,
                    what="shard 3 waiting for its identify slot")
        worker = sup.workers[1]
        os.kill(worker.pid, signal.SIGSTOP)
        transport = worker.channel._transport
        while not transport.get_write_buffer_size():  # fill the pipe: the stopped worker reads nothing
            worker.channel.send(Response(0, b"x" * 65536))
        worker.channel.close()
        assert not worker.channel.closed  # closing: the pending bytes keep it open
        try:
            await until(lambda: sup.errors[("ipc_send", "ChannelClosed")] >= 1, what="a grant to shard 2 or 3")
            assert not task.done()
            assert re.search(r"worker 1's pipe is closing; IdentifyGrant for shard [23] not sent", caplog.text)
        finally:
            os.kill(worker.pid, signal.SIGKILL)
        await until(lambda: sup.workers[1] is not worker and sup.active_shards() == 4, what="worker 1 back")
        assert not task.done()
    assert await task == ExitCode.OK


# --- item 10: /metrics and the supervisor's own stalls -----------------------------------------


async def test_a_stalled_supervisor_loop_does_not_kill_healthy_workers(sim, tmp_path):
    """The supervisor's event loop is blocked for 4x the heartbeat death limit (as by a slow scrape
    storm): the workers answered all along, so none is killed for silence."""
    async with running(sim, None, tmp_path, workers=2, fresh=True, ipc_heartbeat_interval=0.1,
                       ipc_heartbeat_missed=5) as (sup, task):
        await until(lambda: sup.active_shards() == 4 and all(w.heartbeat and w.heartbeat.rtt is not None
                                                             for w in sup.workers.values()), what="bring-up")
        pids = {wid: w.pid for wid, w in sup.workers.items()}
        time.sleep(2.0)  # noqa: ASYNC251 - the fault: blocks this event loop, which the supervisor runs on
        assert sup.health_problems() == []  # /healthz, asked before the heartbeat loop has run again
        await until(lambda: max(sup.loop_lags, default=0) > 1.5, what="the heartbeat tick after the stall")

        def ticks_since_the_stall():
            lags = list(sup.loop_lags)
            return len(lags) - 1 - max(i for i, lag in enumerate(lags) if lag > 1.5)

        await until(lambda: ticks_since_the_stall() >= 5, what="five more heartbeat ticks")
        assert {wid: w.pid for wid, w in sup.workers.items()} == pids
        assert all(w.state.value == "running" and w.last_fatal is None for w in sup.workers.values())
        assert not sup.restarts
        code, text = await asyncio.to_thread(http_get, sup.http_url + "/metrics")
        lag = next(line for line in text.splitlines() if line.startswith("cluster_supervisor_loop_lag_seconds "))
        assert float(lag.split()[1]) > 1.5


async def test_a_scrape_storm_renders_the_page_once_off_the_event_loop(sim, tmp_path, monkeypatch):
    renders = []
    real = cluster.metrics.generate_latest

    def counting(registry):
        renders.append(threading.get_ident())
        return real(registry)

    monkeypatch.setattr(cluster.metrics, "generate_latest", counting)
    async with running(sim, None, tmp_path, workers=2, fresh=True, metrics_cache_interval=60.0,
                       http_max_connections=200) as (sup, task):
        await until(lambda: sup.active_shards() == 4 and sup.http_url, what="bring-up")
        port = int(sup.http_url.rsplit(":", 1)[1])

        async def scrape():
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = await reader.read()
            writer.close()
            return answer

        pages = await asyncio.gather(*(scrape() for _ in range(100)))
        assert all(p.startswith(b"HTTP/1.1 200 OK") for p in pages)
        assert len({p for p in pages}) == 1 and b'cluster_shard_state{shard="3",state="ACTIVE"} 1.0' in pages[0]
        assert len(renders) == 1 and renders[0] != threading.get_ident()


# --- item 11: the HTTP endpoint ----------------------------------------------------------------


def _post(base, path, headers=None):
    """(status, body) of a POST with exactly these headers (Host included, when given)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    headers = dict(headers or {})
    conn.putrequest("POST", path, skip_host="Host" in headers)
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders()
    resp = conn.getresponse()
    try:
        return resp.status, resp.read().decode()
    finally:
        conn.close()


async def test_restart_is_off_without_a_token(sim, tmp_path):
    async with running(sim, None, tmp_path, workers=1, fresh=True) as (sup, task):
        await until(lambda: sup.active_shards() == 4, what="bring-up")
        code, text = await asyncio.to_thread(_post, sup.http_url, "/restart?rolling=1")
        assert code == 403 and "POST /restart is off" in text
        assert not sup.rolling
        assert (await asyncio.to_thread(http_get, sup.http_url + "/healthz"))[0] == 200  # probes stay open


async def test_restart_needs_the_token_a_local_host_header_and_rolling_1(sim, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    token_file = tmp_path / "http-token"
    token_file.write_text(TOKEN + "\n")
    async with running(sim, None, tmp_path, workers=1, fresh=True, http_token_file=str(token_file)) as (sup, task):
        await until(lambda: sup.active_shards() == 4, what="bring-up")
        base, good = sup.http_url, {"Authorization": f"Bearer {TOKEN}"}
        post = lambda path, headers: asyncio.to_thread(_post, base, path, headers)  # noqa: E731
        assert (await post("/restart?rolling=1", {}))[0] == 401
        assert (await post("/restart?rolling=1", {"Authorization": "Bearer wrong"}))[0] == 401
        # DNS rebinding: the page's own name is the Host, even with a token (a browser cannot read it anyway)
        code, text = await post("/restart?rolling=1", {**good, "Host": "attacker.example:9100"})
        assert code == 403 and "Host" in text
        for query in ("?rollingx=1", "?notrolling", "?rolling=0", "?rolling", ""):
            code, text = await post("/restart" + query, good)
            assert code == 400 and "rolling=1" in text, query
        assert not sup.rolling
        assert (await post("/restart?rolling=1", {**good, "Host": "localhost:1234"})
                == (202, "rolling restart started\n"))
        assert sup.rolling
        await until(lambda: not sup.rolling, timeout=60, what="the rolling restart")
        # the CLI sends the token (from the environment here) and rolling=1
        env = {**os.environ, "CLUSTER_HTTP_TOKEN": TOKEN}
        cli = await asyncio.create_subprocess_exec(sys.executable, "-m", "cluster", "restart", "--rolling", "--url",
                                                   base, env=env, stdout=asyncio.subprocess.PIPE)
        out, _ = await cli.communicate()
        assert cli.returncode == 0 and out == b"rolling restart started\n"
        await until(lambda: not sup.rolling, timeout=60, what="the second rolling restart")
        env.pop("CLUSTER_HTTP_TOKEN")
        cli = await asyncio.create_subprocess_exec(sys.executable, "-m", "cluster", "restart", "--rolling", "--url",
                                                   base, env=env, stderr=asyncio.subprocess.PIPE)
        _, err = await cli.communicate()
        assert cli.returncode == ExitCode.ERROR and b"Authorization: Bearer" in err
        assert TOKEN not in repr(ClusterConfig(http_token=TOKEN)) and TOKEN not in repr(sup.config)
    assert TOKEN not in caplog.text


async def test_connections_are_bounded_and_idle_ones_are_closed(sim, tmp_path):
    async with running(sim, None, tmp_path, workers=1, fresh=True, http_max_connections=4,
                       http_timeout=1.0) as (sup, task):
        await until(lambda: sup.http_url is not None, what="HTTP server")
        port = int(sup.http_url.rsplit(":", 1)[1])
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]

        async def probe():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                answer = await reader.read()
                writer.close()
            except ConnectionError:
                return "reset"
            return answer.split(b"\r\n", 1)[0].decode() or "closed"

        refused = ("HTTP/1.1 503 Service Unavailable", "reset", "closed")
        deadline = asyncio.get_running_loop().time() + 5  # until the server has taken the 4 idle ones in
        while (answer := await probe()) not in refused:
            assert answer == "HTTP/1.1 404 Not Found"
            assert asyncio.get_running_loop().time() < deadline, "a 5th connection was served"
        for reader, writer in idle:  # the server drops them after http_timeout: this returns at EOF
            assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 400")
            writer.close()
        assert await probe() == "HTTP/1.1 404 Not Found"


async def test_an_unreadable_token_file_is_a_config_error_and_the_token_never_shows(sim, tmp_path):
    async with running(sim, None, tmp_path, workers=1, fresh=True,
                       http_token_file=str(tmp_path / "missing")) as (sup, task):
        code = await asyncio.wait_for(task, 30)
    assert code == ExitCode.CONFIG and "cannot read http_token_file" in sup.exit_message
    assert not sup.workers  # nothing started
    with pytest.raises(ValueError, match="not both"):
        ClusterConfig(http_token=TOKEN, http_token_file=str(tmp_path / "t"))
    with pytest.raises(ValueError) as err:
        from cluster.config import load_config
        load_config({"http_token": TOKEN, "http_timeout": 0})
    assert TOKEN not in str(err.value) and "http_timeout must be > 0" in str(err.value)
