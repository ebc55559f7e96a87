"""WebSocket frame headers of the server's frames (RFC 6455 5.2), parsed by one plain function.

The receive path (`GatewayProtocol._process`) calls `parse_header` once per frame, on the bytes already
received, without copying them; it needs no state of its own, so it is tested here on its own.
"""

from __future__ import annotations

__all__ = ["parse_header", "MASKED", "TOO_LARGE", "HEADER_ERRORS"]

MASKED = -1         # `parse_header`'s first byte for a masked frame (a server must not mask, RFC 6455 5.1)
TOO_LARGE = -2      # ... for a frame whose declared length is over the limit
HEADER_ERRORS = {MASKED: "the server sent a masked frame", TOO_LARGE: "a frame is over max_message_size"}
_REFUSED = 1 << 63  # the end of a refused frame: past any buffer


def parse_header(buf: bytes, pos: int, n: int, max_size: int) -> tuple[int, int, int]:
    """The frame starting at `buf[pos]`, with `buf[:n]` received: (first byte, payload start, payload end).

    An end past `n` means the frame is not all there: `end - pos` bytes are needed to go on (the rest of
    the header, or the whole frame). A refused frame has a first byte of MASKED or TOO_LARGE (a length over
    `max_size`, checked for 64-bit lengths, where a lying header could make the reader buffer without
    bound; a shorter frame is at most 64 KiB, and messages are held to the limit where they are assembled)
    and an end past any buffer; its message is in HEADER_ERRORS."""
    if n - pos < 2:
        return 0, 0, pos + 2
    length = buf[pos + 1]
    if length < 126:
        start = pos + 2
    elif length == 126:
        if n - pos < 4:
            return 0, 0, pos + 4
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        start = pos + 4
    else:
        if length & 0x80:
            return MASKED, 0, _REFUSED
        if n - pos < 10:
            return 0, 0, pos + 10
        length = int.from_bytes(buf[pos + 2:pos + 10], "big")
        if length > max_size:
            return TOO_LARGE, 0, _REFUSED
        start = pos + 10
    return buf[pos], start, start + length
