"""The sans-I/O core driven byte by byte: frames in, frames/events/decisions out."""

from __future__ import annotations

import json
import struct
import zlib

import pytest

from shard import CloseFrame, Config, EventTypeFlags, GatewayError, Session, ShardId, ShardState
from shard.close_codes import CloseAction
from shard.error import ErrorKind
from shard.protocol import RESUME_URL_ATTEMPTS, RESUME_WINDOW, GatewayProtocol, TransportAction

TOKEN = "MTIz.secret-token-value"


def frame(payload: bytes, opcode: int = 2, fin: bool = True) -> bytes:
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", b0, n) + payload
    if n < 65536:
        return struct.pack("!BBH", b0, 126, n) + payload
    return struct.pack("!BBQ", b0, 127, n) + payload


def unmask(data: bytes) -> tuple[int, bytes]:
    """Decode one masked client frame -> (opcode, payload)."""
    op = data[0] & 0x0F
    n = data[1] & 0x7F
    pos = 2
    if n == 126:
        n = struct.unpack("!H", data[2:4])[0]
        pos = 4
    mask = data[pos:pos + 4]
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(data[pos + 4:pos + 4 + n]))
    return op, body


class Wire:
    """A fake server side: zlib-stream compressor and a clock."""

    def __init__(self, compression: str | None = "zlib-stream") -> None:
        self.c = zlib.compressobj()
        self.compression = compression

    def msg(self, obj: object) -> bytes:
        data = json.dumps(obj, separators=(",", ":")).encode()
        if self.compression is None:
            return frame(data, 1)
        return frame(self.c.compress(data) + self.c.flush(zlib.Z_SYNC_FLUSH))


def make(compression: str | None = "zlib-stream", **kw: object) -> tuple[GatewayProtocol, Wire, list[float]]:
    now = [100.0]
    cfg = Config(TOKEN, 513, gateway_url="ws://gw/", compression=compression, **kw)  # type: ignore[arg-type]
    p = GatewayProtocol(ShardId(0, 1), cfg, clock=lambda: now[0], rand=lambda: 0.5)
    p.connection_made()
    return p, Wire(compression), now


def feed(p: GatewayProtocol, data: bytes) -> None:
    p.receive_data(data)
    p.process()


def sent(p: GatewayProtocol) -> list[tuple[int, bytes]]:
    out = [unmask(f) for f in p.outgoing]
    p.outgoing.clear()
    return out


def drain(p: GatewayProtocol) -> list[object]:
    items = []
    while p.events:
        try:
            items.append(p.make_event(p.pop()[0]))
        except GatewayError as exc:
            items.append(exc)
    return items


HELLO = {"op": 10, "d": {"heartbeat_interval": 1000}, "s": None, "t": None}
READY = {"op": 0, "t": "READY", "s": 1, "d": {"session_id": "sess", "resume_gateway_url": "ws://resume/", "v": 10,
                                               "user": {"id": "1"}, "guilds": []}}


def identify_and_ready(p: GatewayProtocol, w: Wire) -> None:
    feed(p, w.msg(HELLO))
    assert p.want_identify
    p.identify()
    feed(p, w.msg(READY))


def test_hello_identify_ready() -> None:
    p, w, now = make()
    feed(p, w.msg(HELLO))
    assert p.want_identify and p.state == ShardState.IDENTIFYING
    assert p.heartbeat_deadline == pytest.approx(100.5)  # interval * jitter(0.5)
    p.identify()
    (op, body), = sent(p)
    ident = json.loads(body)
    assert ident["op"] == 2 and ident["d"]["token"] == TOKEN and ident["d"]["shard"] == [0, 1]
    assert ident["d"]["intents"] == 513 and ident["d"]["properties"]["os"]
    feed(p, w.msg(READY))
    assert p.state == ShardState.ACTIVE
    assert p.session == Session("sess", 1) and p.resume_url == "ws://resume/"
    events = drain(p)
    assert [e.type for e in events] == ["GATEWAY_HELLO", "READY"]
    assert events[1].data.session_id == "sess"


