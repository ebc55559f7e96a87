"""Hostile gateway input, fed to the sans-I/O core: decompression bombs, endless zlib messages, deep JSON,
bad sequence numbers, Hello intervals and invalid close frames. Each is one GatewayError (or a protocol
close) for that message, never an escaping exception, and the stream goes on or resumes."""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Any

import msgspec
import pytest
import zstandard

from shard import CloseFrame, EventTypeFlags, GatewayError, Session
from shard.error import ErrorKind
from shard.parse import Envelope
from shard.protocol import GatewayProtocol
from sim import Simulator
from sim.wsframe import close_frame

from shard_helpers import Recorder, call, shard_stats
from test_protocol import HELLO, READY, Wire, drain, feed, frame, make, sent

LIMIT = 1 << 20  # max_inflated_size in these tests
BOMB = b" " * (8 << 20)  # 8 MiB of spaces: ~8 KB with zlib, ~300 B with zstd
DEEP = b'{"op":0,"t":"MESSAGE_CREATE","s":%d,"d":' + b"[" * 1000 + b"]" * 1000 + b"}"


class ZstdWire(Wire):
    """zstd-stream server side: one endless frame, one flushed block per message."""

    def __init__(self) -> None:
        super().__init__("zstd-stream")
        self.z = zstandard.ZstdCompressor().compressobj()

    def raw(self, data: bytes) -> bytes:
        return frame(self.z.compress(data) + self.z.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))


def wire_for(compression: str | None) -> Wire:
    return ZstdWire() if compression == "zstd-stream" else Wire(compression)


def raw_message(w: Wire, data: bytes) -> bytes:
    """`data` (any bytes) as one message on `w`'s connection."""
    if isinstance(w, ZstdWire):
        return w.raw(data)
    if w.compression is None:
        return frame(data, 1)
    return frame(w.c.compress(data) + w.c.flush(zlib.Z_SYNC_FLUSH))


def dispatch(s: object, t: str = "MESSAGE_CREATE") -> bytes:
    return b'{"op":0,"t":"%s","s":%s,"d":{"id":"1"}}' % (t.encode(), json.dumps(s).encode())


def ready_protocol(compression: str | None = "zlib-stream", **kw: object) -> tuple[GatewayProtocol, Wire, list[float]]:
    p, _, now = make(compression, **kw)
    w = wire_for(compression)
    feed(p, raw_message(w, json.dumps(HELLO).encode()))
    p.identify()
    feed(p, raw_message(w, json.dumps(READY).encode()))
    drain(p)
    sent(p)
    return p, w, now


def errors(items: list[object]) -> list[GatewayError]:
    return [i for i in items if isinstance(i, GatewayError)]


def types(items: list[object]) -> list[str]:
    return [i.type if not isinstance(i, GatewayError) else i.kind.name for i in items]  # type: ignore[union-attr]


# ---- 1. decompression bombs and endless messages ---------------------------------------------------

@pytest.mark.parametrize("compression", ["zlib-stream", "zstd-stream"])
@pytest.mark.parametrize("batched", [True, False])
def test_bomb_is_a_compression_error_then_resume(compression: str, batched: bool) -> None:
    p, w, now = ready_protocol(compression, max_inflated_size=LIMIT)
    data = raw_message(w, dispatch(2)) + raw_message(w, BOMB) + raw_message(w, dispatch(3))
    assert len(data) < 16 * 1024  # a small frame ...
    if batched:
        feed(p, data)
    else:  # one frame at a time: the message-by-message path
        for chunk in (data[:10], data[10:len(data) - 30], data[len(data) - 30:]):
            feed(p, chunk)
    items = drain(p)
    assert types(items) == ["MESSAGE_CREATE", "COMPRESSION"]  # ... is one error, after what came before it
    assert "max_inflated_size" in str(items[1])
    assert p.hangup and p.pending == 0 and p.inflater is not None and p.inflater.capacity == 0
    (op, body), = sent(p)
    assert op == 8 and int.from_bytes(body[:2], "big") == 4000  # closed to resume, not 1000
    assert p.sequence == 2
    p.connection_lost()
    assert p.inflater is None and p.session == Session("sess", 2) and p.connect_target()[0] == "ws://resume/"
    p.connection_made()
    feed(p, raw_message(wire_for(compression), json.dumps(HELLO).encode()))
    (op, body), = sent(p)
    assert json.loads(body)["op"] == 6 and json.loads(body)["d"]["seq"] == 2


