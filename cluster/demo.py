"""``python -m cluster.demo`` (``make demo``): the whole stack on this machine.

Starts the simulator (``python -m sim``) as a separate process, with events flowing, then
runs the supervisor with 4 workers and the example handler against it: a progress bar while
the shards identify, then a live status line with the event rate and the metrics URL.
Ctrl-C drains the workers resumably and stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import tempfile

from cluster.config import ClusterConfig
from shard import run as shard_run

__all__ = ["main"]


async def start_sim(args: argparse.Namespace) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim", "--port", "0", "--quiet", "--shards", str(args.shards),
        "--max-concurrency", str(args.max_concurrency), "--identify-window", str(args.identify_window),
        "--events-per-second", str(args.events_per_second),
        stdout=asyncio.subprocess.PIPE, start_new_session=True)  # Ctrl-C goes to the supervisor only
    urls: dict[str, str] = {}
    assert proc.stdout is not None
    while len(urls) < 3:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        if not line:
            raise RuntimeError("the simulator exited before it was ready")
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "[sim]" and parts[1] in ("gateway", "rest", "admin"):
            urls[parts[1]] = parts[2]
    return proc, urls


def http_port(wanted: int) -> int:
    """``wanted``, or a free port when it is taken (another demo, another service on 9100)."""
    if wanted == 0:
        return 0
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", wanted))
        except OSError:
            s.bind(("127.0.0.1", 0))
            print(f"port {wanted} is in use: using {s.getsockname()[1]}", flush=True)
        return int(s.getsockname()[1])


async def demo(args: argparse.Namespace) -> int:
    from cluster.display import StatusDisplay
    from cluster.supervisor import Supervisor
    from sim import DEFAULT_TOKEN

    sim, urls = await start_sim(args)
    print(f"simulator: gateway {urls['gateway']} · REST {urls['rest']} · stats {urls['admin']}", flush=True)
    state_dir = tempfile.TemporaryDirectory(prefix="cluster-demo-")  # removed when the demo stops
    cfg = ClusterConfig(handler="cluster.example:ExampleHandler", workers=args.workers,
                        gateway_url=urls["gateway"], api_url=urls["rest"], identify_window=args.identify_window,
                        http_port=http_port(args.http_port), state_file=os.path.join(state_dir.name, "state.json"),
                        report_interval=0.5, log_level="WARNING")
    sup = Supervisor(cfg, token=DEFAULT_TOKEN)
    display = asyncio.get_running_loop().create_task(
        StatusDisplay(sup, tty=sys.stderr.isatty(), plain_every=2.0).run())
    if args.duration:
        asyncio.get_running_loop().call_later(args.duration, sup.stop)
    print(f"supervisor: {cfg.workers} workers, {args.shards} shards, max_concurrency {args.max_concurrency}"
          + (f"; metrics at http://{cfg.http_host}:{cfg.http_port}/metrics" if cfg.http_port else "")
          + " · Ctrl-C to stop", flush=True)
    try:
        code = await sup.run()
    finally:
        display.cancel()
        await asyncio.gather(display, return_exceptions=True)
        if sim.returncode is None:
            sim.send_signal(signal.SIGTERM)
            await sim.wait()
        state_dir.cleanup()
    snap = sup.snapshot()
    total = sum(sum(s.events.values()) for s in snap.shards)
    print(f"stopped: {total:,} events handled; {sum(snap.identifies.values())} identifies; exit code {code}",
          flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cluster.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--max-concurrency", type=int, default=4)
    p.add_argument("--identify-window", type=float, default=1.0,
                   help="the simulator's identify window (Discord's is 5 s)")
    p.add_argument("--events-per-second", type=float, default=5.0, help="per shard")
    p.add_argument("--http-port", type=int, default=9100,
                   help="port of /metrics and the status page (a free one if it is taken; 0: any free one)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: run until Ctrl-C)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return shard_run(demo(args))


if __name__ == "__main__":
    sys.exit(main())