def test_heartbeat_carries_last_sequence_and_zombie() -> None:
    p, w, now = make()
    identify_and_ready(p, w)
    sent(p)
    feed(p, w.msg({"op": 0, "t": "MESSAGE_CREATE", "s": 5, "d": {"id": "1"}}))
    now[0] = 100.5
    p.heartbeat_timer(now[0])
    (op, body), = sent(p)
    assert json.loads(body) == {"op": 1, "d": 5}
    now[0] = 100.52
    feed(p, w.msg({"op": 11}))
    assert p.latency.recent[0] == pytest.approx(0.02)
    now[0] = 101.5
    p.heartbeat_timer(now[0])
    assert sent(p) and not p.abort
    now[0] = 102.5  # no ACK since the previous beat
    p.heartbeat_timer(now[0])
    assert p.abort and p.disconnect == (CloseAction.RESUME, "zombie")
    assert sent(p) == []  # no close frame: the TCP connection is dropped
    p.connection_lost()
    assert p.session == Session("sess", 5)  # kept
    assert p.connect_target()[0] == "ws://resume/"
    close = [e for e in drain(p) if getattr(e, "type", None) == "GATEWAY_CLOSE"]
    assert close[0].data == CloseFrame(1006, "")


def test_server_heartbeat_request_answered_at_once() -> None:
    p, w, now = make()
    identify_and_ready(p, w)
    sent(p)
    feed(p, w.msg({"op": 1, "d": None}))
    (op, body), = sent(p)
    assert json.loads(body) == {"op": 1, "d": 1}


def test_resume_on_hello_with_session() -> None:
    p, w, now = make(session=Session("old", 41), resume_url="ws://resume/")
    assert p.connect_target() == ("ws://resume/", 0.0)
    feed(p, w.msg(HELLO))
    assert not p.want_identify and p.state == ShardState.RESUMING
    (op, body), = sent(p)
    assert json.loads(body) == {"op": 6, "d": {"token": TOKEN, "session_id": "old", "seq": 41}}
    feed(p, w.msg({"op": 0, "t": "RESUMED", "s": 42, "d": {}}))
    assert p.state == ShardState.ACTIVE


def test_op7_closes_4000_and_resumes() -> None:
    p, w, now = make()
    identify_and_ready(p, w)
    sent(p)
    feed(p, w.msg({"op": 7, "d": None}))
    (op, body), = sent(p)
    assert op == 8 and int.from_bytes(body[:2], "big") == 4000
    now[0] += 60.0  # the connection had been up for a minute
    feed(p, frame(body[:2], 8))  # server echoes
    p.connection_lost()
    assert p.session is not None and p.connect_target() == ("ws://resume/", 0.0)
    assert p.state == ShardState.Disconnected(0)


def test_op9_false_waits_then_identifies_on_main_url() -> None:
    p, w, now = make()
    identify_and_ready(p, w)
    feed(p, w.msg({"op": 9, "d": False}))
    assert p.session is None
    assert 1.0 <= p.reconnect_delay <= 5.0
    p.connection_lost()
    url, delay = p.connect_target()
    assert url == "ws://gw/" and delay == pytest.approx(3.0)  # 1 + 4 * rand(0.5)


def test_op9_true_resumes() -> None:
    p, w, now = make()
    identify_and_ready(p, w)
    feed(p, w.msg({"op": 9, "d": True}))
    p.connection_lost()
    assert p.session is not None and p.connect_target()[0] == "ws://resume/"


@pytest.mark.parametrize("code,fatal,keeps_session", [(4004, True, True), (4014, True, True), (4007, False, False),
                                                      (4009, False, False), (4003, False, False),
                                                      (4005, False, False), (4008, False, False),
                                                      (4000, False, True), (4002, False, True), (1000, False, True)])
def test_server_close_policy(code: int, fatal: bool, keeps_session: bool) -> None:
    p, w, now = make()
    identify_and_ready(p, w)
    drain(p)
    sent(p)
    feed(p, frame(code.to_bytes(2, "big") + b"bye", 8))
    (op, body), = sent(p)  # the close is echoed
    assert op == 8 and int.from_bytes(body[:2], "big") == code
    p.connection_lost()
    items = drain(p)
    assert items[0].type == "GATEWAY_CLOSE" and items[0].data == CloseFrame(code, "bye")
    if fatal:
        assert p.stopped and p.state == ShardState.FATALLY_CLOSED
        assert isinstance(items[1], GatewayError) and items[1].is_fatal() and items[1].close_code == code
    else:
        assert not p.stopped and len(items) == 1
        assert (p.session is not None) == keeps_session


def test_failed_connects_back_off_and_reset_on_active() -> None:
    p, w, now = make()
    for n in range(1, 4):
        p.connect_failed("refused")
        assert p.state == ShardState.Disconnected(n)
    assert p.connect_target()[1] == pytest.approx(0.75 * 4.0)
    p.connection_made()
    identify_and_ready(p, w)
    now[0] += 31.0  # a connection that worked for a while...
    p.connection_lost()
    assert p.attempts == 0 and p.connect_target()[1] == 0.0  # ...reconnects at once


