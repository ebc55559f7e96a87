import multiprocess
import pytest
from hypothesis import given, strategies as st

from ipc import FrameDecoder, FramingError, encode_frame
from ipc import protocol as p


@given(st.lists(st.binary(max_size=300), max_size=20), st.data())
def test_frames_survive_any_split(payloads, data):
    stream = b"".join(encode_frame(x) for x in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec = FrameDecoder()
    out = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out += dec.feed(stream[prev:cut])
        prev = cut
    assert out == payloads
    assert dec.buffered == 0


def test_long_header_and_limits():
    dec = FrameDecoder(max_frame=10)
    with pytest.raises(FramingError, match="exceeds"):
        dec.feed(encode_frame(b"x" * 11))
    with pytest.raises(FramingError, match="negative"):
        FrameDecoder().feed(b"\xff\xff\xff\xfe")
    # the 2 GiB+ header form, checked on a small body
    big = b"\xff\xff\xff\xff" + (3).to_bytes(8, "big") + b"abc"
    assert FrameDecoder().feed(big) == [b"abc"]


def test_framing_is_compatible_with_multiprocess_connection():
    a, b = multiprocess.Pipe()
    a.send_bytes(b"hello")
    a.send_bytes(b"")
    import os
    import socket
    sock = socket.socket(fileno=os.dup(b.fileno()))
    got = []
    dec = FrameDecoder()
    while len(got) < 2:
        got += dec.feed(sock.recv(100))
    assert got == [b"hello", b""]
    sock.sendall(encode_frame(b"back"))
    assert a.recv_bytes() == b"back"


SAMPLES = [
    p.Hello(1, 123),
    p.Assign(16, [p.Assignment(0), p.Assignment(1, p.SessionInfo(1, "abc", 42, "ws://x"))]),
    p.Drain(False), p.Drained([p.SessionInfo(3, "s", 1)]), p.RestartShard(2, "zombie"),
    p.WorkerFatal("handler_import", "no module named x"), p.ShardFatal(1, 4004, "bad token"),
    p.Ping(7), p.Pong(7), p.IdentifyRequest(5, "invalid_session"), p.IdentifyGrant(5),
    p.IdentifyRefused(5, "budget"), p.IdentifyStarted(5), p.IdentifyDone(5, True), p.IdentifyCancel(5),
    p.SessionReport([p.SessionInfo(0, "a", 1, None)]),
    p.StatusReport([p.ShardStatus(0, "ACTIVE", 0.04, 0.1, {"MESSAGE_CREATE": 3})], rss=1 << 20),
    p.Request(9, "m:Add", b"\x92\x01\x02", True, 2.0), p.Response(9, b"\x03"), p.Response(10, error="x"),
]


@pytest.mark.parametrize("packet", SAMPLES, ids=lambda x: type(x).__name__)
def test_every_packet_round_trips(packet):
    assert p.decode(p.encode(packet)) == packet


def test_unknown_tag_is_rejected():
    import msgspec
    with pytest.raises(msgspec.ValidationError):
        p.decode(msgspec.msgpack.encode(["nope", 1]))


def test_long_form_is_used_only_above_the_short_maximum(monkeypatch):
    from ipc import framing

    monkeypatch.setattr(framing, "_SHORT_MAX", 5)  # the 2 GiB boundary, scaled down
    assert encode_frame(b"hello") == b"\x00\x00\x00\x05hello"
    long = encode_frame(b"hello!")
    assert long == b"\xff\xff\xff\xff" + (6).to_bytes(8, "big") + b"hello!"
    assert FrameDecoder().feed(long) == [b"hello!"]


def test_long_header_split_after_a_complete_frame():
    dec = FrameDecoder()
    empty_long = b"\xff\xff\xff\xff" + bytes(8)  # a 12-byte header and nothing else
    assert dec.feed(encode_frame(b"abcdef") + empty_long[:5]) == [b"abcdef"]
    assert dec.buffered == 5
    assert dec.feed(empty_long[5:]) == [b""]
    assert dec.buffered == 0


def test_a_frame_of_exactly_max_frame_is_accepted():
    assert FrameDecoder(max_frame=4).feed(encode_frame(b"abcd")) == [b"abcd"]
