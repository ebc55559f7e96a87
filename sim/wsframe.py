"""RFC 6455 framing for the server side: unmasked outgoing frames, a strict incremental reader for client frames."""

from __future__ import annotations

import struct

from .error import FrameError

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

_H2 = struct.Struct("!BB").pack
_H4 = struct.Struct("!BBH").pack
_H10 = struct.Struct("!BBQ").pack


def frame(payload: bytes, opcode: int = OP_BINARY) -> bytes:
    """One final, unmasked frame (server to client)."""
    n = len(payload)
    if n < 126:
        return _H2(0x80 | opcode, n) + payload
    if n < 65536:
        return _H4(0x80 | opcode, 126, n) + payload
    return _H10(0x80 | opcode, 127, n) + payload


def fragments(payload: bytes, opcode: int, size: int) -> bytes:
    """A message split into frames of at most `size` payload bytes (continuation frames after the first)."""
    if size <= 0 or len(payload) <= size:
        return frame(payload, opcode)
    out = []
    for start in range(0, len(payload), size):
        chunk = payload[start:start + size]
        fin = 0x80 if start + size >= len(payload) else 0
        op = opcode if start == 0 else OP_CONT
        n = len(chunk)
        if n < 126:
            out.append(_H2(fin | op, n))
        elif n < 65536:
            out.append(_H4(fin | op, 126, n))
        else:
            out.append(_H10(fin | op, 127, n))
        out.append(chunk)
    return b"".join(out)


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to the 123 bytes a control frame allows, never inside a UTF-8 character."""
    data = reason.encode()
    if len(data) > 123:
        data = data[:123].decode(errors="ignore").encode()  # RFC 6455 5.5.1: the reason must stay valid UTF-8
    return frame(struct.pack("!H", code) + data, OP_CLOSE)


class FrameReader:
    """Feeds raw bytes, yields complete messages as (opcode, payload).

    Data messages longer than `max_message` raise FrameError(4002) as soon as the header shows it,
    without buffering the payload.
    """

    __slots__ = ("_buf", "_parts", "_part_op", "_part_len", "max_message")

    def __init__(self, max_message: int) -> None:
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._part_op = 0
        self._part_len = 0
        self.max_message = max_message

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes]] = []
        while True:
            if len(buf) < 2:
                return out
            b0, b1 = buf[0], buf[1]
            if b0 & 0x70:
                raise FrameError(1002, "reserved bits set (no extension was negotiated)")
            if not b1 & 0x80:
                raise FrameError(1002, "client frames must be masked")
            fin, op, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return out
                n = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    return out
                n = int.from_bytes(buf[2:10], "big")
                pos = 10
            control = op >= 0x8
            if control and (n > 125 or not fin):
                raise FrameError(1002, "invalid control frame")
            if op not in (OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG):
                raise FrameError(1002, f"unknown frame opcode {op}")
            if not control and (self._part_len if op == OP_CONT else 0) + n > self.max_message:
                raise FrameError(4002, f"payload over {self.max_message} bytes")
            if len(buf) < pos + 4 + n:
                return out
            mask = bytes(buf[pos:pos + 4])
            pos += 4
            payload = _unmask(bytes(buf[pos:pos + n]), mask)
            del buf[:pos + n]
            if control:
                out.append((op, payload))
            elif op == OP_CONT:
                if not self._parts and not self._part_op:
                    raise FrameError(1002, "continuation frame without a message")
                self._parts.append(payload)
                self._part_len += n
                if fin:
                    out.append((self._part_op, b"".join(self._parts)))
                    self._parts, self._part_op, self._part_len = [], 0, 0
            else:
                if self._part_op:
                    raise FrameError(1002, "new message before the previous one ended")
                if fin:
                    out.append((op, payload))
                else:
                    self._parts, self._part_op, self._part_len = [payload], op, n


def _unmask(data: bytes, mask: bytes) -> bytes:
    if not data:
        return data
    n = len(data)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")