def test_gateway_closes_right_after_ready_back_off() -> None:
    p, w, now = make()
    delays = []
    for n in range(1, 4):
        identify_and_ready(p, w) if n == 1 else None
        feed(p, frame((4000).to_bytes(2, "big"), 8))
        p.connection_lost()
        assert p.state == ShardState.Disconnected(n)
        delays.append(p.connect_target()[1])
        p.connection_made()
        feed(p, w.msg(HELLO))
        feed(p, w.msg({"op": 0, "t": "RESUMED", "s": 2, "d": {}}))
    assert delays == sorted(delays) and delays[0] > 0  # no immediate retry loop


def test_close_before_ready_counts_as_failure() -> None:
    p, w, now = make()
    feed(p, w.msg(HELLO))
    feed(p, frame((4000).to_bytes(2, "big"), 8))
    p.connection_lost()
    assert p.attempts == 1 and p.connect_target()[1] > 0


def test_corrupted_stream_is_non_fatal_and_resumes() -> None:
    p, w, now = make()
    identify_and_ready(p, w)
    sent(p)
    drain(p)
    feed(p, frame(b"\x78\x9c\xde\xad\xbe\xef\x00\x00\xff\xff"))
    items = drain(p)
    assert isinstance(items[0], GatewayError) and items[0].kind is ErrorKind.COMPRESSION and not items[0].is_fatal()
    (op, body), = sent(p)
    assert op == 8 and int.from_bytes(body[:2], "big") == 4000
    assert p.hangup
    p.connection_lost()
    assert p.session is not None
    p.connection_made()
    assert p.inflater is not None and p.inflater.bytes_in == 0  # fresh inflater


def test_frames_split_across_reads_and_fragmented_messages() -> None:
    p, w, now = make()
    data = w.msg(HELLO) + w.msg({"op": 0, "t": "MESSAGE_CREATE", "s": 2, "d": {"x": "y" * 500}})
    for i in range(0, len(data), 7):
        feed(p, data[i:i + 7])
    # one zlib message as a fragmented WebSocket message (binary + continuation frames)
    raw = json.dumps({"op": 0, "t": "MESSAGE_CREATE", "s": 3, "d": {"x": "z" * 300}}).encode()
    z = w.c.compress(raw) + w.c.flush(zlib.Z_SYNC_FLUSH)
    feed(p, frame(z[:10], 2, fin=False) + frame(z[10:20], 0, fin=False) + frame(z[20:], 0))
    # ...and split across two complete WebSocket messages (only the last ends in 00 00 ff ff)
    raw2 = json.dumps({"op": 0, "t": "MESSAGE_CREATE", "s": 4, "d": {}}).encode()
    z2 = w.c.compress(raw2) + w.c.flush(zlib.Z_SYNC_FLUSH)
    feed(p, frame(z2[:6]) + frame(z2[6:]))
    types = [(e.type, e.seq) for e in drain(p)]
    assert types == [("GATEWAY_HELLO", None), ("MESSAGE_CREATE", 2), ("MESSAGE_CREATE", 3), ("MESSAGE_CREATE", 4)]


def test_ping_answered_with_pong() -> None:
    p, w, now = make()
    feed(p, frame(b"abc", 9))
    assert sent(p) == [(10, b"abc")]


def test_unknown_opcode_and_event_do_not_crash() -> None:
    p, w, now = make()
    identify_and_ready(p, w)
    drain(p)
    feed(p, w.msg({"op": 99, "d": {"x": 1}}))
    feed(p, w.msg({"op": 0, "t": "BRAND_NEW_EVENT", "s": 9, "d": {"x": 1}}))
    feed(p, w.msg({"op": 0, "t": "MESSAGE_CREATE", "s": 10, "d": {}}))
    assert [e.type for e in drain(p)] == ["BRAND_NEW_EVENT", "MESSAGE_CREATE"]
    assert p.sequence == 10


def test_event_filter_skips_before_decoding() -> None:
    p, w, now = make(event_types=EventTypeFlags.READY | EventTypeFlags.MESSAGE_CREATE)
    identify_and_ready(p, w)
    feed(p, w.msg({"op": 0, "t": "TYPING_START", "s": 2, "d": {"x": 1}}))
    feed(p, w.msg({"op": 0, "t": "MESSAGE_CREATE", "s": 3, "d": {}}))
    feed(p, w.msg({"op": 0, "t": "BRAND_NEW_EVENT", "s": 4, "d": {}}))
    assert [e.type for e in drain(p)] == ["READY", "MESSAGE_CREATE"]
    assert p.sequence == 4 and p.metrics.events["TYPING_START"] == 1


def test_bad_json_is_a_non_fatal_error() -> None:
    p, w, now = make(compression=None)
    feed(p, frame(b'{"t":"MESSAGE_CREATE","s":,"op":0,"d":{"id":', 1))
    err, = drain(p)
    assert isinstance(err, GatewayError) and err.kind is ErrorKind.DESERIALIZING and not err.is_fatal()


