"""Helpers for the cluster tests: run a Supervisor in-process against the simulator."""

import asyncio
import contextlib
import time
import urllib.error
import urllib.request

from cluster import ClusterConfig, Supervisor
from sim import Simulator

FAST = dict(identify_window=1.0, report_interval=0.2, ipc_heartbeat_interval=0.25, http_port=0,
            restart_backoff_base=0.2, restart_backoff_cap=1.0, shutdown_timeout=5.0)


@contextlib.asynccontextmanager
async def running(sim: Simulator, handler=None, tmp_path=None, supervisor_handler=None, shard_options=None,
                  **options):
    """A Supervisor (in this process, workers in real processes) against ``sim``."""
    cfg = ClusterConfig(**{**FAST, "gateway_url": sim.url, "api_url": sim.api_url,
                           "state_file": str(tmp_path / "state.json"), **options})
    sup = Supervisor(cfg, token=sim.token, handler=handler, handle_signals=False,
                     supervisor_handler=supervisor_handler, shard_options=shard_options)
    task = asyncio.get_running_loop().create_task(sup.run())
    try:
        yield sup, task
    finally:
        sup.stop()
        await asyncio.wait_for(task, 30)


async def until(predicate, timeout=20.0, what="condition"):
    """Poll a supervisor-side condition (the simulator has its own wait_until)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def http_get(url):
    """(status, body text) of a GET, error statuses included (blocking: call it via asyncio.to_thread)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
