"""Shard throughput and memory benchmark: our Shard vs discord.py and hikari, against one simulator flood.

    .venv/bin/python bench/shard_throughput.py                 # full run (~8 min): table + PNG + markdown
    .venv/bin/python bench/shard_throughput.py --seconds 3 --rounds 1 --skip-memory   # quick look

Everything runs in one go, side by side, on the same flood: `python -m sim --flood` in its own process (one
shard, zlib-stream, MESSAGE_CREATE of about 1 KB), each client in a fresh process of its own, one after the
other, so the simulator and the client each have a core. The simulator runs with `--flood-replay`: it writes
one pre-compressed segment of 1,024 MESSAGE_CREATEs again and again (Z_SYNC_FLUSH between messages, like
Discord; Z_FULL_FLUSH at the segment's end), so it costs almost no CPU and is never the bottleneck. Live
compression would cap the flood near 80k events/s at level 6 and 100-250k at level 1
(bench/results/sim_capacity.md), at or below what the faster clients read.

Tiers (events/s counted by the client over the window, after READY and a warm-up):
  handler  - a user handler gets every MESSAGE_CREATE with the library's default decoding
             ours: `async for event in shard: await handler(event)`; discord.py: `on_message`;
             hikari: a `GuildMessageCreateEvent` listener with the default cache
  bare     - transport + inflate + full JSON decode of every dispatch, nothing else
             ours: `await shard.next_event()` in a loop; discord.py: parser replaced by a counter
             (max_messages=None); hikari: standalone GatewayShardImpl counting consume_raw_event
  raw      - ours only: `await shard.next_message()`, the text of every message for forwarding (only the
             envelope is scanned; no target, shown for gateway-proxy style users)
  ceiling  - inflate + msgspec decode of the same frames (recorded from the same flood) in a tight loop,
             no network, no event loop: zlib-ng (our default backend) and stock zlib; measured every round
Peers are pinned to zlib-stream (discord.py would switch to zstd-stream because `zstandard` is installed).
orjson is installed, so both peers use it.

Memory: idle RSS of one process holding 1, 128 and 1024 of our shards (each READY, one guild, one consumer
task), zlib-stream and zstd-stream; per additional shard = RSS slope between the counts.

Writes bench/results/shard_throughput.md and bench/results/shard_throughput.png (matplotlib).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.x.y"   # hikari derives the bot id from the first segment
PY = sys.executable


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def emit(result: dict[str, object]) -> None:
    print("RESULT " + json.dumps(result), flush=True)


async def emit_rate(count: Callable[[], int], warmup: float, seconds: float) -> None:
    """Wait out `warmup`, then emit the client-counted events/s and CPU share over `seconds` (peer clients,
    whose own tasks do the counting while this one sleeps)."""
    await asyncio.sleep(warmup)
    c0, t0, cpu0 = count(), time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    c1, t1 = count(), time.perf_counter()
    emit({"events_per_s": (c1 - c0) / (t1 - t0), "cpu": (time.process_time() - cpu0) / (t1 - t0)})


# ---------------------------------------------------------------------------------------------------
# Clients (each runs in its own process: `shard_throughput.py --client NAME --port P --seconds S`)
# ---------------------------------------------------------------------------------------------------

def client_ours(port: int, seconds: float, warmup: float, tier: str) -> None:
    sys.path.insert(0, str(ROOT))
    import shard as gateway
    from shard import Config, Intents, Shard, ShardId

    async def main() -> None:
        cfg = Config(TOKEN, Intents.GUILDS | Intents.GUILD_MESSAGES, gateway_url=f"ws://127.0.0.1:{port}/",
                     metrics=False)
        shard = Shard.with_config(ShardId(0, 1), cfg)
        count = 0

        async def handler(event: gateway.Event) -> None:
            nonlocal count
            if event.type == "MESSAGE_CREATE":
                count += 1

        while (await shard.next_event()).type != "READY":
            pass
        loop = asyncio.get_running_loop()
        start = loop.time() + warmup
        end = start + seconds
        c0: int | None = None
        t0 = cpu0 = 0.0

        def window_over() -> bool:  # every 1,024 events: open the window after the warm-up, close it at its end
            nonlocal c0, t0, cpu0
            now = loop.time()
            if c0 is None:
                if now >= start:
                    c0, t0, cpu0 = count, now, time.process_time()
                return False
            return now >= end

        if tier == "handler":
            async for event in shard:
                await handler(event)
                if not count & 1023 and window_over():
                    break
        else:  # bare: every event decoded; raw: the text of every message, for forwarding
            next_event = shard.next_event if tier == "bare" else shard.next_message
            while True:
                event = await next_event()
                count += 1
                if not count & 1023 and window_over():
                    break
        elapsed = loop.time() - t0
        emit({"events_per_s": (count - c0) / elapsed, "cpu": (time.process_time() - cpu0) / elapsed})
        await shard.close()

    gateway.run(main())


def client_dpy(port: int, seconds: float, warmup: float, handler_tier: bool) -> None:
    sys.modules["zstandard"] = None  # type: ignore[assignment]  # pin discord.py to zlib-stream
    import discord
    import yarl
    from discord import http as dhttp
    from discord.gateway import DiscordWebSocket

    assert discord.utils._ActiveDecompressionContext.COMPRESSION_TYPE == "zlib-stream"
    dhttp.Route.BASE = f"http://127.0.0.1:{port}/api/v10"
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"ws://127.0.0.1:{port}/")
    count = 0

    class Bench(discord.Client):
        async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
            return

    kw: dict[str, object] = {"intents": discord.Intents.default()}
    if not handler_tier:
        kw["max_messages"] = None
    client = Bench(**kw)  # type: ignore[arg-type]
    if handler_tier:
        @client.event
        async def on_message(message: discord.Message) -> None:
            nonlocal count
            count += 1
    else:
        def counter(data: object) -> None:
            nonlocal count
            count += 1
        client._connection.parsers["MESSAGE_CREATE"] = counter

    async def main() -> None:
        async with client:
            task = asyncio.create_task(client.start(TOKEN))
            await client.wait_until_ready()
            await emit_rate(lambda: count, warmup, seconds)
            await client.close()
            task.cancel()

    asyncio.run(main())


def client_hikari(port: int, seconds: float, warmup: float, handler_tier: bool) -> None:
    import hikari
    count = 0

    if handler_tier:
        bot = hikari.GatewayBot(TOKEN, rest_url=f"http://127.0.0.1:{port}/api/v10", banner=None, logs="WARNING",
                                suppress_optimization_warning=True)

        @bot.listen(hikari.GuildMessageCreateEvent)
        async def on_message(event: hikari.GuildMessageCreateEvent) -> None:
            nonlocal count
            count += 1

        async def main() -> None:
            await bot.start(shard_count=1, check_for_updates=False)
            await emit_rate(lambda: count, warmup, seconds)
            await bot.close()

        asyncio.run(main())
        return

    from hikari.impl import config as hconfig
    from hikari.impl import shard as shard_impl

    class RawEventManager:
        def consume_raw_event(self, name: str, shard: object, payload: object) -> None:
            nonlocal count
            count += 1

        async def dispatch(self, event: object, *, return_tasks: bool = False) -> None:
            return None

    class RawEventFactory:
        def deserialize_connected_event(self, shard: object) -> None:
            return None

        def deserialize_disconnected_event(self, shard: object) -> None:
            return None

    async def main_raw() -> None:
        s = shard_impl.GatewayShardImpl(
            token=TOKEN, url=f"ws://127.0.0.1:{port}", intents=hikari.Intents.GUILDS | hikari.Intents.GUILD_MESSAGES,
            shard_id=0, shard_count=1, http_settings=hconfig.HTTPSettings(), proxy_settings=hconfig.ProxySettings(),
            event_manager=RawEventManager(), event_factory=RawEventFactory())  # type: ignore[arg-type]
        await s.start()
        await emit_rate(lambda: count, warmup, seconds)
        await s.close()

    asyncio.run(main_raw())


def client_ceiling(port: int, seconds: float, warmup: float, frames_wanted: int = 30000) -> None:
    """Record the flood's frames with a plain websockets client, then inflate + decode them in a loop."""
    import zlib

    import msgspec
    from websockets.sync.client import connect
    from zlib_ng import zlib_ng

    frames: list[bytes] = []
    with connect(f"ws://127.0.0.1:{port}/?v=10&encoding=json&compress=zlib-stream", compression=None,
                 max_size=None) as ws:
        identify = {"op": 2, "d": {"token": TOKEN, "intents": 513, "shard": [0, 1],
                                   "properties": {"os": "linux", "browser": "bench", "device": "bench"}}}
        frames.append(ws.recv())
        ws.send(json.dumps(identify))
        while len(frames) < frames_wanted:
            frames.append(ws.recv())
    results: dict[str, object] = {"frames": len(frames)}
    decoder = msgspec.json.Decoder()

    def measure() -> dict[str, float]:
        out = {}
        for name, module in (("zlib-ng", zlib_ng), ("zlib", zlib)):
            best = 0.0
            for _ in range(5):
                d = module.decompressobj()
                decompress, decode = d.decompress, decoder.decode
                t = time.perf_counter()
                for f in frames:
                    decode(decompress(f))
                best = max(best, len(frames) / (time.perf_counter() - t))
            out[name] = best
        return out

    results.update(measure())
    # The same loop while the flood server is busy on the other core (a discarding reader keeps it
    # flooding), i.e. under the conditions the clients were measured in.
    reader = subprocess.Popen([PY, str(Path(__file__).resolve()), "--client", "discard", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2.0)
    loaded = measure()
    reader.kill()
    reader.wait()
    results["zlib-ng-loaded"] = loaded["zlib-ng"]
    results["zlib-loaded"] = loaded["zlib"]
    raw = sum(len(zlib_ng.decompressobj().decompress(b"".join(frames))) for _ in range(1)) / len(frames)
    results["mean_message_bytes"] = raw
    results["mean_frame_bytes"] = sum(map(len, frames)) / len(frames)
    emit(results)


def client_discard(port: int) -> None:
    """Identify, then read and discard the flood as fast as the socket gives it (keeps the server busy)."""
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{port}/?v=10&encoding=json&compress=zlib-stream", compression=None,
                 max_size=None) as ws:
        ws.recv()
        ws.send(json.dumps({"op": 2, "d": {"token": TOKEN, "intents": 513, "shard": [0, 1],
                                           "properties": {"os": "linux", "browser": "bench", "device": "bench"}}}))
        sock = ws.socket
        while sock.recv(1 << 20):
            pass