def test_user_close_normal_ends_session_resume_keeps_it() -> None:
    p, w, now = make()
    identify_and_ready(p, w)
    assert p.close(CloseFrame.RESUME) == Session("sess", 1)
    p2, w2, _ = make()
    identify_and_ready(p2, w2)
    assert p2.close(CloseFrame.NORMAL) is None and p2.session is None


def test_oversized_command_refused() -> None:
    p, w, now = make()
    with pytest.raises(GatewayError) as info:
        p.command_frame(b"x" * 4097)
    assert info.value.kind is ErrorKind.PAYLOAD_TOO_LARGE and "4096" in str(info.value)
    assert p.command_frame(b"x" * 4096)


def test_masked_server_frame_is_protocol_error() -> None:
    p, w, now = make()
    feed(p, b"\x82\x85" + b"\x00" * 9)
    assert p.hangup and p.disconnect is not None


def lose_connection_after_ready() -> GatewayProtocol:
    p, w, now = make()
    identify_and_ready(p, w)
    now[0] += 60.0
    p.connection_lost()
    return p


def fail_connects(p: GatewayProtocol, n: int) -> list[str]:
    """n failed connect attempts; the URL each went to."""
    urls = []
    for _ in range(n):
        urls.append(p.connect_target()[0])
        p.connect_failed("refused")
    return urls


def test_failed_connects_to_the_resume_url_try_the_gateway_url_and_keep_the_session_while_it_fails_too() -> None:
    """The reference: "If you can't resume, [...] use the cached URL and Identify". After RESUME_URL_ATTEMPTS
    failed connects in a row to the resume URL, one goes to the gateway URL. While that one fails too (an outage
    of our own network fails them all) the session is kept, and the resume URL is tried again just as before."""
    p = lose_connection_after_ready()
    rounds = 3
    urls = fail_connects(p, rounds * (RESUME_URL_ATTEMPTS + 1))
    assert urls == (["ws://resume/"] * RESUME_URL_ATTEMPTS + ["ws://gw/"]) * rounds
    assert p.session == Session("sess", 1) and not p.needs_permit
    assert p.connect_target()[0] == "ws://resume/"
    p.connection_made()  # our network is back: the resume URL answers, and gets the Resume
    feed(p, Wire().msg(HELLO))
    (op, body), = sent(p)
    assert json.loads(body) == {"op": 6, "d": {"token": TOKEN, "session_id": "sess", "seq": 1}}
    p.connection_lost()  # no RESUMED yet: the connection opened, so the count starts again at the resume URL
    assert fail_connects(p, RESUME_URL_ATTEMPTS + 1) == ["ws://resume/"] * RESUME_URL_ATTEMPTS + ["ws://gw/"]
    assert p.session == Session("sess", 1)


def test_the_gateway_url_answering_while_the_resume_url_fails_identifies_there_and_never_resumes() -> None:
    p = lose_connection_after_ready()
    fail_connects(p, RESUME_URL_ATTEMPTS + 1 + RESUME_URL_ATTEMPTS)  # the first try of the gateway URL failed too
    assert p.connect_target()[0] == "ws://gw/" and p.session == Session("sess", 1)
    p.connection_made()  # the gateway answers while the resume host does not: "can't resume"
    assert p.session is None and p.state == ShardState.IDENTIFYING
    feed(p, Wire().msg(HELLO))
    assert p.want_identify and sent(p) == []  # no Resume to the gateway URL: it asks the identify queue
    p.identify()
    (op, body), = sent(p)
    assert json.loads(body)["op"] == 2
    p.connection_lost()  # closed before READY: no session, so the next connection identifies too
    assert p.connect_target()[0] == "ws://gw/" and p.needs_permit


def test_a_session_is_dropped_once_older_than_the_resume_window() -> None:
    """A session is tried for RESUME_WINDOW seconds after its last connection ended, then the shard identifies."""
    p, w, now = make(backoff_max=10.0)
    identify_and_ready(p, w)
    now[0] += 100.0
    p.connection_lost()
    lost_at = now[0]
    tried: list[float] = []  # when each Resume attempt started, after the session was last alive
    while True:
        url, delay = p.connect_target()
        if p.session is None:
            break
        now[0] += delay  # the driver waited out the backoff; then the connect fails
        tried.append(now[0] - lost_at)
        p.connect_failed("refused")
    assert len(tried) > RESUME_URL_ATTEMPTS and max(tried) <= RESUME_WINDOW < now[0] + delay - lost_at
    assert url == "ws://gw/" and p.needs_permit  # the next connection identifies
    p.connection_made()
    feed(p, Wire().msg(HELLO))
    assert p.want_identify and sent(p) == []


