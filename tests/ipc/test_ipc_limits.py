"""The IPC frame limit is enforced where a packet is made, not by tearing down the pipe at the peer."""

import pytest

import ipc
from ipc.framing import MAX_FRAME
from ipc.protocol import ShardStatus, StatusReport
from ipc_peer import Add, Big, Size
from test_ipc_channel import peers  # noqa: F401 - the fixture: real peer processes over real pipes


async def test_oversize_reply_is_a_call_error_and_the_channel_stays_up(peers, caplog):  # noqa: F811
    (peer,) = await peers()
    with pytest.raises(ipc.CallError, match=f"exceeds the {MAX_FRAME}-byte IPC frame limit"):
        await peer.channel.call(Big(MAX_FRAME), bytes, timeout=30)
    assert not peer.channel.closed
    assert await peer.channel.call(Add(2, 3), int) == 5  # same pipe, same peer process
    assert await peer.channel.call(Big(1000), bytes) == bytes(1000)
    assert "framing error" not in caplog.text


async def test_oversize_request_is_refused_before_sending(peers):  # noqa: F811
    (peer,) = await peers()
    sent = peer.channel.sent
    with pytest.raises(ipc.CallError, match=r"Request of [0-9]+ bytes exceeds the .* limit; not sent"):
        await peer.channel.call(Size(bytes(MAX_FRAME)), int)
    assert peer.channel.sent == sent and not peer.channel.closed
    assert await peer.channel.call(Size(bytes(1000)), int) == 1000


async def test_oversize_packet_raises_and_loses_nothing_else(peers):  # noqa: F811
    (peer,) = await peers()
    channel = peer.channel
    channel.max_frame = 200  # this end's limit: the report below is over it, a small call is not
    report = StatusReport([ShardStatus(i, "ACTIVE") for i in range(50)])
    with pytest.raises(ipc.FrameTooLarge, match=r"StatusReport of [0-9]+ bytes exceeds the 200-byte IPC frame limit"):
        channel.send(report)
    assert not channel.closed
    assert await channel.call(Add(1, 1), int) == 2
