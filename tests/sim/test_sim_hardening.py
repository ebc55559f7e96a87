"""Hostile input to the simulator itself: each gets a clear answer (a counted close code, or a 4xx with a message)
and costs nothing else: no exception escapes into the event loop and other clients keep being served."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_client import GatewayClient, rest, violations

from sim import SimConfig, Simulator
from sim.http import HttpError, Request, parse_head
from sim.wsframe import close_frame


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Every context the event loop's exception handler saw (a protocol callback that raised lands here)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    yield errors
    loop.set_exception_handler(previous)


async def still_serves(sim: Simulator) -> None:
    """A fresh client still gets Hello and an ACK: the sim survived."""
    c = await GatewayClient.open(sim.url)
    await c.heartbeat(None)
    assert (await c.recv())["op"] == 11
    c.drop()


# ---- gateway ---------------------------------------------------------------------------------------

NESTED = 2000  # levels: under MAX_PAYLOAD (4096 bytes), far over the decoder's recursion limit


@pytest.mark.parametrize("payload", ['{"op":1,"d":' + "[" * NESTED + "]" * NESTED + "}",
                                     "[" * NESTED + "]" * NESTED], ids=["in-d", "top-level"])
async def test_deeply_nested_json_is_4002_and_counted(sim, gw, loop_errors, payload):
    c = await gw(sim.url)
    await c.send_raw(payload)
    ended = await c.ended()
    assert ended.code == 4002 and "nested too deeply" in ended.reason  # a close frame, not a bare TCP drop
    assert [v["reason"] for v in violations(sim.stats.snapshot(), 4002)] == ["payload is nested too deeply to decode"]
    await still_serves(sim)
    assert loop_errors == []


@pytest.mark.parametrize("command", [
    {"op": 3, "d": {"status": [], "since": None, "activities": [], "afk": False}},
    {"op": 3, "d": {"status": {"online": 1}, "since": None, "activities": [], "afk": False}},
    {"op": 43, "d": {"guild_id": "1", "fields": [["status"]]}},
    {"op": 43, "d": {"guild_id": "1", "fields": [{"a": 1}]}},
], ids=["presence-list-status", "presence-dict-status", "channel-info-list-field", "channel-info-dict-field"])
async def test_unhashable_command_values_are_4001(sim, gw, loop_errors, command):
    c = await gw(sim.url)
    await c.ready(sim.token)
    await c.send(command)
    assert (await c.ended()).code == 4001
    assert len(violations(sim.stats.snapshot(), 4001)) == 1
    await still_serves(sim)
    assert loop_errors == []


async def test_identify_presence_with_unhashable_status_is_4001(sim, gw, loop_errors):
    c = await gw(sim.url)
    await c.identify(sim.token, presence={"status": ["online"], "since": None, "activities": [], "afk": False})
    assert (await c.ended()).code == 4001
    assert loop_errors == []


def test_close_reason_is_cut_on_a_character_boundary():
    reason = "é" * 100  # 200 bytes: over the 123 a close frame may carry
    data = close_frame(4000, reason)
    body = data[4:]  # 2-byte header with a 7-bit length, then the code
    assert data[1] == len(body) + 2 <= 125
    assert body.decode() == "é" * 61  # valid UTF-8 (a cut at 123 bytes would split a character)


async def test_chaos_close_with_long_non_ascii_reason(sim, gw):
    c = await gw(sim.url)
    await c.ready(sim.token)
    status, _, _ = await rest(f"{sim.admin_url}/shards/0/close?code=4000&reason={'%C3%A9' * 100}", method="POST")
    assert status == 200
    ended = await c.ended()
    assert ended.code == 4000 and ended.reason == "é" * 61  # the client got a valid close frame, not a 1007


# ---- HTTP front end --------------------------------------------------------------------------------

async def exchange(sim: Simulator, data: bytes) -> bytes:
    """Send raw bytes on a new connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection(sim.config.host, sim.port)
    try:
        writer.write(data)
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


