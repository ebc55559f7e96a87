"""Transport decompression: zlib-stream (stock zlib or zlib-ng) and zstd-stream, one context per connection."""

from __future__ import annotations

import zlib
from typing import Literal, Protocol

__all__ = ["Inflater", "ZlibInflater", "ZstdInflater", "InflateError", "new_inflater", "Compression",
           "ZlibBackend", "SYNC_FLUSH_SUFFIX"]

try:  # optional extra "zlib-ng"
    from zlib_ng import zlib_ng as _zlib_ng
except ImportError:  # pragma: no cover - depends on the extra
    _zlib_ng = None

try:  # optional extra "zstd"
    import zstandard as _zstd
except ImportError:  # pragma: no cover - depends on the extra
    _zstd = None

Compression = Literal["zlib-stream", "zstd-stream"] | None
ZlibBackend = Literal["auto", "zlib", "zlib-ng"]
SYNC_FLUSH_SUFFIX = b"\x00\x00\xff\xff"
_SHRINK_ABOVE = 64 * 1024


class InflateError(Exception):
    """The compressed stream is corrupt (the connection must be replaced).

    `inflated`: from `feed_whole`, the messages of the run that inflated before the corrupt one."""

    def __init__(self, message: str, inflated: list[bytes] | None = None) -> None:
        super().__init__(message)
        self.inflated: list[bytes] = inflated if inflated is not None else []


class Inflater(Protocol):
    bytes_in: int
    bytes_out: int

    def feed(self, data: bytes | memoryview) -> bytes | None:
        """One WebSocket message in; a complete gateway message out, or None while it is incomplete."""

    def feed_whole(self, messages: list[bytes]) -> list[bytes]:
        """A run of WebSocket messages that each hold one whole gateway message, inflated in one C loop.
        On a corrupt stream, InflateError with the outputs before the corrupt message in `inflated`."""

    @property
    def capacity(self) -> int:
        """Bytes held for partial messages."""


class ZlibInflater:
    """zlib-stream: buffer until a message ends with 00 00 ff ff, then inflate with the connection's context.

    A message that arrives whole (the usual case) is inflated straight from the frame without copying.
    The partial-message buffer is dropped after use when it grew past 64 KiB.
    """

    __slots__ = ("_d", "_buf", "bytes_in", "bytes_out", "_error", "backend")

    def __init__(self, backend: ZlibBackend = "auto") -> None:
        if backend == "auto":
            backend = "zlib-ng" if _zlib_ng is not None else "zlib"
        if backend == "zlib-ng":
            if _zlib_ng is None:
                raise ValueError('zlib backend "zlib-ng" needs the zlib-ng package (extra "zlib-ng")')
            module = _zlib_ng
        elif backend == "zlib":
            module = zlib
        else:
            raise ValueError(f"unknown zlib backend {backend!r}")
        self.backend = backend
        self._d = module.decompressobj()
        self._error: type[Exception] = module.error
        self._buf = bytearray()
        self.bytes_in = 0
        self.bytes_out = 0

    def feed(self, data: bytes | memoryview) -> bytes | None:
        self.bytes_in += len(data)
        buf = self._buf
        try:
            if buf:
                buf += data
                if buf[-4:] != SYNC_FLUSH_SUFFIX:
                    return None
                out = self._d.decompress(buf)
                if buf.__alloc__() > _SHRINK_ABOVE:
                    self._buf = bytearray()
                else:
                    buf.clear()
            elif data[-4:] == SYNC_FLUSH_SUFFIX:
                out = self._d.decompress(data)
            else:
                buf += data
                return None
        except self._error as exc:
            raise InflateError(f"zlib-stream is corrupt: {exc}") from None
        self.bytes_out += len(out)
        return out

    def feed_whole(self, messages: list[bytes]) -> list[bytes]:
        """See `Inflater.feed_whole`; here each message must end with 00 00 ff ff, with nothing buffered."""
        out: list[bytes] = []
        try:
            out.extend(map(self._d.decompress, messages))  # keeps what inflated if one fails
        except self._error as exc:
            raise InflateError(f"zlib-stream is corrupt: {exc}", out) from None
        self.bytes_in += sum(map(len, messages))
        self.bytes_out += sum(map(len, out))
        return out

    @property
    def capacity(self) -> int:
        return self._buf.__alloc__()


class ZstdInflater:
    """zstd-stream: one endless zstd frame per connection; every WebSocket message is one gateway message."""

    __slots__ = ("_d", "bytes_in", "bytes_out")

    def __init__(self) -> None:
        if _zstd is None:
            raise ValueError('compression "zstd-stream" needs the zstandard package (extra "zstd")')
        self._d = _zstd.ZstdDecompressor().decompressobj()
        self.bytes_in = 0
        self.bytes_out = 0

    def feed(self, data: bytes | memoryview) -> bytes | None:
        self.bytes_in += len(data)
        try:
            out = self._d.decompress(data)
        except _zstd.ZstdError as exc:
            raise InflateError(f"zstd-stream is corrupt: {exc}") from None
        if not out:
            return None
        self.bytes_out += len(out)
        return out

    def feed_whole(self, messages: list[bytes]) -> list[bytes]:
        """See `Inflater.feed_whole` (a message that yields no output yet is left out)."""
        out: list[bytes] = []
        try:
            out.extend(map(self._d.decompress, messages))
        except _zstd.ZstdError as exc:
            raise InflateError(f"zstd-stream is corrupt: {exc}", [o for o in out if o]) from None
        self.bytes_in += sum(map(len, messages))
        self.bytes_out += sum(map(len, out))
        return out if all(out) else [o for o in out if o]

    @property
    def capacity(self) -> int:
        return 0


def new_inflater(compression: Compression, zlib_backend: ZlibBackend = "auto") -> ZlibInflater | ZstdInflater | None:
    """A fresh inflater for one connection (None when the connection is uncompressed)."""
    if compression is None:
        return None
    if compression == "zlib-stream":
        return ZlibInflater(zlib_backend)
    if compression == "zstd-stream":
        return ZstdInflater()
    raise ValueError(f"unknown compression {compression!r}")
