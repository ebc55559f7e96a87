"""Several hosts of one bot through a real redis-server (issue 8, items 4 and 6): sessions move between host
processes through Redis, every host's status is listed, and broadcasts reach every host's workers.

Each host is a real supervisor with real worker processes against the strict simulator. Until static shard
ranges exist, two hosts that must run at the same time run against two simulators (one bot token, so one key
namespace): what they share here is Redis, which is what these tests are about.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from cluster.coordination.redis_conn import connect
from cluster_testing import http_get, running, until
from hosts_testing import active, host_env, hosts_of
from multihost_handlers import AskAll


def hosts_for(sim, redis_server, tmp_path):
    """`python -m cluster run` hosts: 2 workers each, the coordinator, a state file that must stay unwritten."""
    return hosts_of(sim, redis_server.url, tmp_path, "--workers", "2", handler="multihost_handlers:Answerer")


def all_active(n):
    return lambda s: active(s) == n


async def test_a_host_stopped_with_sigterm_is_resumed_by_the_next_host_process_from_redis(sim, redis_server, tmp_path):
    async with hosts_for(sim, redis_server, tmp_path) as hosts:
        first = await hosts.start("first")
        await sim.wait_until(all_active(16), 30)
        code, err = await hosts.stop("first")
        assert code == 0, err
        assert not (tmp_path / "first.json").exists()  # with a coordinator, the sessions live in Redis only
        client = await connect(redis_server.url)
        try:
            keys = sorted(await client.keys("shardstack:*:session:*"))
            assert len(keys) == 16
            assert (await client.hget(keys[0], "host")).decode().startswith(first.id_prefix)
            assert 0 < await client.pttl(keys[0]) <= 120_000  # session_ttl: stale sessions vanish
        finally:
            await client.aclose()

        await hosts.start("second")  # another process: another host id
        snap = await sim.wait_until(lambda s: s["total"]["resumes"] == 16 and all_active(16)(s), 30)
        assert snap["total"]["identifies"] == 16  # no new identify: every shard resumed
        assert snap["total"]["concurrency_violations"] == 0 and snap["total"]["violations"] == 0
        code, err = await hosts.stop("second")
        assert code == 0, err
        assert not (tmp_path / "second.json").exists()


async def test_broadcasts_reach_every_host_and_status_lists_them(sim, redis_server, tmp_path):
    """Two hosts of one bot on one simulator: A (this process) runs shards 0-11, B (a CLI process) 12-15."""
    async with hosts_for(sim, redis_server, tmp_path) as machines:
        host_b = await machines.start("b", "--fresh", "--shard-range", "12-15")
        async with running(sim, "multihost_handlers:Answerer", tmp_path, workers=2, fresh=True,
                           coordinator=redis_server.url, shard_range="0-11") as (sup, _):
            await until(lambda: sup.active_shards() == 12, what="host A's shards")
            a_id = sup.host.host_id
            await sim.wait_until(all_active(16), 30)
            b_id = ""

            def both_listed():
                nonlocal b_id
                hosts = {h["host"]: h for h in sup.status().get("hosts", [])}
                b_id = next((h for h in hosts if h.startswith(host_b.id_prefix)), "")
                return set(hosts) == {a_id, b_id} and all(
                h["active"] == sum(b - a + 1 for a, b in h["shards"]) for h in hosts.values())

            await until(both_listed, what="both hosts in /status")
            hosts = {h["host"]: h for h in sup.status()["hosts"]}
            assert hosts[b_id]["shards"] == [[12, 15]] and hosts[b_id]["states"] == {"ACTIVE": 4}
            assert hosts[a_id]["shards"] == [[0, 11]] and hosts[b_id]["workers"] == 2
            code, body = await asyncio.to_thread(http_get, sup.http_url + "/status")
            assert code == 200 and {h["host"] for h in json.loads(body)["hosts"]} == {a_id, b_id}

            # a worker of host A broadcasts: every worker of A and of B answers, each naming its host
            replies = await sup.broadcast(AskAll(timeout=3.0), timeout=10)
            seen = replies[0].value
            assert replies[0].ok and all(r["error"] is None for r in seen), seen
            assert sorted((r["host"], r["worker"]) for r in seen) == sorted(
                [(a_id, 0), (a_id, 1), (b_id, 0), (b_id, 1)])
            assert {r["value"]["supervisor"] for r in seen if r["host"] == b_id} == {host_b.pid}
            assert {r["value"]["supervisor"] for r in seen if r["host"] == a_id} == {os.getpid()}

            # `cluster status --coordinator` lists both hosts
            cli = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cluster", "status", "--coordinator", redis_server.url, "--json",
                env=host_env(sim), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await cli.communicate()
            assert cli.returncode == 0, err.decode()
            listed = {h["host"]: h for h in json.loads(out)["hosts"]}
            assert set(listed) == {a_id, b_id} and listed[b_id]["status"]["active"] == 4
            cli = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cluster", "status", "--coordinator", redis_server.url,
                env=host_env(sim), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await cli.communicate()
            text = out.decode()
            assert cli.returncode == 0 and f"== host {a_id}" in text and f"== host {b_id}" in text
            assert "\n2 hosts · 16/16 shards active (16 run)" in text

            # host B stops answering (its supervisor frozen): A's replies come, B's workers get an error
            os.kill(host_b.pid, signal.SIGSTOP)
            try:
                replies = await sup.broadcast(AskAll(timeout=1.0), timeout=4)
            finally:
                os.kill(host_b.pid, signal.SIGCONT)
            seen = replies[0].value
            assert replies[0].ok, replies[0]
            ok = sorted((r["host"], r["worker"]) for r in seen if r["error"] is None)
            failed = sorted((r["host"], r["worker"]) for r in seen if r["error"] is not None)
            assert ok == [(a_id, 0), (a_id, 1)] and failed == [(b_id, 0), (b_id, 1)], seen
            assert all(f"host {b_id} did not answer within 1s" in r["error"] for r in seen if r["error"])
        code, err = await machines.stop("b")
        assert code == 0, err


async def test_status_sessions_and_broadcast_relay_come_back_after_redis_restarts(sim, redis_server, tmp_path):
    """Another host is played here by a bare Redis client: it asks this host's workers through the relay."""
    import msgspec
    import redis

    from cluster.coordination.redis_conn import namespace
    from cluster.crosshost import BroadcastAnswer, BroadcastRequest
    from ipc.calls import encode_call
    from multihost_handlers import Where

    prefix = namespace(None, sim.token)

    async def ask_as_another_host(client, rid):
        pubsub = client.pubsub()
        await pubsub.subscribe(f"{prefix}reply:other")
        try:
            name, body = encode_call(Where())
            await client.publish(f"{prefix}broadcast", msgspec.msgpack.encode(BroadcastRequest(rid, "other", name,
                                                                                               body, 3.0)))
            async with asyncio.timeout(10):
                while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)) is None:
                    pass
            return msgspec.msgpack.decode(message["data"], type=BroadcastAnswer)
        finally:
            await pubsub.aclose()

    async def redis_has(*keys):
        try:
            return all([await client.exists(key) for key in keys])
        except redis.exceptions.ConnectionError:  # the test's client met the restart: ask again
            return False

    async with running(sim, "multihost_handlers:Answerer", tmp_path, workers=2, fresh=True,
                       coordinator=redis_server.url) as (sup, _):
        await until(lambda: sup.active_shards() == 16, what="bring-up")
        me = sup.host.host_id
        client = await connect(redis_server.url)
        try:
            answer = await ask_as_another_host(client, "before")
            assert answer.rid == "before" and answer.host == me
            assert sorted(r.worker_id for r in answer.replies) == [0, 1]
            redis_server.kill()  # every key gone, every connection dropped
            redis_server.start()
            status_key, session_key = f"{prefix}status:{me}", f"{prefix}session:0"
            for _ in range(200):  # the supervisor retries every report interval (0.2 s): poll its writes
                if await redis_has(status_key, session_key):
                    break
                await asyncio.sleep(0.05)
            assert await redis_has(status_key, session_key)
            assert sup.active_shards() == 16  # the shards never noticed
            answer = None
            for attempt in range(20):  # the relay resubscribes within a report interval of the restart
                try:
                    async with asyncio.timeout(1):
                        answer = await ask_as_another_host(client, f"after-{attempt}")
                    break
                except (TimeoutError, redis.exceptions.ConnectionError):
                    continue
            assert answer is not None and answer.rid.startswith("after") and answer.host == me
            assert all(r.error is None for r in answer.replies) and len(answer.replies) == 2
        finally:
            await client.aclose()
