"""Transport decompression: zlib-stream (stock zlib or zlib-ng) and zstd-stream, one context per connection."""

from __future__ import annotations

import zlib
from itertools import repeat
from types import ModuleType
from typing import Literal, Protocol

from .error import InflateError

__all__ = ["Inflater", "ZlibInflater", "ZstdInflater", "InflateError", "new_inflater", "Compression",
           "ZlibBackend", "SYNC_FLUSH_SUFFIX", "MAX_INFLATED", "MAX_BUFFERED"]

_zlib_ng: ModuleType | None
try:  # optional extra "zlib-ng"
    from zlib_ng import zlib_ng as _zlib_ng
except ImportError:  # pragma: no cover - depends on the extra
    _zlib_ng = None

try:  # optional extra "zstd"
    import zstandard as _zstd
except ImportError:  # pragma: no cover - depends on the extra
    _zstd = None  # type: ignore[assignment]  # typed as the module: ZstdInflater() checks for None first

Compression = Literal["zlib-stream", "zstd-stream"] | None
ZlibBackend = Literal["auto", "zlib", "zlib-ng"]
SYNC_FLUSH_SUFFIX = b"\x00\x00\xff\xff"
_SHRINK_ABOVE = 64 * 1024
MAX_INFLATED = 64 * 1024 * 1024  # default bound on one inflated gateway message (Config.max_inflated_size)
MAX_BUFFERED = 64 * 1024 * 1024  # default bound on one compressed message buffered in parts (Config.max_message_size)
# zstd inflates at most 128 KiB per 4 input bytes (an RLE block); input is fed in steps of max_size >> 15
# bytes, so one decompress call yields at most about max_size + 128 KiB before the bound is checked.
_ZSTD_RATIO_LOG = 15
_ZSTD_MIN_STEP = 64


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

    Bounds (decompression bombs): a message inflating to over `max_size` bytes, or a message still without
    its suffix after `max_buffer` compressed bytes, raises InflateError; inflating stops one byte past
    `max_size` (zlib's `max_length`), and the buffer is released at once.
    """

    __slots__ = ("_d", "_buf", "bytes_in", "bytes_out", "_error", "backend", "max_size", "max_buffer", "_limits")

    def __init__(self, backend: ZlibBackend = "auto", max_size: int = MAX_INFLATED,
                 max_buffer: int = MAX_BUFFERED) -> None:
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
        self.max_size = max_size
        self.max_buffer = max_buffer
        self._limits = repeat(max_size + 1)  # decompress's max_length: one byte more shows the bound was crossed

    def feed(self, data: bytes | memoryview) -> bytes | None:
        self.bytes_in += len(data)
        buf = self._buf
        try:
            if buf:
                if len(buf) + len(data) > self.max_buffer:
                    raise self._over_buffer()
                buf += data
                if buf[-4:] != SYNC_FLUSH_SUFFIX:
                    return None
                out = self._d.decompress(buf, self.max_size + 1)
                if buf.__alloc__() > _SHRINK_ABOVE:
                    self._buf = bytearray()
                else:
                    buf.clear()
            elif data[-4:] == SYNC_FLUSH_SUFFIX:
                out = self._d.decompress(data, self.max_size + 1)
            else:
                if len(data) > self.max_buffer:
                    raise self._over_buffer()
                buf += data
                return None
        except self._error as exc:
            self._buf = bytearray()
            raise InflateError(f"zlib-stream is corrupt: {exc}") from None
        if len(out) > self.max_size:
            raise self._over_size([out])  # type: ignore[misc]  # never None here
        self.bytes_out += len(out)
        return out

    def feed_whole(self, messages: list[bytes]) -> list[bytes]:
        """See `Inflater.feed_whole`; here each message must end with 00 00 ff ff, with nothing buffered."""
        out: list[bytes] = []
        try:
            out.extend(map(self._d.decompress, messages, self._limits))  # keeps what inflated if one fails
        except self._error as exc:
            # A bomb cut short by max_length leaves the stream out of step: report the bomb, not what follows.
            raise self._over_size(out) or InflateError(f"zlib-stream is corrupt: {exc}", out) from None
        size = sum(map(len, out))
        if size > self.max_size:  # the run's total bounds each message: the usual case costs nothing more
            error = self._over_size(out)
            if error is not None:
                raise error
        self.bytes_in += sum(map(len, messages))
        self.bytes_out += size
        return out

    def _over_size(self, out: list[bytes]) -> InflateError | None:
        """The error for the first message of `out` over `max_size` (with the messages before it), if any."""
        limit = self.max_size
        for i, message in enumerate(out):
            if len(message) > limit:
                self._buf = bytearray()
                return InflateError(f"a message inflates to over max_inflated_size ({limit} bytes)", out[:i])
        return None

    def _over_buffer(self) -> InflateError:
        self._buf = bytearray()
        return InflateError(f"a compressed message is over max_message_size ({self.max_buffer} bytes) "
                            "without its end (00 00 ff ff)")

    @property
    def capacity(self) -> int:
        return self._buf.__alloc__()


class ZstdInflater:
    """zstd-stream: one endless zstd frame per connection; every WebSocket message is one gateway message.

    Bound (decompression bombs): zstd has no output limit per call and inflates up to 32,768 times (4
    bytes -> a 128 KiB block), so a message longer than `max_size >> 15` bytes is fed in steps of that
    size, checking the output between steps; a message inflating to over `max_size` raises InflateError.
    Shorter messages (nearly all) are inflated in one call. The window a frame may ask for is capped at
    `max_size` (at least 8 MiB, at most 128 MiB).
    """

    __slots__ = ("_d", "bytes_in", "bytes_out", "max_size", "_step")

    def __init__(self, max_size: int = MAX_INFLATED) -> None:
        if _zstd is None:
            raise ValueError('compression "zstd-stream" needs the zstandard package (extra "zstd")')
        window = min(max(max_size, 1 << 23), 1 << 27)  # zstd levels up to 19 use at most 8 MiB
        self._d = _zstd.ZstdDecompressor(max_window_size=window).decompressobj()
        self.bytes_in = 0
        self.bytes_out = 0
        self.max_size = max_size
        self._step = max(max_size >> _ZSTD_RATIO_LOG, _ZSTD_MIN_STEP)

    def feed(self, data: bytes | memoryview) -> bytes | None:
        self.bytes_in += len(data)
        try:
            out = self._d.decompress(data) if len(data) <= self._step else self._stepwise(data)
        except _zstd.ZstdError as exc:
            raise InflateError(f"zstd-stream is corrupt: {exc}") from None
        if not out:
            return None
        if len(out) > self.max_size:
            raise InflateError(f"a message inflates to over max_inflated_size ({self.max_size} bytes)")
        self.bytes_out += len(out)
        return out

    def feed_whole(self, messages: list[bytes]) -> list[bytes]:
        """See `Inflater.feed_whole` (a message that yields no output yet is left out)."""
        out: list[bytes] = []
        if max(map(len, messages)) > self._step:  # a long message: the bounded path, message by message
            for message in messages:
                try:
                    one = self.feed(message)
                except InflateError as exc:
                    exc.inflated = out
                    raise
                if one is not None:
                    out.append(one)
            return out
        try:
            out.extend(map(self._d.decompress, messages))
        except _zstd.ZstdError as exc:
            raise InflateError(f"zstd-stream is corrupt: {exc}", [o for o in out if o]) from None
        size = sum(map(len, out))
        if size > self.max_size:  # a short message can inflate past the bound when it is small
            limit = self.max_size
            for i, one in enumerate(out):
                if len(one) > limit:
                    raise InflateError(f"a message inflates to over max_inflated_size ({limit} bytes)",
                                       [o for o in out[:i] if o])
        self.bytes_in += sum(map(len, messages))
        self.bytes_out += size
        return out if all(out) else [o for o in out if o]

    def _stepwise(self, data: bytes | memoryview) -> bytes:
        """Inflate a long message in steps, stopping once the output is over `max_size`."""
        decompress, step, limit = self._d.decompress, self._step, self.max_size
        view = memoryview(data)
        parts: list[bytes] = []
        size = 0
        for start in range(0, len(view), step):
            part = decompress(view[start:start + step])
            parts.append(part)
            size += len(part)
            if size > limit:
                raise InflateError(f"a message inflates to over max_inflated_size ({limit} bytes)")
        return b"".join(parts)

    @property
    def capacity(self) -> int:
        return 0


def new_inflater(compression: Compression, zlib_backend: ZlibBackend = "auto", max_size: int = MAX_INFLATED,
                 max_buffer: int = MAX_BUFFERED) -> ZlibInflater | ZstdInflater | None:
    """A fresh inflater for one connection (None when the connection is uncompressed)."""
    if compression is None:
        return None
    if compression == "zlib-stream":
        return ZlibInflater(zlib_backend, max_size, max_buffer)
    if compression == "zstd-stream":
        return ZstdInflater(max_size)
    raise ValueError(f"unknown compression {compression!r}")
