"""Length-prefixed framing (sans-I/O).

The wire format is the one `multiprocessing.connection.Connection` uses for
`send_bytes`: a 4-byte big-endian signed length, or -1 followed by an 8-byte
length for frames of 2 GiB and more. Either end of a pipe may therefore be a
plain blocking ``Connection`` or an asyncio :class:`ipc.channel.Channel`.
"""

from __future__ import annotations

import struct

from ipc.error import FrameTooLarge, FramingError

__all__ = ["MAX_FRAME", "FrameDecoder", "FrameTooLarge", "FramingError", "encode_frame"]

_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")
_SHORT_MAX = 0x7FFFFFFF

MAX_FRAME = 64 * 1024 * 1024
"""The default frame limit (payload bytes) of both ends of an IPC pipe."""


def encode_frame(payload: bytes) -> bytes:
    """Return ``payload`` with its length header."""
    n = len(payload)
    if n > _SHORT_MAX:
        return _SHORT.pack(-1) + _LONG.pack(n) + payload
    return _SHORT.pack(n) + payload


class FrameDecoder:
    """Turns a byte stream into frames: ``feed`` bytes, get complete payloads.

    ``max_frame`` bounds the memory a corrupt or hostile header can claim.
    """

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every payload it completes, in order."""
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (n,) = _SHORT.unpack_from(buf, pos)
            head = 4
            if n == -1:
                if end - pos < 12:
                    break
                (n,) = _LONG.unpack_from(buf, pos + 4)
                head = 12
            elif n < 0:
                raise FramingError(f"negative frame length {n}")
            if n > self.max_frame:
                raise FramingError(f"frame of {n} bytes exceeds the {self.max_frame}-byte limit")
            if end - pos - head < n:
                break
            start = pos + head
            frames.append(bytes(buf[start : start + n]))
            pos = start + n
        if pos:
            del buf[:pos]
        return frames
