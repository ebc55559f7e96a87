"""Stop soak (not a test): start cluster hosts with ``--coordinator redis://...`` against the simulator and SIGTERM
them, many times, in four states: idle, Redis down, Redis just restarted (empty), and during bring-up. A stop slower
than ``--limit`` seconds, or one that does not exit 0, is printed with the host's stderr (the supervisor logs the
tasks a stuck shutdown still waits on).

    .venv/bin/python bench/stop_soak.py --runs 30
    .venv/bin/python bench/stop_soak.py --runs 30 --assign auto --shards-per-worker 4 --lease-ttl 3

Redis is a ``redis-server`` of its own on a free port; the simulator runs in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from redis_process import RedisServer  # noqa: E402
from sim import Simulator  # noqa: E402

SHARDS = 8
STATES = ("idle", "down", "restart", "bringup")


def active(stats: dict) -> int:
    return sum(1 for r in stats["sessions"].values() if r["state"] == "active")


async def one(run: int, state: str, tmp: str, sim: Simulator, server: RedisServer, extra: list[str]) -> list:
    """Two hosts brought to ``state``, then SIGTERMed: (exit code or None if hung, seconds to exit, stderr) each."""
    procs = []
    for h in range(2):
        args = ["-m", "cluster", "run", "--handler", "cluster.example:ExampleHandler", "--gateway-url", sim.url,
                "--api-url", sim.api_url, "--identify-window", "0.2", "--coordinator", server.url,
                "--cluster-name", f"soak{run}", "--state-file", f"{tmp}/h{h}.json", "--http-port", "0",
                "--report-interval", "0.2", "--no-status-line", "--log-level", "WARNING", "--shutdown-timeout", "3",
                *extra]
        if "--assign" not in extra:
            args += ["--host-index", str(h), "--host-count", "2", "--workers", "1"]
        env = {**os.environ, "DISCORD_TOKEN": sim.token, "HOSTNAME": f"soak{run}-{h}", "PYTHONPATH": str(ROOT)}
        procs.append(await asyncio.create_subprocess_exec(sys.executable, *args, env=env,
                                                          stderr=asyncio.subprocess.PIPE))
    try:
        if state == "bringup":
            await sim.wait_until(lambda s: s["total"]["identifies"] >= 2, 60)
        else:
            await sim.wait_until(lambda s: active(s) == SHARDS, 60)
            await asyncio.sleep(0.5)  # idle for a moment: nothing to await
        if state in ("down", "restart"):
            server.kill()
            await asyncio.sleep(1.0 if state == "down" else 0.5)  # an outage of some length
            if state == "restart":
                server.start()
        t0 = time.monotonic()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        out = []
        for p in procs:
            try:
                _, err = await asyncio.wait_for(p.communicate(), 60)
                out.append((p.returncode, time.monotonic() - t0, err.decode()))
            except TimeoutError:
                out.append((None, time.monotonic() - t0, f"hung (pid {p.pid}), killed"))
        return out
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        if server.proc is None or server.proc.poll() is not None:
            server.start()


async def main(runs: int, limit: float, extra: list[str]) -> int:
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            for run in range(runs):
                state = STATES[run % len(STATES)]
                async with Simulator(shards=SHARDS, max_concurrency=4, identify_window=0.2,
                                     heartbeat_interval=1000) as sim:
                    out = await one(run, state, tmp, sim, server, extra)
                print(f"{run} {state}: " + " ".join(f"{t:.1f} s (exit {rc})" for rc, t, _ in out), flush=True)
                for rc, t, err in out:
                    if rc != 0 or t > limit:
                        bad += 1
                        print(f"--- stderr of a slow or failed stop:\n{err[-4000:]}", flush=True)
        finally:
            server.stop()
    print(f"{bad} slow or failed stops in {2 * runs}")
    return 1 if bad else 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--limit", type=float, default=15.0, help="seconds a stop may take")
    args, extra = p.parse_known_args()
    sys.exit(asyncio.run(main(args.runs, args.limit, extra)))
