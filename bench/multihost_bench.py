"""Multi-host benchmark (not a test): bring-up across host processes sharing one Redis, and what Redis costs.

    .venv/bin/python bench/multihost_bench.py                      # N=256, 4 hosts, M=16, 1 s window
    .venv/bin/python bench/multihost_bench.py --shards 1024 --idle 60

The simulator runs in its own process (``python -m sim``); every host is a real ``python -m cluster run``
process with ``--coordinator redis://... --host-index i --host-count H``; Redis is a ``redis-server`` of the
benchmark's own on a free port.

1. **Bring-up.** N shards across H hosts at max_concurrency M, the simulator's identify window W: from the
   first host's start to every shard active on the simulator, against the ceiling ceil(N/M) x W (the
   target is within 2 s of it) and against one host (no coordinator) in the same run; identifies and
   concurrency violations from the simulator. The H hosts run twice: on a new, empty Redis (whose unknown
   windows cost the coordinator's conservative grace once), then again (``--fresh``, a new simulator) on
   that Redis.
2. **Redis cost.** ``INFO commandstats`` before and after the bring-up (commands per identify, scripts'
   inner calls counted), and over ``--idle`` seconds of steady state (commands per shard per minute);
   Redis CPU (``INFO cpu``) in both. Measured in the first round.

``--rounds R`` repeats both configurations R times, interleaved (the machine's load falls on both alike).

Results go to bench/results/multihost.md.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import redis  # noqa: E402

from cluster_bench import Sim  # noqa: E402
from redis_process import RedisServer  # noqa: E402
from sim import DEFAULT_TOKEN  # noqa: E402


def redis_numbers(client: redis.Redis) -> tuple[int, float, dict[str, int]]:
    """(total commands, CPU seconds, calls by command) of the Redis server now."""
    stats = client.info("commandstats")
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
    cpu = client.info("cpu")
    return sum(calls.values()), cpu["used_cpu_sys"] + cpu["used_cpu_user"], calls


def active(stats: dict) -> int:
    return sum(1 for r in stats["sessions"].values() if r["state"] == "active")


async def wait_active(sim: Sim, n: int, timeout: float, procs: list) -> tuple[dict, float]:
    """The simulator's stats once ``n`` shards are active, and when the first Identify was seen (monotonic)."""
    deadline = time.monotonic() + timeout
    first = math.inf
    while True:
        stats = await sim.stats()
        if stats["total"]["identifies"] and first == math.inf:
            first = time.monotonic()
        if active(stats) == n:
            return stats, first
        if any(p.returncode is not None for p in procs):
            raise RuntimeError("a host exited during bring-up")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{active(stats)}/{n} active after {timeout:g} s")
        await asyncio.sleep(0.05)


async def start_hosts(sim: Sim, tmp: str, n: int, window: float, hosts: int, workers: int,
                      redis_url: str | None) -> list:
    env = {**os.environ, "DISCORD_TOKEN": DEFAULT_TOKEN, "PYTHONPATH": str(ROOT), "CLUSTER_HTTP_PORT": "none"}
    procs = []
    for i in range(hosts):
        args = ["-m", "cluster", "run", "--handler", "cluster.example:ExampleHandler", "--workers", str(workers),
                "--gateway-url", sim.url, "--api-url", sim.api_url, "--identify-window", str(window),
                "--shards", str(n),
                "--state-file", os.path.join(tmp, f"h{i}.json"), "--fresh",
                "--no-status-line", "--log-level", "WARNING"]
        if redis_url is not None:
            args += ["--coordinator", redis_url, "--cluster-name", "bench", "--host-index", str(i),
                     "--host-count", str(hosts)]
        procs.append(await asyncio.create_subprocess_exec(sys.executable, *args, env=env, cwd=ROOT,
                                                          stderr=asyncio.subprocess.DEVNULL))
    return procs


async def stop_hosts(procs: list) -> None:
    for p in procs:
        if p.returncode is None:
            p.send_signal(signal.SIGTERM)
    await asyncio.gather(*(p.wait() for p in procs))


async def bring_up(out: dict, key: str, sim_opts: dict, tmp: str, hosts: int, workers: int, redis_url: str | None,
                   measure: Callable[[dict], Awaitable[None]] | None = None) -> None:
    """One bring-up on a new simulator: ``hosts`` host processes from their start to every shard active, recorded
    in ``out[key]``; ``measure(stats)`` runs once every shard is active, before the hosts stop."""
    async with Sim(**sim_opts) as sim:
        t0 = time.monotonic()
        procs = await start_hosts(sim, tmp, out["n"], out["window"], hosts, workers, redis_url)
        try:
            stats, first = await wait_active(sim, out["n"], 60 + 3 * out["ceiling"], procs)
            out[key].append((time.monotonic() - t0, first - t0, stats["total"]["identifies"],
                             stats["total"]["concurrency_violations"]))
            if measure is not None:
                await measure(stats)
        finally:
            await stop_hosts(procs)


