"""Outgoing gateway encodings: each turns one JSON payload into ready-to-write WebSocket frame bytes."""

from __future__ import annotations

import zlib
from types import ModuleType

from .wsframe import OP_BINARY, OP_TEXT, frame

_fast_zlib: ModuleType
try:  # zlib-ng compresses the same format faster; optional extra
    from zlib_ng import zlib_ng as _fast_zlib
except ImportError:  # pragma: no cover - depends on the extra
    _fast_zlib = zlib

try:
    import zstandard
except ImportError:  # pragma: no cover - depends on the extra
    zstandard = None  # type: ignore[assignment]  # typed as the module: ZstdStream() checks for None first

SYNC_FLUSH_SUFFIX = b"\x00\x00\xff\xff"
PAYLOAD_COMPRESS_MIN = 1024


class Plain:
    """Uncompressed text frames; with Identify `compress: true`, payloads over 1 KB become standalone zlib binary
    frames."""

    name = None
    __slots__ = ("payload_compression",)

    def __init__(self) -> None:
        self.payload_compression = False

    def encode(self, data: bytes) -> bytes:
        if self.payload_compression and len(data) > PAYLOAD_COMPRESS_MIN:
            return frame(zlib.compress(data), OP_BINARY)
        return frame(data, OP_TEXT)

    def encode_many(self, payloads: list[bytes]) -> bytes:
        return b"".join(map(self.encode, payloads))

    def corrupt(self) -> bytes:
        return frame(b"\x78\x9c\xde\xad\xbe\xef" + SYNC_FLUSH_SUFFIX, OP_BINARY)


class ZlibStream:
    """One deflate context per connection, Z_SYNC_FLUSH after each message, optionally split across messages."""

    name = "zlib-stream"
    __slots__ = ("_c", "_flush", "_pending", "chunk")

    def __init__(self, level: int, chunk: int = 0) -> None:
        self._c = _fast_zlib.compressobj(level)
        self._flush = zlib.Z_SYNC_FLUSH
        self._pending = b""
        self.chunk = chunk

    def independent(self) -> None:
        """From now on, end every message with Z_FULL_FLUSH: no later message refers back to earlier data,
        so pre-compressed segments (see `replay_segment`) can be spliced in between."""
        if self._flush != zlib.Z_FULL_FLUSH:
            self._flush = zlib.Z_FULL_FLUSH
            self._pending = self._c.flush(zlib.Z_FULL_FLUSH)  # the reset point, sent ahead of the next message

    def take_pending(self) -> bytes:
        pending, self._pending = self._pending, b""
        return pending

    def encode(self, data: bytes) -> bytes:
        c = self._c
        out = self.take_pending() + c.compress(data) + c.flush(self._flush)
        if self.chunk <= 0 or len(out) <= self.chunk:
            return frame(out, OP_BINARY)
        # Separate WebSocket *messages* (each a final frame), not one fragmented message: a WebSocket library
        # reassembles fragments, so only whole messages make the client buffer until the Z_SYNC_FLUSH suffix.
        return b"".join([frame(out[i:i + self.chunk], OP_BINARY) for i in range(0, len(out), self.chunk)])

    def encode_many(self, payloads: list[bytes]) -> bytes:
        comp, flush, mode = self._c.compress, self._c.flush, self._flush
        return b"".join([frame(comp(p) + flush(mode), OP_BINARY) for p in payloads])

    def corrupt(self) -> bytes:
        # Not a valid continuation of the stream: the inflater fails on it. The client must start a new connection.
        return frame(b"\xff\xfe\xfd\xfc\xfb\xfa" + SYNC_FLUSH_SUFFIX, OP_BINARY)


class ZstdStream:
    """One zstd frame for the whole connection, one flushed block per message (never ended)."""

    name = "zstd-stream"
    __slots__ = ("_c",)

    def __init__(self, level: int = 3) -> None:
        if zstandard is None:
            raise RuntimeError("compress=zstd-stream needs the 'zstandard' package (pip install shardstack[zstd])")
        self._c = zstandard.ZstdCompressor(level=level).compressobj()

    def encode(self, data: bytes) -> bytes:
        c = self._c
        return frame(c.compress(data) + c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK), OP_BINARY)

    def encode_many(self, payloads: list[bytes]) -> bytes:
        return b"".join(map(self.encode, payloads))

    def corrupt(self) -> bytes:
        return frame(b"\xde\xad\xbe\xef" * 4, OP_BINARY)


def replay_messages(payloads: list[bytes], level: int) -> list[bytes]:
    """`payloads` compressed as one zlib-stream segment that can be appended to any stream at a
    Z_FULL_FLUSH point, any number of times: messages share a dictionary inside the segment
    (Z_SYNC_FLUSH, like Discord), and the segment ends with Z_FULL_FLUSH. One compressed message each."""
    c = _fast_zlib.compressobj(level)
    c.compress(b"")
    c.flush(zlib.Z_FULL_FLUSH)  # drop the zlib header: the client's stream already had one
    last = len(payloads) - 1
    return [c.compress(p) + c.flush(zlib.Z_FULL_FLUSH if i == last else zlib.Z_SYNC_FLUSH)
            for i, p in enumerate(payloads)]


def replay_segment(payloads: list[bytes], level: int) -> bytes:
    """The WebSocket frames of `replay_messages(payloads, level)`, as one byte string."""
    return b"".join(frame(m, OP_BINARY) for m in replay_messages(payloads, level))


def transport_for(compress: str | None, zlib_level: int, zlib_chunk: int) -> Plain | ZlibStream | ZstdStream:
    if compress == "zlib-stream":
        return ZlibStream(zlib_level, zlib_chunk)
    if compress == "zstd-stream":
        return ZstdStream()
    return Plain()
