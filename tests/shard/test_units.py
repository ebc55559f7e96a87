"""Unit tests of the sans-I/O parts: no sockets, no simulator."""

from __future__ import annotations

import asyncio
import json
import zlib

import msgspec
import pytest
import zstandard

from shard import (CloseFrame, Config, EventTypeFlags, GatewayError, InMemoryQueue, Intents, Session, ShardId,
                   ShardState, bucket)
from shard.backoff import Backoff
from shard.close_codes import CloseAction, close_action, close_reason
from shard.config import Token
from shard.event_type import DISPATCH_NAMES, _NAMES, flag_for_name, names_for_flags
from shard.heartbeat import Beat, Heartbeater
from shard.inflater import InflateError, ZlibInflater, ZstdInflater
from shard.latency import Latency
from shard.parse import PayloadDecoder
from shard.ratelimiter import CommandRatelimiter, usable_permits
from shard.wire import RequestGuildMembers, UpdatePresence, encode_command

TOKEN = "MTIz.secret-token-value"


# ---- ids -----------------------------------------------------------------------------------------

def test_shard_id() -> None:
    assert ShardId.ONE == ShardId(0, 1)
    assert (ShardId(3, 16).number, ShardId(3, 16).total) == (3, 16)
    assert msgspec.json.encode(ShardId(3, 16)) == b"[3,16]"
    assert str(ShardId(3, 16)) == "[3, 16]"
    with pytest.raises(ValueError):
        ShardId(16, 16)
    assert ShardId.new_checked(16, 16) is None


def test_bucket_consecutive() -> None:
    first, second = bucket(0, 2, 25), bucket(1, 2, 25)
    assert [s.number for s in first] == list(range(0, 13))
    assert [s.number for s in second] == list(range(13, 25))
    assert all(s.total == 25 for s in first + second)
    every = [s.number for b in range(7) for s in bucket(b, 7, 100)]
    assert every == list(range(100))


# ---- flags ---------------------------------------------------------------------------------------

def test_event_type_flags_one_distinct_bit_per_name() -> None:
    values = [flag_for_name(name) for name in _NAMES]
    assert len(set(values)) == len(_NAMES)
    for name, value in zip(_NAMES, values, strict=True):
        assert value is not None and value.bit_count() == 1, name
        assert EventTypeFlags[name].value == value
    assert EventTypeFlags.MESSAGE_POLL_VOTE_ADD != EventTypeFlags.READY  # twilight's collision
    assert EventTypeFlags.MESSAGE_POLL_VOTE_REMOVE != EventTypeFlags.RESUMED
    assert EventTypeFlags.ALL.value == (1 << len(_NAMES)) - 1
    assert "MESSAGE_CREATE" in DISPATCH_NAMES and "GATEWAY_HELLO" not in DISPATCH_NAMES


def test_event_type_groups() -> None:
    names = names_for_flags(EventTypeFlags.READY | EventTypeFlags.MESSAGE_CREATE)
    assert names == {"READY", "MESSAGE_CREATE"}
    assert "MESSAGE_CREATE" in names_for_flags(EventTypeFlags.GUILD_MESSAGES)
    assert "GUILD_CREATE" in names_for_flags(EventTypeFlags.GUILDS)


def test_intents() -> None:
    assert Intents.privileged() == 33026
    assert int(Intents.all()) == 0x331FFFF


# ---- close codes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("code", [4004, 4010, 4011, 4012, 4013, 4014])
def test_fatal_close_codes(code: int) -> None:
    assert close_action(code) is CloseAction.FATAL
    err = GatewayError.from_close(code)
    assert err.is_fatal() and err.close_code == code
    assert close_reason(code) in str(err)


@pytest.mark.parametrize("code", [4003, 4005, 4007, 4008, 4009])
def test_new_session_close_codes(code: int) -> None:
    assert close_action(code) is CloseAction.IDENTIFY
    assert not GatewayError.from_close(code).is_fatal()


@pytest.mark.parametrize("code", [None, 1000, 1001, 1006, 4000, 4001, 4002, 4006, 4999])
def test_resume_close_codes(code: int | None) -> None:
    assert close_action(code) is CloseAction.RESUME