def client_memory(port: int, count: int, compression: str) -> None:
    sys.path.insert(0, str(ROOT))
    import shard as gateway
    from shard import Config, InMemoryQueue, Intents, Shard, ShardId

    async def main() -> None:
        gc.collect()
        base = rss_kib()
        # The simulator's identify window is 0.05 s; 0.25 s keeps a margin for event-loop lag with 1024 shards.
        queue = InMemoryQueue(max_concurrency=256, remaining=1_000_000, total=1_000_000, interval=0.25)
        shards = [Shard.with_config(ShardId(n, count), Config(
            TOKEN, Intents.GUILDS, gateway_url=f"ws://127.0.0.1:{port}/", compression=compression,  # type: ignore[arg-type]
            queue=queue, metrics=False)) for n in range(count)]
        ready = asyncio.Event()
        left = [count]

        async def consume(s: Shard) -> None:
            # A consumer that keeps no event alive (the shard itself caches nothing).
            seen_guild = False
            while True:
                try:
                    event_type = (await s.next_event()).type
                except gateway.GatewayError as error:
                    if error.is_fatal():
                        return
                    continue
                if event_type == "GUILD_CREATE" and not seen_guild:
                    seen_guild = True
                    left[0] -= 1
                    if not left[0]:
                        ready.set()

        tasks = [asyncio.create_task(consume(s)) for s in shards]
        await asyncio.wait_for(ready.wait(), 120)
        await asyncio.sleep(2.0)
        gc.collect()
        await asyncio.sleep(0.5)
        emit({"shards": count, "rss_kib": rss_kib(), "base_kib": base})
        for s in shards:
            await s.close()
        for t in tasks:
            t.cancel()

    gateway.run(main())


