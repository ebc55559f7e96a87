"""A cluster's identify window counts from when the Identify is written: a slow connect and a late Hello
can neither outlast the slot's hold nor let the bucket's next Identify overtake them."""

import asyncio
import contextlib
import pathlib
import sys

from cluster import ClusterConfig, Supervisor
from cluster.coordination import Grant
from cluster_testing import FAST, until
from sim import Simulator

sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / "shard"))
from slow_proxy import SlowProxy  # the shard tests' helper


@contextlib.asynccontextmanager
async def cluster(sim, url, tmp_path, shard_options, **options):
    cfg = ClusterConfig(**{**FAST, "gateway_url": url, "api_url": sim.api_url,
                           "state_file": str(tmp_path / "state.json"), "fresh": True, **options})
    sup = Supervisor(cfg, token=sim.token, handle_signals=False, shard_options=shard_options)
    task = asyncio.get_running_loop().create_task(sup.run())
    try:
        yield sup
    finally:
        sup.stop()
        await asyncio.wait_for(task, 30)


async def test_a_late_hello_neither_outlasts_the_hold_nor_is_overtaken(tmp_path):
    async with Simulator(shards=2, max_concurrency=1, identify_window=1.0) as sim:
        # shard 0's first connection: the handshake reply after 0.6 s, Hello after 1.75 s, later than the
        # 1.6 s hold. Its turn must come back at 1.2 s (connect_timeout) rather than identify late.
        proxy = SlowProxy(sim.port, {0: (0.6, 1.75)})
        url = await proxy.start()
        try:
            async with cluster(sim, url, tmp_path, {"connect_timeout": 1.2}, workers=1,
                               identify_hold_timeout=1.6) as sup:
                await until(lambda: sup.active_shards() == 2, what="bring-up")
                snap = sim.stats.snapshot()
                assert snap["total"]["concurrency_violations"] == 0, snap["shards"]
                assert snap["total"]["identifies"] == 2
                assert sup.coordinator.unused_grants == 1 and sup.coordinator.late_starts == 0
        finally:
            await proxy.close()



async def test_early_grants_connect_during_the_window_and_identify_at_its_end(tmp_path):
    """The coordinator grants a bucket's next shard `lead` before the window ends; the worker's shard connects
    and awaits Hello meanwhile and holds its Identify until the window's end: the gateway sees no violation."""
    from cluster.coordination.local import local_coordination

    grants = []

    def coordination(setup):
        coord = local_coordination(setup)
        poll = coord.poll

        def recording(now):
            out = poll(now)
            grants.extend((now, d) for d in out if isinstance(d, Grant))
            return out
        coord.poll = recording
        return coord

    async with Simulator(shards=8, max_concurrency=2, identify_window=1.0) as sim:
        cfg = ClusterConfig(**{**FAST, "gateway_url": sim.url, "api_url": sim.api_url, "workers": 2,
                               "state_file": str(tmp_path / "state.json"), "fresh": True})
        sup = Supervisor(cfg, token=sim.token, handle_signals=False, coordination=coordination)
        task = asyncio.get_running_loop().create_task(sup.run())
        try:
            snap = await sim.wait_until(lambda s: s["total"]["identifies"] == 8, 30)
            assert snap["total"]["concurrency_violations"] == 0, snap["shards"]
            early = [(now, g) for now, g in grants if g.not_before > now]
            assert len(early) == 6  # every grant after each bucket's first came early, with its window's end
            assert all(g.not_before - now <= sup.coordinator.lead for now, g in early)
        finally:
            sup.stop()
            await asyncio.wait_for(task, 30)
