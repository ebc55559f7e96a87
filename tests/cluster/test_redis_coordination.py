"""The Redis identify coordinator's rules, against a real redis-server of the test's own: never two slots of
one bucket at once nor two grants in one window, FIFO across hosts, a dead holder's slot and a dead host's
queue entries freed, the budget never below its reserve, and Redis trouble survived."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time

import redis.asyncio as aioredis

from cluster.coordination import CoordinationSetup, Grant, Refuse
from cluster.coordination.redis import RedisCoordination, store_layout
from ipc.protocol import IdentifyCancel, IdentifyDone, IdentifyRequest, IdentifyStarted, IdentifyUnused

NS = "shardstack:t:"
WINDOW = 0.05


def setup(mc=4, total=1000, remaining=1000, reserve=0, pace_below=None, window=WINDOW, hold=5.0):
    return CoordinationSetup(mc, total, remaining, 86400.0, reserve, pace_below, window, hold, time.monotonic())


async def host(url, name, **options):
    kw = dict(poll_interval=0.01, lost_grace=0.0, lead=0.0)
    setup_kw = {k: options.pop(k) for k in list(options) if k in ("mc", "total", "remaining", "reserve", "pace_below",
                                                                   "window", "hold")}
    kw.update(options)
    client = aioredis.Redis.from_url(url)
    return RedisCoordination(client, NS, name, setup(**setup_kw), **kw)


async def decide_until(coord, pred=lambda ds: any(isinstance(d, Grant) for d in ds), timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        ds = await coord.decide(now)
        if pred(ds):
            return ds
        assert now < deadline, "no decision in time"
        nxt = coord.next_deadline(now)
        await asyncio.sleep(max(0.0, min(0.05, (nxt or now + 0.01) - now)))


class Checker:
    """What the gateway would see: per bucket, the holder and the time its slot was last released."""

    def __init__(self, mc):
        self.mc = mc
        self.holder = {}
        self.released = {}
        self.grants = []
        self.violations = []

    def granted(self, shard_id):
        b = shard_id % self.mc
        now = time.monotonic()
        if self.holder.get(b) is not None:
            self.violations.append(f"bucket {b}: {shard_id} granted while {self.holder[b]} holds it")
        if b in self.released and now - self.released[b] < WINDOW:
            self.violations.append(f"bucket {b}: {shard_id} granted {now - self.released[b]:.3f} s after release")
        self.holder[b] = shard_id
        self.grants.append(shard_id)

    def release(self, shard_id):
        b = shard_id % self.mc
        assert self.holder.get(b) == shard_id
        self.holder[b] = None
        self.released[b] = time.monotonic()


async def run_host(coord, shards, checker):
    now = time.monotonic()
    await coord.report([(now, IdentifyRequest(s, "initial")) for s in shards])
    left = set(shards)
    while left:
        for d in await coord.decide(time.monotonic()):
            assert isinstance(d, Grant)
            checker.granted(d.shard_id)
            await coord.report([(time.monotonic(), IdentifyStarted(d.shard_id))])
            await asyncio.sleep(random.random() * 3 * WINDOW)  # the gateway's answer: often longer than a window
            checker.release(d.shard_id)
            await coord.report([(time.monotonic(), IdentifyDone(d.shard_id, True))])
            left.discard(d.shard_id)
        now = time.monotonic()
        nxt = coord.next_deadline(now)
        await asyncio.sleep(max(0.0, (nxt if nxt is not None else now + 0.01) - now))


async def test_fifty_hosts_on_their_own_connections_never_share_a_bucket(redis_server):
    checker = Checker(4)
    hosts = [await host(redis_server.url, f"h{i}") for i in range(50)]
    await asyncio.gather(*(run_host(c, [i, i + 50], checker) for i, c in enumerate(hosts)))
    assert checker.violations == []
    assert sorted(checker.grants) == list(range(100))
    assert int(await hosts[0].client.hget(f"{NS}id:budget", "remaining")) == 900  # once per grant, cluster-wide
    for c in hosts:
        await c.client.aclose()


def _process_host(url, index, queue):
    async def main():
        coord = await host(url, f"p{index}")
        granted = []
        await coord.report([(time.monotonic(), IdentifyRequest(s, "initial")) for s in range(index, 40, 3)])
        left = set(range(index, 40, 3))
        client = aioredis.Redis.from_url(url)
        while left:
            for d in await coord.decide(time.monotonic()):
                b = d.shard_id % 4
                if not await client.set(f"check:{b}", d.shard_id, nx=True):  # the bucket is someone else's
                    queue.put(("violation", d.shard_id))
                await coord.report([(time.monotonic(), IdentifyStarted(d.shard_id))])
                await asyncio.sleep(2 * WINDOW)  # holds its slot past the window
                await client.delete(f"check:{b}")
                await coord.report([(time.monotonic(), IdentifyDone(d.shard_id, True))])
                granted.append(d.shard_id)
                left.discard(d.shard_id)
            await asyncio.sleep(0.005)
        queue.put(("granted", granted))
    asyncio.run(main())


def test_three_processes_share_the_buckets(redis_server):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_process_host, args=(redis_server.url, i, queue)) for i in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    assert [r for r in results if r[0] == "violation"] == []
    assert sorted(s for _, g in results for s in g) == list(range(40))


async def test_grants_are_first_come_first_served_across_hosts(redis_server):
    a, b = await host(redis_server.url, "a", window=0.0), await host(redis_server.url, "b", window=0.0)
    holder = await host(redis_server.url, "holder", window=0.0)
    await holder.report([(time.monotonic(), IdentifyRequest(100, "initial"))])
    assert [d.shard_id for d in await decide_until(holder)] == [100]  # bucket 0 is held meanwhile
    order = [(a, 0), (b, 4), (a, 8), (b, 12), (b, 16), (a, 20)]
    for coord, shard in order:  # each request reaches Redis at its host's next decide
        await coord.report([(time.monotonic(), IdentifyRequest(shard, "initial"))])
        assert await coord.decide(time.monotonic()) == []
    await holder.report([(time.monotonic(), IdentifyDone(100, True))])
    got = []
    while len(got) < len(order):
        for coord in (b, a):  # b asks first each round: still a's earlier tickets go first
            for d in await coord.decide(time.monotonic()):
                got.append(d.shard_id)
                await coord.report([(time.monotonic(), IdentifyDone(d.shard_id, True))])
        await asyncio.sleep(0.005)
    assert got == [s for _, s in order]


async def test_a_dead_holders_slot_and_a_dead_hosts_queue_entries_free_themselves(redis_server):
    dead = await host(redis_server.url, "dead", hold=0.3, alive_ttl=0.3)
    await dead.report([(time.monotonic(), IdentifyRequest(0, "initial")), (time.monotonic(), IdentifyRequest(4, "x"))])
    assert [d.shard_id for d in await decide_until(dead)] == [0]  # granted 0; 4 waits behind it: then it dies
    alive = await host(redis_server.url, "alive", hold=0.3)
    await alive.report([(time.monotonic(), IdentifyRequest(8, "initial"))])
    assert [d.shard_id for d in await decide_until(alive)] == [8]  # after the hold expired and "dead" was gone
    assert await alive.client.zrange(f"{NS}id:q:0", 0, -1) == []


async def test_the_budget_is_spent_atomically_and_never_below_its_reserve(redis_server):
    hosts = [await host(redis_server.url, f"h{i}", total=100, remaining=10, reserve=4, pace_below=0)
             for i in range(8)]
    for i, c in enumerate(hosts):
        await c.report([(time.monotonic(), IdentifyRequest(s, "initial")) for s in range(i * 4, i * 4 + 4)])
    grants = refusals = 0
    for _ in range(40):
        results = await asyncio.gather(*(c.decide(time.monotonic()) for c in hosts))
        for c, ds in zip(hosts, results, strict=True):
            for d in ds:
                if isinstance(d, Grant):
                    grants += 1
                    await c.report([(time.monotonic(), IdentifyDone(d.shard_id, True))])
                elif isinstance(d, Refuse):
                    refusals += 1
                    assert "safety margin of 4" in d.message
        await asyncio.sleep(WINDOW / 2)
    assert grants == 6 and refusals == 32 - 6
    assert int(await hosts[0].client.hget(f"{NS}id:budget", "remaining")) == 4


async def test_an_unused_grant_is_refunded_and_a_cancel_frees_the_slot(redis_server):
    a = await host(redis_server.url, "a", window=30.0)  # a long window: only a refund can let 4 through
    await a.client.set(f"{NS}id:win:0", 0)  # a window long past (a new Redis would make it wait one)
    await a.report([(time.monotonic(), IdentifyRequest(0, "initial"))])
    assert [d.shard_id for d in await decide_until(a)] == [0]
    await a.report([(time.monotonic(), IdentifyUnused(0)), (time.monotonic(), IdentifyRequest(4, "initial"))])
    assert [d.shard_id for d in await decide_until(a)] == [4]
    assert a.stats(time.monotonic()).unused_grants == 1
    assert a.stats(time.monotonic()).budget_remaining == 999
    await a.report([(time.monotonic(), IdentifyCancel(4)), (time.monotonic(), IdentifyRequest(8, "initial"))])
    assert await a.client.get(f"{NS}id:slot:0") is None  # the cancel freed it; the window stays (30 s)
    assert await a.decide(time.monotonic()) == []


async def test_redis_restarting_empty_loses_no_report_and_grants_nothing_early(redis_server, caplog):
    a = await host(redis_server.url, "a", hold=10.0, lost_grace=0.5)
    b = await host(redis_server.url, "b", hold=10.0, lost_grace=0.5)
    await a.report([(time.monotonic(), IdentifyRequest(0, "initial"))])
    assert [d.shard_id for d in await decide_until(a, timeout=5)] == [0]
    redis_server.kill()
    await a.report([(time.monotonic(), IdentifyStarted(0))])  # kept for later, not raised
    await b.report([(time.monotonic(), IdentifyRequest(4, "initial"))])
    assert await b.decide(time.monotonic()) == [] and not b.up
    assert "coordinator unavailable" in caplog.text
    redis_server.start()
    # a comes back first, notices the new epoch and re-asserts its slot; b must then wait for a's outcome
    await decide_until(a, pred=lambda ds: a.up, timeout=10)
    assert (await a.client.get(f"{NS}id:slot:0")) == b"a/0"
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert await b.decide(time.monotonic()) == []
        await asyncio.sleep(0.05)
    await a.report([(time.monotonic(), IdentifyDone(0, True))])
    assert [d.shard_id for d in await decide_until(b, timeout=10)] == [4]
    assert b.up and b.stats(time.monotonic()).coordinator_errors >= 1
    assert caplog.text.count("coordinator unavailable") == 2  # one line per host and outage, not per retry
    assert "coordinator back" in caplog.text


async def test_pacing_applies_across_hosts(redis_server):
    from cluster.coordination import Defer
    a = await host(redis_server.url, "a", total=100, remaining=10, reserve=2, pace_below=10)
    b = await host(redis_server.url, "b", total=100, remaining=10, reserve=2, pace_below=10)
    await a.report([(time.monotonic(), IdentifyRequest(0, "initial"))])
    await b.report([(time.monotonic(), IdentifyRequest(1, "initial"))])
    assert [d.shard_id for d in await decide_until(a)] == [0]  # low, but nothing was spent lately
    deferred = await decide_until(b, pred=lambda ds: bool(ds))
    assert [type(d) for d in deferred] == [Defer]  # b waits for a's spend: one per (a day / 8)
    assert "pacing identifies to one per" in deferred[0].message
    assert deferred[0].until - time.monotonic() > 3600


async def test_a_host_whose_queue_entries_were_purged_queues_them_again(redis_server):
    holder, a = await host(redis_server.url, "holder"), await host(redis_server.url, "a")
    await holder.report([(time.monotonic(), IdentifyRequest(0, "initial"))])
    assert [d.shard_id for d in await decide_until(holder)] == [0]
    await a.report([(time.monotonic(), IdentifyRequest(4, "initial"))])
    assert await a.decide(time.monotonic()) == []
    assert await a.client.zrange(f"{NS}id:q:0", 0, -1) == [b"a/4"]
    await a.client.zrem(f"{NS}id:q:0", "a/4")  # what another host does when a's alive key lapsed (a stalled)
    await holder.report([(time.monotonic(), IdentifyDone(0, True))])
    assert [d.shard_id for d in await decide_until(a)] == [4]


async def redis_ms(client):
    seconds, micros = await client.time()
    return seconds * 1000 + micros // 1000


async def test_an_outcome_proves_the_window_and_a_late_send_keeps_its_slack(redis_server):
    """A grant's and a send's window get the slack (the Identify's way to the gateway), READY's none: the gateway
    had processed the Identify. A send written after its hold expired keeps its slack past the next outcome."""
    a = await host(redis_server.url, "a", window=0.5, hold=0.3, slack=5.0)
    await a.client.set(f"{NS}id:win:0", 0)  # a window long past
    await a.report([(time.monotonic(), IdentifyRequest(0, "initial"))])
    before = await redis_ms(a.client)
    assert [d.shard_id for d in await decide_until(a)] == [0]
    assert int(await a.client.get(f"{NS}id:win:0")) >= before + 5000  # unproven: a grant and its slack
    await a.report([(time.monotonic(), IdentifyStarted(0))])
    assert int(await a.client.get(f"{NS}id:win:0")) >= before + 5000
    await a.report([(time.monotonic(), IdentifyDone(0, True))])
    done = int(await a.client.get(f"{NS}id:win:0"))
    assert done <= await redis_ms(a.client) + 1  # proven: no slack (the next grant comes one window after it)
    await a.report([(time.monotonic(), IdentifyRequest(12, "initial"))])
    assert [d.shard_id for d in await decide_until(a)] == [12]
    failed = await redis_ms(a.client)
    await a.report([(time.monotonic(), IdentifyStarted(12)), (time.monotonic(), IdentifyDone(12, False))])
    assert int(await a.client.get(f"{NS}id:win:0")) >= failed + 5000  # a close proves nothing: the slack stays
    await a.client.set(f"{NS}id:win:0", done)
    await a.report([(time.monotonic(), IdentifyRequest(4, "initial")), (time.monotonic(), IdentifyRequest(8, "x"))])
    assert [d.shard_id for d in await decide_until(a)] == [4]
    await decide_until(a, pred=lambda ds: not a._holding)  # 4's hold expires without an outcome
    while await a.client.exists(f"{NS}id:slot:0"):  # noqa: ASYNC110 - a key's expiry has no event; in Redis too (its TTL started a little later)
        await asyncio.sleep(0.01)
    await a.report([(time.monotonic(), IdentifyStarted(4))])  # then its Identify goes out, late
    assert a.stats(time.monotonic()).late_starts == 1
    assert int(await a.client.get(f"{NS}id:late:0")) >= await redis_ms(a.client) + 4900
    await a.client.set(f"{NS}id:win:0", 0)  # even with the bucket's own window long past
    assert await a.decide(time.monotonic()) == []  # shard 8 waits out the late send's window and slack
    await a.client.delete(f"{NS}id:late:0")
    assert [d.shard_id for d in await decide_until(a, timeout=2)] == [8]


async def test_an_unknown_window_counts_its_grace_from_the_loss_not_from_the_first_request(redis_server):
    """A new (or emptied) Redis: every bucket waits the grace and a window from the first script that found it empty
    (a host's pump runs one as it starts), so a host's start-up time is not added to the wait."""
    a = await host(redis_server.url, "a", lost_grace=30.0)
    await a.decide(time.monotonic())  # the pump's first pass: the epoch, and the loss, are noticed now
    lost = int(await a.client.get(f"{NS}id:lost"))
    assert lost <= await redis_ms(a.client)
    await a.report([(time.monotonic(), IdentifyRequest(0, "initial"))])
    assert await a.decide(time.monotonic()) == []  # 30 s of grace from the loss
    assert int(await a.client.get(f"{NS}id:win:0")) == lost + 30000 + 50
    await a.client.delete(f"{NS}id:win:0")
    await a.client.set(f"{NS}id:lost", lost - 31000)  # as if the epoch had been created 31 s ago
    a._due.clear()  # forget the 30 s timer that the first answer set (the edit above is no event of Redis's)
    assert [d.shard_id for d in await decide_until(a, timeout=2)] == [0]


async def test_a_grant_comes_lead_early_and_its_identify_waits_for_the_windows_end(redis_server):
    """Granted up to `lead` before the bucket's window ends (to connect meanwhile), with the rest of the window as
    its not-before time; the new window counts from that end, so the grant's earliness gains the next one nothing."""
    late = await host(redis_server.url, "late", window=30.0, lead=0.0, slack=0.05)
    early = await host(redis_server.url, "early", window=30.0, lead=5.0, slack=0.05)
    win = await redis_ms(early.client) - 29000  # the window ends 1 s from now
    await early.client.set(f"{NS}id:win:0", win)
    await late.report([(time.monotonic(), IdentifyRequest(4, "initial"))])
    assert await late.decide(time.monotonic()) == []  # without a lead: 1 s to go
    await late.report([(time.monotonic(), IdentifyCancel(4))])
    await early.report([(time.monotonic(), IdentifyRequest(0, "initial"))])
    before = time.monotonic()
    [g] = await early.decide(time.monotonic())
    assert isinstance(g, Grant) and g.shard_id == 0
    assert g.not_before - before > 0.9  # the rest of the window (less what the script call took)
    assert int(await early.client.get(f"{NS}id:win:0")) == win + 30000 + 50  # from the window's end, unproven


async def test_the_lead_is_at_most_half_the_hold(redis_server):
    assert (await host(redis_server.url, "a", hold=0.6, lead=0.5)).lead == 0.3
    assert (await host(redis_server.url, "b", hold=15.0, lead=0.5)).lead == 0.5


async def test_a_host_behind_a_held_slot_sleeps_until_its_turn_could_come_instead_of_polling(redis_server):
    holder = await host(redis_server.url, "holder", window=30.0)
    other = await host(redis_server.url, "other", window=30.0)
    await holder.client.set(f"{NS}id:win:0", 0)  # a window long past
    await holder.report([(time.monotonic(), IdentifyRequest(0, "initial"))])
    assert [d.shard_id for d in await decide_until(holder)] == [0]
    await other.report([(time.monotonic(), IdentifyRequest(4, "initial"))])
    now = time.monotonic()
    assert await other.decide(now) == []
    # no grant can come before the holder's Identify plus a window: not polled every poll_interval (0.01 s) meanwhile
    assert other.next_deadline(now) - now > 1.0


async def test_a_new_clusters_buckets_wait_only_the_grace_not_a_window(redis_server):
    """The first host of a new cluster stores the layout and marks the identify state fresh in one script: no
    Identify can have gone out before it, so a bucket's first grant waits the grace only, not a whole window."""
    a = await host(redis_server.url, "a", window=30.0, lost_grace=0.3)
    assert await store_layout(a.client, NS, f"{NS}layout", "8,4")
    assert not await store_layout(a.client, NS, f"{NS}layout", "8,4")  # the second host adopts it
    fresh = int(await a.client.get(f"{NS}id:fresh"))
    await a.report([(time.monotonic(), IdentifyRequest(0, "initial"))])
    [g] = await decide_until(a, timeout=5)
    assert g.shard_id == 0
    assert await redis_ms(a.client) - fresh < 30000  # not a window (30 s) after the mark
    assert await a.client.get(f"{NS}id:lost") is None


async def lost_under_a_running_host(redis_server):
    """A host that identified shard 0 (bucket 0's window: 30 s) and a Redis that then restarts empty."""
    running = await host(redis_server.url, "running", window=30.0, lost_grace=0.3)
    assert await store_layout(running.client, NS, f"{NS}layout", "8,4")
    await running.report([(time.monotonic(), IdentifyRequest(0, "initial"))])
    [g] = await decide_until(running, timeout=5)
    await running.report([(time.monotonic(), IdentifyStarted(0)), (time.monotonic(), IdentifyDone(0, True))])
    redis_server.kill()
    redis_server.start()
    return running


async def test_a_new_host_cannot_take_a_redis_that_lost_its_state_for_a_new_cluster(redis_server):
    """Redis restarts empty under a running host that identified moments ago, and a new host comes first and marks
    the empty Redis fresh: the running host's listener resubscribes, tells the loss, and the new host waits the
    grace and a whole window."""
    running = await lost_under_a_running_host(redis_server)
    newcomer = await host(redis_server.url, "new", window=30.0, lost_grace=0.3)
    assert await store_layout(newcomer.client, NS, f"{NS}layout", "8,4")
    fresh = int(await newcomer.client.get(f"{NS}id:fresh"))
    woke = asyncio.Event()
    listener = asyncio.ensure_future(running.listen(woke.set))
    try:
        await asyncio.wait_for(woke.wait(), 10)  # it saw the epoch change
        assert await newcomer.client.get(f"{NS}id:fresh") is None
        assert int(await newcomer.client.get(f"{NS}id:lost")) == fresh
        await newcomer.report([(time.monotonic(), IdentifyRequest(4, "initial"))])
        now = time.monotonic()
        assert await newcomer.decide(now) == []
        assert int(await newcomer.client.get(f"{NS}id:win:0")) == fresh + 300 + 50  # grace, slack, then a window
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def test_a_running_host_that_reaches_the_empty_redis_first_makes_it_lost_not_new(redis_server):
    running = await lost_under_a_running_host(redis_server)
    await running.report([(time.monotonic(), IdentifyRequest(4, "initial"))])
    await decide_until(running, pred=lambda ds: running.up)  # its first script on the empty Redis: a loss
    lost = int(await running.client.get(f"{NS}id:lost"))
    newcomer = await host(redis_server.url, "new", window=30.0, lost_grace=0.3)
    assert await store_layout(newcomer.client, NS, f"{NS}layout", "8,4")  # the layout was lost too
    assert await newcomer.client.get(f"{NS}id:fresh") is None  # but the state is not new
    await newcomer.report([(time.monotonic(), IdentifyRequest(8, "initial"))])
    assert await newcomer.decide(time.monotonic()) == []
    assert int(await newcomer.client.get(f"{NS}id:win:0")) == lost + 300 + 50


async def test_a_redis_restarted_from_an_older_snapshot_is_a_loss_whoever_reaches_it_first(redis_server, caplog):
    """Redis restarts from a snapshot taken before an identify that went out since: the same epoch comes back, with
    a window long past and a budget that predates the spend. A restart is a loss like an emptied Redis: whoever
    reaches it first (here a new host, which knew nothing of the state before) waits the grace and a whole window
    from it, and the running host puts its view of the budget back."""
    running = await host(redis_server.url, "running", window=30.0, lost_grace=0.3)
    assert await store_layout(running.client, NS, f"{NS}layout", "8,4")
    await running.decide(time.monotonic())
    await running.client.set(f"{NS}id:win:0", 0)  # bucket 0's window long past when the snapshot is taken
    epoch = await running.client.get(f"{NS}id:epoch")
    await running.client.save()
    await running.report([(time.monotonic(), IdentifyRequest(0, "initial"))])
    [g] = await decide_until(running, timeout=5)  # after the snapshot: an identify, and its window, Redis forgets
    await running.report([(time.monotonic(), IdentifyStarted(0)), (time.monotonic(), IdentifyDone(0, True))])
    assert running.stats(time.monotonic()).budget_remaining == 999
    redis_server.kill()
    redis_server.start()  # from the snapshot
    newcomer = await host(redis_server.url, "new", window=30.0, lost_grace=0.3)
    assert (await newcomer.client.get(f"{NS}id:epoch"), await newcomer.client.get(f"{NS}id:win:0")) == (epoch, b"0")
    await newcomer.report([(time.monotonic(), IdentifyRequest(4, "initial"))])
    assert await newcomer.decide(time.monotonic()) == []  # not inside the live window of shard 0's identify
    lost = int(await newcomer.client.get(f"{NS}id:lost"))
    assert await newcomer.client.get(f"{NS}id:epoch") != epoch
    assert int(await newcomer.client.get(f"{NS}id:win:0")) == lost + 300 + 50  # the grace, the slack, then a window
    await running.report([(time.monotonic(), IdentifyRequest(8, "initial"))])
    await decide_until(running, pred=lambda ds: running._epoch != epoch.decode())  # it sees the new epoch
    assert "lost its state" in caplog.text
    assert int(await running.client.hget(f"{NS}id:budget", "remaining")) == 999  # not the snapshot's 1000


async def test_a_host_waiting_on_another_hosts_slot_is_woken_by_its_release_not_by_polling(redis_server):
    slow = dict(window=0.05, hold=60.0, alive_ttl=60.0, poll_interval=30.0)  # no poll nor renewal for 20 s or more
    holder, other = await host(redis_server.url, "holder", **slow), await host(redis_server.url, "other", **slow)
    await holder.report([(time.monotonic(), IdentifyRequest(0, "initial"))])
    assert [d.shard_id for d in await decide_until(holder)] == [0]
    woke = asyncio.Event()
    listener = asyncio.ensure_future(other.listen(woke.set))
    try:
        await other.report([(time.monotonic(), IdentifyRequest(4, "initial"))])
        while True:  # past the holder's window: then it waits for the holder's outcome, with no look for 20 s
            now = time.monotonic()
            assert await other.decide(now) == []
            if 0 in other._on_wake and other.next_deadline(now) - now > 10:
                break
            await asyncio.sleep(max(0.0, other.next_deadline(now) - now))
        woke.clear()
        await holder.report([(time.monotonic(), IdentifyDone(0, True))])
        await asyncio.wait_for(woke.wait(), 10)
        assert [d.shard_id for d in await decide_until(other, timeout=5)] == [4]
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def test_a_host_behind_other_hosts_entries_sleeps_a_window_each_and_is_woken_when_they_go(redis_server):
    """Each queue entry ahead of this host's first takes a window at least: the host sleeps that long instead of
    asking at every grant; a cancel of entries ahead (their host stopped) wakes it at once."""
    a = await host(redis_server.url, "a", window=10.0)
    b = await host(redis_server.url, "b", window=10.0)
    await a.client.set(f"{NS}id:win:0", 0)  # a window long past
    await a.report([(time.monotonic(), IdentifyRequest(s, "initial")) for s in (0, 4, 8)])
    assert [d.shard_id for d in await decide_until(a)] == [0]
    await a.report([(time.monotonic(), IdentifyDone(0, True))])
    await a.client.set(f"{NS}id:win:0", 0)  # its window over too: a/4 is the head, then a/8, then b's
    woke = asyncio.Event()
    listener = asyncio.ensure_future(b.listen(woke.set))
    try:
        await b.report([(time.monotonic(), IdentifyRequest(12, "initial"))])
        now = time.monotonic()
        assert await b.decide(now) == []
        assert b._due[0] - now > 15 and 0 not in b._on_wake  # two entries ahead: two windows (20 s)
        woke.clear()
        await a.report([(time.monotonic(), IdentifyCancel(4)), (time.monotonic(), IdentifyCancel(8))])
        await asyncio.wait_for(woke.wait(), 10)
        assert [d.shard_id for d in await decide_until(b, timeout=5)] == [12]
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
