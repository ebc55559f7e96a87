"""Unit tests of the simulator's pure parts: framing, routing, sessions, config."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import SimConfig, Simulator
from sim import traffic
from sim.admin import AdminHost
from sim.gateway import GatewayHost
from sim.rest import RestHost
from sim.session import Session
from sim.stats import ShardStats
from sim.wsframe import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, FrameError, FrameReader, fragments, frame


def client_frame(payload: bytes, opcode: int = OP_TEXT, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=8), st.integers(1, 64))
@settings(max_examples=60, deadline=None)
def test_reader_reassembles_any_split(payloads, step):
    wire = b"".join(client_frame(p, OP_BINARY) for p in payloads)
    reader = FrameReader(4096)
    got = []
    for i in range(0, len(wire), step):
        got += reader.feed(wire[i:i + step])
    assert got == [(OP_BINARY, p) for p in payloads]


def test_reader_fragmented_message_with_interleaved_ping():
    reader = FrameReader(4096)
    wire = (client_frame(b"ab", OP_TEXT, fin=False) + client_frame(b"hi", OP_PING)
            + client_frame(b"cd", OP_CONT, fin=True))
    assert reader.feed(wire) == [(OP_PING, b"hi"), (OP_TEXT, b"abcd")]


def test_reader_rejects_oversized_message_from_header_alone():
    reader = FrameReader(4096)
    head = client_frame(b"x" * 5000)[:8]  # header + mask only: the payload never arrives
    with pytest.raises(FrameError) as err:
        reader.feed(head)
    assert err.value.code == 4002


def test_reader_rejects_oversized_fragmented_message():
    reader = FrameReader(4096)
    reader.feed(client_frame(b"x" * 3000, OP_TEXT, fin=False))
    with pytest.raises(FrameError) as err:
        reader.feed(client_frame(b"y" * 2000, OP_CONT))
    assert err.value.code == 4002


@pytest.mark.parametrize("wire, why", [
    (frame(b"unmasked", OP_TEXT), "masked"),
    (client_frame(b"x", 0x3), "opcode"),
    (client_frame(b"x" * 200, OP_PING), "control"),
    (client_frame(b"x", OP_CONT), "continuation"),
])
def test_reader_rejects_bad_framing_with_1002(wire, why):
    with pytest.raises(FrameError) as err:
        FrameReader(4096).feed(wire)
    assert err.value.code == 1002 and why in err.value.reason


def test_fragments_only_last_frame_is_final():
    wire = fragments(b"z" * 1000, OP_BINARY, 300)
    frames, pos = [], 0
    while pos < len(wire):
        b0, n = wire[pos], wire[pos + 1] & 0x7F
        if n == 126:
            n, hdr = int.from_bytes(wire[pos + 2:pos + 4], "big"), 4
        else:
            hdr = 2
        frames.append((b0 & 0x80, b0 & 0x0F, n))
        pos += hdr + n
    assert [f[0] for f in frames] == [0, 0, 0, 0x80]
    assert [f[1] for f in frames] == [OP_BINARY, OP_CONT, OP_CONT, OP_CONT]
    assert sum(f[2] for f in frames) == 1000
    assert frame(b"", OP_CLOSE)[0] == 0x88


@given(st.integers(1, 64), st.integers(0, 300))
def test_guild_routing_partitions_the_bot(num_shards, total):
    seen = []
    for shard_id in range(num_shards):
        for k in traffic.guilds_for(shard_id, num_shards, total):
            assert traffic.shard_for(traffic.guild_id(k), num_shards) == shard_id
            seen.append(k)
    assert sorted(seen) == list(range(total))


def test_event_pool_respects_routing_intents_and_dms():
    intents = traffic.INTENT_GUILD_MESSAGES | traffic.INTENT_DIRECT_MESSAGES | traffic.INTENT_GUILD_PRESENCES
    for shard_id in range(4):
        pool = traffic.event_pool(shard_id, 4, 16, intents, 0.2)
        assert pool
        dms = 0
        for t, d in pool:
            body = traffic.msgspec.json.decode(d)
            assert t in (b"MESSAGE_CREATE", b"PRESENCE_UPDATE")
            if "guild_id" in body:
                assert traffic.shard_for(int(body["guild_id"]), 4) == shard_id
            else:
                dms += 1
                assert t == b"MESSAGE_CREATE"
                assert body["content"] != ""  # DMs keep content without MESSAGE_CONTENT
        assert (dms > 0) == (shard_id == 0)
    guild_msgs = [traffic.msgspec.json.decode(d) for t, d in traffic.event_pool(1, 4, 16, intents, 0.2)
                  if t == b"MESSAGE_CREATE"]
    assert guild_msgs and all(m["content"] == "" for m in guild_msgs)  # no MESSAGE_CONTENT intent
    assert traffic.event_pool(0, 4, 16, traffic.INTENT_GUILDS, 0.2) == ()


def test_guild_sizes_are_ordered():
    small, medium, large = (len(traffic.guild_create(1, s)) for s in ("small", "medium", "large"))
    assert small < 10_000 < 50_000 < medium < 500_000 < large
    mixed = [traffic.size_of(k, "mixed") for k in range(2000)]
    assert mixed.count("small") > mixed.count("medium") > mixed.count("large") > 0


def test_session_replay_and_loss_accounting():
    sess = Session(0, 1, 0, 5, range(0), 50, ShardStats())
    for i in range(8):
        sess.dispatch(b"E", b"%d" % i)
    assert sess.seq == 8
    assert sess.replay_from(8) == []
    assert [p.split(b'"s":')[1].split(b",")[0] for p in sess.replay_from(5)] == [b"6", b"7", b"8"]
    assert sess.replay_from(2) is None  # only 4..8 are buffered
    sess.confirm(6)
    sess.confirm(99)  # beyond what was sent: ignored
    sess.confirm(3)  # never goes back
    assert sess.confirmed == 6
    sess.detach()
    assert sess.resumable
    sess.end("invalidated", "test")
    assert not sess.resumable and sess.lost == 2 and sess.record()["gapless"] is False


def test_client_requested_end_is_not_loss():
    sess = Session(0, 1, 0, 5, range(0), 50, ShardStats())
    sess.dispatch(b"E", b"1")
    sess.end("closed", "client closed 1000", client_requested=True)
    assert sess.lost == 0 and sess.unconfirmed_at_end == 1


@pytest.mark.parametrize("bad", [dict(shards=0), dict(max_concurrency=0), dict(guild_size="huge"),
                                 dict(token="Bot abc"), dict(session_remaining=5, session_limit=1),
                                 dict(heartbeat_interval=0), dict(dm_fraction=2.0),
                                 dict(takeover_linger=-1.0)])
def test_bad_config_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="invalid simulator config"):
        SimConfig(**bad)


def test_config_repr_hides_token():
    cfg = SimConfig(token="secret-token-value")
    assert "secret-token-value" not in repr(cfg)


@pytest.mark.parametrize("host", [GatewayHost, RestHost, AdminHost])
def test_the_simulator_has_what_its_parts_ask_of_it(host):
    """gateway, rest and admin name what they use of the simulator in a Protocol (so none imports server.py)."""
    assert isinstance(Simulator(), host)

