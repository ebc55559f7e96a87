"""Channel, calls, broadcast and heartbeats between real processes over real pipes."""

import asyncio
import os
import signal
import time

import multiprocess
import pytest

import ipc
from ipc.protocol import Hello, Ping, Pong
from ipc_peer import Add, Block, Boom, Exit, Sleep, WhoAmI, serve

ctx = multiprocess.get_context("spawn")


class Peer:
    def __init__(self, worker_id: int = 0):
        parent, child = ctx.Pipe()
        self.process = ctx.Process(target=serve, args=(child, worker_id), daemon=True)
        self.process.start()
        child.close()
        self.parent = parent
        self.packets: asyncio.Queue = asyncio.Queue()

    async def open(self) -> ipc.Channel:
        self.channel = await ipc.Channel.open(self.parent, self.packets.put_nowait)
        hello = await asyncio.wait_for(self.packets.get(), 30)
        assert hello == Hello(hello.worker_id, self.process.pid)
        return self.channel

    def stop(self):
        if self.process.is_alive():
            self.process.kill()
        self.process.join(10)


@pytest.fixture
async def peers():
    made = []

    async def make(n=1):
        ps = [Peer(i) for i in range(n)]
        made.extend(ps)
        for p in ps:
            await p.open()
        return ps

    yield make
    for p in made:
        p.stop()


async def test_typed_call_round_trip(peers):
    (peer,) = await peers()
    assert await peer.channel.call(Add(2, 3), int) == 5
    info = await peer.channel.call(WhoAmI(), dict)
    assert info["pid"] == peer.process.pid


async def test_remote_exception_becomes_call_error(peers):
    (peer,) = await peers()
    with pytest.raises(ipc.CallError, match="ValueError: boom"):
        await peer.channel.call(Boom())
    # the channel is still usable
    assert await peer.channel.call(Add(1, 1), int) == 2


async def test_unregistered_call_type_is_reported(peers):
    (peer,) = await peers()
    with pytest.raises(ipc.CallError, match="UnknownCall"):
        await peer.channel.request_raw("nowhere:Nothing", b"\x90")


async def test_call_timeout_and_late_reply_is_ignored(peers):
    (peer,) = await peers()
    with pytest.raises(ipc.CallError, match="timed out"):
        await peer.channel.call(Sleep(0.5), timeout=0.05)
    # a later call gets its own answer, not the late one
    assert await peer.channel.call(Sleep(0.0), str, timeout=5) == "slept"
    assert await peer.channel.call(Add(5, 5), int) == 10


async def test_reply_is_validated_against_reply_type(peers):
    import msgspec
    (peer,) = await peers()
    with pytest.raises(msgspec.ValidationError):
        await peer.channel.call(Add(1, 2), str)


async def test_peer_death_fails_pending_calls_and_closes(peers):
    (peer,) = await peers()
    pending = asyncio.ensure_future(peer.channel.call(Sleep(30), timeout=60))
    await asyncio.sleep(0)  # let the request go out
    os.kill(peer.process.pid, signal.SIGKILL)
    with pytest.raises(ipc.CallError, match=r"went away|closed"):
        await pending
    await asyncio.wait_for(peer.channel.wait_closed(), 10)
    assert peer.channel.closed
    with pytest.raises(ipc.ChannelClosed):
        peer.channel.send(Ping(1))


async def test_exit_during_call_is_seen_as_eof(peers):
    (peer,) = await peers()
    with pytest.raises(ipc.CallError):
        await peer.channel.call(Exit(3), timeout=30)
    await asyncio.wait_for(peer.channel.wait_closed(), 10)
    peer.process.join(10)
    assert peer.process.exitcode == 3


async def test_heartbeats_are_answered_by_the_peer_loop(peers):
    (peer,) = await peers()
    mon = ipc.HeartbeatMonitor(interval=0.05, missed_limit=3, now=time.monotonic())
    for _ in range(3):
        peer.channel.send(Ping(mon.ping(time.monotonic())))
    # pongs go to on_packet: collect three
    got = [await asyncio.wait_for(peer.packets.get(), 10) for _ in range(3)]
    assert [type(g) for g in got] == [Pong] * 3
    for g in got:
        assert mon.pong(g.nonce, time.monotonic()) is not None
    assert mon.rtt is not None and not mon.dead(time.monotonic())


async def test_blocked_peer_loop_misses_heartbeats(peers):
    (peer,) = await peers()
    blocked = asyncio.ensure_future(peer.channel.call(Block(1.5), timeout=30))
    assert isinstance(await asyncio.wait_for(peer.packets.get(), 10), Hello)  # the peer is now inside time.sleep
    start = time.monotonic()
    mon = ipc.HeartbeatMonitor(interval=0.1, missed_limit=5, now=start)
    peer.channel.send(Ping(mon.ping(start)))
    while not mon.dead(time.monotonic()):
        assert peer.packets.empty(), "a blocked loop cannot answer"
        await asyncio.sleep(0.05)
    assert await blocked == "blocked"
    pong = await asyncio.wait_for(peer.packets.get(), 10)
    assert mon.pong(pong.nonce, time.monotonic()) is not None
    assert not mon.dead(time.monotonic())


async def test_gather_collects_every_worker_and_reports_failures(peers):
    ps = await peers(3)
    channels = {i: p.channel for i, p in enumerate(ps)}
    name, body = ipc.calls.encode_call(WhoAmI())
    replies = await ipc.gather(channels, name, body, timeout=10)
    assert [r.worker_id for r in replies] == [0, 1, 2]
    assert [r.value["pid"] for r in replies] == [p.process.pid for p in ps]
    # one worker dies: its reply is an error, the others still answer
    ps[1].process.kill()
    await ps[1].channel.wait_closed()
    replies = await ipc.gather(channels, name, body, timeout=10)
    assert [r.ok for r in replies] == [True, False, True]


async def test_gather_timeout_marks_only_the_slow_worker(peers):
    ps = await peers(2)
    blocked = asyncio.ensure_future(ps[0].channel.call(Block(1.0), timeout=30))
    assert isinstance(await asyncio.wait_for(ps[0].packets.get(), 10), Hello)  # its loop is blocked now
    name, body = ipc.calls.encode_call(Add(1, 1))
    replies = await ipc.gather({0: ps[0].channel, 1: ps[1].channel}, name, body, timeout=0.3)
    assert replies[0].error and "timed out" in replies[0].error
    assert replies[1] == ipc.Reply(1, 2)
    await blocked