def test_bomb_under_the_limit_is_delivered() -> None:
    p, w, now = ready_protocol("zstd-stream", max_inflated_size=LIMIT)
    body = b'{"op":0,"t":"MESSAGE_CREATE","s":2,"d":"' + b"x" * (LIMIT - 100) + b'"}'
    feed(p, raw_message(w, body))
    (event,) = drain(p)
    assert event.type == "MESSAGE_CREATE" and len(event.data) == LIMIT - 100


def test_payload_compression_bomb() -> None:
    p, w, now = ready_protocol(None, max_inflated_size=LIMIT)
    feed(p, frame(zlib.compress(BOMB, 9)))  # binary frame on an uncompressed connection: payload compression
    assert types(drain(p)) == ["COMPRESSION"] and p.hangup


def test_payload_compression_truncated_is_still_a_compression_error() -> None:
    p, w, now = ready_protocol(None, max_inflated_size=LIMIT)
    feed(p, frame(zlib.compress(dispatch(2))[:-6]))  # (the bounded inflate must still see the stream end)
    assert types(drain(p)) == ["COMPRESSION"] and p.sequence == 1


def test_zlib_message_without_end_is_bounded() -> None:
    p, w, now = ready_protocol("zlib-stream", max_message_size=64 * 1024)
    junk = bytes(range(256)) * 16  # 4 KiB that never ends with 00 00 ff ff
    for _ in range(15):
        feed(p, frame(junk))
    assert p.inflater.capacity >= 15 * 4096 and not drain(p)  # buffered: the message may still end
    feed(p, frame(junk) * 400)  # 1.6 MB more
    items = drain(p)
    assert types(items) == ["COMPRESSION"] and "max_message_size" in str(items[0])
    assert p.inflater.capacity == 0 and p.pending == 0 and p.hangup


# ---- 2. deeply nested JSON -------------------------------------------------------------------------

MODES = ["eager", "filtered", "raw"]


def _mode(p: GatewayProtocol, mode: str) -> None:
    if mode == "raw":
        p.raw_mode = True
        p.decoding_changed()


def _mode_options(mode: str) -> dict[str, object]:
    return {"event_types": EventTypeFlags.READY | EventTypeFlags.MESSAGE_CREATE} if mode == "filtered" else {}


@pytest.mark.parametrize("compression", ["zlib-stream", "zstd-stream", None])
@pytest.mark.parametrize("mode", MODES)
def test_deep_json_is_one_error_for_that_message(compression: str | None, mode: str) -> None:
    p, _, now = make(compression, **_mode_options(mode))
    _mode(p, mode)
    w = wire_for(compression)
    feed(p, raw_message(w, json.dumps(HELLO).encode()))
    p.identify()
    # READY, a deep message and the rest arrive together (one run of the zlib batch path)
    p.receive_data(raw_message(w, json.dumps(READY).encode()) + raw_message(w, dispatch(2)) + raw_message(w, DEEP % 3)
                   + raw_message(w, dispatch(4)))
    p.process()
    p.process()  # nothing is parsed twice
    items = [i for i in drain(p) if getattr(i, "type", None) != "GATEWAY_HELLO"]  # (not wanted when filtered)
    assert types(items) == ["READY", "MESSAGE_CREATE", "DESERIALIZING", "MESSAGE_CREATE"]
    assert [i.seq for i in items if not isinstance(i, GatewayError)] == [1, 2, 4]
    assert p.session == Session("sess", 4) and not p.hangup and p.pending == 0
    (_, identify), = sent(p)  # no Resume, no close: the stream goes on
    assert json.loads(identify)["op"] == 2


