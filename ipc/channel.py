"""An asyncio channel over one end of a duplex pipe (a Unix socketpair).

The channel frames and decodes :mod:`ipc.protocol` packets without blocking the loop
(it is an ``asyncio.Protocol`` on the pipe's socket), answers IPC heartbeats by itself,
and matches :class:`~ipc.protocol.Response` packets to pending requests by id.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from ipc import protocol
from ipc.calls import Call, Reply, decode_call, decode_value, encode_call, encode_value
from ipc.error import CallError, ChannelClosed, FrameTooLarge, FramingError
from ipc.framing import MAX_FRAME, FrameDecoder, encode_frame
from ipc.protocol import Packet, Ping, Pong, Request, Response

__all__ = ["BROADCAST_MARGIN", "Channel", "ChannelClosed", "answer", "pipe_socket"]

BROADCAST_MARGIN = 1.0
"""Seconds a broadcast's request waits past the call's timeout, for the supervisor's gathered replies to come
back: the request carries ``timeout + BROADCAST_MARGIN`` and the supervisor gathers within ``timeout``."""

log = logging.getLogger(__name__)
T = TypeVar("T")

PacketHandler = Callable[[Packet], None]


def pipe_socket(conn: Any) -> socket.socket:
    """A socket for a ``multiprocess``/``multiprocessing`` duplex ``Connection`` (or a socket).

    The connection's descriptor is duplicated and the connection is closed, so the returned
    socket is the only owner of the pipe end.
    """
    if isinstance(conn, socket.socket):
        return conn
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    conn.close()
    return sock


class _Protocol(asyncio.Protocol):
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.decoder = FrameDecoder(channel.max_frame)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.channel._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except FramingError as exc:
            log.error("IPC framing error, closing the channel: %s", exc)
            self.channel.close()
            return
        for frame in frames:
            try:
                packet = protocol.decode(frame)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.error("dropping a malformed IPC packet: %s", exc)
                continue
            self.channel._received(packet)

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.channel._lost(exc)


class Channel:
    """One end of a supervisor/worker pipe.

    ``on_packet`` gets every packet except heartbeats (answered here) and responses to
    this end's own requests. Create it with :meth:`open`.

    ``max_frame`` is the largest packet (encoded bytes) this end accepts and sends; both
    ends of a pipe use the same limit, so a packet over it is refused here, where it is
    made, instead of tearing down the pipe at the peer.
    """

    def __init__(self, on_packet: PacketHandler, name: str = "ipc", *, max_frame: int = MAX_FRAME) -> None:
        self.name = name
        self.max_frame = max_frame
        self._on_packet = on_packet
        self._transport: asyncio.Transport | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Response]] = {}
        self._closed = asyncio.get_running_loop().create_future()
        self.sent = 0
        self.received = 0

    @classmethod
    async def open(cls, conn: Any, on_packet: PacketHandler, name: str = "ipc", *,
                   max_frame: int = MAX_FRAME) -> Channel:
        """Attach to a pipe end (a duplex ``Connection`` or a connected Unix socket)."""
        self = cls(on_packet, name, max_frame=max_frame)
        loop = asyncio.get_running_loop()
        await loop.create_unix_connection(lambda: _Protocol(self), sock=pipe_socket(conn))
        return self

    # --- state ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.done()

    async def wait_closed(self) -> None:
        """Return when the pipe is closed (by either end)."""
        await asyncio.shield(self._closed)

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        else:
            self._lost(None)

    # --- sending -------------------------------------------------------------------------

    def send(self, packet: Packet) -> None:
        """Queue ``packet`` for the peer; raise :class:`ChannelClosed` if the pipe is gone.

        A packet over ``max_frame`` is not sent (the peer would close the pipe on it): a
        :class:`Response` is replaced by one whose ``error`` says so, which the caller gets as a
        :class:`CallError`; any other packet raises :class:`FrameTooLarge`. The pipe stays up.
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ChannelClosed(f"{self.name}: channel is closed")
        payload = protocol.encode(packet)
        if len(payload) > self.max_frame:
            payload = self._oversize(packet, len(payload))
        transport.write(encode_frame(payload))
        self.sent += 1

    def _oversize(self, packet: Packet, size: int) -> bytes:
        text = f"{type(packet).__name__} of {size} bytes exceeds the {self.max_frame}-byte IPC frame limit"
        if type(packet) is not Response:
            raise FrameTooLarge(f"{self.name}: {text}; not sent")
        log.warning("%s: reply to request %d not sent: %s", self.name, packet.id, text)
        return protocol.encode(Response(packet.id, error=f"the reply was not sent: {text}"))

    async def request_raw(self, name: str, body: bytes, *, timeout: float = 5.0,
                          broadcast: bool = False) -> bytes:
        """Send a :class:`Request` and return the response body; raise :class:`CallError`."""
        rid = next(self._ids)
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self.send(Request(rid, name, body, broadcast, timeout))
            try:
                async with asyncio.timeout(timeout):  # not wait_for: it can swallow a racing cancel in 3.11
                    response = await fut
            except TimeoutError:
                raise CallError(f"{self.name}: {name} timed out after {timeout:g}s") from None
        except ChannelClosed as exc:
            raise CallError(f"{self.name}: {name} failed, the peer went away") from exc
        except FrameTooLarge as exc:
            raise CallError(str(exc)) from None
        finally:
            self._pending.pop(rid, None)
        if response.error is not None:
            raise CallError(response.error)
        return response.body or b""

    async def call(self, call: Call, reply_type: type[T] | Any = Any, *, timeout: float = 5.0) -> T:
        """Send a typed call to the peer and return its reply, validated as ``reply_type``."""
        name, body = encode_call(call)
        return decode_value(await self.request_raw(name, body, timeout=timeout), reply_type)

    async def broadcast(self, call: Call, reply_type: type[T] | Any = Any, *,
                        timeout: float = 5.0) -> list[Reply]:
        """Ask the supervisor to send ``call`` to every worker and gather the replies.

        Workers that fail or miss ``timeout`` appear with an ``error``.
        """
        name, body = encode_call(call)
        raw = await self.request_raw(name, body, timeout=timeout + BROADCAST_MARGIN, broadcast=True)
        replies: list[Reply] = decode_value(raw, list[Reply])
        out: list[Reply] = []
        for r in replies:
            if r.error is None and reply_type is not Any:
                try:
                    r = Reply(r.worker_id, msgspec.convert(r.value, reply_type), host=r.host)
                except msgspec.ValidationError as exc:
                    r = Reply(r.worker_id, None, f"invalid reply: {exc}", r.host)
            out.append(r)
        return out

    # --- receiving -----------------------------------------------------------------------

    def _received(self, packet: Packet) -> None:
        self.received += 1
        if type(packet) is Ping:
            try:
                self.send(Pong(packet.nonce))
            except ChannelClosed:
                pass
            return
        if type(packet) is Response:
            fut = self._pending.get(packet.id)
            if fut is not None and not fut.done():
                fut.set_result(packet)
            return
        try:
            self._on_packet(packet)
        except Exception:
            log.exception("%s: error handling %s", self.name, type(packet).__name__)

    def _lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ChannelClosed(f"{self.name}: channel closed"))
        self._pending.clear()


async def answer(request: Request, handler: Callable[[Call], Awaitable[Any] | Any]) -> Response:
    """Run ``handler`` on a received request's call and build the :class:`Response`.

    Errors (an unknown call type, an exception in the handler, an unencodable result)
    become the response's ``error`` text; they never propagate.
    """
    try:
        call = decode_call(request.name, request.body)
        result = handler(call)
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            async with asyncio.timeout(request.timeout):
                result = await result
        return Response(request.id, encode_value(result))
    except TimeoutError:
        return Response(request.id, error=f"{request.name} timed out after {request.timeout:g}s")
    except Exception as exc:  # noqa: BLE001 - sent back to the caller
        return Response(request.id, error=f"{type(exc).__name__}: {exc}")
