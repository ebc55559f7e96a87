"""Identify spacing is measured from when the Identify is sent, not from the queue's grant: with a slow
connect and a late Hello, the bucket's next Identify must not overtake the first (the simulator counts
two Identifies of one bucket closer than its window as a concurrency violation)."""

from __future__ import annotations

from shard import InMemoryQueue

from shard_helpers import Recorder
from slow_proxy import SlowProxy
from sim import Simulator


async def test_a_late_hello_does_not_let_the_next_identify_of_its_bucket_overtake_it(shards) -> None:
    async with Simulator(shards=2, max_concurrency=1, identify_window=1.0) as sim:
        # the first connection (the first granted shard's) gets its handshake reply after 0.6 s and Hello
        # after 1.5 s: its Identify goes out 1.5 s after its grant, later than the 1 s window
        proxy = SlowProxy(sim.port, {0: (0.6, 1.5)})
        url = await proxy.start()
        queue = InMemoryQueue(max_concurrency=1, interval=1.05)
        made = [shards(sim, n, 2, gateway_url=url, queue=queue) for n in range(2)]
        recs = [Recorder(shard) for shard in made]
        try:
            for rec in recs:
                await rec.wait_for(lambda r: r.count("READY") >= 1, timeout=15)
            snap = sim.stats.snapshot()
            assert snap["total"]["concurrency_violations"] == 0, snap["shards"]
            assert snap["total"]["identifies"] == 2
            assert proxy.accepted == 2  # each shard identified on its first connection
        finally:
            for rec in recs:
                await rec.stop()
            await proxy.close()


async def test_a_granted_turn_gets_one_connect_timeout_for_connect_and_hello(shards) -> None:
    """A queue may hold a bucket only so long: the Identify goes out within connect_timeout of the grant or
    the turn is given back (here the handshake takes 0.8 s of the 1 s, and Hello would come at 1.4 s)."""
    async with Simulator(shards=1, max_concurrency=1, identify_window=1.0) as sim:
        proxy = SlowProxy(sim.port, {0: (0.8, 1.4)})
        url = await proxy.start()
        queue = InMemoryQueue(max_concurrency=1, interval=1.05)
        shard = shards(sim, 0, 1, gateway_url=url, queue=queue, connect_timeout=1.0)
        rec = Recorder(shard)
        try:
            await rec.wait_for(lambda r: r.count("READY") >= 1, timeout=15)
            assert queue.unused_grants == 1  # the slow connection's turn came back unused...
            assert proxy.accepted == 2       # ...and the shard identified on a new connection
            snap = sim.stats.snapshot()
            assert snap["total"]["identifies"] == 1 and snap["total"]["concurrency_violations"] == 0
        finally:
            await rec.stop()
            await proxy.close()