def test_a_connection_that_was_active_restarts_the_resume_window() -> None:
    p, w, now = make(session=Session("old", 3), resume_url="ws://resume/")
    now[0] += RESUME_WINDOW - 1.0  # a session given in Config counts as alive when the shard is made
    assert p.connect_target() == ("ws://resume/", 0.0)
    feed(p, w.msg(HELLO))
    feed(p, w.msg({"op": 0, "t": "RESUMED", "s": 4, "d": {}}))
    now[0] += 200.0
    p.connection_lost()  # alive until now
    now[0] += RESUME_WINDOW - 1.0
    assert p.connect_target()[0] == "ws://resume/" and p.session == Session("old", 4)
    now[0] += 2.0
    assert p.connect_target()[0] == "ws://gw/" and p.session is None


def test_commands_are_refused_while_the_connection_closes_or_is_dropped() -> None:
    """can_send_commands() is False from the moment the core gives a connection up, not only once it is gone:
    a command written to a closing or aborted transport would be lost (twilight #2247)."""
    p, w, now = make()
    assert not p.can_send_commands()  # not Active yet
    identify_and_ready(p, w)
    assert p.can_send_commands()
    feed(p, w.msg({"op": 7, "d": None}))  # our close frame is out: the connection is closing
    assert p.connected and not p.can_send_commands()
    p.connection_lost()
    p.connection_made()
    w = Wire()
    feed(p, w.msg(HELLO))
    feed(p, w.msg({"op": 0, "t": "RESUMED", "s": 2, "d": {}}))
    assert p.can_send_commands()
    sent(p)
    p.heartbeat_timer(100.5)
    p.heartbeat_timer(101.5)  # no ACK since the previous beat: a zombie, dropped without a close frame
    assert p.transport_action() is TransportAction.ABORT and p.connected and not p.can_send_commands()


def test_no_identify_on_a_connection_being_dropped() -> None:
    p, w, now = make()
    feed(p, w.msg(HELLO))
    assert p.may_identify()
    p.write_stalled()  # the gateway has read nothing for write_timeout: the connection is dropped
    assert p.transport_action() is TransportAction.ABORT and p.connected and not p.may_identify()


def test_control_events_are_typed() -> None:
    from shard.wire import HeartbeatAck, Hello, Reconnect, Resumed
    p, w, now = make(session=Session("old", 3), resume_url="ws://resume/")
    feed(p, w.msg(HELLO))
    feed(p, w.msg({"op": 0, "t": "RESUMED", "s": 4, "d": {"_trace": []}}))
    feed(p, w.msg({"op": 11}))
    feed(p, w.msg({"op": 7, "d": None}))
    data = {e.type: e.data for e in drain(p)}
    assert data["GATEWAY_HELLO"] == Hello(1000) and data["RESUMED"] == Resumed()
    assert data["GATEWAY_HEARTBEAT_ACK"] == HeartbeatAck() and data["GATEWAY_RECONNECT"] == Reconnect()


# ---- identify permit taken before connecting -------------------------------------------------------

def permit_protocol() -> tuple[GatewayProtocol, Wire, list[tuple[str, object]]]:
    now = [100.0]
    cfg = Config(TOKEN, 513, gateway_url="ws://gw/", compression="zlib-stream")
    p = GatewayProtocol(ShardId(0, 1), cfg, clock=lambda: now[0], rand=lambda: 0.5)
    calls: list[tuple[str, object]] = []
    p.on_identified = lambda ready: calls.append(("identified", ready))
    p.on_unused = lambda: calls.append(("unused", None))
    return p, Wire(), calls


def test_with_a_permit_identify_goes_out_right_after_hello() -> None:
    p, w, calls = permit_protocol()
    assert p.needs_permit  # no session: the driver waits for the queue before connecting
    p.waiting_for_permit()
    assert p.state == ShardState.IDENTIFYING and p.heartbeat_deadline is None and not p.connected
    p.permit_granted()
    assert not p.needs_permit
    p.connection_made()
    feed(p, w.msg(HELLO))
    (op, body), = sent(p)
    assert json.loads(body)["op"] == 2 and not p.want_identify and p.identify_pending and not p.permit
    assert p.ratelimiter is not None and p.ratelimiter.available() == p.ratelimiter._max - 1
    feed(p, w.msg(READY))
    assert calls == [("identified", True)] and p.state == ShardState.ACTIVE
    assert not p.needs_permit  # a session: Resume, which never waits on the queue