def test_deep_d_decoded_later_is_a_gateway_error() -> None:
    p, w, now = ready_protocol()
    # (the envelope scan refuses 1,000 levels even in `d`; this Envelope stands for a deeper decoder limit)
    item = Envelope(0, "MESSAGE_CREATE", 2, msgspec.Raw(b"[" * 5000 + b"]" * 5000))
    with pytest.raises(GatewayError) as info:
        p.make_event(item)
    assert info.value.kind is ErrorKind.DESERIALIZING and info.value.event_type == "MESSAGE_CREATE"


# ---- 3. sequence numbers ---------------------------------------------------------------------------

@pytest.mark.parametrize("compression", ["zlib-stream", None])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bad", [10 ** 25, -1, 2 ** 63, 1.5, "7"])
def test_bad_sequence_is_an_error_for_that_message(compression: str | None, mode: str, bad: object) -> None:
    p, w, now = ready_protocol(compression, **_mode_options(mode))
    _mode(p, mode)
    feed(p, raw_message(w, dispatch(5)))
    feed(p, raw_message(w, dispatch(6)) + raw_message(w, dispatch(bad)) + raw_message(w, dispatch(7)))
    items = drain(p)
    assert types(items) == ["MESSAGE_CREATE", "MESSAGE_CREATE", "DESERIALIZING", "MESSAGE_CREATE"]
    assert p.sequence == 7
    feed(p, raw_message(w, dispatch(bad)))  # alone, last in its run
    assert types(drain(p)) == ["DESERIALIZING"] and p.sequence == 7
    now[0] += 5.0
    p.heartbeat_timer(now[0])
    (_, beat), = sent(p)
    assert json.loads(beat) == {"op": 1, "d": 7}
    p.connection_lost()
    assert p.session == Session("sess", 7)


@pytest.mark.parametrize("compression", ["zlib-stream", None])
@pytest.mark.parametrize("mode", MODES)
def test_sequence_never_goes_backwards(compression: str | None, mode: str) -> None:
    p, w, now = ready_protocol(compression, **_mode_options(mode))
    _mode(p, mode)
    seen = []
    for run in ((10,), (9,), (11, 12, 9, 3), (0,), (5, 4), (13,), (2,)):
        feed(p, b"".join(raw_message(w, dispatch(s)) for s in run))
        seen.append(p.sequence)
    assert seen == sorted(seen) and seen[0] == 10 and seen[-1] == 13  # only ever forwards
    assert len(drain(p)) == 11  # (delivered: the simulator's flood replay repeats sequence numbers on purpose)
    now[0] += 5.0
    p.heartbeat_timer(now[0])
    (_, beat), = sent(p)
    assert json.loads(beat) == {"op": 1, "d": 13}
    p.connection_lost()
    p.connection_made()
    feed(p, raw_message(wire_for(compression), json.dumps(HELLO).encode()))
    (_, resume), = sent(p)
    assert json.loads(resume)["d"]["seq"] == 13


def test_largest_sequence_is_accepted() -> None:
    p, w, now = ready_protocol()
    feed(p, raw_message(w, dispatch(2 ** 63 - 1)))
    assert drain(p)[0].seq == 2 ** 63 - 1 and p.sequence == 2 ** 63 - 1


# ---- 4. Hello's heartbeat_interval -----------------------------------------------------------------

@pytest.mark.parametrize("interval_ms,used", [(1, 1.0), (2 ** 62, 120.0), (41250, 41.25)])
def test_hello_interval_is_clamped(interval_ms: int, used: float) -> None:
    p, w, now = make()
    feed(p, w.msg({"op": 10, "d": {"heartbeat_interval": interval_ms}}))
    assert p.heartbeater is not None and p.heartbeater.interval == used
    assert p.heartbeat_deadline == pytest.approx(100.0 + used * 0.5)


def test_hello_interval_range_is_configurable() -> None:
    p, w, now = make(heartbeat_interval_range=(0.05, 10.0))
    feed(p, w.msg({"op": 10, "d": {"heartbeat_interval": 20}}))
    assert p.heartbeater.interval == 0.05
    with pytest.raises(ValueError, match="heartbeat_interval_range"):
        make(heartbeat_interval_range=(5.0, 1.0))