def test_close_frames() -> None:
    assert CloseFrame.NORMAL.code == 1000 and CloseFrame.NORMAL.ends_session()
    assert CloseFrame.RESUME.code == 4000 and not CloseFrame.RESUME.ends_session()


# ---- heartbeat, backoff, latency -----------------------------------------------------------------

def test_heartbeat_schedule_jitter_then_interval() -> None:
    hb = Heartbeater(10.0, now=100.0, rand=lambda: 0.25)
    assert hb.deadline == pytest.approx(102.5)
    assert hb.tick(102.5) is Beat.SEND
    assert hb.deadline == pytest.approx(112.5)
    assert hb.ack()
    assert hb.tick(112.5) is Beat.SEND
    assert hb.deadline == pytest.approx(122.5)


def test_zombie_when_no_ack_between_beats() -> None:
    hb = Heartbeater(1.0, now=0.0, rand=lambda: 0.0)
    assert hb.tick(0.0) is Beat.SEND
    assert hb.tick(1.0) is Beat.ZOMBIE


def test_no_zombie_while_reading_is_suspended() -> None:
    hb = Heartbeater(1.0, now=0.0, rand=lambda: 0.0)
    hb.tick(0.0)
    assert hb.tick(1.0, suspended=True) is Beat.SEND


def test_a_beat_out_of_schedule_restarts_the_schedule_and_expects_its_ack() -> None:
    hb = Heartbeater(10.0, now=100.0, rand=lambda: 0.5)
    hb.restart(103.0)  # the cutover's marker beat (GatewayProtocol.beat_now)
    assert hb.deadline == pytest.approx(113.0) and hb.awaiting_ack
    assert hb.tick(113.0) is Beat.ZOMBIE  # no ACK since the marker beat
    hb = Heartbeater(10.0, now=100.0, rand=lambda: 0.5)
    hb.restart(103.0)
    assert hb.ack()  # the marker's ACK was expected
    assert hb.tick(113.0) is Beat.SEND


def test_unrequested_ack() -> None:
    hb = Heartbeater(1.0, now=0.0, rand=lambda: 0.5)
    assert not hb.ack()


