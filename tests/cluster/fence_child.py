"""A stand-in worker for test_fence.py: a "heartbeat" written to a socket every 20 ms by an asyncio timer,
under a Fence whose deadline is ``argv[2]`` seconds from now. It says ``ready`` on stdout once fenced."""

from __future__ import annotations

import asyncio
import socket
import sys
import time

from cluster.fence import Fence


async def main() -> None:
    port, ttl = int(sys.argv[1]), float(sys.argv[2])
    sock = socket.create_connection(("127.0.0.1", port))
    fence = Fence()
    fence.extend(time.monotonic() + ttl)
    print("ready", flush=True)
    n = 0
    while True:
        await asyncio.sleep(0.02)
        n += 1
        sock.sendall(b"%d\n" % n)


asyncio.run(main())