# ---- 7. close frames -------------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [b"\x00\x00", (999).to_bytes(2, "big"), (1006).to_bytes(2, "big") + b"x",
                                     (1015).to_bytes(2, "big"), (1005).to_bytes(2, "big"), (1004).to_bytes(2, "big"),
                                     (2999).to_bytes(2, "big"), (5000).to_bytes(2, "big"), b"\xff\xff", b"\x03"])
def test_invalid_close_frame_is_answered_with_1002_and_resumes(payload: bytes) -> None:
    p, w, now = ready_protocol()
    feed(p, frame(payload, 8))
    (op, body), = sent(p)
    assert op == 8 and int.from_bytes(body[:2], "big") == 1002
    p.connection_lost()
    assert not p.stopped and p.session is not None and p.connect_target()[0] == "ws://resume/"


@pytest.mark.parametrize("opcode,payload,fin", [(9, b"p" * 126, True), (8, b"\x0f\xa0" + b"r" * 124, True),
                                                 (9, b"ping", False), (10, b"p" * 200, True)])
def test_invalid_control_frame_is_a_protocol_error(opcode: int, payload: bytes, fin: bool) -> None:
    # RFC 6455 5.5: at most 125 bytes, never fragmented (found by bench/fuzz_receive.py: a 126-byte ping
    # made encode_pong raise out of process())
    p, w, now = ready_protocol()
    feed(p, frame(payload, opcode, fin))
    (op, body), = sent(p)
    assert op == 8 and int.from_bytes(body[:2], "big") == 1002 and p.hangup
    feed(p, w.msg({"op": 0, "t": "MESSAGE_CREATE", "s": 2, "d": {}}))  # ignored: the connection is closing
    assert p.sequence == 1 and p.session is not None and not p.stopped


@pytest.mark.parametrize("payload,echo", [(b"", 1000), ((1000).to_bytes(2, "big"), 1000),
                                          ((1012).to_bytes(2, "big"), 1012), ((3000).to_bytes(2, "big"), 3000),
                                          ((4999).to_bytes(2, "big"), 4999)])
def test_valid_close_frame_is_echoed(payload: bytes, echo: int) -> None:
    p, w, now = ready_protocol()
    feed(p, frame(payload, 8))
    (op, body), = sent(p)
    assert op == 8 and int.from_bytes(body[:2], "big") == echo


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 2000, 5000, 65535])
def test_user_close_with_a_reserved_code_is_refused(code: int) -> None:
    p, w, now = ready_protocol()
    with pytest.raises(ValueError, match="cannot be sent"):
        p.close(CloseFrame(code))
    assert sent(p) == [] and p.session is not None and not p.stopped
    p.close(CloseFrame(4000))
    (op, body), = sent(p)
    assert int.from_bytes(body[:2], "big") == 4000 and p.session is not None  # kept for a later Resume


# ---- end to end: a real Shard over a socket to the simulator ---------------------------------------

FAST = {"identify_window": 0.2, "heartbeat_interval": 1000, "session_ttl": 30.0}


def _conn(sim: Simulator) -> Any:
    conn, = sim.connections_of(0)
    return conn


@pytest.mark.timeout(30)
@pytest.mark.parametrize("compression", ["zlib-stream", "zstd-stream"])
async def test_bomb_over_a_socket_reconnects_and_resumes(shards, compression: str) -> None:
    async with Simulator(events_per_second=20, **FAST) as sim:
        shard = shards(sim, compression=compression, max_inflated_size=LIMIT)
        rec = Recorder(shard)
        await rec.wait_for(lambda r: r.count("READY") == 1)
        _conn(sim).send_payload(b'{"op":0,"t":"MESSAGE_CREATE","s":99,"d":"' + BOMB + b'"}')  # 8 MiB inflated
        await rec.wait_for(lambda r: any(e.kind is ErrorKind.COMPRESSION for e in r.errors))
        assert not any(e.is_fatal() for e in rec.errors) and "max_inflated_size" in str(rec.errors[0])
        snap = await sim.wait_until(lambda s: shard_stats(s)["resumes"] == 1, timeout=10)
        assert shard_stats(snap)["identifies"] == 1 and snap["total"]["violations"] == 0
        await rec.wait_for(lambda r: "RESUMED" in r.types())
        n = rec.count("MESSAGE_CREATE")
        await rec.wait_for(lambda r: r.count("MESSAGE_CREATE") > n + 2)  # the fresh connection works
        inflater = shard._protocol.inflater
        assert inflater is not None and inflater.capacity < 64 * 1024 and shard._protocol.pending < 64 * 1024
        assert shard.session is not None and shard.session.sequence < 99
        await rec.stop()


