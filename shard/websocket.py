"""The WebSocket layer: the opening handshake through `websockets`' sans-I/O ClientProtocol, and masked
client frames through its Frame serializer.

The server's frames are not parsed here: `websockets` parses frames with a generator per frame (about
4 us each), more than inflating and decoding a 1 KB dispatch together, so `GatewayProtocol._process`
reads them in place with `shard.frames.parse_header`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake
from websockets.frames import EXTERNAL_CLOSE_CODES, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from .error import HandshakeError

__all__ = ["Handshake", "HandshakeError", "encode_text", "encode_close", "encode_pong", "build_url", "valid_close_code",
           "OP_CONT", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG"]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
USER_AGENT = "DiscordBot (https://github.com/shardstack, 0.1) shardstack"


def build_url(base: str, compression: str | None, version: int = 10) -> str:
    """`base` with `/?v=10&encoding=json[&compress=...]` (Discord URLs carry no query string)."""
    parts = urlsplit(base)
    path = parts.path or "/"
    query = f"v={version}&encoding=json" + (f"&compress={compression}" if compression else "")
    return f"{parts.scheme}://{parts.netloc}{path}?{query}"


class Handshake:
    """Client side of the opening handshake for one connection."""

    __slots__ = ("_proto", "_buf", "host", "port", "secure")

    def __init__(self, url: str) -> None:
        uri = parse_uri(url)
        self.host = uri.host
        self.port = uri.port
        self.secure = uri.secure
        self._proto = ClientProtocol(uri, max_size=None)
        self._buf = bytearray()

    def request(self) -> bytes:
        """The HTTP upgrade request to write."""
        request = self._proto.connect()
        request.headers["User-Agent"] = USER_AGENT
        self._proto.send_request(request)
        return b"".join(self._proto.data_to_send())

    def receive(self, data: bytes) -> bytes | None:
        """Feed response bytes. Returns the bytes after the response (frames) once it is complete and valid,
        None while incomplete; raises HandshakeError if the server refused."""
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > 65536:
                raise HandshakeError("the handshake response is too long")
            return None
        head, rest = bytes(self._buf[: end + 4]), bytes(self._buf[end + 4:])
        self._buf.clear()
        proto = self._proto
        proto.receive_data(head)
        proto.events_received()
        if proto.handshake_exc is not None or proto.state is not State.OPEN:
            exc = proto.handshake_exc
            detail = str(exc) if isinstance(exc, InvalidHandshake) else "invalid response"
            raise HandshakeError(f"the WebSocket handshake failed: {detail}")
        return rest


def encode_text(data: bytes) -> bytes:
    """A masked, final text frame."""
    return Frame(Opcode.TEXT, data).serialize(mask=True, extensions=[])


def valid_close_code(code: int) -> bool:
    """RFC 6455 7.4: a code an endpoint may put in a close frame (1000-1003, 1007-1014, 3000-4999), with
    `websockets`' list of the registered ones. 1005, 1006 and 1015 are reserved and never sent."""
    return code in EXTERNAL_CLOSE_CODES or 3000 <= code < 5000


def encode_close(code: int, reason: str = "") -> bytes:
    """A masked close frame."""
    payload = code.to_bytes(2, "big") + reason.encode()[:123]
    return Frame(Opcode.CLOSE, payload).serialize(mask=True, extensions=[])


def encode_pong(payload: bytes) -> bytes:
    """A masked pong answering a ping."""
    return Frame(Opcode.PONG, payload).serialize(mask=True, extensions=[])
