"""Model-based test of the receive path: random gateway traffic, cut into random socket reads and frames,
processed with random budgets while a consumer pops at random, must come out exactly as a simple model
says: in order, with the raw text beside every item and the session's sequence right at every step."""

from __future__ import annotations

import json
import zlib

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shard import EventTypeFlags, GatewayError
from shard.event_type import names_for_flags
from shard.protocol import GatewayProtocol
from test_protocol import frame, make

SUFFIX = b"\x00\x00\xff\xff"
TYPES = ("MESSAGE_CREATE", "TYPING_START", "GUILD_CREATE")
KINDS = ("dispatch", "dispatch", "dispatch", "dispatch", "big", "ack", "ready", "resumed", "bad_json", "not_object",
         "ping", "heartbeat_request", "odd_heartbeat_request", "text")


class Author(msgspec.Struct):
    id: str


FILTER = EventTypeFlags.MESSAGE_CREATE | EventTypeFlags.GATEWAY_HEARTBEAT_ACK | EventTypeFlags.READY
CONFIGS = {
    "default": ({}, None),
    "stock zlib": ({"zlib_backend": "zlib"}, None),
    "json decoder": ({"decoder": "json"}, None),
    "registered struct": ({"event_structs": {"MESSAGE_CREATE": Author}}, None),
    "event filter": ({"event_types": FILTER}, names_for_flags(int(FILTER))),
    "raw mode": ({}, None),  # what next_message switches on: envelopes only, `d` decoded on demand
}

traffic = st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(TYPES),
                             st.sampled_from([0] * 12 + [1, 2, 3]),  # >0: the zlib message split across frames
                             st.sampled_from([False] * 12 + [True])),  # fragmented (continuation frames)
                   min_size=1, max_size=150)
runs = st.lists(st.tuples(st.just("dispatch"), st.sampled_from(TYPES), st.just(0), st.just(False)),
                min_size=1, max_size=100)  # long runs of plain dispatches: the hot path
reads = st.lists(st.sampled_from([1, 2, 3, 7, 64, 300, 4096, 1 << 20]), min_size=1, max_size=40)
steps = st.lists(st.tuples(st.sampled_from(["budget", "all", "pop"]), st.sampled_from([0, 1, 5, 31, 32, 33, 100])),
                 min_size=1, max_size=60)


def ws_message(payload: bytes, opcode: int, fragment: bool) -> bytes:
    if not fragment or len(payload) < 3:
        return frame(payload, opcode)
    cut = len(payload) // 2
    return frame(payload[:cut], opcode, fin=False) + frame(b"p", 9) + frame(payload[cut:], 0)