@pytest.mark.timeout(30)
async def test_deep_json_and_bad_sequences_over_a_socket(shards) -> None:
    async with Simulator(**FAST) as sim:
        shard = shards(sim)
        rec = Recorder(shard)
        await rec.wait_for(lambda r: r.count("GUILD_CREATE") == 2)
        conn = _conn(sim)
        conn.session.dispatch(b"MESSAGE_CREATE", b"[" * 1000 + b"]" * 1000)
        conn.send_payload(b'{"t":"MESSAGE_CREATE","s":-5,"op":0,"d":{}}')
        conn.send_payload(b'{"t":"MESSAGE_CREATE","s":10000000000000000000000000,"op":0,"d":{}}')
        conn.session.dispatch(b"MESSAGE_CREATE", b'{"id":"after"}')
        await rec.wait_for(lambda r: r.count("MESSAGE_CREATE") == 1)
        assert [e.kind for e in rec.errors] == [ErrorKind.DESERIALIZING] * 3
        assert rec.count("READY") == 1  # nothing was parsed twice
        last = conn.session.seq
        assert shard.session is not None and shard.session.sequence == last
        before = shard_stats(sim.stats.snapshot())["heartbeats"]
        await call(sim.request_heartbeat(0))
        snap = await sim.wait_until(lambda s: shard_stats(s)["heartbeats"] > before, timeout=5)
        assert next(iter(snap["sessions"].values()))["confirmed"] == last  # the heartbeat carried it
        assert shard_stats(snap)["connections"] == 1 and snap["total"]["violations"] == 0
        await rec.stop()


@pytest.mark.timeout(30)
async def test_raw_mode_invalid_utf8_is_a_gateway_error(shards) -> None:
    async with Simulator(**FAST) as sim:
        shard = shards(sim)
        while '"READY"' not in await asyncio.wait_for(shard.next_message(), 5):
            pass
        conn = _conn(sim)
        conn.session.dispatch(b"MESSAGE_CREATE", b'{"content":"\xff\xfe"}')
        conn.session.dispatch(b"MESSAGE_CREATE", b'{"content":"fine"}')
        with pytest.raises(GatewayError) as info:
            while True:
                await asyncio.wait_for(shard.next_message(), 5)
        assert info.value.kind is ErrorKind.DESERIALIZING and not info.value.is_fatal()
        assert '"fine"' in await asyncio.wait_for(shard.next_message(), 5)  # the stream goes on


@pytest.mark.timeout(30)
async def test_invalid_close_code_over_a_socket(shards) -> None:
    async with Simulator(**FAST) as sim:
        shard = shards(sim)
        rec = Recorder(shard)
        await rec.wait_for(lambda r: r.count("READY") == 1)
        _conn(sim).write_raw(close_frame(1006, "reserved"))
        snap = await sim.wait_until(lambda s: shard_stats(s)["resumes"] == 1, timeout=10)
        assert shard_stats(snap)["closes"].get("client 1002") == 1  # answered with 1002, not echoed
        assert shard_stats(snap)["identifies"] == 1
        await rec.stop()


@pytest.mark.timeout(30)
async def test_tiny_hello_interval_is_clamped_over_a_socket(shards) -> None:
    async with Simulator(identify_window=0.2, heartbeat_interval=1, heartbeat_grace=30.0) as sim:
        shard = shards(sim)
        rec = Recorder(shard)
        await rec.wait_for(lambda r: r.count("READY") == 1)
        assert rec.events[0].data.heartbeat_interval == 1
        assert shard._protocol.heartbeater is not None and shard._protocol.heartbeater.interval == 1.0
        await rec.stop()
