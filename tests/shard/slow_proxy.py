"""A TCP proxy in front of the simulator that makes chosen connections slow: a late WebSocket handshake
reply (a slow connect) and a late Hello, like a congested or distant gateway."""

from __future__ import annotations

import asyncio
import contextlib


class SlowProxy:
    """Forwards to `port`. Connection number `n` (0-based, in accept order) listed in `delays` as
    `(head, rest)` gets the server's HTTP reply head `head` seconds after it connected, and everything
    after it (Hello first) from `rest` seconds on. Other connections pass straight through."""

    def __init__(self, port: int, delays: dict[int, tuple[float, float]]) -> None:
        self.target = port
        self.delays = delays
        self.accepted = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        """Start listening; returns the gateway URL to give the shards."""
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/"

    async def close(self) -> None:
        self.server.close()
        for task in list(self._tasks):
            task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        head, rest = self.delays.get(self.accepted, (0.0, 0.0))
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, hold: bool) -> None:
            buf = b""
            try:
                while data := await src.read(65536):
                    if hold:  # hold the reply head until `head`, the rest until `rest`
                        buf += data
                        end = buf.find(b"\r\n\r\n")
                        if end < 0:
                            continue
                        await asyncio.sleep(max(0.0, start + head - loop.time()))
                        dst.write(buf[:end + 4])
                        await asyncio.sleep(max(0.0, start + rest - loop.time()))
                        data, hold = buf[end + 4:], False
                    if data:
                        dst.write(data)
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        for task in (loop.create_task(pipe(reader, up_writer, False)),
                     loop.create_task(pipe(up_reader, writer, True))):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