def test_an_early_permit_holds_the_identify_for_the_driver_until_its_not_before_time() -> None:
    p, w, calls = permit_protocol()  # the clock reads 100.0
    p.permit_granted(100.5)  # granted early: connect now, Identify at 100.5
    p.connection_made()
    feed(p, w.msg(HELLO))
    assert sent(p) == [] and p.want_identify and p.permit and p.may_identify()
    assert p.state == ShardState.IDENTIFYING
    p.identify()  # the driver, at 100.5
    (op, body), = sent(p)
    assert json.loads(body)["op"] == 2 and not p.permit
    p.permit_granted(100.5)
    p.connection_made()
    feed(p, Wire().msg(HELLO))
    p.connection_lost()  # closed while it held its Identify: the turn is given back
    assert calls == [("identified", False), ("unused", None)] and p.needs_permit


def test_a_permit_unused_before_identify_is_given_back() -> None:
    p, w, calls = permit_protocol()
    p.permit_granted()
    p.connect_failed("refused")  # the connection never opened
    assert calls == [("identified", False), ("unused", None)] and p.needs_permit
    p.permit_granted()
    p.connection_made()
    p.connection_lost()  # closed before Hello: the Identify never went out
    assert calls[2:] == [("identified", False), ("unused", None)] and p.needs_permit
    assert p.state == ShardState.Disconnected(2)
    p.permit_granted()
    p.close(CloseFrame.NORMAL)  # closed by the user while holding the permit, not connected
    assert calls[4:] == [("identified", False), ("unused", None)] and not p.needs_permit


def test_op9_or_close_after_identify_reports_failure_and_needs_a_new_permit() -> None:
    p, w, calls = permit_protocol()
    p.permit_granted()
    p.connection_made()
    feed(p, w.msg(HELLO))
    feed(p, w.msg({"op": 9, "d": False}))
    assert calls == [("identified", False)]  # the Identify went out: nothing to refund
    p.connection_lost()
    assert p.needs_permit and calls == [("identified", False)]
    p.permit_granted()
    p.connection_made()
    feed(p, Wire().msg(HELLO))  # a new connection: a new zlib stream
    assert p.identify_pending
    p.connection_lost()  # closed after Identify, before READY
    assert calls[1:] == [("identified", False)] and p.needs_permit


def dispatch(s: int, t: str = "MESSAGE_CREATE", **d: object) -> dict[str, object]:
    return {"op": 0, "t": t, "s": s, "d": d}


def test_a_run_of_messages_keeps_order_around_controls_and_bad_payloads() -> None:
    """Whole zlib-stream messages are inflated and decoded as runs; anything that is not a plain dispatch
    (a control opcode, READY, a payload that does not decode) is handled in its place, in order."""
    p, w, now = make()
    identify_and_ready(p, w)
    drain(p)
    data = w.msg(dispatch(2, x=1)) + w.msg({"op": 11, "d": None, "s": None, "t": None}) + w.msg(dispatch(3))
    data += frame(w.c.compress(b'{"op":0,"t":"MESSAGE_CREATE","s":,') + w.c.flush(zlib.Z_SYNC_FLUSH))
    data += w.msg({"op": 0, "t": "MESSAGE_CREATE", "s": "4", "d": {}})
    data += w.msg(dispatch(5, t="RESUMED")) + w.msg(dispatch(6, y=[1, 2]))
    feed(p, data)
    raws = [r for r in p.raws]
    items = drain(p)
    kinds = [(i.type, i.seq) if not isinstance(i, GatewayError) else i.kind for i in items]
    assert kinds == [("MESSAGE_CREATE", 2), ("GATEWAY_HEARTBEAT_ACK", None), ("MESSAGE_CREATE", 3),
                     ErrorKind.DESERIALIZING, ErrorKind.DESERIALIZING, ("RESUMED", 5), ("MESSAGE_CREATE", 6)]
    assert items[0].data == {"x": 1} and items[6].data == {"y": [1, 2]}
    assert json.loads(raws[0]) == dispatch(2, x=1) and raws[3] is None and json.loads(raws[6]) == dispatch(6, y=[1, 2])
    assert p.sequence == 6 and p.metrics.events["MESSAGE_CREATE"] == 3
    # a run that decodes as dispatches except for a control opcode and RESUMED in the middle
    feed(p, w.msg(dispatch(7)) + w.msg({"op": 11, "d": None, "s": None, "t": None}) + w.msg(dispatch(8, t="RESUMED"))
         + w.msg(dispatch(9)))
    assert [(i.type, i.seq) for i in drain(p)] == [("MESSAGE_CREATE", 7), ("GATEWAY_HEARTBEAT_ACK", None),
                                                   ("RESUMED", 8), ("MESSAGE_CREATE", 9)]
    assert p.sequence == 9 and p.metrics.events["MESSAGE_CREATE"] == 5 and not p.raws


