"""The receive-path fuzz harness, shared by tests/shard/test_fuzz_receive.py (hypothesis) and
bench/fuzz_receive.py (atheris, `make fuzz`): WebSocket frame reader + inflater + decoder of a
GatewayProtocol, fed bytes in any chunking, with the invariants checked after every step:

- nothing escapes but GatewayError (`process` raises nothing; `make_event` raises only GatewayError);
- memory stays within the configured bounds (the zlib partial-message buffer and a fragmented message
  within max_message_size, every queued message within max_inflated_size, nothing left unparsed
  but one partial frame);
- the sequence is always 0 <= s < 2**63 and never goes backwards within a session.
"""

from __future__ import annotations

import itertools
import json
import zlib

import zstandard

from shard import Config, GatewayError, ShardId
from shard.parse import SEQ_END
from shard.protocol import GatewayProtocol
from sim.wsframe import frame as ws_frame

COMPRESSIONS = ("zlib-stream", "zstd-stream", None)
MODES = ("eager", "raw", "filtered")
MAX_MESSAGE = 16 * 1024   # max_message_size in the harness
MAX_INFLATED = 64 * 1024  # max_inflated_size in the harness
TOKEN = "MTIz.fuzz-token"
HELLO = b'{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":41250}}'
READY = (b'{"t":"READY","s":1,"op":0,"d":{"session_id":"s","resume_gateway_url":"ws://resume/","v":10,'
         b'"user":{"id":"1"},"guilds":[]}}')


def frame(payload: bytes, opcode: int = 2, fin: bool = True, rsv: int = 0) -> bytes:
    """A server frame (unmasked) with any opcode, FIN and RSV bits."""
    data = bytearray(ws_frame(payload, opcode & 0x0F))
    data[0] = (0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0x0F)
    return bytes(data)


class Server:
    """The server side of one connection: compresses messages like the gateway does."""

    def __init__(self, compression: str | None) -> None:
        self.compression = compression
        self._z = zlib.compressobj()
        self._zs = zstandard.ZstdCompressor().compressobj()

    def compress(self, data: bytes) -> bytes:
        if self.compression == "zlib-stream":
            return self._z.compress(data) + self._z.flush(zlib.Z_SYNC_FLUSH)
        if self.compression == "zstd-stream":
            return self._zs.compress(data) + self._zs.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        return data

    def message(self, data: bytes) -> bytes:
        """One gateway message as the gateway frames it (binary when compressed, else text)."""
        if self.compression is None:
            return frame(data, 1)
        return frame(self.compress(data))


def dispatch(seq: object, t: str = "MESSAGE_CREATE", d: bytes = b'{"id":"1"}') -> bytes:
    return b'{"t":%s,"s":%s,"op":0,"d":%s}' % (json.dumps(t).encode(), json.dumps(seq).encode(), d)


# Hostile payloads worth trying every time (besides what a fuzzer makes up).
SPECIAL = (
    b"[" * 1000 + b"]" * 1000,                                     # deep JSON
    dispatch(1, d=b"[" * 1000 + b"]" * 1000),
    dispatch(-1), dispatch(10 ** 25), dispatch(2 ** 63), dispatch(2 ** 63 - 1), dispatch(None), dispatch("7"),
    b'{"op":10,"d":{"heartbeat_interval":1}}', b'{"op":10,"d":{"heartbeat_interval":4611686018427387904}}',
    b'{"op":10,"d":{"heartbeat_interval":-5}}', b'{"op":10,"d":null}', b'{"op":11}', b'{"op":1,"d":null}',
    b'{"op":7,"d":null}', b'{"op":9,"d":true}', b'{"op":9,"d":false}', b'{"op":99}', b'{"op":"0"}',
    dispatch(3, "READY", b'{"session_id":5}'), dispatch(4, "RESUMED"), dispatch(5, d=b'{"x":"\xff\xfe"}'),
    b" " * (MAX_INFLATED * 4),                                       # a (small) decompression bomb
    b"", b"null", b"{}", b"[]", b'{"op":0}', b"\xff" * 8,
)


