"""Cluster benchmarks (not tests): bring-up vs. the theoretical minimum and vs. hikari, scale, recovery,
handler throughput.

    .venv/bin/python bench/cluster_bench.py                 # all three, writes bench/results/cluster.md
    .venv/bin/python bench/cluster_bench.py bringup         # or: scale, recovery, handler
    .venv/bin/python bench/cluster_bench.py scale --scale-shards 256 --idle 10   # a quicker scale run

The simulator always runs in its own process (``python -m sim``), started as a user would; the
supervisor runs in this process and its workers in their own processes.

1. **Bring-up.** N=64 shards at max_concurrency M=16 with the simulator's identify window at 1 s.
   Target: at most ceil(N/M) x window + 1 s. Measured from ``Supervisor.run()`` (so worker spawn
   and imports count) to every shard Active, and from the first to the last READY on the simulator.
   Then hikari's ``GatewayBot.start(shard_count=64)`` against a fresh simulator with the same settings.
2. **Scale.** 1,024 shards reach Active and stay healthy through an idle period; the supervisor's and
   the workers' CPU per 1,000 idle shards (from /proc), worker RSS.
3. **Recovery.** kill -9 of one worker (of 4, 16 shards, events flowing) until every one of its shards
   is RESUMED on the simulator; repeated, min/median/max.
4. **Handler throughput.** One flooded shard (the simulator's replayed zlib-stream flood): events/s that
   a worker delivers to the example handler, against the Shard alone with a handler
   (`bench/shard_throughput.py --client ours-handler`) on the same flood, alternating rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cluster import ClusterConfig, Supervisor  # noqa: E402
from sim import DEFAULT_TOKEN  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SHARD_BENCH_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.x.y"


class Sim:
    """``python -m sim`` in its own process."""

    def __init__(self, **options: object) -> None:
        self.options = options

    async def __aenter__(self) -> Sim:
        args = []
        for k, v in self.options.items():
            flag = f"--{k.replace('_', '-')}"
            args += [flag] if v is True else [flag, str(v)]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sim", "--port", "0", "--quiet", *args, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, start_new_session=True)
        urls = {}
        while len(urls) < 3:
            line = (await asyncio.wait_for(self.proc.stdout.readline(), 30)).decode()
            if not line:
                raise RuntimeError("the simulator did not start")
            parts = line.split()
            if len(parts) >= 3 and parts[1] in ("gateway", "rest", "admin"):
                urls[parts[1]] = parts[2]
        self.url, self.api_url, self.stats_url = urls["gateway"], urls["rest"], urls["admin"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await self.proc.wait()

    async def stats(self) -> dict:
        def get() -> dict:
            with urllib.request.urlopen(self.stats_url, timeout=30) as r:
                return json.loads(r.read())
        return await asyncio.to_thread(get)

    def cpu_seconds(self) -> float:
        return proc_cpu(self.proc.pid)


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def supervisor(sim: Sim, tmp: str, token: str = DEFAULT_TOKEN, **options: object) -> Supervisor:
    cfg = ClusterConfig(**{"gateway_url": sim.url, "api_url": sim.api_url, "http_port": None, "fresh": True,
                           "state_file": os.path.join(tmp, "state.json"), "log_level": "WARNING", **options})
    return Supervisor(cfg, token=token, handle_signals=False)


async def until(pred, timeout: float, what: str, every: float = 0.01, task: asyncio.Task | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if task is not None and task.done():
            raise RuntimeError(f"the supervisor stopped (exit code {task.result()}) before {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(every)




# --- 1. bring-up ---------------------------------------------------------------------------


async def bench_bringup(n: int, m: int, window: float, workers: int) -> dict:
    target = math.ceil(n / m) * window + 1.0
    sim_opts = dict(shards=n, max_concurrency=m, identify_window=window)
    with tempfile.TemporaryDirectory() as tmp:
        async with Sim(**sim_opts) as sim:
            sup = supervisor(sim, tmp, workers=workers, identify_window=window, report_interval=0.05)
            t0 = time.monotonic()
            task = asyncio.get_running_loop().create_task(sup.run())
            await until(lambda: sup.active_shards() == n, 120, "bring-up", task=task)
            ours = time.monotonic() - t0
            stats = await sim.stats()
            sup.stop()
            await task
    result = {"n": n, "m": m, "window": window, "workers": workers, "target": target, "ours": ours,
              "identifies": stats["total"]["identifies"],
              "concurrency_violations": stats["total"]["concurrency_violations"]}
    try:
        import hikari
    except ImportError:
        result["hikari"] = None
        return result
    async with Sim(**sim_opts) as sim:
        bot = hikari.GatewayBot(DEFAULT_TOKEN, rest_url=sim.api_url, banner=None,
                                suppress_optimization_warning=True, logs="WARNING")
        t0 = time.monotonic()
        await bot.start(shard_count=n, check_for_updates=False)
        result["hikari"] = time.monotonic() - t0
        hstats = await sim.stats()
        result["hikari_concurrency_violations"] = hstats["total"]["concurrency_violations"]
        await bot.close()
    return result


# --- 2. scale ------------------------------------------------------------------------------


async def bench_scale(n: int, m: int, window: float, workers: int, idle: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        async with Sim(shards=n, max_concurrency=m, identify_window=window, guilds_per_shard=1,
                       session_limit=5000) as sim:
            sup = supervisor(sim, tmp, workers=workers, identify_window=window, report_interval=1.0,
                             identify_hold_timeout=30.0)
            t0 = time.monotonic()
            task = asyncio.get_running_loop().create_task(sup.run())
            await until(lambda: sup.active_shards() == n, 600, "scale bring-up", every=0.2, task=task)
            bringup = time.monotonic() - t0
            await asyncio.sleep(3)  # settle
            pids = [w.pid for w in sup.workers.values()]
            cpu0 = time.process_time(), sum(proc_cpu(p) for p in pids), sim.cpu_seconds()
            w0 = time.monotonic()
            await asyncio.sleep(idle)
            wall = time.monotonic() - w0
            cpu1 = time.process_time(), sum(proc_cpu(p) for p in pids), sim.cpu_seconds()
            stats = await sim.stats()
            healthy = sup.active_shards() == n and stats["total"]["open_connections"] == n
            kinds: dict[str, int] = {}
            for rec in stats["shards"].values():
                for v in rec["violations"]:
                    key = str(v)[:90]
                    kinds[key] = kinds.get(key, 0) + 1
            rss = sum(w.rss for w in sup.workers.values())
            sup.stop()
            await task
    per_k = 1000 / n
    return {"n": n, "m": m, "workers": workers, "bringup": bringup, "target": math.ceil(n / m) * window + 1.0,
            "idle": wall, "healthy": healthy, "identifies": stats["total"]["identifies"],
            "violations": stats["total"]["violations"], "violation_kinds": kinds,
            "concurrency_violations": stats["total"]["concurrency_violations"],
            "supervisor_cpu_pct_per_1k": 100 * (cpu1[0] - cpu0[0]) / wall * per_k,
            "workers_cpu_pct_per_1k": 100 * (cpu1[1] - cpu0[1]) / wall * per_k,
            "sim_cpu_pct": 100 * (cpu1[2] - cpu0[2]) / wall,
            "worker_rss_mib_per_shard": rss / n / 2**20, "worker_rss_mib": rss / 2**20}


# --- 3. recovery ---------------------------------------------------------------------------


async def bench_recovery(reps: int) -> dict:
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        async with Sim(shards=16, max_concurrency=4, identify_window=1.0, events_per_second=5.0) as sim:
            sup = supervisor(sim, tmp, workers=4, identify_window=1.0, report_interval=0.1,
                             restart_min_alive=1.0, ipc_heartbeat_interval=0.25)
            task = asyncio.get_running_loop().create_task(sup.run())
            await until(lambda: sup.active_shards() == 16, 60, "bring-up")
            for i in range(reps):
                await asyncio.sleep(1.5)  # steady stream; sessions reported
                before = (await sim.stats())["total"]["resumes"]
                victim = sup.workers[i % 4]
                t0 = time.monotonic()
                os.kill(victim.pid, signal.SIGKILL)
                while (await sim.stats())["total"]["resumes"] < before + 4:  # noqa: ASYNC110 - polls the sim's HTTP stats
                    await asyncio.sleep(0.01)
                times.append(time.monotonic() - t0)
                await until(lambda: sup.active_shards() == 16, 30, "recovered")
            stats = await sim.stats()
            sup.stop()
            await task
    return {"reps": reps, "min": min(times), "median": statistics.median(times), "max": max(times),
            "identifies": stats["total"]["identifies"], "lost": stats["total"]["lost"]}


async def bench_handler(rounds: int, seconds: float, warmup: float = 1.0) -> dict:
    from cluster.example import MessageCount

    worker, alone = [], []
    with tempfile.TemporaryDirectory() as tmp:
        # the token bench/shard_throughput.py's clients use
        async with Sim(token=SHARD_BENCH_TOKEN, shards=1, guilds_per_shard=1, flood=True, flood_replay=True,
                       zlib_level=1, max_concurrency=1, identify_window=0.05, session_limit=100000) as sim:
            port = sim.url.split(":")[2].split("/")[0]
            for _ in range(rounds):
                sup = supervisor(sim, tmp, token=SHARD_BENCH_TOKEN, shards=1, workers=1, identify_window=0.05,
                                 handler="cluster.example:ExampleHandler")
                task = asyncio.get_running_loop().create_task(sup.run())
                await until(lambda: sup.active_shards() == 1, 60, "the shard Active", task=task)  # noqa: B023
                await asyncio.sleep(warmup)
                a, ta = (await sup.broadcast(MessageCount(), timeout=10))[0].value, time.monotonic()
                await asyncio.sleep(seconds)
                b, tb = (await sup.broadcast(MessageCount(), timeout=10))[0].value, time.monotonic()
                worker.append((b - a) / (tb - ta))
                sup.stop()
                await task
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, str(ROOT / "bench" / "shard_throughput.py"), "--client", "ours-handler",
                    "--port", port, "--seconds", str(seconds), "--warmup", str(warmup), cwd=ROOT,
                    stdout=asyncio.subprocess.PIPE)
                out, _ = await proc.communicate()
                line = next(x for x in out.decode().splitlines() if x.startswith("RESULT "))
                alone.append(json.loads(line[7:])["events_per_s"])
    return {"rounds": rounds, "seconds": seconds, "worker": statistics.median(worker),
            "alone": statistics.median(alone), "worker_rounds": worker, "alone_rounds": alone}


def report(results: dict) -> str:
    lines = [f"# Cluster benchmarks\n\n{platform.platform()}, Python {platform.python_version()}, "
             f"{os.cpu_count()} CPUs. Command: `.venv/bin/python bench/cluster_bench.py`.\n"]
    if b := results.get("bringup"):
        lines += ["## Bring-up", "",
                  f"N={b['n']} shards, max_concurrency M={b['m']}, simulator identify window {b['window']} s, "
                  f"{b['workers']} workers. Target: ceil(N/M) x window + 1 s = {b['target']:.1f} s.", "",
                  "| client | time to all shards ready | identifies | concurrency violations |", "|---|---|---|---|",
                  f"| cluster (this project) | {b['ours']:.2f} s | {b['identifies']} | {b['concurrency_violations']} |"]
        if b.get("hikari") is not None:
            lines.append(f"| hikari 2.7.0 GatewayBot | {b['hikari']:.2f} s | - | "
                         f"{b['hikari_concurrency_violations']} |")
        lines += ["", "The cluster time includes spawning and importing the worker processes. hikari enforces "
                  "at least 5 s between its startup windows whatever the server's window is.", ""]
    if s := results.get("scale"):
        lines += ["## Scale", "",
                  f"{s['n']} shards, max_concurrency {s['m']}, {s['workers']} workers; the simulator in another "
                  f"process. Bring-up {s['bringup']:.1f} s (target {s['target']:.0f} s); "
                  f"then {s['idle']:.0f} s idle.", "",
                  "| measure | value |", "|---|---|",
                  f"| all shards Active and connected after the idle period | {s['healthy']} |",
                  f"| identifies / violations / concurrency violations | {s['identifies']} / {s['violations']} / "
                  f"{s['concurrency_violations']} |",
                  f"| supervisor CPU per 1,000 idle shards | {s['supervisor_cpu_pct_per_1k']:.2f} % of a core |",
                  f"| workers' CPU per 1,000 idle shards | {s['workers_cpu_pct_per_1k']:.2f} % of a core |",
                  f"| simulator CPU | {s['sim_cpu_pct']:.1f} % of a core |",
                  f"| worker RSS | {s['worker_rss_mib']:.0f} MiB "
                  f"({s['worker_rss_mib_per_shard'] * 1024:.0f} KiB per shard) |", ""]
    if r := results.get("recovery"):
        lines += ["## Recovery", "",
                  f"kill -9 of one of 4 workers (16 shards, 5 events/s per shard) until its 4 shards are RESUMED "
                  f"on the simulator; {r['reps']} runs.", "",
                  "| min | median | max | identifies (total, 16 = none spent) | lost dispatches |",
                  "|---|---|---|---|---|",
                  f"| {r['min']:.2f} s | {r['median']:.2f} s | {r['max']:.2f} s | {r['identifies']} "
                  f"| {r['lost']} |", ""]
    if h := results.get("handler"):
        lines += ["## Handler throughput through a worker", "",
                  f"One shard, the simulator's replayed zlib-stream flood (MESSAGE_CREATE of about 1 KB); "
                  f"{h['rounds']} alternating rounds of {h['seconds']:g} s, medians.", "",
                  "| path | events/s |", "|---|---|",
                  "| supervisor + 1 worker, `cluster.example:ExampleHandler` (counted over IPC) "
                  f"| {h['worker']:,.0f} |",
                  f"| the Shard alone, `async for event in shard: await handler(event)` | {h['alone']:,.0f} |", "",
                  f"The worker delivers {h['worker'] / h['alone']:.0%} of what the bare Shard does.", ""]
    return "\n".join(lines)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("which", nargs="*", help="bringup, scale, recovery and/or handler (default: all four)")
    p.add_argument("--scale-shards", type=int, default=1024)
    p.add_argument("--scale-mc", type=int, default=64)
    p.add_argument("--scale-workers", type=int, default=8)
    p.add_argument("--idle", type=float, default=30.0)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", default=str(RESULTS / "cluster.md"))
    args = p.parse_args()
    which = args.which or ["bringup", "scale", "recovery", "handler"]
    if unknown := set(which) - {"bringup", "scale", "recovery", "handler"}:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    results = {}
    if "bringup" in which:
        results["bringup"] = await bench_bringup(64, 16, 1.0, 4)
        print(json.dumps(results["bringup"]), flush=True)
    if "scale" in which:
        results["scale"] = await bench_scale(args.scale_shards, args.scale_mc, 1.0, args.scale_workers, args.idle)
        print(json.dumps(results["scale"]), flush=True)
    if "recovery" in which:
        results["recovery"] = await bench_recovery(args.reps)
        print(json.dumps(results["recovery"]), flush=True)
    if "handler" in which:
        results["handler"] = await bench_handler(3, 5.0)
        print(json.dumps(results["handler"]), flush=True)
    text = report(results)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)  # noqa: ASYNC240 - the run is over: nothing else waits on this loop
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
