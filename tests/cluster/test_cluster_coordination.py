"""Identify coordination behind its interface: the supervisor takes any Coordination, and only its
identify pump calls one (the packet callback queues the workers' reports for it)."""

import asyncio

import pytest

from cluster import ClusterConfig, Supervisor
from cluster.coordination import Coordination, local_coordination
from cluster_testing import FAST, until


class Recording:
    """The local coordinator, noting which task made each awaited call."""

    def __init__(self, setup):
        self.inner = local_coordination(setup)
        self.callers = []
        self.reports = 0
        self.refreshes = 0

    async def report(self, events):
        self.callers.append(asyncio.current_task())
        self.reports += len(events)
        await self.inner.report(events)

    async def decide(self, now):
        self.callers.append(asyncio.current_task())
        return await self.inner.decide(now)

    def next_deadline(self, now):
        return self.inner.next_deadline(now)

    async def refresh_budget(self, total, remaining, reset_after, now):
        self.callers.append(asyncio.current_task())
        self.refreshes += 1
        await self.inner.refresh_budget(total, remaining, reset_after, now)

    def busy(self):
        return self.inner.busy()

    def stats(self, now):
        return self.inner.stats(now)


@pytest.mark.parametrize("sim_options", [dict(shards=4, max_concurrency=2, identify_window=1.0)])
async def test_the_supervisor_uses_the_given_coordination_from_its_identify_pump_only(sim, tmp_path):
    cfg = ClusterConfig(**{**FAST, "gateway_url": sim.url, "api_url": sim.api_url, "workers": 2, "fresh": True,
                           "budget_refresh_interval": 0.1,
                           "state_file": str(tmp_path / "state.json")})
    made = []
    sup = Supervisor(cfg, token=sim.token, handle_signals=False,
                     coordination=lambda setup: made.append(Recording(setup)) or made[-1])
    task = asyncio.get_running_loop().create_task(sup.run())
    try:
        await until(lambda: sup.active_shards() == 4, what="bring-up")
        coord, = made
        assert isinstance(coord, Coordination) and sup.coordinator is coord
        # 4 requests, 4 started, 4 done: every report went through the pump, and nothing else called it
        await until(lambda: coord.reports >= 12 and coord.refreshes >= 2, what="the identify reports, refreshes")
        assert len(set(coord.callers)) == 1 and None not in coord.callers
        assert sim.stats.snapshot()["total"]["identifies"] == 4
        assert sup.status()["identify_queue"] == 0
    finally:
        sup.stop()
        await asyncio.wait_for(task, 30)
