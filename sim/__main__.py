"""``python -m sim``: run the simulator and print its URLs and live stats."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
import typing

from .config import SimConfig
from .server import Simulator


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sim",
                                     description="A strict local Discord gateway + REST simulator.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(SimConfig)
    for f in dataclasses.fields(SimConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        meta = dict(f.metadata)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=meta["help"])
            continue
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
        parser.add_argument(flag, type=base, default=f.default, help=meta["help"], choices=meta.get("choices"),
                            metavar=f.name.upper())
    parser.add_argument("--quiet", action="store_true", help="do not print live stats")
    parser.add_argument("--stats-interval", type=float, default=2.0, help="seconds between stats lines")
    return parser


def stats_line(sim: Simulator, previous: int, interval: float) -> tuple[str, int]:
    t = sim.stats.snapshot()["total"]
    rate = (t["dispatched"] - previous) / interval
    line = (f"[sim] conns={t['open_connections']} identifies={t['identifies']} resumes={t['resumes']} "
            f"heartbeats={t['heartbeats']} dispatched={t['dispatched']} ({rate:,.0f}/s) "
            f"violations={t['violations']} lost={t['lost']} sessions_left={sim.remaining}")
    if sim.guild_events.total or sim.config.guild_events_per_second:  # the shared guild stream is in use
        line += f" guild_events={sim.guild_events.total} guilds={sim.total_guilds}"
    return line, t["dispatched"]


async def run(args: argparse.Namespace) -> None:
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(SimConfig)}
    sim = Simulator(SimConfig(**options))
    await sim.start()
    print(f"[sim] gateway   {sim.url}\n[sim] resume    {sim.resume_url}\n[sim] rest      {sim.api_url}\n"
          f"[sim] admin     {sim.admin_url}/stats\n[sim] token     {sim.token[:10]}... (pass --token to set it)",
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    previous = 0
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), args.stats_interval)
            except TimeoutError:
                if not args.quiet:
                    line, previous = stats_line(sim, previous, args.stats_interval)
                    print(line, flush=True)
    finally:
        await sim.stop()
        print("[sim] stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        SimConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SimConfig)})
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(run(args))
    else:
        uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
