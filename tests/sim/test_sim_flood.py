"""Flood mode: the benchmark stream is valid gateway traffic, live (contiguous sequences) or replayed."""

import json
import zlib

import pytest
import websockets

from sim import Simulator
from sim.traffic import POOL_SIZE

IDENTIFY = {"op": 2, "d": {"properties": {"os": "linux", "browser": "t", "device": "t"}, "intents": 513,
                           "shard": [0, 1]}}


async def flood_messages(sim: Simulator, compress: str | None, count: int):
    query = "?v=10&encoding=json" + (f"&compress={compress}" if compress else "")
    inflater = zlib.decompressobj()
    out, acks = [], 0
    async with websockets.connect(sim.url + query, max_size=None) as ws:
        async def recv():
            raw = await ws.recv()
            return json.loads(inflater.decompress(raw) if compress else raw)
        assert (await recv())["op"] == 10
        await ws.send(json.dumps({**IDENTIFY, "d": {**IDENTIFY["d"], "token": sim.token}}))
        while len(out) < count:
            msg = await recv()
            if msg["op"] == 11:
                acks += 1
                continue
            assert msg["op"] == 0
            out.append(msg)
        ws.transport.abort()  # a close handshake would wait behind megabytes of flood
    return out, acks


@pytest.mark.parametrize("compress", [None, "zlib-stream"])
async def test_live_flood_is_contiguous_and_accounted(compress):
    async with Simulator(flood=True, guilds_per_shard=2, heartbeat_interval=60_000) as sim:
        msgs, _ = await flood_messages(sim, compress, 3000)
        assert [m["t"] for m in msgs[:3]] == ["READY", "GUILD_CREATE", "GUILD_CREATE"]
        floods = msgs[3:]
        assert {m["t"] for m in floods} == {"MESSAGE_CREATE"}
        assert [m["s"] for m in msgs] == list(range(1, len(msgs) + 1))
        assert all(m["d"]["guild_id"] for m in floods)
        snap = await sim.wait_until(lambda s: s["total"]["open_connections"] == 0)
        (record,) = snap["sessions"].values()
        assert record["dispatched"] >= len(msgs) and record["lost"] == 0


@pytest.mark.parametrize("replay", [True, False])
async def test_flood_pauses_and_stays_a_valid_zlib_stream_with_live_messages_between(replay):
    segment = POOL_SIZE * 4
    async with Simulator(flood=True, flood_replay=replay, zlib_level=1, heartbeat_interval=60_000) as sim:
        query = "?v=10&encoding=json&compress=zlib-stream"
        inflater = zlib.decompressobj()
        async with websockets.connect(sim.url + query, max_size=None) as ws:
            async def recv():
                return json.loads(inflater.decompress(await ws.recv()))

            async def read(n):
                return [await recv() for _ in range(n)]

            assert (await recv())["op"] == 10
            await ws.send(json.dumps({**IDENTIFY, "d": {**IDENTIFY["d"], "token": sim.token}}))
            first = await read(segment + 100)
            # A live message (an ACK) between segments: pause the flood, heartbeat, read up to the ACK.
            assert sim.pause(0) == 1
            await ws.send(json.dumps({"op": 1, "d": None}))
            between = []
            while (msg := await recv())["op"] != 11:
                between.append(msg)
            sim.unpause(0)
            after = await read(2 * segment)
            ws.transport.abort()
        floods = [m for m in first + between + after if m["op"] == 0 and m["t"] == "MESSAGE_CREATE"]
        assert {m["op"] for m in between + after} == {0}
        assert len(floods) >= 3 * segment
        seqs = [m["s"] for m in floods]
        if replay:
            assert seqs[:segment] == seqs[segment:2 * segment]  # the same segment again
        else:
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        snap = sim.stats.snapshot()
        assert snap["total"]["dispatched"] >= len(floods) and snap["total"]["violations"] == 0


async def test_replay_only_applies_to_zlib_stream():
    async with Simulator(flood=True, flood_replay=True, heartbeat_interval=60_000) as sim:
        msgs, _ = await flood_messages(sim, None, 2000)
        assert [m["s"] for m in msgs] == list(range(1, len(msgs) + 1))
