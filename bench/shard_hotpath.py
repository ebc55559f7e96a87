"""The shard's receive hot path without a socket, against the decode ceiling, in one process.

    .venv/bin/python bench/shard_hotpath.py                  # ~1 min: table, bench/results/shard_hotpath.md
    .venv/bin/python bench/shard_hotpath.py --rounds 10 --no-write   # quick look while working on the code

A low-noise companion to shard_throughput.py for work on the receive path (this machine is shared and
noisy; a socket and a second process add to the noise). One shard connects to an in-process simulator
and reaches READY. Then its socket stops reading, and each time the consumer would wait, the next 64 KiB
of a replay segment (1,024 MESSAGE_CREATEs, the bytes `python -m sim --flood --flood-replay` writes,
zlib-stream level 1) is handed to the shard as if the socket had read it. Rounds of `await
shard.next_event()` alternate with rounds of the decode ceiling: inflate (zlib-ng) + msgspec decode of the
same frames in a tight loop. Reported: the best round of each (the least disturbed) and the median of
the per-round ratios. The feeding uses the Shard's private `_conn`, `_wait` and `_on_data`.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
from zlib_ng import zlib_ng  # noqa: E402

import shard as gateway  # noqa: E402
from shard import Config, Intents, Shard, ShardId  # noqa: E402
from sim import Simulator, compress, traffic  # noqa: E402
from sim.wsframe import OP_BINARY, frame  # noqa: E402

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.x.y"
CHUNK = 64 * 1024


def segment() -> tuple[bytes, list[bytes]]:
    """The replay segment's WebSocket frames (as one byte string) and their compressed payloads."""
    payloads = compress.replay_messages(traffic.numbered(traffic.flood_pool(0, 1, 1, False), 1000), 1)
    return b"".join(frame(p, OP_BINARY) for p in payloads), payloads


def ceiling(payloads: list[bytes], passes: int) -> float:
    """Events/s of inflate + decode of the frames in a tight loop (a fresh stream: zlib header first)."""
    c = zlib.compressobj(1)
    d = zlib_ng.decompressobj()
    d.decompress(c.compress(b"") + c.flush(zlib.Z_SYNC_FLUSH))
    decompress, decode = d.decompress, msgspec.json.Decoder().decode
    t = time.perf_counter()
    for _ in range(passes):
        for p in payloads:
            decode(decompress(p))
    return passes * len(payloads) / (time.perf_counter() - t)


async def measure(rounds: int, seconds: float) -> tuple[list[float], list[float], dict[str, float]]:
    seg, payloads = segment()
    chunks = [seg[i:i + CHUNK] for i in range(0, len(seg), CHUNK)]
    async with Simulator(token=TOKEN, shards=1, guilds_per_shard=1, max_concurrency=16, identify_window=0.05,
                         session_limit=100000) as sim:
        cfg = Config(TOKEN, Intents.GUILDS | Intents.GUILD_MESSAGES, gateway_url=sim.url, metrics=False)
        sh = Shard.with_config(ShardId(0, 1), cfg)
        while (await sh.next_event()).type != "READY":
            pass
        conn = sh._conn
        assert conn is not None and conn.transport is not None
        conn.transport.pause_reading()
        fed = 0

        async def feed() -> None:  # instead of waiting for the socket
            nonlocal fed
            sh._on_data(conn, chunks[fed % len(chunks)])
            fed += 1

        sh._wait = feed  # type: ignore[method-assign]
        next_event = sh.next_event
        ours, ceil = [], []
        for _ in range(rounds):
            ceil.append(ceiling(payloads, 3))
            count, t = 0, time.perf_counter()
            end = t + seconds
            while True:
                await next_event()
                count += 1
                if not count & 1023 and time.perf_counter() >= end:
                    break
            ours.append(count / (time.perf_counter() - t))
        del sh._wait
        await sh.close()
    raw = zlib_ng.decompressobj().decompress(zlib.compressobj(1).compress(b"") + b"".join(payloads))
    return ours, ceil, {"message_bytes": len(raw) / len(payloads), "frame_bytes": len(seg) / len(payloads)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=0.5, help="length of one round of ours")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    ours, ceil, sizes = gateway.run(measure(args.rounds, args.seconds))
    ratios = [o / c for o, c in zip(ours, ceil, strict=True)]
    lines = [
        "# Shard receive hot path (no socket) vs the decode ceiling",
        "",
        f"Command: `{' '.join(['.venv/bin/python bench/shard_hotpath.py', *sys.argv[1:]])}` (from the repository "
        f"root). Python {platform.python_version()}, {platform.platform()}; run at "
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}. See the script's docstring for the method.",
        "",
        f"One shard, zlib-stream (zlib-ng), MESSAGE_CREATE of {sizes['message_bytes']:.0f} B on average "
        f"({sizes['frame_bytes']:.0f} B on the wire); {args.rounds} rounds of {args.seconds:g} s, interleaved.",
        "",
        "| | events/s (best round) | events/s (median round) |",
        "| --- | ---: | ---: |",
        f"| shard: `await next_event()` | {max(ours):,.0f} | {statistics.median(ours):,.0f} |",
        f"| ceiling: inflate + msgspec decode, tight loop | {max(ceil):,.0f} | {statistics.median(ceil):,.0f} |",
        "",
        f"Best round vs best round: **{max(ours) / max(ceil):.0%}** of the ceiling; median of the per-round ratios: "
        f"{statistics.median(ratios):.0%}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        out = ROOT / "bench" / "results" / "shard_hotpath.md"
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
