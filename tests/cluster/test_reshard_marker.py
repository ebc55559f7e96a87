"""The cutover's marker heartbeats (cluster.worker over shard.Shard.beat_now) against the simulator, in process: a
marker goes out on the heartbeat path, never queued behind commands waiting for the ratelimit."""

from __future__ import annotations

import asyncio
import time

from cluster.cutover import OldGate, snowflake_at
from cluster.worker import Worker, WorkerSpec
from shard import Config, InMemoryQueue, Intents, Shard, ShardId, UpdatePresence
from sim import Simulator


async def test_an_old_shards_marker_heartbeat_is_not_held_behind_a_spent_command_budget():
    async with Simulator(identify_window=0.2, heartbeat_interval=41250) as sim:
        shard = Shard.with_config(ShardId(0, 1), Config(
            sim.token, Intents.GUILDS, gateway_url=sim.url, send_queue_size=200, metrics=False,
            queue=InMemoryQueue(max_concurrency=1, interval=0.25)))
        worker = Worker(WorkerSpec(0, sim.token, int(Intents.GUILDS)), None)
        gate = OldGate(snowflake_at(time.time()))
        worker.shards[0], worker.gates[0] = shard, gate
        try:
            while (await shard.next_event()).type != "READY":
                pass
            for i in range(130):  # more than the connection's command budget (117 a minute, the Identify took one)
                await shard.command(UpdatePresence(status="online" if i % 2 else "idle"))
            commands = lambda s: s["shards"]["0"]["commands"].get("3", 0)  # noqa: E731
            await sim.wait_until(lambda s: commands(s) >= 116, timeout=10)
            assert shard.ratelimiter is not None and shard.ratelimiter.available() == 0
            beat = asyncio.get_running_loop().create_task(worker._beat_at(time.time(), OldGate))
            async with asyncio.timeout(10):  # bounds a failure: behind the commands it would wait for the window
                while not gate.passed:
                    event = await shard.next_event()
                    gate.admit(event.type, event.data)
            await beat
            snap = sim.stats.snapshot()
            assert commands(snap) == 116  # the 14 other commands still wait for the window: the marker overtook them
            assert snap["shards"]["0"]["ratelimit_closes"] == 0 and snap["total"]["violations"] == 0
        finally:
            await shard.close()