def status_and_body(response: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


HEAD = b"GET /api/v10/gateway HTTP/1.1\r\nHost: sim\r\n"


@pytest.mark.parametrize("sent", [b"", HEAD, HEAD + b"Content-Length: 10\r\n\r\nabc"],
                         ids=["nothing", "half-head", "half-body"])
async def test_half_sent_request_gets_408_and_close(make_sim, sent):
    sim = await make_sim(http_request_timeout=0.2)
    status, body = status_and_body(await exchange(sim, sent))  # read() returns at EOF: the sim closed
    assert status == 408 and body["message"] == "request not complete within 0.2 s"
    status, _, _ = await rest(sim.api_url + "/gateway")
    assert status == 200


async def test_request_trickled_byte_by_byte_still_times_out(make_sim):
    """The deadline counts from the request's first byte: a byte now and then does not keep it alive."""
    sim = await make_sim(http_request_timeout=0.3)
    reader, writer = await asyncio.open_connection(sim.config.host, sim.port)

    async def trickle() -> None:
        for byte in HEAD + b"X-Pad: " + b"a" * 1000:  # 20 s of bytes at this pace
            writer.write(bytes((byte,)))
            await asyncio.sleep(0.02)

    task = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(5):
            response = await reader.read()  # returns when the sim closes the connection
    finally:
        task.cancel()
        writer.close()
    assert status_and_body(response)[0] == 408


async def test_pipelined_requests_on_one_connection_are_all_answered(make_sim):
    sim = await make_sim(http_request_timeout=0.2)
    one = HEAD + b"\r\n"
    response = await exchange(sim, one + one + HEAD + b"Connection: close\r\n\r\n")
    # (not a header value that happens to contain 408)
    assert response.count(b"HTTP/1.1 200 OK") == 3 and b"HTTP/1.1 408" not in response


@pytest.mark.parametrize("value", ["-5", "+5", "1_0", "0x10", "5 5", "1e3", "\u00b2"])
async def test_bad_content_length_is_400(sim, value):
    request = HEAD + f"Content-Length: {value}\r\n\r\nhello".encode("latin-1")
    status, body = status_and_body(await exchange(sim, request))
    assert status == 400 and body["message"] == "Content-Length must be a non-negative decimal integer"
    assert (await rest(sim.api_url + "/gateway"))[0] == 200


async def test_huge_content_length_is_413(sim):
    status, body = status_and_body(await exchange(sim, HEAD + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n"))
    assert status == 413 and body["message"] == "request body too large"


async def test_chunked_body_is_501(sim):
    sent = HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    status, body = status_and_body(await exchange(sim, sent))
    assert status == 501 and "Content-Length" in body["message"]


@pytest.mark.parametrize(("sent", "message"), [
    (b"GET http://[::1 HTTP/1.1\r\n\r\n", "malformed request line"),
    (b"GET / HTTP/1.1 extra\r\n\r\n", "malformed request line"),
    (b"GET / HTTP/2\r\n\r\n", "malformed request line: the version must be HTTP/1.0 or HTTP/1.1"),
    (HEAD + b"Content-Length: 5\r\nContent-Length: 7\r\n\r\nhello", "conflicting Content-Length headers"),
], ids=["bad-ipv6-target", "four-parts", "http2", "two-lengths"])
async def test_malformed_head_is_400(sim, loop_errors, sent, message):
    assert status_and_body(await exchange(sim, sent)) == (400, {"message": message, "code": 0})
    assert loop_errors == []
    assert (await rest(sim.api_url + "/gateway"))[0] == 200


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(max_codepoint=255), max_size=80) | st.lists(
    st.sampled_from(["GET", " ", "/", "http://[", "?a=%zz", "HTTP/1.1", "\r\n", "Content-Length", ":", "-1", "5",
                     "Transfer-Encoding", "chunked", "\x00"]), max_size=20).map("".join))
def test_parse_head_refuses_with_http_error_only(head):
    try:
        parse_head(head)
    except HttpError as err:
        assert err.status in (400, 413, 501) and str(err)


# ---- admin API -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("query", "message"), [
    ("delay?seconds=nan", "delay must be a finite number of seconds >= 0, got nan"),
    ("delay?seconds=inf", "delay must be a finite number of seconds >= 0, got inf"),
    ("delay?seconds=1e999", "delay must be a finite number of seconds >= 0, got inf"),
    ("delay?seconds=-1", "delay must be a finite number of seconds >= 0, got -1.0"),
    ("delay?seconds=soon", "seconds must be a number, got 'soon'"),
    ("close?code=1_000", "code must be a non-negative integer, got '1_000'"),
    ("close?code=" + "9" * 5000, "code must be a non-negative integer, got '" + "9" * 40 + "...'"),
    ("close?code=-4000", "code must be a non-negative integer, got '-4000'"),
    ("zombie?on=maybe", "not a boolean: 'maybe'"),
])
async def test_bad_admin_values_are_400_and_change_nothing(sim, gw, query, message):
    c = await gw(sim.url)
    await c.ready(sim.token)
    status, head, body = await rest(f"{sim.admin_url}/shards/0/{query}", method="POST")
    assert status == 400 and head["content-type"] == "application/json"
    assert json.loads(body) == {"message": message}
    conn = sim.connections_of(0)[0]
    assert conn.delay == 0.0 and not conn.zombie and not conn.closing
    await c.heartbeat()
    await c.recv_until(op=11)  # still served, without delay


@pytest.mark.parametrize("shard", ["9" * 5000, "-1", "+0", "1_0", "%C2%B2", "0x1"])
async def test_bad_shard_number_is_400(sim, shard):
    status, _, body = await rest(f"{sim.admin_url}/shards/{shard}/drop", method="POST")
    assert status == 400
    message = json.loads(body)["message"]
    assert message.startswith("shard must be a non-negative integer, got ") and len(message) < 100


def test_delay_refuses_non_finite_seconds_from_python():
    sim = Simulator()
    for seconds in (math.nan, math.inf, -0.5):
        with pytest.raises(ValueError, match="finite number of seconds"):
            sim.delay(0, seconds)


ACTIONS = ["reconnect", "invalidate", "zombie", "drop", "close", "heartbeat", "corrupt", "pause", "unpause", "delay",
           "ack-delay"]
hostile = st.text(max_size=12) | st.sampled_from(["nan", "inf", "-inf", "1e999", "-1", "9" * 5000, "1_000", "", "0"])


@settings(max_examples=300, deadline=None)
@given(shard=hostile, action=st.sampled_from(ACTIONS), params=st.dictionaries(
    st.sampled_from(["seconds", "code", "reason", "kind", "on", "resumable", "shards"]), hostile, max_size=3))
def test_admin_never_answers_500(shard, action, params):
    """Whatever the values, a chaos control answers 200, or a 4xx whose body says what was wrong."""
    sim = Simulator()
    req = Request("POST", f"/_sim/shards/{shard}/{action}", {k: [v] for k, v in params.items()}, {}, b"")
    resp = sim.handle_http(req)
    body = json.loads(resp.body)
    assert resp.status in (200, 400, 404), (resp.status, body)
    if resp.status != 200:
        assert isinstance(body["message"], str) and body["message"]


# ---- config ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [dict(identify_window=math.nan), dict(session_ttl=math.inf),
                                 dict(events_per_second=math.nan), dict(http_request_timeout=0.0),
                                 dict(http_request_timeout=math.inf)])
def test_non_finite_or_zero_config_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="invalid simulator config: .*" + next(iter(bad))):
        SimConfig(**bad)