def test_runs_respect_the_budget_and_the_consumer_sees_every_event() -> None:
    p, w, now = make()
    identify_and_ready(p, w)
    drain(p)
    p.receive_data(b"".join(w.msg(dispatch(i, n=i)) for i in range(2, 202)))
    p.process(10)
    assert 10 <= len(p.events) < 200  # processed a few at a time, not all at once
    p.process()
    assert [(e.seq, e.data["n"]) for e in drain(p)] == [(i, i) for i in range(2, 202)]
    assert p.sequence == 201


def test_a_corrupt_frame_inside_a_run_loses_nothing_the_resume_cannot_replay() -> None:
    p, w, now = make()
    identify_and_ready(p, w)
    drain(p)
    feed(p, w.msg(dispatch(2)) + w.msg(dispatch(3)) + frame(b"\xde\xad\xbe\xef\x00\x00\xff\xff"))
    items = drain(p)
    assert isinstance(items[-1], GatewayError) and items[-1].kind is ErrorKind.COMPRESSION
    delivered = [e.seq for e in items if not isinstance(e, GatewayError)]
    # Whatever was delivered moved the session's sequence, and nothing else did: Resume replays the rest.
    assert p.session == Session("sess", max(delivered, default=1))


def test_dispatches_are_events_that_encode_with_the_wire_names() -> None:
    import msgspec

    from shard import Dispatch, Event

    p, w, now = make()
    identify_and_ready(p, w)
    drain(p)
    feed(p, w.msg(dispatch(2, content="hi")))
    event, = drain(p)
    assert isinstance(event, Event) and type(event) is Dispatch
    assert json.loads(msgspec.json.encode(event)) == {"op": 0, "t": "MESSAGE_CREATE", "s": 2, "d": {"content": "hi"}}
    assert json.loads(msgspec.json.encode(Event("X", None, None))) == {"t": "X", "s": None, "d": None}


def test_a_corrupt_frame_right_after_ready_keeps_the_session() -> None:
    """Messages of a run that inflated before the corrupt one are still handled: READY's session survives."""
    p, w, now = make()
    outcomes: list[bool] = []
    p.on_identified = outcomes.append
    feed(p, w.msg(HELLO))
    p.identify()
    drain(p)
    feed(p, w.msg(READY) + w.msg(dispatch(2)) + frame(b"\xff\xff\xff\xff\x00\x00\xff\xff"))
    items = drain(p)
    assert [getattr(i, "type", None) for i in items[:2]] == ["READY", "MESSAGE_CREATE"]
    assert isinstance(items[2], GatewayError) and items[2].kind is ErrorKind.COMPRESSION
    assert outcomes == [True] and p.session == Session("sess", 2)
    p.connection_lost()
    assert p.session == Session("sess", 2) and p.resume_url == "ws://resume/"  # the next connection resumes


def test_a_message_with_t_but_another_opcode_is_not_a_dispatch() -> None:
    p, w, now = make()
    identify_and_ready(p, w)
    sent(p)
    drain(p)
    feed(p, w.msg(dispatch(2)) + w.msg({"op": 1, "t": "MESSAGE_CREATE", "s": 5, "d": None}) + w.msg(dispatch(3)))
    assert [(e.type, e.seq) for e in drain(p)] == [("MESSAGE_CREATE", 2), ("GATEWAY_HEARTBEAT", None),
                                                   ("MESSAGE_CREATE", 3)]
    (op, body), = sent(p)  # the heartbeat request was answered
    assert json.loads(body) == {"op": 1, "d": 2} and p.sequence == 3


def test_json_decoder_rejects_bad_envelope_types_and_deep_nesting() -> None:
    p, w, now = make(decoder="json")
    identify_and_ready(p, w)
    drain(p)
    feed(p, w.msg({"op": 0, "t": "MESSAGE_CREATE", "s": "7", "d": {}}))
    feed(p, frame(w.c.compress(b"[" * 100000 + b"]" * 100000) + w.c.flush(zlib.Z_SYNC_FLUSH)))
    feed(p, w.msg(dispatch(8)))
    items = drain(p)
    assert [i.kind for i in items[:2]] == [ErrorKind.DESERIALIZING] * 2
    assert (items[2].type, items[2].seq) == ("MESSAGE_CREATE", 8) and p.sequence == 8