# ---------------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------------

PEERS_FAKEGW = Path("/work/shared/peers/fakegw.py")


class Sim:
    """The flood server in its own process: `python -m sim` (default), or the peers' fakegw.py
    (pre-compressed replay, near-zero server cost) with `fakegw=True`."""

    def __init__(self, *args: str, fakegw: bool = False) -> None:
        self.port = _free_port()
        if fakegw:
            cmd = [PY, str(PEERS_FAKEGW), "--port", str(self.port), "--flood", "--flood-delay", "0.5",
                   "--max-concurrency", "16"]
            self.cmd = f"python {PEERS_FAKEGW} " + " ".join(cmd[2:])
        else:
            cmd = [PY, "-m", "sim", "--port", str(self.port), "--quiet", "--token", TOKEN, *args]
            self.cmd = " ".join(["python", "-m", "sim", *cmd[3:]])
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                import socket
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the simulator did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_client(args: list[str], timeout: float = 240) -> dict[str, object]:
    cmd = [PY, "-O", str(Path(__file__).resolve()), *args]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"client {args} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")


CLIENTS = (("shardstack", "handler", "ours-handler"), ("shardstack", "bare", "ours-bare"),
           ("shardstack", "raw (next_message)", "ours-raw"),
           ("discord.py 2.7.1", "handler", "dpy-handler"), ("discord.py 2.7.1", "bare", "dpy-bare"),
           ("hikari 2.7.0", "handler", "hikari-handler"), ("hikari 2.7.0", "bare", "hikari-bare"))