def build(spec: list[tuple[str, str, int, bool]]) -> tuple[bytes, list[tuple[str | None, int | None, bytes | None]]]:
    """The server's bytes, and what the model says the consumer gets: (type or None for an error, seq, raw)."""
    c = zlib.compressobj()
    out, model, seq = [], [], 0
    for kind, t, split, fragment in spec:
        if kind == "ping":
            out.append(frame(b"hi", 9))
            continue
        if kind in ("dispatch", "big", "ready", "resumed", "text"):
            seq += 1
            t = {"ready": "READY", "resumed": "RESUMED"}.get(kind, t)
            d: object = {"id": str(seq), "x": "y" * (70000 if kind == "big" else seq % 300)}
            if kind == "ready":
                d = {"session_id": "s", "resume_gateway_url": "ws://resume/", "v": 10, "user": {"id": "1"},
                     "guilds": []}
            raw = json.dumps({"op": 0, "t": t, "s": seq, "d": d}, separators=(",", ":")).encode()
            model.append((t, seq, raw))
        elif kind in ("ack", "heartbeat_request", "odd_heartbeat_request"):
            odd = kind == "odd_heartbeat_request"  # carries a `t`, yet op 1 makes it no dispatch
            raw = json.dumps({"op": 11 if kind == "ack" else 1, "d": None, "s": None, "t": t if odd else None}).encode()
            model.append(("GATEWAY_HEARTBEAT_ACK" if kind == "ack" else "GATEWAY_HEARTBEAT", None, raw))
        else:
            raw = b'{"op":0,"t":"MESSAGE_CREATE","s":,' if kind == "bad_json" else b"[1,2,3]"
            model.append((None, None, None))
        if kind == "text":
            out.append(ws_message(raw, 1, fragment))
            continue
        z = c.compress(raw) + c.flush(zlib.Z_SYNC_FLUSH)
        cuts = sorted({len(z) * k // (split + 1) for k in range(1, split + 1)} - {0}) if len(z) > 8 else []
        pieces = [z[a:b] for a, b in zip([0, *cuts], [*cuts, len(z)], strict=True)]
        if any(p.endswith(SUFFIX) for p in pieces[:-1]):
            pieces = [z]
        out.extend(ws_message(p, 2, fragment) for p in pieces)
    return b"".join(out), model


def wanted_by(model: list[tuple[str | None, int | None, bytes | None]], wanted: frozenset[str] | None
              ) -> list[tuple[str | None, int | None, bytes | None]]:
    return [m for m in model if wanted is None or m[0] is None or m[0] in wanted]


def pop(p: GatewayProtocol, got: list[tuple[str | None, int | None, bytes | None]]) -> None:
    assert len(p.events) == len(p.raws)
    item, raw = p.pop()
    try:
        event = p.make_event(item)
    except GatewayError:
        got.append((None, None, raw))
        return
    got.append((event.type, event.seq, raw))
    if raw is not None and not event.type.startswith(("GATEWAY_", "READY", "RESUMED")):  # a dispatch's data
        sent = json.loads(raw)
        data = msgspec.to_builtins(event.data)
        assert sent["d"] == data or (isinstance(event.data, Author) and data == {"id": sent["d"]["id"]})


def last_seq(p: GatewayProtocol, got: list[tuple[str | None, int | None, bytes | None]]) -> int | None:
    """The sequence the session should be at: the last dispatch handed over or still queued."""
    seqs = [s for _, s, _ in got if s is not None]
    seqs += [s for s in (getattr(i, "seq", None) or getattr(i, "s", None) for i in p.events) if s is not None]
    return seqs[-1] if seqs else None


@pytest.mark.parametrize("config", list(CONFIGS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=st.one_of(traffic, st.tuples(runs, traffic, runs).map(lambda parts: [*parts[0], *parts[1], *parts[2]])),
       read_sizes=reads, plan=steps)
def test_any_traffic_any_reads_any_budgets_come_out_as_the_model_says(config, spec, read_sizes, plan) -> None:
    options, wanted = CONFIGS[config]
    stream, model = build(spec)
    p, _, _ = make(**options)
    if config == "raw mode":
        p.raw_mode = True
        p.decoding_changed()
    got: list[tuple[str | None, int | None, bytes | None]] = []
    pos = i = 0
    while pos < len(stream):
        n = read_sizes[i % len(read_sizes)]
        p.receive_data(stream[pos:pos + n])
        pos += n
        action, budget = plan[i % len(plan)]
        i += 1
        if action == "budget":
            before = len(p.events)
            p.process(budget)
            assert len(p.events) - before <= max(budget, 1) + 1  # a few at a time, not everything
        elif action == "all":
            p.process()
            assert p.pending == 0 or p._need  # only part of a frame can stay behind
        else:
            for _ in range(budget % 7):
                if p.events:
                    pop(p, got)
        assert len(p.events) == len(p.raws)
        if wanted is None:
            assert p.sequence == last_seq(p, got)
    p.process()
    while p.events:
        pop(p, got)
    assert got == wanted_by(model, wanted)
    assert p.sequence == max((s for _, s, _ in model if s is not None), default=None)
    assert p.pending == 0 and not p.hangup and not p.abort