def test_backoff_grows_with_jitter_and_caps() -> None:
    lo, hi = Backoff(1.0, 8.0, rand=lambda: 0.0), Backoff(1.0, 8.0, rand=lambda: 0.999999)
    assert lo.delay(0) == hi.delay(0) == 0.0
    assert [lo.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert hi.delay(3) == pytest.approx(4.0, rel=1e-5)
    assert hi.delay(50) == pytest.approx(8.0, rel=1e-5)
    import random
    rng = random.Random(1)
    real = Backoff(1.0, 60.0, rand=rng.random)
    delays = {real.delay(3) for _ in range(20)}
    assert len(delays) > 1  # jittered, not a fixed retry


def test_latency() -> None:
    lat = Latency()
    assert lat.average is None and lat.recent == ()
    for i in range(7):
        lat.record_sent(i * 10.0)
        lat.record_received(i * 10.0 + 0.1 * (i + 1))
    assert lat.periods == 7
    assert len(lat.recent) == 5 and lat.recent[0] == pytest.approx(0.7)
    assert lat.average == pytest.approx(sum(0.1 * (i + 1) for i in range(7)) / 7)
    assert lat.sent == 60.0 and lat.received == pytest.approx(60.7)


# ---- ratelimiter ---------------------------------------------------------------------------------

def test_ratelimiter_reserve_and_window() -> None:
    assert usable_permits(41.25) == 117
    assert usable_permits(20.0) == 116
    now = [0.0]
    rl = CommandRatelimiter(41.25, clock=lambda: now[0])
    assert rl.max == 117 and rl.available() == 117
    for _ in range(117):
        assert rl.try_acquire()
    assert not rl.try_acquire()
    assert rl.available() == 0
    assert rl.next_available() == pytest.approx(60.0)
    now[0] = 30.0
    assert rl.next_available() == pytest.approx(30.0)
    now[0] = 60.0
    assert rl.available() == 117


# ---- queue ---------------------------------------------------------------------------------------

async def test_queue_one_identify_per_bucket_per_interval() -> None:
    loop = asyncio.get_running_loop()
    q = InMemoryQueue(max_concurrency=2, interval=0.2)
    grants: list[tuple[int, float]] = []

    async def go(n: int) -> None:
        await q.enqueue(n)
        grants.append((n, loop.time()))
        q.sent(n)  # the shard wrote its Identify

    start = loop.time()
    await asyncio.gather(*(go(n) for n in range(4)))
    times = {n: t - start for n, t in grants}
    assert times[0] < 0.1 and times[1] < 0.1          # buckets 0 and 1 at once
    assert times[2] >= 0.19 and times[3] >= 0.19      # then the next of each bucket after the interval
    assert q.remaining == 996


async def test_queue_waits_for_budget_reset_instead_of_burning_it() -> None:
    loop = asyncio.get_running_loop()
    q = InMemoryQueue(max_concurrency=1, remaining=1, reset_after=0.3, total=5, interval=0.0)
    await q.enqueue(0)
    q.sent(0)
    start = loop.time()
    await q.enqueue(0)
    assert loop.time() - start >= 0.25
    assert q.remaining == 4


async def test_queue_window_starts_when_the_identify_is_sent() -> None:
    """A grant holds its bucket until the shard says its Identify went out; the interval counts from then."""
    loop = asyncio.get_running_loop()
    q = InMemoryQueue(max_concurrency=1, interval=0.2)
    await q.enqueue(0)
    second = asyncio.ensure_future(q.enqueue(1))
    await asyncio.sleep(0.3)  # a slow connect: more than the interval since the grant
    assert not second.done()
    q.sent(0)
    sent_at = loop.time()
    await second
    assert loop.time() - sent_at >= 0.19


async def test_queue_hold_ends_after_hold_timeout_or_an_unused_turn() -> None:
    loop = asyncio.get_running_loop()
    q = InMemoryQueue(max_concurrency=1, interval=0.1, hold_timeout=0.2)
    start = loop.time()
    await q.enqueue(0)
    await q.enqueue(1)  # shard 0 never reported: its turn is over after the hold, plus the interval
    assert loop.time() - start >= 0.29
    q = InMemoryQueue(max_concurrency=1, interval=10.0, hold_timeout=10.0)
    await q.enqueue(0)
    second = asyncio.ensure_future(q.enqueue(1))
    await asyncio.sleep(0)
    q.identified(0, False)  # the connection failed before Identify: the turn comes back at once...
    q.unused(0)
    await asyncio.wait_for(second, 5.0)  # ...not after the 10 s hold or interval
    assert q.remaining == 999


async def test_queue_cancel_safe() -> None:
    q = InMemoryQueue(max_concurrency=1, remaining=10, total=10, interval=0.3)
    await q.enqueue(0)
    waiter = asyncio.ensure_future(q.enqueue(0))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert q.remaining == 9  # the cancelled waiter spent nothing
    q.identified(0, True)
    assert q.outcomes == {0: True}


def test_queue_validates() -> None:
    with pytest.raises(ValueError):
        InMemoryQueue(1, remaining=5, total=4)


# ---- inflaters -----------------------------------------------------------------------------------

def _zlib_messages(n: int = 5) -> tuple[list[bytes], list[bytes]]:
    c = zlib.compressobj()
    raw = [json.dumps({"op": 0, "t": "X", "s": i, "d": {"i": i, "pad": "x" * 300}}).encode() for i in range(n)]
    return raw, [c.compress(m) + c.flush(zlib.Z_SYNC_FLUSH) for m in raw]


@pytest.mark.parametrize("backend", ["zlib", "zlib-ng"])
def test_zlib_whole_and_split(backend: str) -> None:
    raw, wire = _zlib_messages()
    inf = ZlibInflater(backend)
    assert inf.feed(wire[0]) == raw[0]
    # a message split into three WebSocket messages: only the last ends with the suffix
    m = wire[1]
    parts = [m[:5], m[5:len(m) // 2], m[len(m) // 2:]]
    assert inf.feed(parts[0]) is None and inf.feed(memoryview(parts[1])) is None
    assert inf.capacity > 0
    assert inf.feed(parts[2]) == raw[1]
    assert inf.feed(wire[2]) == raw[2]
    assert inf.bytes_in == sum(map(len, wire[:3])) and inf.bytes_out == sum(map(len, raw[:3]))


def test_zlib_buffer_shrinks_after_large_message() -> None:
    c = zlib.compressobj(0)
    big = b"y" * 200_000
    wire = c.compress(big) + c.flush(zlib.Z_SYNC_FLUSH)
    inf = ZlibInflater("zlib")
    assert inf.feed(wire[:100_000]) is None
    assert inf.feed(wire[100_000:]) == big
    assert inf.capacity < 64 * 1024


def test_zlib_corrupt() -> None:
    inf = ZlibInflater("zlib")
    with pytest.raises(InflateError):
        inf.feed(b"\x78\x9c\xde\xad\xbe\xef\x00\x00\xff\xff")


def test_zstd_stream() -> None:
    co = zstandard.ZstdCompressor().compressobj()
    inf = ZstdInflater()
    for i in range(3):
        msg = b'{"op":0,"t":"X","s":%d,"d":{}}' % i
        assert inf.feed(co.compress(msg) + co.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)) == msg
    with pytest.raises(InflateError):
        ZstdInflater().feed(b"\x28\xb5\x2f\xfd garbage garbage")


# ---- decoding ------------------------------------------------------------------------------------

class Msg(msgspec.Struct):
    id: str
    content: str


@pytest.mark.parametrize("backend", ["msgspec", "json"])
def test_envelope_and_registered_struct(backend: str) -> None:
    dec = PayloadDecoder(backend, {"MESSAGE_CREATE": Msg})
    for payload in (b'{"t":"MESSAGE_CREATE","s":7,"op":0,"d":{"id":"1","content":"hi","x":[1,2]}}',
                    b'{"t":"MESSAGE_CREATE","op":0,"d":{"id":"1","content":"hi","x":[1,2]},"s":7}'):
        env = dec.envelope(payload)
        assert (env.op, env.t, env.s) == (0, "MESSAGE_CREATE", 7)
        assert dec.decode("MESSAGE_CREATE", env.d) == Msg("1", "hi")
        assert dec.decode("OTHER", env.d) == {"id": "1", "content": "hi", "x": [1, 2]}
    env = dec.envelope(b'{"op":11}')
    assert (env.op, env.t, env.s) == (11, None, None)
    with pytest.raises(msgspec.DecodeError):
        dec.envelope(b'{"t":"MESSAGE_CREATE","s":,"op":0,"d":{"id":')


# ---- config, tokens, commands --------------------------------------------------------------------

def test_token_prefix_and_redaction() -> None:
    t = Token(TOKEN)
    assert t.authorization == "Bot " + TOKEN and t.gateway == TOKEN
    assert Token("Bot " + TOKEN).gateway == TOKEN
    cfg = Config(TOKEN, Intents.GUILDS, session=Session("abc", 5), resume_url="ws://x")
    for text in (repr(cfg), str(cfg), repr(t), str(t), f"{t}", repr(cfg.replace(large_threshold=100))):
        assert TOKEN not in text
    with pytest.raises(ValueError):
        Config(TOKEN, 0, large_threshold=251)
    assert Config(TOKEN, 0, resume_url="ws://x").resume_url is None  # ignored without a session


def test_session_serialises() -> None:
    s = Session("abc", 42)
    assert s.to_json() == b'{"id":"abc","sequence":42}'
    assert Session.from_json(s.to_json()) == s


def test_commands_encode() -> None:
    assert json.loads(encode_command(UpdatePresence(status="idle"))) == {
        "op": 3, "d": {"status": "idle", "activities": [], "afk": False, "since": None}}
    assert json.loads(encode_command(RequestGuildMembers("1", query=""))) == {
        "op": 8, "d": {"guild_id": "1", "query": "", "limit": 0}}
    with pytest.raises(ValueError):
        RequestGuildMembers("1")


def test_state_constants() -> None:
    assert ShardState.ACTIVE.is_identified() and ShardState.RESUMING.is_identified()
    assert not ShardState.Disconnected(2).is_identified()
    assert ShardState.Disconnected(2).reconnect_attempts == 2
    assert repr(ShardState.Disconnected(2)) == "ShardState.Disconnected(reconnect_attempts=2)"


async def test_handshake_reply_after_connect_timeout_is_dropped_quietly() -> None:
    """A 101 that arrives after the connect timeout cancelled the wait must not raise InvalidStateError."""
    import asyncio
    import base64
    import hashlib

    from shard import Config, Shard, ShardId
    from shard.shard import _Connection
    from shard.websocket import Handshake

    class FakeTransport:
        aborted = False
        sent = b""

        def write(self, data: bytes) -> None:
            self.sent += data

        def abort(self) -> None:
            self.aborted = True

    shard = Shard.with_config(ShardId.ONE, Config("tok", 1, gateway_url="ws://127.0.0.1:1/", metrics=False))
    conn = _Connection(shard, Handshake("ws://127.0.0.1:1/?v=10&encoding=json"), asyncio.get_running_loop())
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    key = next(line.split(b": ")[1] for line in transport.sent.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key"))
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    conn.opened.cancel()  # what asyncio.timeout does to the awaited future
    conn.data_received(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    assert transport.aborted and conn.opened.cancelled()


def test_frame_headers_each_length_form_incomplete_and_refused() -> None:
    """shard.frames.parse_header: the three length forms, what an incomplete frame needs, and the refusals."""
    import struct

    from shard.frames import HEADER_ERRORS, MASKED, TOO_LARGE, parse_header
    short = b"\x82\x03abc"
    assert parse_header(short, 0, len(short), 100) == (0x82, 2, 5)
    medium = b"xx" + struct.pack("!BBH", 0x81, 126, 300) + b"a" * 300
    assert parse_header(medium, 2, len(medium), 100) == (0x81, 6, 306)  # 16-bit lengths are not held to max_size
    long = struct.pack("!BBQ", 0x82, 127, 70000) + b"a" * 70000
    assert parse_header(long, 0, len(long), 1 << 20) == (0x82, 10, 70010)
    for data, need in ((short[:1], 2), (medium[2:5], 4), (long[:9], 10), (short[:4], 5), (long[:100], 70010)):
        b0, start, end = parse_header(data, 0, len(data), 1 << 20)
        assert end > len(data) and end == need and b0 >= 0
    for data, refused in ((b"\x82\xfe\x00\x00", MASKED), (b"\x82\xff", MASKED), (long[:10], TOO_LARGE)):
        b0, start, end = parse_header(data, 0, len(data), 65536)
        assert b0 == refused and end > 1 << 62 and HEADER_ERRORS[b0]


def test_frame_headers_off_a_nonzero_position_and_at_each_boundary() -> None:
    """parse_header at `pos` > 0 (the receive loop's place in its chunk): what is needed counts from `pos`; a
    header that is exactly all there gives the frame's length; the 64-bit limit is inclusive and reads all
    eight length bytes. An incomplete or refused frame is no frame: its first byte (when not a refusal) and
    its payload start are 0, whatever bytes were there."""
    import struct

    from shard.frames import MASKED, TOO_LARGE, parse_header
    pad = b"\x82" * 20  # bytes before `pos` that must not be read as this frame's
    medium = pad + struct.pack("!BBH", 0x81, 126, 300)
    long = pad + struct.pack("!BBQ", 0x82, 127, 70000)
    for data, need in ((pad + b"\x81", 2), (medium[:23], 4), (long[:29], 10)):
        assert parse_header(data, 20, len(data), 1 << 20) == (0, 0, 20 + need)
    assert parse_header(medium, 20, len(medium), 100) == (0x81, 24, 324)  # the header alone: the length is known
    assert parse_header(long, 20, len(long), 1 << 20) == (0x82, 30, 70030)
    assert parse_header(long, 20, len(long), 70000) == (0x82, 30, 70030)  # exactly max_size is allowed
    assert parse_header(long, 20, len(long), 69999) == (TOO_LARGE, 0, 1 << 63)
    top_byte_only = struct.pack("!BBQ", 0x82, 127, 1 << 56)  # the length's first byte matters too
    assert parse_header(top_byte_only, 0, 10, 1 << 20) == (TOO_LARGE, 0, 1 << 63)
    assert parse_header(b"\x82\xff", 0, 2, 1 << 20) == (MASKED, 0, 1 << 63)