async def run_multi(out: dict, sim_opts: dict, tmp: str, idle: float) -> None:
    """One bring-up of ``hosts`` host processes on a Redis of their own; the Redis numbers on the first."""
    server = RedisServer(Path(tmp)).start()
    client = redis.Redis(port=server.port)
    calls0, cpu0, by0 = redis_numbers(client)

    async def measure(stats: dict) -> None:
        calls1, cpu1, by1 = redis_numbers(client)
        out["bringup_commands"] = calls1 - calls0
        out["bringup_redis_cpu"] = cpu1 - cpu0
        out["bringup_by_command"] = {k: v - by0.get(k, 0) for k, v in by1.items() if v - by0.get(k, 0)}
        out["multi_identifies"] = stats["total"]["identifies"]
        await asyncio.sleep(idle)  # the steady state being measured: nothing to await
        calls2, cpu2, by2 = redis_numbers(client)
        out["idle_commands"] = calls2 - calls1
        out["idle_redis_cpu"] = cpu2 - cpu1
        out["idle_by_command"] = {k: v - by1.get(k, 0) for k, v in by2.items() if v - by1.get(k, 0)}

    try:
        await bring_up(out, "multi", sim_opts, tmp, out["hosts"], out["workers"], server.url,
                       measure if "idle_commands" not in out else None)  # the Redis numbers: first round only
        # the same hosts again (--fresh: every shard identifies) on the Redis that now knows the buckets' windows
        await bring_up(out, "again", sim_opts, tmp, out["hosts"], out["workers"], server.url)
    finally:
        client.close()
        server.stop()


async def run_single(out: dict, sim_opts: dict, tmp: str) -> None:
    """One bring-up of the single-host supervisor (in-process coordinator), same settings and workers in all."""
    await bring_up(out, "single", sim_opts, tmp, 1, out["workers"] * out["hosts"], None)


async def run(n: int, m: int, window: float, hosts: int, workers: int, idle: float, rounds: int = 1) -> dict:
    """``rounds`` rounds of both configurations, interleaved (multi first, then single first, ...), so that the
    shared machine's load falls on both alike."""
    sim_opts = dict(shards=n, max_concurrency=m, identify_window=window, token=DEFAULT_TOKEN, session_limit=5000)
    out: dict = {"n": n, "m": m, "window": window, "hosts": hosts, "workers": workers,
                 "ceiling": math.ceil(n / m) * window, "multi": [], "again": [], "single": [], "idle": idle}
    for r in range(rounds):
        for multi in ((True, False) if r % 2 == 0 else (False, True)):
            with tempfile.TemporaryDirectory() as tmp:  # each run its own state files and Redis
                await (run_multi(out, sim_opts, tmp, idle) if multi else run_single(out, sim_opts, tmp))
    return out


def by_name(calls: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1]))


def report(r: dict, command: str) -> str:
    per_identify = r["bringup_commands"] / max(1, r["multi_identifies"])
    per_shard_minute = r["idle_commands"] / r["n"] / (r["idle"] / 60)
    rows = []
    kinds = ((f"{r['hosts']} hosts, Redis coordinator, new (empty) Redis", "multi"),
             (f"{r['hosts']} hosts again, same Redis (windows known)", "again"),
             ("1 host, in-process coordinator", "single"))
    for i in range(max(len(r["multi"]), len(r["single"]))):
        for name, key in kinds:
            if i < len(r[key]):
                up, first, ids, bad = r[key][i]
                rows.append(f"| {i + 1} | {name} | {up:.1f} | {up / r['ceiling']:.3f} | {first:.1f} | "
                            f"{(up - first) / (r['ceiling'] - r['window']):.3f} | {ids} | {bad} |")
    return "\n".join([
        "# Multi-host on Redis: bring-up and Redis cost",
        "",
        f"Command: `{command}`",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
        f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"N={r['n']} shards, max_concurrency M={r['m']}, identify window {r['window']:g} s, "
        f"{r['hosts']} host processes (one Redis); ceiling ceil(N/M) x window = {r['ceiling']:.1f} s.",
        "",
        "| round | | bring-up (s) | / ceiling | first Identify (s) | pacing / its ceiling | identifies | "
        "concurrency violations |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Bring-up is measured from the first host's process start (imports, worker spawn, GET /gateway/bot "
        "included) to every shard active on the simulator; \"first Identify\" is when the simulator saw the first "
        "one (polled every 50 ms), and \"pacing\" is the rest of the bring-up against its own ceiling, "
        "(ceil(N/M) - 1) x window.",
        "",
        "| Redis cost | value |",
        "|---|---|",
        f"| commands per identify (bring-up, scripts' inner calls included) | {per_identify:.1f} |",
        f"| Redis CPU during bring-up | {r['bringup_redis_cpu']:.2f} s |",
        f"| commands per shard per minute, steady state ({r['idle']:g} s) | {per_shard_minute:.2f} |",
        f"| Redis CPU in steady state | {r['idle_redis_cpu'] / r['idle'] * 100:.2f} % of a core |",
        "",
        "Bring-up commands by name: " + by_name(r["bringup_by_command"]),
        "",
        "Steady-state commands by name: " + by_name(r["idle_by_command"]),
        "",
    ])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", type=int, default=256)
    p.add_argument("--max-concurrency", type=int, default=16)
    p.add_argument("--window", type=float, default=1.0)
    p.add_argument("--hosts", type=int, default=4)
    p.add_argument("--workers", type=int, default=2, help="workers per host")
    p.add_argument("--idle", type=float, default=30.0, help="seconds of steady state measured (first round)")
    p.add_argument("--rounds", type=int, default=1, help="rounds of both configurations, interleaved")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "multihost.md"))
    args = p.parse_args()
    r = asyncio.run(run(args.shards, args.max_concurrency, args.window, args.hosts, args.workers, args.idle,
                        args.rounds))
    text = report(r, "python bench/multihost_bench.py " + " ".join(sys.argv[1:]))
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
