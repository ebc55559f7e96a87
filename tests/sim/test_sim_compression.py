"""Transport and payload compression, decoded by an independent client (stdlib zlib, the zstandard package)."""

from __future__ import annotations

import json
import zlib

import zstandard
from sim_client import SUFFIX


async def test_zlib_stream_one_inflater_per_connection(sim, gw):
    c = await gw(sim.url, compress="zlib-stream")
    ready = await c.ready(sim.token)  # decoded through one shared decompressobj
    assert ready["t"] == "READY"
    await c.recv_until(t="GUILD_CREATE")
    await c.heartbeat()
    await c.recv_until(op=11)
    wire = c.messages
    assert len(wire) >= 4 and all(isinstance(m, bytes) for m in wire)
    assert all(m.endswith(SUFFIX) for m in wire)  # Z_SYNC_FLUSH after each message
    assert wire[0][:1] == b"\x78"  # the stream starts with a zlib header (on Hello) ...
    # ... and later messages are continuations: only the shared context inflates them
    shared = zlib.decompressobj()
    shared.decompress(wire[0])
    second = shared.decompress(wire[1])
    assert json.loads(second)["op"] == 0
    try:
        alone = zlib.decompressobj().decompress(wire[1])
    except zlib.error:
        alone = None
    assert alone != second
    # a second connection gets a fresh stream, starting with its own header
    c2 = await gw(sim.url, compress="zlib-stream")
    assert c2.hello["op"] == 10 and c2.messages[0][:1] == b"\x78"


async def test_zlib_chunk_splits_a_payload_across_websocket_messages(make_sim, gw):
    sim = await make_sim(zlib_chunk=256, guild_size="medium", guilds_per_shard=1)
    c = await gw(sim.url, compress="zlib-stream")
    await c.identify(sim.token)
    start = len(c.messages)
    guild, _ = await c.recv_until(t="GUILD_CREATE")
    assert guild["d"]["member_count"] == 400
    groups: list[list[bytes]] = [[]]  # WebSocket messages grouped into gateway messages by the suffix
    for m in c.messages[start:]:
        groups[-1].append(m)
        if m.endswith(SUFFIX):
            groups.append([])
    assert groups.pop() == []
    tail = groups[-1]  # GUILD_CREATE
    # the ~100 KB GUILD_CREATE compresses to many KB: several WebSocket messages, each at most 256 bytes,
    # and only the last one ends with the Z_SYNC_FLUSH suffix (the client must buffer until then)
    assert len(tail) > 2
    assert all(len(m) <= 256 for m in tail)
    assert [m.endswith(SUFFIX) for m in tail] == [False] * (len(tail) - 1) + [True]
    # small payloads are not split
    await c.heartbeat()
    await c.recv_until(op=11)
    assert c.messages[-1].endswith(SUFFIX) and len(c.messages[-1]) < 256


async def test_zstd_stream(sim, gw):
    c = await gw(sim.url, compress="zstd-stream")
    assert c.messages[0][:4] == b"\x28\xb5\x2f\xfd"  # one zstd frame for the connection, begun on Hello
    await c.ready(sim.token)
    guild, _ = await c.recv_until(t="GUILD_CREATE")
    await c.heartbeat()
    await c.recv_until(op=11)
    assert all(isinstance(m, bytes) for m in c.messages)
    # later messages are blocks of the same frame: a fresh decompressor cannot read them
    try:
        zstandard.ZstdDecompressor().decompressobj().decompress(c.messages[1])
        standalone = True
    except zstandard.ZstdError:
        standalone = False
    assert not standalone
    assert guild["d"]["id"]


async def test_plain_transport_is_text(sim, gw):
    c = await gw(sim.url)
    await c.ready(sim.token)
    await c.recv_until(t="GUILD_CREATE")
    assert all(isinstance(m, str) for m in c.messages)


async def test_payload_compression_without_transport_compression(sim, gw):
    c = await gw(sim.url)
    await c.identify(sim.token, compress=True)
    ready, _ = await c.recv_until(t="READY")
    await c.recv_until(t="GUILD_CREATE")
    await c.heartbeat()
    await c.recv_until(op=11)
    assert isinstance(c.messages[0], str)  # Hello is always plain
    binary = [m for m in c.messages if isinstance(m, bytes)]
    text = [m for m in c.messages if isinstance(m, str)]
    assert binary, "big payloads (GUILD_CREATE) must arrive compressed"
    for m in binary:  # each is a complete standalone zlib stream: header, data, Adler-32
        assert m[:1] == b"\x78"
        payload = json.loads(zlib.decompress(m))
        assert len(json.dumps(payload)) > 1000
    assert any(json.loads(m)["op"] == 11 for m in text)  # small payloads stay text


async def test_identify_compress_true_is_ignored_with_transport_compression(sim, gw):
    """discord.py sends compress:true alongside zlib-stream; payload compression must then stay off."""
    c = await gw(sim.url, compress="zlib-stream")
    await c.identify(sim.token, compress=True)
    await c.recv_until(t="GUILD_CREATE")
    assert sim.stats.snapshot()["total"]["violations"] == 0


async def test_unknown_compress_4002(sim, gw):
    c = await gw(sim.url, query="compress=brotli", hello=False)
    ended = await c.ended()
    assert ended.code == 4002
