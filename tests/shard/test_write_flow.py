"""Write flow control against a raw server over a real socket: a gateway that sends pings and never reads."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket

from shard import Config, InMemoryQueue, Intents, Shard, ShardId

from shard_helpers import Recorder

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
HELLO = b'{"op":10,"d":{"heartbeat_interval":60000}}'
PING = b"\x89\x7d" + b"p" * 125  # an unmasked server ping with the largest payload a control frame may carry


def server_frame(first: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes([first, len(payload)]) + payload


class PingFlood(asyncio.Protocol):
    """Accepts the WebSocket handshake, sends Hello, then (on the first connection only) floods pings
    without ever reading again, up to `limit` pings or until the client drops the connection."""

    def __init__(self, server: RawGateway) -> None:
        self.server = server
        self.buf: bytes | None = b""
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.append(self)

    def data_received(self, data: bytes) -> None:
        if self.buf is None:
            return  # after the handshake: the frames the client sends are ignored
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            return
        key = next(line.split(b":", 1)[1].strip() for line in self.buf.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        self.buf = None
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + server_frame(0x81, HELLO))
        if len(self.server.connections) == 1:
            self.transport.pause_reading()  # never read the client again: its pongs pile up on its side
            asyncio.get_running_loop().create_task(self.flood())

    async def flood(self) -> None:
        """One ping per write, a millisecond apart, so that the client reads them (and answers each: it
        keeps only the latest pong of what it processes at once) one by one."""
        assert self.transport is not None
        await self.server.go.wait()
        while not self.lost.done() and self.server.pings < self.server.limit:
            await self.writable.wait()
            if self.lost.done():
                break
            self.transport.write(PING)
            self.server.pings += 1
            self.server.sample()
            await asyncio.sleep(0.001)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        if not self.lost.done():
            self.lost.set_result(None)


class RawGateway:
    def __init__(self, limit: int) -> None:
        self.connections: list[PingFlood] = []
        self.pings = 0
        self.limit = limit
        self.shard: Shard | None = None
        self.most_buffered = 0  # the client's largest write buffer seen during the flood
        self.go = asyncio.Event()

    def sample(self) -> None:
        conn = self.shard._conn if self.shard is not None else None
        if conn is not None and conn.transport is not None:
            self.most_buffered = max(self.most_buffered, conn.transport.get_write_buffer_size())

    async def start(self) -> int:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # little room in the kernels for pongs
        sock.bind(("127.0.0.1", 0))
        self.server = await asyncio.get_running_loop().create_server(lambda: PingFlood(self), sock=sock)
        return sock.getsockname()[1]


async def test_a_ping_flood_that_is_never_read_keeps_the_write_buffer_bounded_and_is_dropped() -> None:
    gw = RawGateway(limit=4_000)  # answered one by one: 524 KB of pongs
    port = await gw.start()
    shard = gw.shard = Shard.with_config(ShardId(0, 1), Config(
        "x.y.z", Intents.GUILDS, gateway_url=f"ws://127.0.0.1:{port}", compression=None,
        queue=InMemoryQueue(max_concurrency=0), metrics=False, write_timeout=0.5, backoff_base=0.05, close_timeout=0.2))
    rec = Recorder(shard)
    try:
        await rec.wait_for(lambda r: r.count("GATEWAY_HELLO") >= 1)
        # little room in the kernels (no send buffer autotuning): the transport's own buffer fills
        shard._conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        gw.go.set()
        first = gw.connections[0]
        await asyncio.wait_for(first.lost, 20)  # the shard gives up on the connection (write_timeout)...
        assert gw.pings < gw.limit  # ...while the flood was still going
        await rec.wait_for(lambda r: r.count("GATEWAY_HELLO") >= 2)  # and connects again
        # the transport pauses writing at its 64 KiB high-water mark; pongs are not queued beyond that
        assert 0 < gw.most_buffered <= 66 * 1024
        assert rec.count("GATEWAY_CLOSE") >= 1
    finally:
        await rec.stop()
        await shard.close()
        gw.server.close()
