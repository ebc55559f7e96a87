"""The gateway connection as a pure state machine (sans-I/O).

`GatewayProtocol` takes bytes from the socket and timer ticks, and produces bytes to write, events for
the consumer, and decisions (close, abort, identify, where and when to reconnect). It owns no socket,
task or timer, so every rule (heartbeat and zombie, resume or identify, close-code policy, backoff)
is plain code that tests drive directly.

Driver contract: inputs are method calls (`connection_made`, `receive_data`, `process`, `heartbeat_timer`,
`connection_lost`, ...); outputs are read through methods: `data_to_send()` (frames to write, handed over
once), `transport_action()` (a `TransportAction`: keep, await the close reply, close, or abort the TCP
connection), `heartbeat_deadline`, and the consumer queue `events`/`raws` (`pop`, `make_event`). Counters
are plain fields (`metrics`, a `ShardCounters`); Prometheus reads them from the driver side at scrape time.

Receive path: `receive_data` only buffers; `process(budget)` then parses WebSocket frames, inflates,
decodes and queues items (`events`, with each item's raw message in `raws`) until `budget` more are
queued. The driver lets the consumer call it a few frames at a time, so messages go inflate -> decode ->
consumer while they are still in the CPU cache; control opcodes are handled as they are reached.
Compressed messages are handled in runs (`_handle_run`, up to 32): inflate the run in one C loop, then decode
it in one C loop, which keeps each library's code and tables hot; a run of plain dispatches is counted
and queued without a Python step per message. With every event wanted, each message is decoded in one
msgspec pass straight into a `Dispatch` (the Event itself). With registered Structs, or once the
consumer reads raw messages (`raw_mode`), only the envelope is scanned (`d` stays raw) and `d` is decoded
by the consumer if it asks for an Event. With an event filter, messages go one by one and unwanted events
are never decoded. Anything unusual in a run (a control opcode, READY, a bad payload, a zlib message
split across frames) takes the full path, message by message, in order.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from itertools import repeat
from operator import attrgetter

import msgspec

from .backoff import Backoff
from .close_codes import CloseAction, CloseFrame, close_action, close_reason
from .config import Config
from .counters import ShardCounters
from .error import ErrorKind, GatewayError
from .event import Dispatch, Event, EventData
from .event_type import is_all, names_for_flags
from .frames import HEADER_ERRORS, parse_header
from .heartbeat import Beat, Heartbeater
from .id import ShardId
from .inflater import SYNC_FLUSH_SUFFIX, InflateError, ZlibInflater, ZstdInflater, new_inflater
from .latency import Latency
from .parse import DECODE_ERRORS, SEQ_END, Envelope, PayloadDecoder
from .ratelimiter import MAX_PAYLOAD, CommandRatelimiter
from .session import Session
from .state import ShardState, StateKind
from .websocket import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, encode_close, encode_pong, encode_text,
                        valid_close_code)
from .wire import (HeartbeatAck, HeartbeatRequest, Hello, Identify, InvalidSession, Ready, Reconnect, Resume, Resumed,
                   default_identify_properties)

__all__ = ["GatewayProtocol", "Item", "TransportAction", "item_sequence"]

log = logging.getLogger("shard")

Item = Event | Envelope | GatewayError
"""A queued consumer item: a ready Event, an Envelope whose `d` the consumer decodes, or an error to raise."""

_HEARTBEAT_ACK = "GATEWAY_HEARTBEAT_ACK"
_SESSION_EVENTS = frozenset({"READY", "RESUMED"})
_ACK, _HB_REQUEST, _RECONNECT, _RESUMED = HeartbeatAck(), HeartbeatRequest(), Reconnect(), Resumed()
STABLE_AFTER = 30.0  # seconds Active before a disconnect no longer counts as a failed attempt
RESUME_URL_ATTEMPTS = 3  # failed connects in a row to resume_gateway_url before one to the gateway URL to Identify
RESUME_WINDOW = 300.0
"""Seconds a session is tried for a Resume after its last connection ended; after that the shard identifies.
Discord only says a session stays resumable for "a few minutes" (the reference suggests 2-5 min for the
simulator's TTL) and gives no number; twilight never gives a session up, relying on op 9. Trying a session
that has expired costs one connection, op 9 and its 1-5 s wait; dropping one that was still resumable costs a
session start, the shard's identify turn and every event it missed. So the window errs long: 5 minutes."""
_USER_CLOSE = "user"
_RUN = 32  # whole zlib-stream messages inflated, then decoded, together (more spills the CPU cache)
_SUFFIXES = repeat(SYNC_FLUSH_SUFFIX)
_TYPE, _SEQ = attrgetter("type"), attrgetter("seq")   # of a Dispatch
_T, _S, _OP = attrgetter("t"), attrgetter("s"), attrgetter("op")   # of an Envelope

class TransportAction(enum.Enum):
    """What the driver does with the TCP connection after an input (`GatewayProtocol.transport_action()`),
    once it has written `data_to_send()`."""

    NONE = "none"                  # keep the connection
    AWAIT_CLOSE = "await_close"    # our close frame is out: wait `close_timeout` for the server's, then abort
    CLOSE = "close"                # write what is queued, then close the TCP connection
    ABORT = "abort"                # drop the TCP connection now, without a close handshake


_NONE, _AWAIT_CLOSE, _CLOSE, _ABORT = TransportAction   # unpacked in definition order

try:
    from _collections import _count_elements  # C: counts[x] += 1 for x in iterable (what Counter uses)
except ImportError:  # pragma: no cover - other Python implementations
    def _count_elements(mapping: dict[str, int], iterable: list[str]) -> None:
        for x in iterable:
            mapping[x] = mapping.get(x, 0) + 1


class GatewayProtocol:
    """State of one shard across connections; see the module docstring."""

    def __init__(self, shard_id: ShardId, config: Config, *, clock: Callable[[], float] = time.monotonic,
                 rand: Callable[[], float] = random.random, metrics: ShardCounters | None = None) -> None:
        self.shard_id = shard_id
        self.config = config
        self._clock = clock
        self._rand = rand
        self.metrics = metrics or ShardCounters()
        self.decoder = PayloadDecoder(config.decoder, config.event_structs)
        self._wanted: frozenset[str] | None = None if is_all(config.event_types) else names_for_flags(
            config.event_types)
        self._lazy = False
        self.raw_mode = False            # the consumer reads raw messages: `d` is only decoded on demand
        self._counts = self.metrics.events
        self.decoding_changed()
        self.backoff = Backoff(config.backoff_base, config.backoff_max, rand)

        # Session (survives connections).
        session = config.session
        self.session_id: str | None = session.id if session else None
        self.sequence: int | None = session.sequence if session else None
        self.resume_url: str | None = config.resume_url if session else None
        self.session_seen = clock()     # when the session was last known alive (for RESUME_WINDOW)
        self.state = ShardState.Disconnected(0)
        self.attempts = 0
        self.failed_connects = 0         # failed connects in a row, since a connection last opened
        self.stopped = False             # closed by the user or fatally: never reconnect
        self.events: deque[Item] = deque()
        self.raws: deque[bytes | None] = deque()  # each queued item's raw message, in step with `events`
        self.latency = Latency()
        self.on_identified: Callable[[bool], None] | None = None
        self.permit = False              # an identify permit is held, the Identify is not sent yet
        self.permit_not_before = 0.0     # the permit's Identify goes out no earlier (clock time; an early grant)
        self.on_unused: Callable[[], None] | None = None

        # Per connection (reset by connection_made).
        self.outgoing: list[bytes] = []  # frames to write: the driver takes them with data_to_send()
        self.inflater: ZlibInflater | ZstdInflater | None = None
        self.heartbeater: Heartbeater | None = None
        self.unacked = 0                 # heartbeats sent on this connection and not acknowledged yet
        self.ratelimiter: CommandRatelimiter | None = None
        self.want_identify = False
        self.identify_pending = False
        self._closing = False            # a close frame was sent
        self._abort = False              # drop the TCP connection now, without a close handshake
        self._hangup = False             # write what is queued, then close the TCP connection
        self._halt = False               # abort or hangup: stop processing input
        self.close_received: CloseFrame | None = None
        self.disconnect: tuple[CloseAction | str, str] | None = None
        self.reconnect_delay = 0.0       # a minimum delay decided by this connection (op 9 false)
        self.suspended = False           # the driver stopped reading (consumer is behind)
        self.connected = False
        self._hello = False
        self._became_active = False
        self._active_since = 0.0
        self._inbox: deque[bytes] = deque()
        self._inbox_size = 0
        self._pos = 0
        self._skip = 0
        self._need = 0
        self._frag_op = -1
        self._frag: bytearray | None = None

    def decoding_changed(self) -> None:
        """Pick the decode strategy. Every event wanted, no Struct registered: envelope and `d` in one pass.
        Otherwise (an event filter, registered Structs, the json backend, or `raw_mode`): scan the envelope
        with `d` left raw (unwanted events are never decoded) and decode `d` in the consumer, with its
        registered Struct if any, only if it asks for an Event."""
        self._lazy = (self._wanted is not None or self.decoder.typed or self.decoder.backend != "msgspec"
                      or self.raw_mode)
        self._env_decode = self.decoder.envelope
        self._decode_all = msgspec.json.Decoder().decode
        # How a run of messages is decoded in one C loop: into Dispatch events, or into Envelopes with `d`
        # left raw; None (an event filter or the json backend): message by message.
        self._batch: tuple[Callable[[bytes], Dispatch | Envelope], Callable[..., str | None],
                           Callable[..., int | None]] | None = None
        if not self._lazy:
            self._batch = (msgspec.json.Decoder(Dispatch).decode, _TYPE, _SEQ)
        elif self._wanted is None and self.decoder.backend == "msgspec":
            self._batch = (self._env_decode, _T, _S)

    # ---- output to the driver ---------------------------------------------------------------------
    def data_to_send(self) -> list[bytes]:
        """The frames to write, in order, handed over once (the next call returns only newer ones)."""
        out = self.outgoing
        if out:
            self.outgoing = []
        return out

    def transport_action(self) -> TransportAction:
        """What to do with the TCP connection after writing `data_to_send()`."""
        if self._abort:
            return _ABORT
        if self._closing:
            return _CLOSE if self._hangup or self.close_received is not None else _AWAIT_CLOSE
        return _CLOSE if self._hangup else _NONE

    @property
    def has_input(self) -> bool:
        """Received bytes wait for `process()`."""
        return bool(self._inbox)

    def can_send_commands(self) -> bool:
        """A user command may be written now: connected, Active, and neither closing nor dropping the
        connection (a frame written to an aborted transport is silently lost)."""
        return self.connected and not self._closing and not self._halt and self.state.kind is StateKind.ACTIVE

    def may_identify(self) -> bool:
        """The Identify the connection asked for (`want_identify`) may still go out on it."""
        return self.connected and self.want_identify and not self._closing and not self._halt

    def reading_paused(self) -> None:
        """The driver stopped reading the socket (the consumer is behind): no zombie verdict meanwhile."""
        self.suspended = True

    def reading_resumed(self) -> None:
        self.suspended = False

    def use_raw_mode(self) -> None:
        """The consumer reads raw messages from now on: `d` is only decoded on demand."""
        if not self.raw_mode:
            self.raw_mode = True
            self.decoding_changed()

    def register(self, event_type: str, struct: type[msgspec.Struct]) -> None:
        """Decode `d` of `event_type` into `struct`."""
        self.decoder.register(event_type, struct)
        self.decoding_changed()

    def stop(self) -> None:
        """The driver shut the shard down for good: never reconnect."""
        self.stopped = True

    def inflater_stats(self) -> tuple[int, int, int]:
        """(compressed bytes in, decompressed bytes out, buffer capacity) over all connections."""
        m = self.metrics
        inf = self.inflater
        if inf is None:
            return m.inflater_in, m.inflater_out, 0
        return m.inflater_in + inf.bytes_in, m.inflater_out + inf.bytes_out, inf.capacity

    @property
    def abort(self) -> bool:
        """Drop the TCP connection now (`transport_action()` is ABORT); for tests of the core."""
        return self._abort

    @abort.setter
    def abort(self, value: bool) -> None:
        self._abort = value
        self._halt = value or self._hangup

    @property
    def hangup(self) -> bool:
        """Write what is queued, then close the TCP connection (`transport_action()` says CLOSE); for tests."""
        return self._hangup

    @hangup.setter
    def hangup(self, value: bool) -> None:
        self._hangup = value
        self._halt = value or self._abort

    # ---- session ----------------------------------------------------------------------------------
    @property
    def session(self) -> Session | None:
        """The current session (id and last sequence), if any."""
        if self.session_id is None:
            return None
        return Session(self.session_id, self.sequence or 0)

    def _clear_session(self) -> None:
        self.session_id = None
        self.sequence = None
        self.resume_url = None

    # ---- connection lifecycle ---------------------------------------------------------------------
    def connect_target(self) -> tuple[str, float]:
        """(base URL, delay in seconds) for the next connection attempt. A session is resumed at its
        `resume_url` (at the gateway URL only if it has none: one given in Config without it). After
        RESUME_URL_ATTEMPTS connects in a row to it failed, one attempt goes to the gateway URL to Identify,
        but the session is dropped only if that connection opens (`connection_made`: the gateway answers while
        the resume host does not). If it fails too, our own network is likely down: the session is kept and
        the resume URL is tried again, RESUME_URL_ATTEMPTS times before the next try of the gateway URL. The
        session is dropped, so the next connection identifies, if the attempt would come over RESUME_WINDOW
        seconds after the session was last alive."""
        delay = max(self.backoff.delay(self.attempts), self.reconnect_delay)
        if self.session_id is not None and self._clock() + delay - self.session_seen > RESUME_WINDOW:
            log.info("shard %s: the session was last alive over %.0f s ago; identifying", self.shard_id,
                     RESUME_WINDOW)
            self._clear_session()
        url = self.resume_url
        if self.session_id is None or not url or self._gateway_turn():
            url = self.config.gateway_url
        return url, delay

    def _gateway_turn(self) -> bool:
        """A session's next attempt goes to the gateway URL to Identify (if it opens): the previous
        RESUME_URL_ATTEMPTS connects to the resume URL failed, after any earlier failed try of the gateway URL."""
        return (self.session_id is not None and bool(self.resume_url)
                and self.failed_connects % (RESUME_URL_ATTEMPTS + 1) == RESUME_URL_ATTEMPTS)

    @property
    def needs_permit(self) -> bool:
        """The next connection will Identify (no session to resume) and no identify permit is held yet:
        the driver must wait for the identify queue *before* connecting, so a shard waiting for its turn
        holds no gateway connection (and sends no heartbeats). A session's try of the gateway URL asks for
        its turn after Hello instead, if it opens at all: most such tries fail (our own network is down)."""
        return self.session_id is None and not self.permit and not self.stopped

    def waiting_for_permit(self) -> None:
        """The driver is waiting for the identify queue. No connection is open; the state is Identifying
        (the shard is in its identify phase: waiting for its turn, connecting, or awaiting READY)."""
        self.state = ShardState.IDENTIFYING

    def permit_granted(self, not_before: float = 0.0) -> None:
        """The identify queue granted this shard's turn: the next connection sends Identify right after
        Hello, or at `not_before` (this core's clock) if that is later: a queue may grant a turn early so that
        connecting and Hello overlap the bucket's window (the driver then identifies when `want_identify`).
        If that connection fails or closes first, the permit is returned as `on_identified(False)`."""
        self.permit = True
        self.permit_not_before = not_before

    def release_permit(self) -> None:
        """Give up a permit whose Identify was never sent (connect failed, closed before Hello, shard closed
        or cancelled): reported as a failed identify so a coordinating queue frees the slot at once."""
        if self.permit:
            self.permit = False
            self._identified(False)
            if self.on_unused is not None:
                self.on_unused()

    def connection_made(self) -> None:
        """A WebSocket connection is open: fresh per-connection state (a new inflater, no Hello yet). If it
        is the gateway URL's, tried because the resume URL kept failing, the session is dropped: it identifies."""
        if self._gateway_turn():
            log.info("shard %s: resume_gateway_url failed %d times in a row while the gateway URL answers; "
                     "identifying", self.shard_id, RESUME_URL_ATTEMPTS)
            self._clear_session()
        self.outgoing = []
        cfg = self.config
        self.inflater = new_inflater(cfg.compression, cfg.zlib_backend, cfg.max_inflated_size, cfg.max_message_size)
        self.heartbeater = None
        self.unacked = 0
        self.ratelimiter = None
        self.want_identify = False
        self.identify_pending = False
        self._closing = False
        self._abort = False
        self._hangup = False
        self._halt = False
        self.failed_connects = 0
        self.close_received = None
        self.disconnect = None
        self.reconnect_delay = 0.0
        self.suspended = False
        self.connected = True
        self._hello = False
        self._became_active = False
        self._drop_inbox()
        self._frag_op = -1
        self._frag = None
        self.latency = Latency()
        self.state = ShardState.RESUMING if self.session_id is not None else ShardState.IDENTIFYING

    def connect_failed(self, reason: str) -> None:
        """A connection attempt failed (refused, timed out, bad handshake)."""
        self.release_permit()
        self.attempts += 1
        self.failed_connects += 1
        self.state = ShardState.Disconnected(self.attempts)
        self.metrics.reconnect("connect_failed")
        self._push_error(GatewayError(ErrorKind.RECONNECT, f"connecting to the gateway failed: {reason}"))

    def connection_lost(self) -> None:
        """The TCP connection is gone. Emits GATEWAY_CLOSE and decides what happens next."""
        if not self.connected:
            return
        self.process()  # everything received before the connection ended comes first
        self._drop_inbox()
        self.connected = False
        self.release_permit()  # closed before Hello: the Identify never went out
        frame = self.close_received
        if self.inflater is not None:
            self.metrics.inflater_in += self.inflater.bytes_in
            self.metrics.inflater_out += self.inflater.bytes_out
            self.inflater = None
        self.heartbeater = None
        if self.identify_pending:
            self._identified(False)
        self._push_control("GATEWAY_CLOSE", frame if frame is not None else CloseFrame(1006, ""), None)

        decision = self.disconnect
        if decision is None:
            if frame is not None:
                decision = (close_action(frame.code), f"close_{frame.code}")
            else:
                decision = (CloseAction.RESUME, "transport")
        action, reason = decision
        if action == _USER_CLOSE:
            self.stopped = True
            self.state = ShardState.Disconnected(0)
            self._push_error(GatewayError(ErrorKind.CLOSED, "the shard was closed",
                                          close_code=frame.code if frame else None))
            return
        if action is CloseAction.FATAL:
            self.stopped = True
            self.state = ShardState.FATALLY_CLOSED
            code = frame.code if frame is not None else None
            self._push_error(GatewayError.from_close(code, frame.reason if frame else ""))
            log.error("shard %s fatally closed: %s", self.shard_id, close_reason(code))
            return
        if action is CloseAction.IDENTIFY:
            self._clear_session()
        now = self._clock()
        if self._became_active:
            self.session_seen = now  # the session was alive until now: RESUME_WINDOW starts again
        if self._became_active and now - self._active_since >= STABLE_AFTER:
            self.attempts = 0  # a connection that worked for a while: reconnect at once
        else:
            self.attempts += 1  # failed or short-lived (even if the gateway closed it): back off
        self.metrics.reconnect(reason)
        self.state = ShardState.Disconnected(self.attempts)

    # ---- outgoing ---------------------------------------------------------------------------------
    def _send(self, payload: bytes) -> None:
        self.outgoing.append(encode_text(payload))

    def _heartbeat_payload(self) -> bytes:
        seq = self.sequence
        return b'{"op":1,"d":%s}' % (b"null" if seq is None else str(seq).encode())

    def send_heartbeat(self, now: float) -> None:
        self._send(self._heartbeat_payload())
        self.unacked += 1
        self.latency.record_sent(now)

    def beat_now(self, now: float) -> int | None:
        """Send a heartbeat now, out of schedule: a marker, whose ACK follows everything the gateway sent before it
        read the beat. It takes the heartbeat path (no command permit, never behind queued commands); the schedule
        restarts from it (the next beat one interval later), so a 60 s window still holds no more beats than the
        ratelimiter's heartbeat reserve. Returns how many ACKs are due until this beat's (the beats still
        unanswered, it included), or None unless the connection is Active (a resumed session has replayed what it
        missed first)."""
        hb = self.heartbeater
        if hb is None or not self.can_send_commands():
            return None
        hb.restart(now)
        self.send_heartbeat(now)
        return self.unacked

    def identify(self) -> None:
        """Queue the Identify frame (call once the identify queue and the ratelimiter allowed it)."""
        self.permit = False
        cfg = self.config
        payload = Identify(
            token=cfg.token.gateway,
            properties=cfg.identify_properties or default_identify_properties(),
            intents=cfg.intents,
            shard=[self.shard_id.number, self.shard_id.total],
            large_threshold=cfg.large_threshold,
            presence=cfg.presence,
        )
        self._send(b'{"op":2,"d":%s}' % msgspec.json.encode(payload))
        self.want_identify = False
        self.identify_pending = True
        self.state = ShardState.IDENTIFYING

    def _resume(self) -> None:
        assert self.session_id is not None
        payload = Resume(token=self.config.token.gateway, session_id=self.session_id, seq=self.sequence or 0)
        if self.ratelimiter is not None:
            self.ratelimiter.try_acquire()
        self._send(b'{"op":6,"d":%s}' % msgspec.json.encode(payload))
        self.state = ShardState.RESUMING

    def command_frame(self, payload: bytes) -> bytes:
        """A user payload as a frame; raises GatewayError if it is over 4096 bytes."""
        check_payload(payload)
        return encode_text(payload)

    def begin_close(self, frame: CloseFrame, action: CloseAction | str, reason: str) -> None:
        """Send a close frame (once) and remember what to do once the connection is gone."""
        if self.disconnect is None or action == _USER_CLOSE:
            self.disconnect = (action, reason)
        if not self._closing and self.connected:
            self._closing = True
            self.outgoing.append(encode_close(frame.code, frame.reason))

    def close(self, frame: CloseFrame) -> Session | None:
        """The user closes the shard. 1000/1001 end the session; other codes keep it for a later Resume.
        Raises ValueError for a code RFC 6455 forbids sending (1004-1006, 1015, below 1000 or over 4999)."""
        if not valid_close_code(frame.code):
            raise ValueError(f"close code {frame.code} cannot be sent: use 1000-1003, 1007-1014 or 3000-4999")
        if frame.ends_session():
            self._clear_session()
        session = self.session
        if self.connected:
            self.begin_close(frame, _USER_CLOSE, "user")
        else:
            self.stopped = True
            self.release_permit()
            self._push_error(GatewayError(ErrorKind.CLOSED, "the shard was closed"))
        return session

    # ---- timers -----------------------------------------------------------------------------------
    @property
    def heartbeat_deadline(self) -> float | None:
        hb = self.heartbeater
        return hb.deadline if hb is not None and self.connected and not self._closing else None

    def heartbeat_timer(self, now: float) -> None:
        """The heartbeat deadline passed: beat, or detect a zombie connection and abort it."""
        self.process()  # an ACK may be waiting unread behind a slow consumer
        hb = self.heartbeater
        if hb is None or not self.connected or self._closing:
            return
        if hb.tick(now, self.suspended) is Beat.ZOMBIE:
            log.warning("shard %s: no heartbeat ACK since the last beat; reconnecting to resume", self.shard_id)
            self.disconnect = (CloseAction.RESUME, "zombie")
            self.abort = True
            return
        self.send_heartbeat(now)

    def hello_timeout(self) -> None:
        """No Hello arrived in time: give up on this connection."""
        self.process()
        if self.connected and not self._hello and not self._closing:
            self.release_permit()  # an identify turn is given back now: its Identify must not go out late
            self.begin_close(CloseFrame.RESUME, CloseAction.RESUME, "hello_timeout")

    def write_stalled(self) -> None:
        """The gateway has read nothing we sent for `write_timeout` seconds: drop the connection (a close
        frame could not get through either) and resume on a new one."""
        if self.connected:
            if self.disconnect is None:
                self.disconnect = (CloseAction.RESUME, "write_timeout")
            self.abort = True

    # ---- incoming ---------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Bytes from the socket (after the handshake). They are only buffered here: `process()` parses
        them, so the consumer can pull a few events at a time while they are hot in the CPU cache."""
        if self._halt or not self.connected:
            return
        self._inbox.append(data)
        self._inbox_size += len(data)

    @property
    def pending(self) -> int:
        """Received bytes not processed yet."""
        return self._inbox_size - self._pos - self._skip

    def process(self, budget: int = -1) -> bool:
        """Parse, inflate and handle buffered frames until `budget` more consumer items are queued
        (-1: everything buffered). Control opcodes are handled as they are reached. Returns False when
        nothing could be processed (only part of a frame is buffered)."""
        before = self._inbox_size - self._pos - self._skip
        self._process(budget)
        return self._inbox_size - self._pos - self._skip != before

    def _merge(self, need: int) -> None:
        """Copy exactly the `need` bytes of a frame that spans chunks into one chunk at the front."""
        inbox = self._inbox
        first = inbox.popleft()
        self._inbox_size -= len(first)
        parts = [first[self._pos:]]
        got = len(parts[0])
        self._pos, self._skip = self._skip, 0
        while got < need:
            nxt = inbox[0]
            start = self._pos
            avail = len(nxt) - start
            take = need - got
            if avail <= take:
                parts.append(nxt[start:] if start else nxt)
                got += avail
                inbox.popleft()
                self._inbox_size -= len(nxt)
                self._pos = 0
            else:
                parts.append(nxt[start:start + take])
                got += take
                self._pos = start + take
        merged = b"".join(parts)
        self._skip = self._pos if inbox else 0
        inbox.appendleft(merged)
        self._inbox_size += len(merged)
        self._pos = 0

    def _process(self, budget: int) -> None:
        inbox = self._inbox
        events = self.events
        stop_at = len(events) + budget if budget >= 0 else 1 << 62
        inflater = self.inflater
        inflate = inflater.feed if inflater is not None else None
        on_payload = self._on_payload
        header, max_size = parse_header, self.config.max_message_size
        # Compressed binary frames outside a fragmented message are collected into `run`.
        fast = inflater is not None and self._frag is None
        run: list[bytes] = []
        room = min(stop_at - len(events), _RUN)
        try:
            while inbox:
                buf = inbox[0]
                pos = self._pos
                n = len(buf)
                need = self._need
                if need and n - pos < need:  # the next frame continues in later chunks
                    if self._inbox_size - pos - self._skip < need:
                        break
                    self._merge(need)
                    self._need = 0
                    continue
                self._need = 0
                mv = memoryview(buf)
                try:
                    while pos < n:
                        b0, start, end = header(buf, pos, n, max_size)
                        if end > n:  # not all there yet, or refused
                            if b0 < 0:
                                if run:
                                    self._handle_run(run)
                                self._protocol_error(HEADER_ERRORS[b0])
                                return
                            self._need = end - pos
                            break
                        pos = end
                        if fast and b0 == 0x82:  # the hot path
                            run.append(buf[start:end])
                            if len(run) < room:
                                continue
                            self._handle_run(run)
                        else:
                            if run:  # in order: the run before this frame first
                                self._handle_run(run)
                                if self._halt:
                                    self._drop_inbox()
                                    return
                            if b0 == 0x82 and self._frag is None:
                                if inflate is not None:
                                    out = inflate(mv[start:end])
                                    if out is not None:
                                        on_payload(out)
                                else:
                                    on_payload(self._uncompressed_binary(mv[start:end]))
                            else:
                                self._on_frame(b0, mv[start:end])
                            fast = inflater is not None and self._frag is None
                        if self._halt:
                            self._drop_inbox()
                            return
                        room = stop_at - len(events)
                        if room <= 0:
                            break
                        if room > _RUN:
                            room = _RUN
                finally:
                    mv.release()
                if pos >= n:
                    inbox.popleft()
                    self._inbox_size -= n
                    self._pos, self._skip = self._skip, 0
                    if room > 0:
                        continue
                    break
                self._pos = pos
                if not self._need or len(inbox) == 1:
                    break  # the budget is used up, or waiting for the rest of a frame
            if run:
                self._handle_run(run)
                if self._halt:
                    self._drop_inbox()
        except InflateError as exc:
            self._compression_error(str(exc))

    def _handle_run(self, run: list[bytes]) -> None:
        """Inflate, decode and queue a run of compressed frames, in order, and empty `run`.

        The usual run is whole messages (with zlib-stream: each ends with 00 00 ff ff, nothing buffered)
        that all decode as dispatches: inflated, decoded, counted and queued by C loops. Anything else in
        a run (a zlib message split across frames, a control opcode, READY, a payload that does not
        decode) sends it through the full path, message by message. On a corrupt stream, the messages
        before the corrupt one are handled, then the error is raised."""
        inflater = self.inflater
        if type(inflater) is ZlibInflater and (inflater._buf or not all(map(bytes.endswith, run, _SUFFIXES))):
            on_payload, feed = self._on_payload, inflater.feed
            for frame in run:
                out = feed(frame)
                if out is not None:
                    on_payload(out)
                    if self._halt:
                        break
            run.clear()
            return
        try:
            outs = inflater.feed_whole(run)  # type: ignore[union-attr]
        except InflateError as exc:
            run.clear()
            self._handle_each(exc.inflated)
            raise
        run.clear()
        batch = self._batch
        if batch is not None:
            decode, get_type, get_seq = batch
            try:
                decoded = list(map(decode, outs))
            except DECODE_ERRORS:
                decoded = None  # reported message by message below
            if decoded is not None:
                types = list(map(get_type, decoded))
                # Dispatches only (a Dispatch is tagged op 0; an Envelope's op is checked here).
                if (None not in types and _SESSION_EVENTS.isdisjoint(types)
                        and (get_type is _TYPE or not any(map(_OP, decoded)))):
                    self.events.extend(decoded)
                    self.raws.extend(outs)
                    _count_elements(self._counts, types)
                    for ev in reversed(decoded):
                        s = get_seq(ev)  # 0 <= s < 2**63: checked by the decoder
                        if s is not None:
                            if self.sequence is None or s > self.sequence:  # never backwards
                                self.sequence = s
                            break
                    return
        self._handle_each(outs)  # a control opcode, READY/RESUMED or a bad payload in the run (rare)

    def _handle_each(self, outs: list[bytes]) -> None:
        """The full path for each message, in order, until one halts the connection."""
        on_payload = self._on_payload
        for out in outs:
            on_payload(out)
            if self._halt:
                return

    def _drop_inbox(self) -> None:
        self._inbox.clear()
        self._inbox_size = 0
        self._pos = 0
        self._skip = 0
        self._need = 0

    def _uncompressed_binary(self, payload: memoryview) -> bytes:
        data = bytes(payload)
        if data[:1] == b"{":
            return data
        import zlib  # payload compression: a standalone zlib stream per message
        limit = self.config.max_inflated_size
        inflate = zlib.decompressobj()
        try:
            out = inflate.decompress(data, limit + 1)  # stops one byte past the bound (a bomb)
        except zlib.error as exc:
            raise InflateError(f"compressed payload is corrupt: {exc}") from None
        if len(out) > limit:
            raise InflateError(f"a message inflates to over max_inflated_size ({limit} bytes)")
        if not inflate.eof:
            raise InflateError("compressed payload is corrupt: incomplete or truncated stream")
        return out

    def _on_frame(self, b0: int, payload: memoryview) -> None:
        """Slow path: text, fragmented and control frames."""
        if b0 & 0x70:
            self._protocol_error("the server set reserved bits")
            return
        fin = b0 & 0x80
        op = b0 & 0x0F
        if op & 0x8 and (len(payload) > 125 or not fin):
            self._protocol_error("a control frame over 125 bytes or fragmented")  # RFC 6455 5.5
            return
        if op == OP_CLOSE:
            self._on_close_frame(bytes(payload))
            return
        if op == OP_PING:
            self.outgoing.append(encode_pong(bytes(payload)))
            return
        if op > 0x7:  # pong and reserved control opcodes
            return
        if op == OP_CONT:
            if self._frag is None:
                self._protocol_error("a continuation frame without a start")
                return
            self._frag += payload
            if len(self._frag) > self.config.max_message_size:
                self._protocol_error("a message is over max_message_size")
                return
            if not fin:
                return
            op, data = self._frag_op, bytes(self._frag)
            self._frag_op, self._frag = -1, None
        elif op in (OP_TEXT, OP_BINARY):
            if self._frag is not None:
                self._protocol_error("a new message started inside a fragmented one")
                return
            if not fin:
                self._frag_op, self._frag = op, bytearray(payload)
                return
            data = bytes(payload)
        else:
            self._protocol_error(f"unknown WebSocket opcode {op}")
            return
        if op == OP_TEXT:
            self._on_payload(data)
        elif self.inflater is not None:
            out = self.inflater.feed(data)
            if out is not None:
                self._on_payload(out)
        else:
            self._on_payload(self._uncompressed_binary(memoryview(data)))

    def _on_payload(self, out: bytes) -> None:
        """One complete gateway message, by the strategy `decoding_changed` picked. Eager (every event wanted):
        decode the whole message once (plain msgspec decode to dict is the cheapest full decode; a Struct
        envelope with an `object` field costs ~50% more). Lazy (filtering or typed decoding): scan op/t/s with
        `d` left raw, which the consumer decodes. One tail for both: sequence, count, session events, queue."""
        item: Item | None
        if self._lazy:
            try:
                env = self._env_decode(out)
            except DECODE_ERRORS as exc:
                self._push_error(GatewayError(ErrorKind.DESERIALIZING, f"a gateway payload is not valid: {exc}"))
                return
            if env.op != 0:
                self._on_control(env.op, env.d, out)
                return
            t, s, d, item = env.t, env.s, env.d, env  # 0 <= s < 2**63: checked by the envelope decoder
            if t is None:
                self._push_error(GatewayError(ErrorKind.DESERIALIZING, "a dispatch has no event name"))
                return
        else:
            try:
                msg = self._decode_all(out)
                op = msg["op"]
            except (*DECODE_ERRORS, TypeError, KeyError) as exc:
                self._push_error(GatewayError(ErrorKind.DESERIALIZING, f"a gateway payload is not valid: {exc}"))
                return
            if op != 0:
                if type(op) is not int:
                    self._push_error(GatewayError(ErrorKind.DESERIALIZING, "a payload has no integer op"))
                    return
                self._on_control(op, msg.get("d"), out)
                return
            t = msg.get("t")
            s = msg.get("s")
            if type(t) is not str or (s is not None and type(s) is not int):
                self._push_error(GatewayError(ErrorKind.DESERIALIZING, "a dispatch has no valid t or s"))
                return
            if s is not None and not 0 <= s < SEQ_END:
                self._bad_sequence(t, s)
                return
            d, item = msg.get("d"), None
        if s is not None and (self.sequence is None or s > self.sequence):  # never backwards
            self.sequence = s
        counts = self._counts
        counts[t] = counts.get(t, 0) + 1
        if t == "READY" or t == "RESUMED":
            self._on_session_event(t, s, d, out)
            return
        wanted = self._wanted
        if wanted is None or t in wanted:
            # an Envelope's `d` (msgspec.Raw) is decoded by the consumer; without one, `d` is decoded JSON already
            self._push(item if item is not None else Event(t, s, d), out)  # type: ignore[arg-type]

    def _on_session_event(self, t: str, s: int | None, d: object, out: bytes) -> None:
        if t == "READY":
            try:
                ready = self.decoder.decode_as(d, Ready)
            except DECODE_ERRORS as exc:
                self._push_error(GatewayError(ErrorKind.DESERIALIZING, f"READY is malformed: {exc}",
                                              event_type=t))
                self.begin_close(CloseFrame.RESUME, CloseAction.IDENTIFY, "bad_ready")
                return
            self.session_id = ready.session_id
            self.resume_url = ready.resume_gateway_url
            data: EventData = ready
            if self.identify_pending:
                self._identified(True)
        else:
            data = _RESUMED
        self.state = ShardState.ACTIVE
        if not self._became_active:
            self._active_since = self._clock()
        self._became_active = True
        if self._wanted is None or t in self._wanted:
            self._push(Event(t, s, data), out)

    def _on_control(self, op: int, d: object, out: bytes) -> None:
        if op == 11:
            self.unacked = max(0, self.unacked - 1)
            if self.heartbeater is not None and not self.heartbeater.ack():
                log.debug("shard %s: unrequested heartbeat ACK", self.shard_id)
            self.latency.record_received(self._clock())
            self._push_control(_HEARTBEAT_ACK, _ACK, out)
        elif op == 1:
            self.send_heartbeat(self._clock())
            if self.heartbeater is not None:
                self.heartbeater.sent_on_request()
            self._push_control("GATEWAY_HEARTBEAT", _HB_REQUEST, out)
        elif op == 10:
            self._on_hello(d, out)
        elif op == 7:
            self._push_control("GATEWAY_RECONNECT", _RECONNECT, out)
            self.begin_close(CloseFrame.RESUME, CloseAction.RESUME, "reconnect")
        elif op == 9:
            try:
                resumable = bool(self.decoder.decode_as(d, bool))
            except DECODE_ERRORS:
                resumable = False
            self._push_control("GATEWAY_INVALID_SESSION", InvalidSession(resumable), out)
            if self.identify_pending:
                self._identified(False)
            if resumable and self.session_id is not None:
                self.begin_close(CloseFrame.RESUME, CloseAction.RESUME, "invalid_session")
            else:
                self._clear_session()
                low, high = self.config.invalid_session_delay
                self.reconnect_delay = low + (high - low) * self._rand()
                self.begin_close(CloseFrame.NORMAL, CloseAction.IDENTIFY, "invalid_session")
        else:
            log.debug("shard %s: ignoring unknown opcode %s", self.shard_id, op)

    def _on_hello(self, d: object, out: bytes) -> None:
        if self._closing:  # Hello came after we gave up on the connection: nothing more goes out on it
            return
        try:
            hello = self.decoder.decode_as(d, Hello)
            if hello.heartbeat_interval <= 0:
                raise msgspec.ValidationError("heartbeat_interval must be positive")
        except DECODE_ERRORS as exc:
            self._push_error(GatewayError(ErrorKind.DESERIALIZING, f"HELLO is malformed: {exc}",
                                          event_type="GATEWAY_HELLO"))
            self.begin_close(CloseFrame.RESUME, CloseAction.RESUME, "bad_hello")
            return
        self._hello = True
        low, high = self.config.heartbeat_interval_range
        interval = hello.heartbeat_interval / 1000.0
        if not low <= interval <= high:
            log.warning("shard %s: Hello's heartbeat_interval of %s ms is outside heartbeat_interval_range; "
                        "using %s s", self.shard_id, hello.heartbeat_interval, min(max(interval, low), high))
            interval = min(max(interval, low), high)
        now = self._clock()
        self.heartbeater = Heartbeater(interval, now, self._rand)
        if self.config.ratelimit_messages:
            self.ratelimiter = CommandRatelimiter(interval)
        self._push_control("GATEWAY_HELLO", hello, out)
        if self.session_id is not None:
            self._resume()
        elif self.permit and self._clock() < self.permit_not_before:  # granted early: the driver waits
            self.want_identify = True
            self.state = ShardState.IDENTIFYING
        elif self.permit:  # the identify queue's turn was taken before connecting: Identify at once
            if self.ratelimiter is not None:
                self.ratelimiter.try_acquire()
            self.identify()
        else:  # no permit (a driver that does not wait before connecting): ask the queue now
            self.want_identify = True
            self.state = ShardState.IDENTIFYING

    def _on_close_frame(self, payload: bytes) -> None:
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        reason = payload[2:].decode("utf-8", "replace")
        self.close_received = CloseFrame(code, reason)
        if payload and (len(payload) == 1 or not valid_close_code(code)):
            # RFC 6455 5.5.1 and 7.4: a 1-byte body, or a code that must not be sent (0-999, 1004-1006,
            # 1015, 1016-2999, 5000+): a protocol error, answered with 1002, never echoed. Resume after it.
            log.warning("shard %s: the gateway sent an invalid close frame (code %s, %s bytes)", self.shard_id,
                        code, len(payload))
            self.begin_close(CloseFrame(1002, "invalid close code"), CloseAction.RESUME, "protocol_error")
            return
        if not self._closing:
            # The gateway closed: echo its code, then decide by that code.
            self._closing = True
            self.outgoing.append(encode_close(code if code != 1005 else 1000))
        if self.disconnect is None:
            self.disconnect = (close_action(code), f"close_{code}")

    # ---- errors -----------------------------------------------------------------------------------
    def _compression_error(self, detail: str) -> None:
        """A corrupt stream: report it (not fatal), drop this connection and resume on a new one."""
        self._push_error(GatewayError(ErrorKind.COMPRESSION, detail))
        self._drop_inbox()
        self.disconnect = (CloseAction.RESUME, "compression")
        self.begin_close(CloseFrame.RESUME, CloseAction.RESUME, "compression")
        self.hangup = True

    def _protocol_error(self, detail: str) -> None:
        log.warning("shard %s: WebSocket protocol error: %s", self.shard_id, detail)
        self._drop_inbox()
        self.begin_close(CloseFrame(1002, "protocol error"), CloseAction.RESUME, "protocol_error")
        self.hangup = True

    def _bad_sequence(self, t: str, s: int) -> None:
        """A dispatch whose `s` is out of range (the typed decoders refuse it while decoding)."""
        self._push_error(GatewayError(ErrorKind.DESERIALIZING, f"a {t} dispatch has sequence {s}; it must be from "
                                      "0 to 2**63 - 1", event_type=t))

    def _identified(self, ready: bool) -> None:
        self.identify_pending = False
        if self.on_identified is not None:
            self.on_identified(ready)

    # ---- consumer items ---------------------------------------------------------------------------
    def _push(self, item: Item, raw: bytes | None) -> None:
        self.events.append(item)
        self.raws.append(raw)

    def _push_control(self, name: str, data: object, out: bytes | None) -> None:
        wanted = self._wanted
        if wanted is None or name in wanted:
            self._push(Event(name, None, data), out)  # type: ignore[arg-type]

    def _push_error(self, error: GatewayError) -> None:
        self._push(error, None)

    def pop(self) -> tuple[Item, bytes | None]:
        """The next queued item and its raw message (None for errors and GATEWAY_CLOSE)."""
        return self.events.popleft(), self.raws.popleft()

    def make_event(self, item: Item) -> Event:
        """Turn a queued item into an Event (decoding an Envelope's `d` now); raises GatewayError items."""
        if isinstance(item, Event):
            return item
        if isinstance(item, GatewayError):
            raise item
        t = item.t
        try:
            data = self.decoder.decode(t, item.d)  # type: ignore[arg-type]
        except DECODE_ERRORS as exc:
            raise GatewayError(ErrorKind.DESERIALIZING, f"{t} could not be decoded: {exc}",
                               event_type=t) from None
        return Event(t, item.s, data)  # type: ignore[arg-type]

    def pending_sequence(self) -> int | None:
        """The sequence of the first queued dispatch the consumer has not taken yet, if any."""
        for item in self.events:
            seq = item_sequence(item)
            if seq is not None:
                return seq
        return None


def item_sequence(item: Item) -> int | None:
    """A queued item's sequence number: a dispatch's `s`, else None."""
    if isinstance(item, Event):
        return item.seq
    if isinstance(item, Envelope):
        return item.s
    return None


def check_payload(payload: bytes) -> None:
    """Refuse outgoing payloads over Discord's 4096-byte limit."""
    if len(payload) > MAX_PAYLOAD:
        raise GatewayError(ErrorKind.PAYLOAD_TOO_LARGE,
                           f"the payload is {len(payload)} bytes; the gateway accepts at most {MAX_PAYLOAD}")


def state_is(state: ShardState, kind: StateKind) -> bool:
    return state.kind is kind
