"""A real worker-side process for the IPC tests: serves typed calls over its pipe end."""

from __future__ import annotations

import asyncio
import os
import time

import ipc
from ipc.protocol import Hello, Request


class Add(ipc.Call):
    a: int
    b: int


class Sleep(ipc.Call):
    seconds: float


class Block(ipc.Call):
    """Blocks the peer's event loop (time.sleep), as a misbehaving handler would. Right before it
    blocks, the peer sends a Hello again, so the test knows when the loop is blocked."""

    seconds: float


class Boom(ipc.Call):
    pass


class WhoAmI(ipc.Call):
    pass


class Exit(ipc.Call):
    code: int


class Big(ipc.Call):
    """Replies with ``size`` bytes."""

    size: int


class Size(ipc.Call):
    """Replies with the length of ``data``."""

    data: bytes


def serve(conn, worker_id: int = 0) -> None:
    asyncio.run(_serve(conn, worker_id))


async def _serve(conn, worker_id: int) -> None:
    async def handle(call: ipc.Call):
        match call:
            case Add(a, b):
                return a + b
            case Sleep(seconds):
                await asyncio.sleep(seconds)
                return "slept"
            case Block(seconds):
                channel.send(Hello(worker_id, os.getpid()))  # written to the pipe at once
                time.sleep(seconds)  # noqa: ASYNC251 - the fault: a blocked peer
                return "blocked"
            case Boom():
                raise ValueError("boom")
            case WhoAmI():
                return {"worker_id": worker_id, "pid": os.getpid()}
            case Exit(code):
                os._exit(code)
            case Big(size):
                return bytes(size)
            case Size(data):
                return len(data)
        raise NotImplementedError(type(call).__name__)

    async def reply(request: Request) -> None:
        channel.send(await ipc.answer(request, handle))

    def on_packet(packet) -> None:
        if isinstance(packet, Request):
            asyncio.get_running_loop().create_task(reply(packet))

    channel = await ipc.Channel.open(conn, on_packet, name=f"peer{worker_id}")
    channel.send(Hello(worker_id, os.getpid()))
    await channel.wait_closed()
