"""Typed IPC between the cluster supervisor and its workers.

- :mod:`ipc.protocol`: the wire packets (msgspec Structs, one tagged union, msgpack).
- :class:`Channel`: an asyncio end of a duplex pipe: framing, request/response with ids
  and timeouts, automatic heartbeat answers.
- :class:`Call`: base class for user-defined typed calls (no code strings are evaluated).
- :func:`gather`: broadcast a call to many channels and collect the :class:`Reply` list.
- :class:`HeartbeatMonitor`, :class:`SessionDiff`: sans-I/O helpers for liveness and
  batched session reports.
- :class:`IpcError`: the root of the package's errors (:class:`ChannelClosed`, :class:`CallError`,
  :class:`FramingError` and their subclasses); the tree is in :mod:`ipc.error`.
"""

__version__ = "0.1.0"  # the release, as in pyproject.toml (tests/test_packaging.py checks)

from ipc.broadcast import gather
from ipc.calls import Call, Reply
from ipc.channel import Channel, answer, pipe_socket
from ipc.error import CallError, ChannelClosed, FrameTooLarge, FramingError, IpcError, UnknownCall
from ipc.framing import FrameDecoder, encode_frame
from ipc.heartbeat import HeartbeatMonitor
from ipc.protocol import Packet, SessionInfo
from ipc.sessions import SessionDiff

__all__ = [
    "Call", "CallError", "Channel", "ChannelClosed", "FrameDecoder", "FrameTooLarge", "FramingError",
    "HeartbeatMonitor", "IpcError", "Packet", "Reply", "SessionDiff", "SessionInfo", "UnknownCall",
    "answer", "encode_frame", "gather", "pipe_socket",
]