def test_zstd_stream_runs_keep_order_and_a_corrupt_frame_keeps_what_came_before() -> None:
    import zstandard

    p, _, now = make(compression="zstd-stream")
    c = zstandard.ZstdCompressor().compressobj()

    def zmsg(obj: object) -> bytes:
        data = json.dumps(obj, separators=(",", ":")).encode()
        return frame(c.compress(data) + c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))

    feed(p, zmsg(HELLO))
    p.identify()
    feed(p, zmsg(READY) + b"".join(zmsg(dispatch(i, n=i)) for i in range(2, 80))
         + zmsg({"op": 11, "d": None, "s": None, "t": None}) + zmsg(dispatch(80)))
    items = drain(p)
    assert [(e.type, e.seq) for e in items[:2]] == [("GATEWAY_HELLO", None), ("READY", 1)]
    assert [e.seq for e in items[2:80]] == list(range(2, 80))
    assert [e.data["n"] for e in items[2:80]] == list(range(2, 80))
    assert [(e.type, e.seq) for e in items[80:]] == [("GATEWAY_HEARTBEAT_ACK", None), ("MESSAGE_CREATE", 80)]
    feed(p, zmsg(dispatch(81)) + frame(b"\xde\xad\xbe\xef" * 4))
    items = drain(p)
    assert (items[0].type, items[0].seq) == ("MESSAGE_CREATE", 81)
    assert isinstance(items[1], GatewayError) and items[1].kind is ErrorKind.COMPRESSION
    assert p.sequence == 81 and p.inflater is not None and p.inflater.bytes_out > 0


def test_the_driver_contract_output_through_methods() -> None:
    """data_to_send() hands each frame over once; transport_action() goes NONE -> AWAIT_CLOSE (our close is out)
    -> CLOSE (the server's close came back), and ABORT for a zombie, CLOSE for a protocol error."""
    from shard.protocol import TransportAction
    p, w, now = make()
    assert p.data_to_send() == [] and p.transport_action() is TransportAction.NONE
    identify_and_ready(p, w)
    (op, body), = [unmask(f) for f in p.data_to_send()]
    assert op == 1 and json.loads(body)["op"] == 2
    assert p.data_to_send() == [] and p.transport_action() is TransportAction.NONE
    p.close(CloseFrame.NORMAL)
    assert [unmask(f)[0] for f in p.data_to_send()] == [8]
    assert p.transport_action() is TransportAction.AWAIT_CLOSE
    feed(p, frame(struct.pack("!H", 1000), 8))
    assert p.data_to_send() == [] and p.transport_action() is TransportAction.CLOSE

    p, w, now = make()
    identify_and_ready(p, w)
    p.heartbeat_timer(100.5)
    p.heartbeat_timer(101.5)  # no ACK since the previous beat
    assert p.transport_action() is TransportAction.ABORT

    p, w, now = make()
    feed(p, b"\x82\xfe")  # a masked frame from the server
    feed(p, b"\x00\x01" + b"\x00" * 5)
    assert p.transport_action() is TransportAction.CLOSE


def test_a_marker_beat_goes_out_at_once_without_a_permit_and_counts_the_acks_before_its_own() -> None:
    """``beat_now`` (the cutover's marker): only when Active; on the heartbeat path, so a spent command budget does not
    hold it; its ACK is the one after those of the beats still unanswered; the schedule restarts from it."""
    p, w, now = make()
    feed(p, w.msg(HELLO))
    assert p.beat_now(now[0]) is None and p.unacked == 0  # not Active yet: a resumed session would replay after it
    p.identify()
    feed(p, w.msg(READY))
    sent(p)
    rl = p.ratelimiter
    assert rl is not None
    while rl.try_acquire():
        pass
    now[0] = 100.5
    p.heartbeat_timer(now[0])  # the scheduled beat, not answered yet
    assert len(sent(p)) == 1 and p.unacked == 1
    now[0] = 100.7
    assert p.beat_now(now[0]) == 2
    (op, body), = sent(p)
    assert json.loads(body) == {"op": 1, "d": 1}
    assert p.heartbeat_deadline == pytest.approx(101.7)  # the next scheduled beat one interval after the marker
    assert rl.available() == 0  # no permit was there to take, and none was needed
    feed(p, w.msg({"op": 11}))
    assert p.unacked == 1
    feed(p, w.msg({"op": 11}))
    feed(p, w.msg({"op": 11}))  # an unrequested ACK never counts below zero
    assert p.unacked == 0
    now[0] = 101.7
    p.heartbeat_timer(now[0])
    assert len(sent(p)) == 1 and not p.abort  # the marker's ACK answered it: no zombie
    p.close(CloseFrame.RESUME)
    assert p.beat_now(now[0]) is None  # closing
    p.connection_lost()
    p.connection_made()
    assert p.unacked == 0  # a new connection answers none of the old one's beats