def throughput(seconds: float, warmup: float, rounds: int, fakegw: bool = False
               ) -> tuple[list[tuple[str, str, float, float]], dict[str, object], str]:
    """Every client once per round, interleaved (this machine is shared and noisy); median per client."""
    sim = Sim("--flood", "--flood-replay", "--shards", "1", "--guilds-per-shard", "1", "--zlib-level", "1",
              "--max-concurrency", "16", "--identify-window", "0.05", "--session-limit", "100000",
              "--privileged-intents", "33026", "--no-strict-intents", fakegw=fakegw)
    samples: dict[str, list[tuple[float, float]]] = {}
    ceilings: list[dict[str, object]] = []
    try:
        common = ["--port", str(sim.port), "--seconds", str(seconds), "--warmup", str(warmup)]
        for n in range(rounds):
            for label, tier, client in CLIENTS:
                r = run_client(["--client", client, *common])
                samples.setdefault(client, []).append((float(r["events_per_s"]), float(r["cpu"])))  # type: ignore[arg-type]
                print(f"  round {n + 1}: {label:18} {tier:8} {samples[client][-1][0]:>10,.0f} events/s "
                      f"(client CPU {samples[client][-1][1]:.0%})", flush=True)
            c = run_client(["--client", "ceiling", *common])
            ceilings.append(c)
            print(f"  round {n + 1}: decode ceiling: zlib-ng {float(c['zlib-ng']):,.0f}/s, "  # type: ignore[arg-type]
                  f"zlib {float(c['zlib']):,.0f}/s; with the flood server busy: zlib-ng "
                  f"{float(c['zlib-ng-loaded']):,.0f}/s", flush=True)  # type: ignore[arg-type]
    finally:
        sim.stop()
    ceiling = dict(ceilings[0])
    for key in ("zlib-ng", "zlib", "zlib-ng-loaded", "zlib-loaded"):
        values = sorted(float(c[key]) for c in ceilings)  # type: ignore[arg-type]
        ceiling[key] = values[len(values) // 2]
    ceiling["round_ratios"] = [samples["ours-bare"][n][0] / float(c["zlib-ng"])  # type: ignore[arg-type]
                               for n, c in enumerate(ceilings)]
    rows = []
    for label, tier, client in CLIENTS:
        ordered = sorted(samples[client])
        eps, cpu = ordered[len(ordered) // 2]
        rows.append((label, tier, eps, cpu))
    return rows, ceiling, sim.cmd


def memory(counts: list[int]) -> tuple[dict[str, list[tuple[int, int]]], str]:
    results: dict[str, list[tuple[int, int]]] = {}
    sim = Sim("--shards", str(max(counts)), "--guilds-per-shard", "1", "--max-concurrency", "256",
              "--identify-window", "0.05", "--session-limit", "1000000", "--heartbeat-interval", "41250")
    try:
        for compression in ("zlib-stream", "zstd-stream"):
            for n in counts:
                r = run_client(["--client", "memory", "--port", str(sim.port), "--count", str(n),
                                "--compression", compression])
                results.setdefault(compression, []).append((n, int(r["rss_kib"])))  # type: ignore[arg-type]
                print(f"  {compression:12} {n:>5} shards: RSS {int(r['rss_kib']) / 1024:.1f} MiB", flush=True)
    finally:
        sim.stop()
    return results, sim.cmd


def per_shard(points: list[tuple[int, int]]) -> list[tuple[str, float]]:
    (n1, r1) = points[0]
    return [(f"{n1}->{n}", (r - r1) / (n - n1)) for n, r in points[1:]]


def report(rows: list[tuple[str, str, float, float]], ceiling: dict[str, object], sim_cmd: str,
           mem: dict[str, list[tuple[int, int]]] | None, mem_cmd: str | None, seconds: float, rounds: int) -> str:
    get = {(label, tier): eps for label, tier, eps, _ in rows}
    ours_h, ours_b = get[("shardstack", "handler")], get[("shardstack", "bare")]
    dpy_h, dpy_b = get[("discord.py 2.7.1", "handler")], get[("discord.py 2.7.1", "bare")]
    hik_h, hik_b = get[("hikari 2.7.0", "handler")], get[("hikari 2.7.0", "bare")]
    ceil_ng, ceil_z = float(ceiling["zlib-ng"]), float(ceiling["zlib"])  # type: ignore[arg-type]
    ceil_ng_l, ceil_z_l = float(ceiling["zlib-ng-loaded"]), float(ceiling["zlib-loaded"])  # type: ignore[arg-type]

    def check(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    lines = [
        "# Shard throughput and memory",
        "",
        f"Command: `{' '.join(['.venv/bin/python bench/shard_throughput.py', *sys.argv[1:]])}` "
        f"(from the repository root). Machine: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.platform()}; "
        f"run at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}.",
        "",
        f"Flood: `{sim_cmd}` (its own process). One shard, zlib-stream, MESSAGE_CREATE of "
        f"{float(ceiling['mean_message_bytes']):.0f} B on average "  # type: ignore[arg-type]
        f"({float(ceiling['mean_frame_bytes']):.0f} B on the wire). "  # type: ignore[arg-type]
        f"Each client in its own process, {seconds:g} s window after READY and a warm-up; "
        "events counted by the client; "
        f"the clients run interleaved, {rounds} rounds, and the table shows each client's median round.",
        "",
        "| client | tier | events/s | client CPU |",
        "| --- | --- | ---: | ---: |",
    ]
    for label, tier, eps, cpu in rows:
        lines.append(f"| {label} | {tier} | {eps:,.0f} | {cpu:.0%} |")
    lines += [
        f"| decode ceiling (inflate zlib-ng + msgspec, no I/O) | ceiling | {ceil_ng:,.0f} | 100% |",
        f"| decode ceiling (inflate stock zlib + msgspec, no I/O) | ceiling | {ceil_z:,.0f} | 100% |",
        "| decode ceiling, zlib-ng, while the flood server and a discarding reader run "
        f"(3 busy processes on 2 cores: pessimistic) | ceiling | {ceil_ng_l:,.0f} | 100% |",
        "| decode ceiling, stock zlib, while the flood server and a discarding reader run "
        f"(3 busy processes on 2 cores: pessimistic) | ceiling | {ceil_z_l:,.0f} | 100% |",
        "",
        "## Targets",
        "",
        "| target | measured | result |",
        "| --- | --- | --- |",
        f"| handler tier >= 3x discord.py `on_message` | {ours_h / dpy_h:.2f}x | {check(ours_h >= 3 * dpy_h)} |",
        f"| handler tier >= 5x hikari default listener | {ours_h / hik_h:.2f}x | {check(ours_h >= 5 * hik_h)} |",
        f"| bare tier >= 1.25x hikari bare | {ours_b / hik_b:.2f}x | {check(ours_b >= 1.25 * hik_b)} |",
        f"| bare tier >= 1.5x discord.py bare | {ours_b / dpy_b:.2f}x | {check(ours_b >= 1.5 * dpy_b)} |",
        f"| bare tier >= 70% of the decode ceiling (same backend, zlib-ng), ceiling on an idle machine | "
        f"{ours_b / ceil_ng:.0%} | {check(ours_b >= 0.7 * ceil_ng)} |",
        f"| bare tier >= 70% of the decode ceiling (zlib-ng), ceiling with the flood server and a discarding "
        f"reader busy (pessimistic, indicative only) | {ours_b / ceil_ng_l:.0%} | {check(ours_b >= 0.7 * ceil_ng_l)} |",
        "",
        "Bare tier / decode ceiling within each round (the spread on this shared machine): "
        + ", ".join(f"{r:.0%}" for r in ceiling["round_ratios"]) + ".",  # type: ignore[union-attr]
    ]
    if mem:
        lines += ["", "## Idle memory per additional shard", "",
                  f"Simulator: `{mem_cmd}`. One client process holds N shards (READY, one guild each, one consumer "
                  "task each, uvloop), RSS after a 2 s settle and gc.", "",
                  "| compression | shards | RSS (MiB) | per additional shard (KiB) |", "| --- | ---: | ---: | ---: |"]
        for compression, points in mem.items():
            slopes = dict(per_shard(points))
            for n, r in points:
                key = next((k for k in slopes if k.endswith(f"->{n}")), None)
                slope = f"{slopes[key]:.1f}" if key else ""
                lines.append(f"| {compression} | {n} | {r / 1024:.1f} | {slope} |")
        z = per_shard(mem["zlib-stream"])[-1][1]
        lines += ["", f"Target: at most 48 KiB per additional shard with zlib-stream: {z:.1f} KiB, "
                      f"{check(z <= 48)} (discord.py measured about 60-68 KiB, hikari about 73-81 KiB)."]
    return "\n".join(lines) + "\n"


def plot(rows: list[tuple[str, str, float, float]], ceiling: dict[str, object], path: Path, server: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["shardstack", "discord.py 2.7.1", "hikari 2.7.0"]
    get = {(label, tier): eps for label, tier, eps, _ in rows}
    fig, ax = plt.subplots(figsize=(9, 5))
    width = 0.38
    xs = range(len(labels))
    h = [get[(label, "handler")] / 1000 for label in labels]
    b = [get[(label, "bare")] / 1000 for label in labels]
    bars1 = ax.bar([x - width / 2 for x in xs], h, width, label="handler tier (default decoding)")
    bars2 = ax.bar([x + width / 2 for x in xs], b, width, label="bare tier (inflate + full decode)")
    ax.axhline(float(ceiling["zlib-ng"]) / 1000, color="grey", linestyle="--",  # type: ignore[arg-type]
               label="decode ceiling (zlib-ng + msgspec, no I/O)")
    for bars in (bars1, bars2):
        for bar in bars:
            ax.annotate(f"{bar.get_height():.0f}k", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=9)
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("MESSAGE_CREATE events/s (thousands)")
    ax.set_title(f"One shard, zlib-stream flood from {server}, ~1 KB messages")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--client")
    ap.add_argument("--port", type=int)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--count", type=int)
    ap.add_argument("--compression", default="zlib-stream")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--fakegw", action="store_true",
                    help="flood from the peers' fakegw.py (pre-compressed replay) instead of sim/")
    ap.add_argument("--out", default="shard_throughput", help="file stem under bench/results/")
    ap.add_argument("--memory-counts", default="1,128,1024")
    args = ap.parse_args()

    if args.client:
        name = args.client
        if name in ("ours-handler", "ours-bare", "ours-raw"):
            client_ours(args.port, args.seconds, args.warmup, name[5:])
        elif name in ("dpy-handler", "dpy-bare"):
            client_dpy(args.port, args.seconds, args.warmup, name == "dpy-handler")
        elif name in ("hikari-handler", "hikari-bare"):
            client_hikari(args.port, args.seconds, args.warmup, name == "hikari-handler")
        elif name == "ceiling":
            client_ceiling(args.port, args.seconds, args.warmup)
        elif name == "discard":
            client_discard(args.port)
        elif name == "memory":
            client_memory(args.port, args.count, args.compression)
        else:
            raise SystemExit(f"unknown client {name}")
        return

    RESULTS.mkdir(parents=True, exist_ok=True)
    print("throughput (one flooded shard):", flush=True)
    rows, ceiling, sim_cmd = throughput(args.seconds, args.warmup, args.rounds, args.fakegw)
    mem = mem_cmd = None
    if not args.skip_memory:
        print("idle memory:", flush=True)
        mem, mem_cmd = memory([int(x) for x in args.memory_counts.split(",")])
    text = report(rows, ceiling, sim_cmd, mem, mem_cmd, args.seconds, args.rounds)
    md, png = RESULTS / f"{args.out}.md", RESULTS / f"{args.out}.png"
    md.write_text(text)
    plot(rows, ceiling, png, "fakegw.py" if args.fakegw else "sim/")
    print()
    print(text)
    print(f"wrote {md} and {png}")


if __name__ == "__main__":
    main()