class Harness:
    """One GatewayProtocol after Hello, Identify and READY, fed by `feed` and checked by `check`."""

    def __init__(self, compression: str | None, mode: str = "eager") -> None:
        options: dict[str, object] = {}
        if mode == "filtered":
            from shard import EventTypeFlags
            options["event_types"] = EventTypeFlags.READY | EventTypeFlags.MESSAGE_CREATE
        cfg = Config(TOKEN, 513, gateway_url="ws://gw/", compression=compression, max_message_size=MAX_MESSAGE,
                     max_inflated_size=MAX_INFLATED, metrics=False, **options)  # type: ignore[arg-type]
        self.now = 100.0
        self.p = p = GatewayProtocol(ShardId(0, 1), cfg, clock=lambda: self.now, rand=lambda: 0.5)
        if mode == "raw":
            p.raw_mode = True
            p.decoding_changed()
        p.connection_made()
        self.server = Server(compression)
        self._session: str | None = None
        self._seq: int | None = None
        self.feed(self.server.message(HELLO))
        if p.want_identify:
            p.identify()
        self.feed(self.server.message(READY))
        assert p.session is not None and p.sequence == 1, "the harness could not reach READY"

    def feed(self, data: bytes, budget: int = -1) -> None:
        """Bytes from the socket, then `process(budget)`, then the invariants."""
        p = self.p
        p.receive_data(data)
        p.process(budget)
        self.check()

    def check(self) -> None:
        p = self.p
        seq = p.sequence
        if seq is not None:
            assert type(seq) is int and 0 <= seq < SEQ_END, f"sequence out of range: {seq!r}"
            if self._seq is not None and p.session_id == self._session:
                assert seq >= self._seq, f"the sequence went backwards: {self._seq} -> {seq}"
        self._seq, self._session = seq, p.session_id
        inflater = p.inflater
        if inflater is not None and hasattr(inflater, "_buf"):
            assert len(inflater._buf) <= MAX_MESSAGE, f"zlib buffer over the bound: {len(inflater._buf)}"
        if p._frag is not None:
            assert len(p._frag) <= MAX_MESSAGE, f"fragmented message over the bound: {len(p._frag)}"
        for raw in p.raws:
            assert raw is None or len(raw) <= MAX_INFLATED, f"a message over max_inflated_size: {len(raw)}"
        for item in p.events:
            if isinstance(item, GatewayError):
                assert TOKEN not in str(item) and TOKEN not in repr(item)

    def finish(self) -> list[object]:
        """Process everything, take every item as an Event (only GatewayError may be raised), close."""
        p = self.p
        p.process()
        self.check()
        if p.connected and not p._halt:
            assert p.pending <= max(MAX_MESSAGE, 65535) + 14, f"unparsed bytes over one frame: {p.pending}"
        items: list[object] = []
        while p.events:
            item, raw = p.pop()
            try:
                items.append(p.make_event(item))
            except GatewayError as error:
                items.append(error)
        p.connection_lost()
        self.check()
        return items


KINDS = ("message", "split", "fragmented", "frame", "junk")
"""How a step's payload goes on the wire: one compressed message; a compressed message split into two
WebSocket messages (zlib-stream allows that); a fragmented WebSocket message; a bare frame with any opcode,
FIN and RSV bits (uncompressed payload); or the bytes as they are (not even a frame)."""


def build(server: Server, steps: list[tuple[str, bytes, int, bool, int]]) -> list[bytes]:
    """The bytes of `steps`: (kind, payload, opcode, fin, rsv) each, see KINDS."""
    pieces = []
    for kind, payload, opcode, fin, rsv in steps:
        if kind == "message":
            pieces.append(server.message(payload))
        elif kind == "split":
            data = server.compress(payload)
            cut = len(data) // 2
            pieces.append(frame(data[:cut], 2) + frame(data[cut:], 2))
        elif kind == "fragmented":
            data = server.compress(payload)
            cut = len(data) // 2
            pieces.append(frame(data[:cut], 2 if server.compression else 1, fin=False) + frame(data[cut:], 0))
        elif kind == "frame":
            pieces.append(frame(payload, opcode, fin, rsv))
        else:
            pieces.append(payload)
    return pieces


def run(compression: str | None, mode: str, steps: list[tuple[str, bytes, int, bool, int]], cuts: list[int],
        budgets: list[int]) -> list[object]:
    """Feed the bytes of `steps` cut at `cuts`, each chunk processed with the next budget; check throughout."""
    h = Harness(compression, mode)
    data = b"".join(build(h.server, steps))
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for i, (start, end) in enumerate(itertools.pairwise(points)):
        h.feed(data[start:end], budgets[i % len(budgets)] if budgets else -1)
    return h.finish()
