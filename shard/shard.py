"""Shard: the asyncio driver around `GatewayProtocol`.

The socket is a plain `asyncio.Protocol` (the handshake goes through `websockets`' sans-I/O client):
each chunk the loop reads is buffered in the core. The consumer (`next_event`) processes it a few frames
at a time, so messages are decoded while hot in the CPU cache. When the consumer is not pulling, a
timer processes the buffer within 50 ms, and the heartbeat timer processes it before every beat, so
heartbeats, ACKs, op 7 and op 9 never wait on a slow consumer. Reading pauses when 1 MiB of unprocessed
data or `max_pending_events` events are waiting. One task per shard connects (with backoff and a
connect timeout). A connection that will Identify (no session, or the session was just invalidated) is
opened only after the identify queue granted the shard's turn, and Identify goes out right after Hello;
while the shard waits for its turn it holds no connection, sends no heartbeats, and its state is
Identifying. Connecting and Hello share one `connect_timeout` from the grant, so the Identify is sent within
it or never; the queue is told when it was written (`sent`), and its window starts then. A queue may grant a
turn early with a not-before time (its optional `not_before`): the shard connects at once and holds the
Identify until then, so connecting overlaps the end of the bucket's window. Resumes never wait on the queue.
Commands go through a bounded queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Self

import msgspec

from .close_codes import CloseFrame
from .config import Config, Token
from .error import ErrorKind, GatewayError
from .event import Dispatch, Event
from .id import ShardId
from .intents import Intents
from .latency import Latency
from .counters import ShardCounters
from .metrics import register_collector
from .protocol import GatewayProtocol, TransportAction, check_payload, item_sequence
from .queue import InMemoryQueue, Queue
from .ratelimiter import CommandRatelimiter
from .session import Session
from .state import ShardState
from .websocket import OP_PONG, Handshake, HandshakeError, build_url, encode_text
from .wire import Command, encode_command

__all__ = ["Shard", "MessageSender"]

log = logging.getLogger("shard")

_DEFAULT_QUEUE: InMemoryQueue | None = None
_PULL_BATCH = 32            # frames the consumer processes at a time
_YIELD_EVERY = 32           # pulls (about 1,000 events) between yields to the event loop while a backlog lasts
_BACKGROUND_DELAY = 0.05    # seconds before unread data is processed without the consumer
_PAUSE_BYTES = 1 << 20      # stop reading with this much unprocessed data...
_RESUME_BYTES = 256 << 10   # ...until it is below this
_PONG = 0x80 | OP_PONG      # first byte of an encoded pong frame


def _default_queue() -> InMemoryQueue:
    """One in-memory queue shared by the shards of a process that were given none."""
    global _DEFAULT_QUEUE
    if _DEFAULT_QUEUE is None:
        _DEFAULT_QUEUE = InMemoryQueue()
    return _DEFAULT_QUEUE


class _Connection(asyncio.Protocol):
    """One TCP connection: the handshake, then every chunk goes to the shard's core. Write flow control:
    while the transport's buffer is over its high-water mark (`write_paused`), pongs wait in `pong`."""

    __slots__ = ("shard", "handshake", "transport", "opened", "lost", "paused", "write_paused", "pong",
                 "identify_sent")

    def __init__(self, shard: Shard, handshake: Handshake, loop: asyncio.AbstractEventLoop) -> None:
        self.shard = shard
        self.handshake: Handshake | None = handshake
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.paused = False
        self.write_paused = False
        self.pong: bytes | None = None  # the latest pong held back while writing is paused
        self.identify_sent = False  # the identify queue was told this connection's Identify was written

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        assert self.handshake is not None
        transport.write(self.handshake.request())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.handshake is None:
            self.shard._on_data(self, data)
            return
        try:
            rest = self.handshake.receive(data)
        except HandshakeError as exc:
            if not self.opened.done():
                self.opened.set_exception(exc)
            self.transport.abort()  # type: ignore[union-attr]
            return
        if rest is None:
            return
        self.handshake = None
        if self.opened.done():  # the connect timeout gave up on this connection while the reply was in flight
            self.transport.abort()  # type: ignore[union-attr]
            return
        self.opened.set_result(None)
        self.shard._on_open(self)
        if rest:
            self.shard._on_data(self, rest)

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self.write_paused = True
        self.shard._on_pause_writing(self)

    def resume_writing(self) -> None:
        self.write_paused = False
        self.shard._on_resume_writing(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connection closed during the handshake: {exc}"))
        if not self.lost.done():
            self.lost.set_result(None)
        self.shard._on_lost(self)


class Shard:
    """A Discord gateway shard: connects, identifies or resumes, heartbeats, reconnects, and yields events.

    ```python
    shard = Shard(ShardId.ONE, token, Intents.GUILD_MESSAGES)
    async for event in shard:          # ends after a fatal close
        ...
    ```
    """

    def __init__(self, shard_id: ShardId, token: str | Token, intents: Intents | int) -> None:
        self._init(shard_id, Config(token, intents))

    @classmethod
    def with_config(cls, shard_id: ShardId, config: Config) -> Shard:
        """A shard with every option of `Config`."""
        self = cls.__new__(cls)
        self._init(shard_id, config)
        return self

    def _init(self, shard_id: ShardId, config: Config) -> None:
        self._id = shard_id
        self._config = config
        self._queue: Queue = config.queue if config.queue is not None else _default_queue()
        self.metrics = ShardCounters()
        p = self._protocol = GatewayProtocol(shard_id, config, metrics=self.metrics)
        p.on_identified = self._on_identified
        p.on_unused = self._on_unused
        # optional Queue methods (see shard.queue.Queue), looked up once
        self._queue_sent: Callable[[int], None] | None = getattr(self._queue, "sent", None)
        self._queue_unused: Callable[[int], None] | None = getattr(self._queue, "unused", None)
        self._queue_not_before: Callable[[int], float] | None = getattr(self._queue, "not_before", None)
        self._identify_by: float | None = None  # loop time by which a granted turn's Identify must be sent
        self._conn: _Connection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._hb_handle: asyncio.TimerHandle | None = None
        self._hb_deadline: float | None = None
        self._close_handle: asyncio.TimerHandle | None = None
        self._hello_handle: asyncio.TimerHandle | None = None
        self._write_handle: asyncio.TimerHandle | None = None
        self._writable = asyncio.Event()  # the sender waits on it while the transport's writing is paused
        self._writable.set()
        self._identify_task: asyncio.Task[None] | None = None
        self._sender_task: asyncio.Task[None] | None = None
        self._sendq: asyncio.Queue[bytes] | None = None
        self._active: asyncio.Event | None = None   # commands may be written (`can_send_commands()`)...
        self._inactive = asyncio.Event()               # ...and its opposite, to cut a wait for a permit short
        self._final: GatewayError | None = None
        self._pulls = 0
        self._bg_handle: asyncio.TimerHandle | None = None
        self._bg_pulls = 0
        self._held: int | None = None  # the sequence of the event the consumer is handling (see handled_session)
        self._high = max(1, config.max_pending_events)
        self._low = self._high // 2
        if config.metrics:
            register_collector().add(self)

    # ---- public state -----------------------------------------------------------------------------
    @property
    def id(self) -> ShardId:
        return self._id

    @property
    def config(self) -> Config:
        return self._config

    @property
    def state(self) -> ShardState:
        """Active, Disconnected(reconnect_attempts), FatallyClosed, Identifying or Resuming.

        Identifying covers the whole identify phase: waiting for the identify queue's turn (with no
        connection open), connecting, and waiting for READY after Identify. Disconnected(n) is the wait
        before a reconnect (backoff); a shard that must identify then moves to Identifying while queued."""
        return self._protocol.state

    @property
    def session(self) -> Session | None:
        """The current session (id and last sequence received), if any. To resume without losing events
        the consumer has not handled yet, save `handled_session` instead."""
        return self._protocol.session

    @property
    def handled_session(self) -> Session | None:
        """The session to resume from so that every event the consumer has not finished comes again, if any.

        Its sequence is the one before the event the consumer is handling (the last one `next_event`,
        `next_message` or `async for` gave it, until it asks for the next), or, while it holds none, before
        the first event still queued in the shard; with neither, the last one received. A resume from it
        delivers those events at least once: the one that was being handled comes again. `close` returns it.
        """
        return self._handled(self._protocol.session)

    def _handled(self, session: Session | None) -> Session | None:
        if session is None:
            return None
        seq = self._held
        if seq is None:
            seq = self._protocol.pending_sequence()
            if seq is None:
                return session
        # never past what was received: an event held from a session since replaced says nothing of this one
        return Session(session.id, min(seq - 1, session.sequence))

    @property
    def resume_url(self) -> str | None:
        """The `resume_gateway_url` of the current session."""
        return self._protocol.resume_url

    @property
    def latency(self) -> Latency:
        """Heartbeat round trips of the current connection."""
        return self._protocol.latency

    @property
    def ratelimiter(self) -> CommandRatelimiter | None:
        """The command ratelimiter of the current connection (None before Hello or when disabled)."""
        return self._protocol.ratelimiter

    def inflater_stats(self) -> tuple[int, int, int]:
        """(compressed bytes in, decompressed bytes out, buffer capacity) over all connections."""
        return self._protocol.inflater_stats()

    def register(self, event_type: str, struct: type[msgspec.Struct]) -> None:
        """Decode `d` of `event_type` into `struct` (only its declared fields are decoded)."""
        self._protocol.register(event_type, struct)

    def is_closed(self) -> bool:
        """The shard stopped for good (closed by the user, or fatally)."""
        return self._protocol.stopped

    def __repr__(self) -> str:
        return f"Shard(id={self._id}, state={self.state!r})"

    # ---- receiving --------------------------------------------------------------------------------
    async def next_event(self) -> Event:
        """The next event. Raises GatewayError: `is_fatal()` means the shard has stopped for good."""
        p = self._protocol
        q = p.events
        while True:
            if q:
                item = q.popleft()
                p.raws.popleft()
                if type(item) is Dispatch:
                    self._held = item.seq  # until the consumer asks for the next one (handled_session)
                    return item
                self._held = None
                if isinstance(item, GatewayError):
                    self._raise(item)
                event = p.make_event(item)
                self._held = event.seq
                return event
            self._held = None  # the consumer is done with the last event
            if p.has_input and self._pull():
                if not self._pulls % _YIELD_EVERY:
                    await asyncio.sleep(0)  # a long backlog must not starve other shards and timers
                continue
            await self._wait()

    async def next_message(self) -> str | CloseFrame:
        """The next raw message: the decompressed JSON text, or a CloseFrame when a connection closed.

        Only messages selected by `event_types` are kept. Raises GatewayError like `next_event`. From the
        first call on, `d` is no longer decoded up front (only the envelope is scanned): a later
        `next_event` still works, and decodes `d` then.
        """
        p = self._protocol
        p.use_raw_mode()
        q = p.events
        while True:
            if q:
                item, raw = p.pop()
                self._held = None
                if isinstance(item, GatewayError):
                    self._raise(item)
                if raw is None:  # GATEWAY_CLOSE
                    return item.data  # type: ignore[union-attr,return-value]
                try:
                    text = raw.decode()  # the UTF-8 check inside `d`, which the envelope scan skipped
                except UnicodeDecodeError as exc:
                    self._raise(GatewayError(ErrorKind.DESERIALIZING, f"a gateway payload is not valid UTF-8: {exc}"))
                self._held = item_sequence(item)  # until the consumer asks for the next one (handled_session)
                return text
            self._held = None  # the consumer is done with the last message
            if p.has_input and self._pull():
                if not self._pulls % _YIELD_EVERY:
                    await asyncio.sleep(0)  # a long backlog must not starve other shards and timers
                continue
            await self._wait()

    def _pull(self) -> bool:
        """The consumer processes the next few buffered frames itself (they stay hot in the CPU cache)."""
        self._pulls += 1
        p = self._protocol
        progressed = p.process(_PULL_BATCH)
        conn = self._conn
        if conn is not None and conn.transport is not None:
            self._after(conn)
            if conn.paused and p.pending < _RESUME_BYTES and len(p.events) <= self._low:
                self._resume_reading(conn)
        return progressed

    def _raise(self, error: GatewayError) -> None:
        if error.is_fatal():
            self._final = error
        raise error

    def __aiter__(self) -> Shard:
        return self

    async def __anext__(self) -> Event:
        """`async for event in shard`: events until the shard stops; non-fatal errors are logged and skipped."""
        p = self._protocol
        q = p.events
        if q and type(q[0]) is Dispatch:  # fast path: a decoded dispatch is ready
            p.raws.popleft()
            event: Dispatch = q.popleft()  # type: ignore[assignment]
            self._held = event.seq
            return event
        while True:
            try:
                return await self.next_event()
            except GatewayError as error:
                if error.is_fatal():
                    raise StopAsyncIteration from None
                log.warning("shard %s: %s", self._id, error.reason)

    async def _wait(self) -> None:
        if self._final is not None:
            raise self._final
        p = self._protocol
        if p.stopped and (self._runner is None or self._runner.done()):
            self._final = GatewayError(ErrorKind.CLOSED, "the shard is closed")
            raise self._final
        self.start()
        conn = self._conn
        if conn is not None and conn.paused:
            self._resume_reading(conn)  # everything buffered was consumed
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # ---- sending ----------------------------------------------------------------------------------
    async def send(self, payload: str | bytes) -> None:
        """Queue a raw JSON payload. Sent once the shard is Active, within the ratelimit. Payloads over
        4096 bytes are refused (GatewayError PAYLOAD_TOO_LARGE); waits while the bounded queue is full."""
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        check_payload(data)
        q = self._ensure_sender()
        await q.put(data)

    async def command(self, command: Command) -> None:
        """Queue a gateway command (UpdatePresence, RequestGuildMembers, UpdateVoiceState, ...)."""
        await self.send(encode_command(command))

    def beat_now(self) -> int | None:
        """Send a heartbeat now, out of schedule, on the heartbeat path: no command permit, never behind the send
        queue (a marker: its ACK comes after everything the gateway sent before it). Returns how many heartbeat
        ACKs are due until its own (the beats still unanswered, it included), or None unless the shard is Active."""
        conn = self._conn
        if conn is None or conn.transport is None:
            return None
        acks = self._protocol.beat_now(time.monotonic())
        if acks is not None:
            self._after(conn)
        return acks

    def sender(self) -> MessageSender:
        """A handle other tasks can use to send through this shard."""
        return MessageSender(self)

    def _ensure_sender(self) -> asyncio.Queue[bytes]:
        if self._protocol.stopped:
            raise GatewayError(ErrorKind.CLOSED, "the shard is closed")
        if self._sendq is None:
            self._sendq = asyncio.Queue(self._config.send_queue_size)
            self._active = asyncio.Event()
            self._sync_active()
            self._sender_task = asyncio.get_running_loop().create_task(self._sender())
        return self._sendq

    async def _sender(self) -> None:
        assert self._sendq is not None and self._active is not None
        q, active = self._sendq, self._active
        p = self._protocol
        while True:
            payload = await q.get()
            while True:  # keep the payload across reconnects until it is written (twilight #2247)
                await active.wait()
                conn = self._conn
                if conn is None or conn.transport is None or not p.can_send_commands():
                    self._set_active(False)  # out of step with the core: wait for the next sync, never spin
                    continue
                if conn.write_paused and not self._writable.is_set():
                    await self._writable.wait()  # the gateway is not reading: do not pile up commands
                    continue
                rl = p.ratelimiter
                if rl is not None and not rl.try_acquire():
                    # Wait for this connection's next permit, or less if it closes meanwhile: the next
                    # connection has a ratelimiter of its own.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._inactive.wait(), rl.next_available() + 0.001)
                    continue
                conn.transport.write(encode_text(payload))  # no await since the checks: still true
                break

    # ---- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start connecting (done automatically by the first `next_event`)."""
        if self._runner is None and not self._protocol.stopped:
            self._runner = asyncio.get_running_loop().create_task(self._connection_loop(),
                                                                  name=f"shard-{self._id.number}")

    async def close(self, frame: CloseFrame = CloseFrame.NORMAL) -> Session | None:
        """Close the connection and stop. Returns the Session to resume later, unless `frame` is
        1000/1001 (CloseFrame.NORMAL), which ends the session. Events already received stay readable."""
        p = self._protocol
        session = self._handled(p.close(frame))  # what the consumer has not finished is replayed on resume
        conn = self._conn
        if conn is not None and p.connected:
            self._after(conn)
        runner = self._runner
        if runner is not None and not runner.done():
            if not p.connected:
                runner.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(runner), self._config.close_timeout + 1.0)
            except (TimeoutError, asyncio.CancelledError):
                runner.cancel()
        p.stop()
        self._stop_tasks()
        self._wake()
        return session

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self._protocol.stopped:
            await self.close(CloseFrame.NORMAL)

    def _stop_tasks(self) -> None:
        for task in (self._identify_task, self._sender_task):
            if task is not None and not task.done():
                task.cancel()
        self._identify_task = None
        self._sender_task = None
        self._sendq = None

    async def _connection_loop(self) -> None:
        p = self._protocol
        cfg = self._config
        loop = asyncio.get_running_loop()
        try:
            while not p.stopped:
                base, delay = p.connect_target()
                if delay > 0:
                    log.info("shard %s: reconnecting in %.2f s (attempt %d)", self._id, delay, p.attempts)
                    await asyncio.sleep(delay)
                    if p.stopped:
                        break
                if p.needs_permit:
                    # This connection will Identify: take the identify queue's turn *before* connecting,
                    # so shards waiting for their turn hold no gateway connection (and send no heartbeats).
                    p.waiting_for_permit()
                    try:
                        await self._queue.enqueue(self._id.number)  # cancel-safe; a grant is recorded at once
                    except Exception as exc:  # a broken queue: retry with backoff, never hang
                        log.exception("shard %s: identify queue failed", self._id)
                        p.connect_failed(f"the identify queue failed: {type(exc).__name__}")
                        self._wake()
                        continue
                    nb = self._queue_not_before
                    p.permit_granted(nb(self._id.number) if nb is not None else 0.0)
                    if p.stopped:
                        break  # closed meanwhile: `finally` gives the permit back
                    base, _ = p.connect_target()
                # A granted turn: connecting and Hello share one connect_timeout, so the Identify is sent
                # within it of the grant (the queue holds the bucket meanwhile) or the turn is given back.
                self._identify_by = loop.time() + cfg.connect_timeout if p.permit else None
                url = build_url(base, cfg.compression)
                try:
                    handshake = Handshake(url)
                except Exception as exc:  # noqa: BLE001 - malformed URL from a resume_url
                    p.connect_failed(f"invalid URL: {type(exc).__name__}")
                    self._wake()
                    continue
                conn = _Connection(self, handshake, loop)
                self._conn = conn
                try:
                    by = self._identify_by
                    async with asyncio.timeout_at(by if by is not None else loop.time() + cfg.connect_timeout):
                        await loop.create_connection(
                            lambda: conn, handshake.host, handshake.port,  # noqa: B023 - called before this turn ends
                            ssl=cfg.ssl_context() if handshake.secure else None,
                            server_hostname=handshake.host if handshake.secure else None)
                        await conn.opened
                except (TimeoutError, OSError, HandshakeError, ConnectionError) as exc:
                    if conn.transport is not None:
                        conn.transport.abort()
                    self._conn = None
                    reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else str(exc) or type(exc).__name__
                    log.warning("shard %s: connecting failed: %s", self._id, reason)
                    p.connect_failed(reason)
                    self._wake()
                    continue
                await conn.lost
        finally:
            p.release_permit()  # cancelled or closed between the grant and the Identify
            self._cancel_timers()
            last = self._conn
            if last is not None and last.transport is not None and not last.lost.done():
                last.transport.abort()
            self._wake()

    # ---- callbacks from the connection ------------------------------------------------------------
    def _on_open(self, conn: _Connection) -> None:
        if conn is not self._conn:
            return
        self._protocol.connection_made()
        loop = asyncio.get_running_loop()
        by = self._identify_by if self._protocol.permit else None
        self._hello_handle = loop.call_at(by if by is not None else loop.time() + self._config.connect_timeout,
                                          self._on_hello_timeout, conn)

    def _on_data(self, conn: _Connection, data: bytes) -> None:
        if conn is not self._conn:
            return
        p = self._protocol
        p.receive_data(data)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)  # the waiting consumer processes it
        if self._bg_handle is None:
            self._bg_pulls = self._pulls
            self._bg_handle = asyncio.get_running_loop().call_later(_BACKGROUND_DELAY, self._background, conn)
        if p.pending > _PAUSE_BYTES and not conn.paused and conn.transport is not None:
            conn.paused = True
            p.reading_paused()
            conn.transport.pause_reading()

    def _background(self, conn: _Connection) -> None:
        """Process unread data when the consumer is not doing it, so control opcodes never wait on it."""
        self._bg_handle = None
        if conn is not self._conn or conn.transport is None:
            return
        p = self._protocol
        if self._pulls != self._bg_pulls:
            pass  # the consumer is pulling: leave the work to it (reading pauses if it falls behind)
        else:
            p.process()
            self._after(conn)
        if p.has_input and self._conn is conn:
            self._bg_pulls = self._pulls
            self._bg_handle = asyncio.get_running_loop().call_later(_BACKGROUND_DELAY, self._background, conn)

    def _on_lost(self, conn: _Connection) -> None:
        if conn is not self._conn:
            return
        self._cancel_timers()
        if self._identify_task is not None:
            self._identify_task.cancel()
            self._identify_task = None
        p = self._protocol
        was_connected = p.connected
        p.connection_lost()
        if was_connected:
            self._conn = None
        self._sync_active()
        self._wake()

    def _after(self, conn: _Connection) -> None:
        """Carry out what the core decided after an input."""
        p = self._protocol
        transport = conn.transport
        assert transport is not None
        out = p.data_to_send()
        if out:
            if len(out) == 1 and not conn.write_paused:
                transport.write(out[0])
            else:
                self._write_all(conn, out)
            if p.identify_pending and not conn.identify_sent:
                conn.identify_sent = True
                self._on_identify_sent()
        action = p.transport_action()
        if action is not TransportAction.NONE:
            if action is TransportAction.ABORT:
                transport.abort()
            elif action is TransportAction.CLOSE:
                transport.close()
            elif self._close_handle is None:  # AWAIT_CLOSE
                self._close_handle = asyncio.get_running_loop().call_later(
                    self._config.close_timeout, self._on_close_timeout, conn)
        deadline = p.heartbeat_deadline
        if deadline != self._hb_deadline:
            if self._hb_handle is not None:
                self._hb_handle.cancel()
                self._hb_handle = None
            self._hb_deadline = deadline
            if deadline is not None:
                self._hb_handle = asyncio.get_running_loop().call_later(
                    max(0.0, deadline - time.monotonic()), self._on_heartbeat, conn)
        if p.want_identify and self._identify_task is None:
            self._identify_task = asyncio.get_running_loop().create_task(self._identify(conn))
        if self._active is not None:
            self._sync_active()
        events = p.events
        if events:
            self._wake()
            if len(events) >= self._high and not conn.paused and p.connected and not transport.is_closing():
                conn.paused = True
                p.reading_paused()
                transport.pause_reading()

    def _write_all(self, conn: _Connection, out: list[bytes]) -> None:
        """Write several frames, or any while writing is paused. Of the pongs among them only the latest is
        kept (RFC 6455 5.5.3 allows answering only the most recent ping), and while writing is paused it is
        held back until writing resumes: a server that pings without reading cannot grow our buffer."""
        pong = None
        frames = []
        for frame in out:
            if frame[0] == _PONG:
                pong = frame
            else:
                frames.append(frame)
        if pong is not None:
            if conn.write_paused:
                conn.pong = pong
            else:
                frames.append(pong)
        if frames:
            conn.transport.writelines(frames)  # type: ignore[union-attr]

    def _on_pause_writing(self, conn: _Connection) -> None:
        """The transport's buffer passed its high-water mark: the gateway is not reading what we send."""
        if conn is not self._conn or self._write_handle is not None:
            return
        self._writable.clear()
        self._write_handle = asyncio.get_running_loop().call_later(
            self._config.write_timeout, self._on_write_timeout, conn)

    def _on_resume_writing(self, conn: _Connection) -> None:
        if self._write_handle is not None:
            self._write_handle.cancel()
            self._write_handle = None
        self._writable.set()
        pong, conn.pong = conn.pong, None
        transport = conn.transport
        if pong is not None and transport is not None and not transport.is_closing():
            transport.write(pong)

    def _on_write_timeout(self, conn: _Connection) -> None:
        self._write_handle = None
        if conn is not self._conn or conn.transport is None:
            return
        log.warning("shard %s: the gateway has read nothing we sent for %.1f s (%d bytes wait); dropping the "
                    "connection", self._id, self._config.write_timeout, conn.transport.get_write_buffer_size())
        self._protocol.write_stalled()
        self._after(conn)

    def _resume_reading(self, conn: _Connection) -> None:
        conn.paused = False
        self._protocol.reading_resumed()
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.resume_reading()

    def _sync_active(self) -> None:
        """The sender may write while the core accepts commands: not while a connection closes or drops."""
        if self._active is not None:
            self._set_active(self._protocol.can_send_commands())

    def _set_active(self, active: bool) -> None:
        assert self._active is not None
        if active:
            self._active.set()
            self._inactive.clear()
        else:
            self._active.clear()
            self._inactive.set()

    def _on_heartbeat(self, conn: _Connection) -> None:
        self._hb_handle = None
        self._hb_deadline = None
        if conn is not self._conn:
            return
        self._protocol.heartbeat_timer(time.monotonic())
        self._after(conn)

    def _on_close_timeout(self, conn: _Connection) -> None:
        self._close_handle = None
        if conn is self._conn and conn.transport is not None:
            log.info("shard %s: no close reply in %.1f s; dropping the connection", self._id,
                     self._config.close_timeout)
            conn.transport.abort()

    def _on_hello_timeout(self, conn: _Connection) -> None:
        self._hello_handle = None
        if conn is self._conn:
            self._protocol.hello_timeout()
            if self._protocol.transport_action() is not TransportAction.NONE:
                self._after(conn)

    def _cancel_timers(self) -> None:
        for name in ("_hb_handle", "_close_handle", "_hello_handle", "_bg_handle", "_write_handle"):
            handle = getattr(self, name)
            if handle is not None:
                handle.cancel()
                setattr(self, name, None)
        self._hb_deadline = None
        self._writable.set()

    async def _identify(self, conn: _Connection) -> None:
        p = self._protocol
        number = self._id.number
        try:
            if p.permit:  # granted early, before connecting: the Identify waits for its not-before time
                # (checked on time.monotonic(): uvloop's timers count whole ms from a cached clock, so may fire early)
                while (left := p.permit_not_before - time.monotonic()) > 0:  # noqa: ASYNC110 - a deadline, no event
                    await asyncio.sleep(left + 0.0005)
            else:
                await self._queue.enqueue(number)
            rl = p.ratelimiter
            if rl is not None:
                await rl.acquire()
            if conn is self._conn and p.may_identify():
                p.identify()
                self._after(conn)
            elif p.permit:
                p.release_permit()
            else:
                self._queue.identified(number, False)
        finally:
            if self._identify_task is asyncio.current_task():
                self._identify_task = None

    def _on_identified(self, ready: bool) -> None:
        try:
            self._queue.identified(self._id.number, ready)
        except Exception:  # a broken queue must not break the receive path
            log.exception("shard %s: identify queue failed", self._id)


    def _on_identify_sent(self) -> None:
        """The Identify was just written: the identify queue starts its bucket's window now."""
        sent = self._queue_sent
        if sent is None:
            return
        try:
            sent(self._id.number)
        except Exception:  # a broken queue must not break the connection
            log.exception("shard %s: identify queue failed", self._id)

    def _on_unused(self) -> None:
        unused = self._queue_unused  # refund a turn never used
        if unused is None:
            return
        try:
            unused(self._id.number)
        except Exception:
            log.exception("shard %s: identify queue failed", self._id)


class MessageSender:
    """Sends through a shard from other tasks (`Shard.sender()`)."""

    __slots__ = ("_shard",)

    def __init__(self, shard: Shard) -> None:
        self._shard = shard

    def is_closed(self) -> bool:
        return self._shard.is_closed()

    async def send(self, payload: str | bytes) -> None:
        await self._shard.send(payload)

    async def command(self, command: Command) -> None:
        await self._shard.command(command)

    def send_nowait(self, payload: str | bytes) -> None:
        """Queue without waiting; raises GatewayError SEND_QUEUE_FULL if the bounded queue is full."""
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        check_payload(data)
        try:
            self._shard._ensure_sender().put_nowait(data)
        except asyncio.QueueFull:
            raise GatewayError(ErrorKind.SEND_QUEUE_FULL, "the outgoing queue is full") from None

    def command_nowait(self, command: Command) -> None:
        self.send_nowait(encode_command(command))

    async def close(self, frame: CloseFrame = CloseFrame.NORMAL) -> Session | None:
        return await self._shard.close(frame)
