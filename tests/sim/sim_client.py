"""A raw gateway test client built on the `websockets` library: an implementation independent of sim/ and shard/.

It speaks just enough of the protocol to provoke each rule: it decodes every transport the simulator offers
(plain text, Identify payload compression, zlib-stream with one inflater per connection, zstd-stream with one
decompressobj per connection), keeps the last sequence number, and reports how the server ended the connection.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import zstandard
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

SUFFIX = b"\x00\x00\xff\xff"
GUILDS = 1 << 0
GUILD_MEMBERS = 1 << 1
GUILD_PRESENCES = 1 << 8
GUILD_MESSAGES = 1 << 9
GUILD_VOICE_STATES = 1 << 7
DEFAULT_INTENTS = GUILDS | GUILD_MESSAGES
PROPERTIES = {"os": "linux", "browser": "sim-tests", "device": "sim-tests"}


@dataclass
class Ended:
    """How a connection ended: `code`/`reason` of the server's close frame, or `code=None` for a bare TCP drop."""

    code: int | None
    reason: str
    received: list[dict[str, Any]]


class GatewayClient:
    """One raw gateway connection. Build with `await GatewayClient.open(url, ...)`."""

    def __init__(self, ws: ClientConnection, compress: str | None) -> None:
        self.ws = ws
        self.compress = compress
        self.inflater = zlib.decompressobj() if compress == "zlib-stream" else None
        self.zstd = zstandard.ZstdDecompressor().decompressobj() if compress == "zstd-stream" else None
        self._zbuf = bytearray()
        self.messages: list[str | bytes] = []  # every WebSocket message as received, before decoding
        self.seq: int | None = None
        self.hello: dict[str, Any] | None = None

    @classmethod
    async def open(cls, url: str, *, compress: str | None = None, v: str | None = "10", encoding: str | None = "json",
                   query: str = "", hello: bool = True) -> GatewayClient:
        params = [p for p in (f"v={v}" if v is not None else "", f"encoding={encoding}" if encoding else "",
                              f"compress={compress}" if compress else "", query) if p]
        ws = await connect(url + "?" + "&".join(params), compression=None, max_size=None, ping_interval=None,
                           open_timeout=5, close_timeout=2)
        client = cls(ws, compress)
        if hello:
            client.hello = await client.recv()
            assert client.hello["op"] == 10, client.hello
        return client

    # ---- decoding --------------------------------------------------------------------------------

    def decode(self, message: str | bytes) -> dict[str, Any] | None:
        """One WebSocket message to a payload; None while a zlib-stream message is still incomplete."""
        if self.compress == "zlib-stream":
            assert isinstance(message, bytes), "zlib-stream must use binary frames"
            self._zbuf += message
            if not self._zbuf.endswith(SUFFIX):
                return None
            data = self.inflater.decompress(bytes(self._zbuf))
            self._zbuf.clear()
        elif self.compress == "zstd-stream":
            assert isinstance(message, bytes), "zstd-stream must use binary frames"
            data = self.zstd.decompress(message)
        elif isinstance(message, bytes):  # Identify compress:true: a standalone zlib payload
            data = zlib.decompress(message)
        else:
            data = message.encode()
        return json.loads(data)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next payload (raises ConnectionClosed if the server ends the connection)."""
        while True:
            message = await asyncio.wait_for(self.ws.recv(), timeout)
            self.messages.append(message)
            payload = self.decode(message)
            if payload is None:
                continue
            if payload.get("s") is not None:
                self.seq = payload["s"]
            return payload

    async def recv_until(self, *, op: int | None = None, t: str | None = None,
                         timeout: float = 5.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Read until a payload with this op (and event name); returns it and everything read before it."""
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                p = await self.recv(timeout)
                if (op is None or p["op"] == op) and (t is None or p.get("t") == t):
                    return p, seen
                seen.append(p)

    async def ended(self, timeout: float = 5.0) -> Ended:
        """Read until the server ends the connection; returns the close code (None for a TCP drop)."""
        received: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    received.append(await self.recv(timeout))
        except ConnectionClosed as closed:
            if closed.rcvd is None:
                return Ended(None, "", received)
            return Ended(closed.rcvd.code, closed.rcvd.reason, received)

    # ---- sending ---------------------------------------------------------------------------------

    async def send(self, payload: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(payload))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def heartbeat(self, d: int | str | None = "seq") -> None:
        await self.send({"op": 1, "d": self.seq if d == "seq" else d})

    async def identify(self, token: str, *, shard: tuple[int, int] | list[int] | None = (0, 1),
                       intents: int | None = DEFAULT_INTENTS, **extra: Any) -> None:
        d: dict[str, Any] = {"token": token, "properties": PROPERTIES, **extra}
        if shard is not None:
            d["shard"] = list(shard)
        if intents is not None:
            d["intents"] = intents
        await self.send({"op": 2, "d": d})

    async def ready(self, token: str, **kw: Any) -> dict[str, Any]:
        """Identify and return READY."""
        await self.identify(token, **kw)
        ready, _ = await self.recv_until(t="READY")
        return ready

    async def resume(self, token: str, session_id: str, seq: int | None) -> None:
        await self.send({"op": 6, "d": {"token": token, "session_id": session_id, "seq": seq}})

    async def close(self, code: int = 1000) -> None:
        await self.ws.close(code)

    def drop(self) -> None:
        """End the TCP connection without a close frame."""
        self.ws.transport.abort()


def http_get(url: str, headers: dict[str, str] | None = None, method: str = "GET",
             body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """A blocking HTTP request with the stdlib client: (status, headers with lower-case names, body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body,
                     headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


async def rest(url: str, headers: dict[str, str] | None = None, method: str = "GET",
               body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(http_get, url, headers, method, body)


def violations(snap: dict[str, Any], code: int) -> list[dict[str, Any]]:
    """Every counted violation with this code, across shards (and unidentified connections)."""
    return [v for shard in snap["shards"].values() for v in shard["violations"] if v["code"] == code]
