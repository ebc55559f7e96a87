"""One gateway WebSocket connection: the strict server side of Discord's gateway v10 protocol.

Every rule a real gateway enforces is checked here, and every violation is counted in `Stats` with the
close code or opcode the real gateway answers with.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, runtime_checkable

import msgspec

from . import traffic
from .compress import Plain, ZlibStream, replay_segment, transport_for
from .config import SimConfig
from .session import ACTIVE, CLOSED, EXPIRED, INVALIDATED, Session
from .stats import SetStats, Stats
from .wsframe import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameError, FrameReader, close_frame, frame

MAX_PAYLOAD = 4096
DOCUMENTED_INTENTS = 0x331FFFF
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)
INTENT_GUILD_VOICE_STATES = 1 << 7
STATUSES = frozenset(("online", "dnd", "idle", "invisible", "offline"))
CHANNEL_INFO_FIELDS = frozenset(("status", "voice_start_time"))
# Server close codes after which the session stays resumable; any other code ends it.
RESUMABLE_SERVER_CLOSES = frozenset((1000, 1001, 4000, 4001, 4002, 4005, 4008))

HELLO_TRACE = b'["[\\"gateway-prd-sim-0\\",{\\"micros\\":0.0}]"]'
ACK = b'{"t":null,"s":null,"op":11,"d":null}'
RECONNECT = b'{"t":null,"s":null,"op":7,"d":null}'
HEARTBEAT_REQUEST = b'{"t":null,"s":null,"op":1,"d":null}'
INVALID_SESSION = {True: b'{"t":null,"s":null,"op":9,"d":true}', False: b'{"t":null,"s":null,"op":9,"d":false}'}

_decode = msgspec.json.decode
_encode = traffic.encode


@runtime_checkable
class GatewayHost(Protocol):
    """What a connection needs of the simulator (sim.server.Simulator): the rules shared by all connections
    (token, identify buckets, session-start budget, member-request pacing), the registries and the accounting."""

    config: SimConfig
    stats: Stats
    connections: set[GatewayConnection]
    sessions: dict[str, Session]

    @property
    def resume_url(self) -> str: ...
    @property
    def total_guilds(self) -> int: ...
    def token_ok(self, token: str) -> bool: ...
    def identify_slot(self, shard_id: int) -> bool: ...
    def spend_session_start(self) -> bool: ...
    def member_request_retry_after(self, gid: int) -> float: ...
    def guild_index(self, gid: int) -> int | None: ...
    def expire_sessions(self) -> None: ...
    def start_stream(self, sess: Session) -> None: ...


def _snowflake(value: Any) -> int | None:
    """A snowflake as Discord accepts it (string or integer), or None."""
    if isinstance(value, str) and value.isdigit() and len(value) < 21:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _valid_presence(d: Any) -> bool:
    status = d.get("status") if isinstance(d, dict) else None
    if not isinstance(status, str) or status not in STATUSES:  # an unhashable status must not raise
        return False
    since, afk, activities = d.get("since"), d.get("afk", False), d.get("activities", [])
    if since is not None and (not isinstance(since, int) or isinstance(since, bool)):
        return False
    if not isinstance(afk, bool) or not isinstance(activities, list):
        return False
    return all(isinstance(a, dict) and isinstance(a.get("name"), str) and isinstance(a.get("type", 0), int)
               for a in activities)


class GatewayConnection(asyncio.Protocol):
    """The protocol object of an upgraded WebSocket. Created by the HTTP front end in `server.py`."""

    def __init__(self, sim: GatewayHost, transport: asyncio.Transport, compress: str | None,
                 on_resume_url: bool) -> None:
        cfg = sim.config
        self.sim = sim
        self.cfg = cfg
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.reader = FrameReader(MAX_PAYLOAD)
        self.enc = transport_for(compress, cfg.zlib_level, cfg.zlib_chunk)
        self.on_resume_url = on_resume_url
        self.session: Session | None = None
        self.shard: int | None = None
        self.stats = sim.stats.shard(None)
        self.set_stats: SetStats | None = None  # the shard set (num_shards) of this connection's session
        self.set_shard = 0
        self.closing = False
        self.zombie = False
        self.superseded: Session | None = None  # the session a Resume on another connection took from this one
        self._linger: asyncio.TimerHandle | None = None
        self.delay = 0.0
        self._delayed: deque[tuple[float, bytes]] = deque()
        self._delay_timer: asyncio.TimerHandle | None = None
        self._recv_times: deque[float] = deque()
        self._hb_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self.write_paused = False
        self._drained = asyncio.Event()
        self._drained.set()
        transport.set_write_buffer_limits(high=1 << 20)

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self, hello: bool = True) -> None:
        """Register the connection; send Hello and start the heartbeat deadline."""
        self.sim.connections.add(self)
        self.stats.connections += 1
        self.stats.open_connections += 1
        if not hello:
            return
        self.send_payload(b'{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":%d,"_trace":%s}}'
                          % (self.cfg.heartbeat_interval, HELLO_TRACE))
        self._arm_heartbeat()
        self.sim.stats.changed()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover - set_protocol path
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.sim.connections.discard(self)
        self.stats.open_connections -= 1
        if self._hb_timer:
            self._hb_timer.cancel()
        if self._delay_timer:
            self._delay_timer.cancel()
        if self._linger:
            self._linger.cancel()
        for task in self._tasks:
            task.cancel()
        self._drained.set()
        self.leave_set()
        sess = self.session
        if sess is not None and sess.conn is self:
            sess.detach()  # a bare TCP drop keeps the session resumable
        self.sim.stats.changed()

    @property
    def last_received(self) -> float:
        """When (time.monotonic()) the client last sent a payload; now if it has sent none."""
        return self._recv_times[-1] if self._recv_times else time.monotonic()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._drained.clear()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._drained.set()

    # ---- output ----------------------------------------------------------------------------------

    def send_payload(self, data: bytes) -> None:
        """Encode one gateway payload with this connection's compression and write it."""
        if self.closing:
            return
        out = self.enc.encode(data)
        if self.delay or self._delayed:
            self._delayed.append((self.loop.time() + self.delay, out))
            if self._delay_timer is None:
                self._delay_timer = self.loop.call_at(self._delayed[0][0], self._flush_delayed)
        else:
            self.transport.write(out)

    def _flush_delayed(self) -> None:
        self._delay_timer = None
        now = self.loop.time()
        q = self._delayed
        while q and q[0][0] <= now:
            if not self.closing:
                self.transport.write(q.popleft()[1])
            else:
                q.popleft()
        if q:
            self._delay_timer = self.loop.call_at(q[0][0], self._flush_delayed)

    def write_raw(self, data: bytes) -> None:
        if not self.closing:
            self.transport.write(data)

    def close(self, code: int, reason: str) -> None:
        """Send a close frame and end the connection; ends the session unless `code` keeps it resumable."""
        if self.closing:
            return
        self._count_close(code)
        sess = self.session
        if sess is not None and sess.conn is self:
            if code in RESUMABLE_SERVER_CLOSES:
                sess.detach()
            else:
                sess.end(INVALIDATED, f"server closed {code}: {reason}")
                sess.conn = None
        self.transport.write(close_frame(code, reason))
        self.closing = True
        self.transport.close()
        self.sim.stats.changed()

    def supersede(self, sess: Session) -> None:
        """`sess` was resumed on another connection: close this one with 4000, but read on until its client
        answers the close (or `takeover_linger` passes, then drop it), counting every payload it still sends
        on the session's behalf as a frame after takeover."""
        if self.closing:
            return
        self._count_close(4000)
        self.transport.write(close_frame(4000, "session resumed on another connection"))
        self.closing = True
        self.superseded = sess
        if self._hb_timer:
            self._hb_timer.cancel()
            self._hb_timer = None
        self._linger = self.loop.call_later(self.cfg.takeover_linger, self.abort)
        self.sim.stats.changed()

    def violate(self, code: int, reason: str) -> None:
        """Count a protocol violation and close with `code`."""
        self.sim.stats.violation(self.shard, code, reason)
        if code == 4008:
            self.stats.ratelimit_closes += 1
        self.close(code, reason)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        self.closing = True
        self.transport.abort()

    # ---- input -----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closing:
            if self.superseded is not None:
                self._after_takeover(data)
            return
        try:
            messages = self.reader.feed(data)
        except FrameError as err:
            self.violate(err.code, err.reason)
            return
        for op, payload in messages:
            if self.closing:
                return
            if op in (OP_TEXT, OP_BINARY):
                self._on_message(op, payload)
            elif op == OP_CLOSE:
                self._on_client_close(payload)
            elif op == OP_PING:
                self.transport.write(frame(payload, OP_PONG))

    def _after_takeover(self, data: bytes) -> None:
        """Count what the client of a superseded connection sends; its close frame (or bad framing) ends it."""
        try:
            messages = self.reader.feed(data)
        except FrameError:
            self.abort()
            return
        for kind, payload in messages:
            if kind in (OP_TEXT, OP_BINARY):
                try:
                    msg = _decode(payload)
                except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                    msg = None
                op = msg.get("op") if isinstance(msg, dict) else None
                self.sim.stats.frame_after_takeover(self.superseded, op if isinstance(op, int) else None)
            elif kind == OP_CLOSE:
                self.superseded = None
                self.transport.close()
                return

    def eof_received(self) -> bool:
        return False

    def _on_client_close(self, payload: bytes) -> None:
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        if self.cfg.ignore_close:  # chaos: no answer; the client must give up on its own and drop the TCP link
            self._count_close(f"client {code} ignored")
            self.closing = True  # reads and sends nothing more
            self.sim.stats.changed()
            return
        sess = self.session
        if sess is not None and sess.conn is self:
            if code in (1000, 1001):
                sess.end(CLOSED, f"client closed {code}", client_requested=True)
                sess.conn = None
            else:
                sess.detach()
        self._count_close(f"client {code}")
        self.transport.write(close_frame(code if code not in (1005, 1006, 1015) else 1000))
        self.closing = True
        self.transport.close()
        self.sim.stats.changed()

    def _on_message(self, kind: int, payload: bytes) -> None:
        now = time.monotonic()
        times = self._recv_times
        times.append(now)
        horizon = now - self.cfg.rate_limit_window
        while times and times[0] <= horizon:
            times.popleft()
        if len(times) > self.cfg.rate_limit_frames:
            self.violate(4008, f"rate limited: more than {self.cfg.rate_limit_frames} payloads "
                               f"in {self.cfg.rate_limit_window:g} s")
            return
        if kind == OP_BINARY and payload[:1] in (b"\x78", b"\x28"):
            self.violate(4002, "compressed client payloads are not accepted")
            return
        try:
            msg = _decode(payload)
        except (msgspec.DecodeError, UnicodeDecodeError):
            self.violate(4002, "payload is not valid JSON")
            return
        except RecursionError:  # a few KB of "[[[[..." is enough
            self.violate(4002, "payload is nested too deeply to decode")
            return
        if not isinstance(msg, dict):
            self.violate(4001, "payload is not a JSON object")
            return
        op = msg.get("op")
        if not isinstance(op, int) or isinstance(op, bool):
            self.violate(4001, "payload has no integer 'op'")
            return
        d = msg.get("d")
        if op == 1:
            self._on_heartbeat(d)
        elif op == 2:
            self._on_identify(d)
        elif op == 6:
            self._on_resume(d)
        elif op in (3, 4, 8, 31, 43):
            if self.session is None:
                self.violate(4003, f"op {op} sent before Identify")
                return
            self.stats.commands[op] += 1
            (self._on_presence if op == 3 else self._on_voice_state if op == 4 else
             self._on_request_members if op == 8 else self._on_soundboard if op == 31 else self._on_channel_info)(d)
            self.sim.stats.changed()
        else:
            self.violate(4001, f"unknown opcode {op}")

    # ---- heartbeats ------------------------------------------------------------------------------

    def _arm_heartbeat(self) -> None:
        if self._hb_timer:
            self._hb_timer.cancel()
        self._hb_timer = self.loop.call_later(self.cfg.grace, self._heartbeat_missed)

    def _heartbeat_missed(self) -> None:
        self._hb_timer = None
        if not self.closing:
            self.violate(4009, f"session timed out: no heartbeat for {self.cfg.grace:g} s")

    def _on_heartbeat(self, d: Any) -> None:
        if d is not None and (not isinstance(d, int) or isinstance(d, bool)):
            self.violate(4001, "heartbeat 'd' must be the last sequence number or null")
            return
        self.stats.heartbeats += 1
        sess = self.session
        if sess is not None and d is not None:
            sess.confirm(d)
        self._arm_heartbeat()
        if self.zombie:
            pass
        elif sess is not None and sess.ack_delay > 0:  # a long round trip: what the session sends meanwhile comes first
            self.later(sess.ack_delay, lambda: self.send_payload(ACK))
        else:
            self.send_payload(ACK)
        self.sim.stats.changed()

    # ---- identify / resume -----------------------------------------------------------------------

    def _on_identify(self, d: Any) -> None:
        cfg, sim = self.cfg, self.sim
        if self.session is not None:
            self.violate(4005, "already authenticated: a second Identify")
            return
        if not isinstance(d, dict) or not isinstance(d.get("token"), str):
            self.violate(4001, "Identify needs a string 'token'")
            return
        props = d.get("properties")
        if not isinstance(props, dict) or not all(
                isinstance(props.get(k, props.get("$" + k)), str) for k in ("os", "browser", "device")):
            self.violate(4001, "Identify needs 'properties' with os, browser and device")
            return
        if not sim.token_ok(d["token"]):
            self.violate(4004, "authentication failed: bad token")
            return
        compress = d.get("compress", False)
        threshold = d.get("large_threshold", 50)
        if not isinstance(compress, bool) or not isinstance(threshold, int) or isinstance(threshold, bool):
            self.violate(4001, "Identify 'compress' must be a bool and 'large_threshold' an integer")
            return
        if "presence" in d and d["presence"] is not None and not _valid_presence(d["presence"]):
            self.violate(4001, "Identify 'presence' is not a valid presence update")
            return
        shard = d.get("shard", [0, 1])
        if (not isinstance(shard, list) or len(shard) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in shard)):
            self.violate(4010, "invalid shard: 'shard' must be [shard_id, num_shards]")
            return
        shard_id, num_shards = shard
        if num_shards < 1 or not 0 <= shard_id < num_shards:
            self.violate(4010, f"invalid shard {shard}")
            return
        if num_shards % cfg.shard_multiple:
            self.violate(4010, f"invalid shard: num_shards must be a multiple of {cfg.shard_multiple}")
            return
        self.shard = shard_id
        intents = d.get("intents")
        if not isinstance(intents, int) or isinstance(intents, bool) or intents < 0:
            self.violate(4013, "invalid intents: 'intents' is required")
            return
        if cfg.strict_intents and intents & ~DOCUMENTED_INTENTS:
            self.violate(4013, f"invalid intents: undocumented bits {intents & ~DOCUMENTED_INTENTS:#x}")
            return
        if intents & PRIVILEGED_INTENTS & ~cfg.privileged_intents:
            self.violate(4014, "disallowed intents: privileged bits "
                               f"{intents & PRIVILEGED_INTENTS & ~cfg.privileged_intents:#x} are not enabled")
            return
        guilds = traffic.guilds_for(shard_id, num_shards, sim.total_guilds)
        if len(guilds) > cfg.max_guilds_per_shard:
            sim.stats.shard_set(num_shards).closes[4011] += 1
            self.violate(4011, f"sharding required: shard {shard} would hold {len(guilds)} guilds")
            return
        self._bind_shard(shard_id)
        if not sim.identify_slot(shard_id):
            self.stats.concurrency_violations += 1
            sim.stats.violation(shard_id, 9, f"identify concurrency: bucket {shard_id % cfg.max_concurrency} "
                                f"already identified in the last {cfg.identify_window:g} s")
            self.later(cfg.identify_violation_delay, lambda: self.send_payload(INVALID_SESSION[False]))
            return
        if not sim.spend_session_start():
            return  # the budget is exhausted: every session was closed with 4004
        self.enc_payload_compression(compress)
        sess = Session(shard_id, num_shards, intents, cfg.replay_buffer, guilds, min(max(threshold, 50), 250),
                       self.stats)
        sim.stats.sessions[sess.id] = sess
        sim.sessions[sess.id] = sess
        self.session = sess
        sess.conn = self
        self.stats.identifies += 1
        self._bind_set(sess).identifies += 1
        ready = {
            "v": 10, "user": traffic.BOT_USER, "session_id": sess.id, "resume_gateway_url": sim.resume_url,
            "session_type": "normal", "shard": shard,
            "guilds": [{"id": str(traffic.guild_id(k)), "unavailable": True} for k in guilds],
            "application": {"id": str(traffic.BOT_ID), "flags": 0}, "private_channels": [], "presences": [],
            "relationships": [], "guild_join_requests": [], "geo_ordered_rtc_regions": [], "auth": {},
            "user_settings": {}, "_trace": ["[\"gateway-prd-sim-0\",{\"micros\":0.0}]"],
        }
        sess.dispatch(b"READY", _encode(ready))
        if intents & traffic.INTENT_GUILDS:
            for k in guilds:
                sess.dispatch(b"GUILD_CREATE", traffic.guild_create(k, cfg.guild_size))
        sim.start_stream(sess)
        sim.stats.changed()

    def enc_payload_compression(self, on: bool) -> None:
        if isinstance(self.enc, Plain):
            self.enc.payload_compression = on

    def _on_resume(self, d: Any) -> None:
        sim = self.sim
        if self.session is not None:
            self.violate(4005, "already authenticated: Resume after Identify or Resume")
            return
        if (not isinstance(d, dict) or not isinstance(d.get("token"), str) or not isinstance(d.get("session_id"), str)
                or not isinstance(d.get("seq", 0), (int, type(None))) or isinstance(d.get("seq"), bool)):
            self.violate(4001, "Resume needs 'token', 'session_id' and an integer 'seq'")
            return
        if not sim.token_ok(d["token"]):
            self.violate(4004, "authentication failed: bad token")
            return
        sess = sim.sessions.get(d["session_id"])
        if sess is not None:
            self._bind_shard(sess.shard)
        if not self.on_resume_url:
            sim.stats.violation(self.shard, 0, "Resume sent to the main gateway URL instead of resume_gateway_url")
            if self.cfg.strict_resume_url:
                self.send_payload(INVALID_SESSION[False])
                return
        sim.expire_sessions()
        if sess is None or not sess.resumable:
            self.send_payload(INVALID_SESSION[False])
            sim.stats.changed()
            return
        old = sess.conn
        if old is not None and not old.closing:
            sim.stats.overlapping_resume(sess, time.monotonic() - old.last_received)
        seq = d.get("seq") or 0
        if seq > sess.seq or seq < 0:
            self.violate(4007, f"invalid seq {seq} on Resume (last dispatched {sess.seq})")
            sess.end(INVALIDATED, "invalid seq on Resume")
            return
        replay = sess.replay_from(seq)
        if replay is None:
            sess.lost += sess.seq - len(sess.buffer) - seq
            sess.end(EXPIRED, f"Resume from seq {seq} is older than the replay buffer")
            self.send_payload(INVALID_SESSION[False])
            sim.stats.changed()
            return
        if old is not None:
            sess.detach()
            old.supersede(sess)
        sess.confirm(seq)
        sess.conn = self
        sess.state = ACTIVE
        sess.resumes += 1
        sess.replayed += len(replay)
        self.session = sess
        self.stats.resumes += 1
        self._bind_set(sess).resumes += 1
        for data in replay:
            self.send_payload(data)
        sess.dispatch(b"RESUMED", b'{"_trace":["[\\"gateway-prd-sim-0\\",{\\"micros\\":0.0}]"]}')
        sim.start_stream(sess)
        sim.stats.changed()

    # ---- commands --------------------------------------------------------------------------------

    def _on_presence(self, d: Any) -> None:
        if not _valid_presence(d):
            self.violate(4001, "invalid Presence Update payload")

    def _on_voice_state(self, d: Any) -> None:
        if not isinstance(d, dict) or _snowflake(d.get("guild_id")) is None or not all(
                isinstance(d.get(k), bool) for k in ("self_mute", "self_deaf")):
            self.violate(4001, "invalid Voice State Update payload")
            return
        channel = d.get("channel_id")
        if channel is not None and _snowflake(channel) is None:
            self.violate(4001, "invalid Voice State Update channel_id")
            return
        sess = self.session
        assert sess is not None  # commands before Identify were refused (4003)
        gid = str(_snowflake(d["guild_id"]))
        if sess.intents & INTENT_GUILD_VOICE_STATES:
            sess.dispatch(b"VOICE_STATE_UPDATE", _encode({
                "guild_id": gid, "channel_id": None if channel is None else str(channel),
                "user_id": str(traffic.BOT_ID),
                "session_id": sess.id[:32], "deaf": False, "mute": False, "self_deaf": d["self_deaf"],
                "self_mute": d["self_mute"], "self_video": False, "suppress": False, "request_to_speak_timestamp": None,
                "member": {"user": traffic.BOT_USER, "roles": [], "joined_at": "2024-01-01T00:00:00.000000+00:00",
                           "deaf": False, "mute": False, "flags": 0}}))
        if channel is not None:
            sess.dispatch(b"VOICE_SERVER_UPDATE", _encode(
                {"token": "sim-voice-token", "guild_id": gid, "endpoint": "sim-voice.local:443"}))

    def _on_request_members(self, d: Any) -> None:
        sess, sim = self.session, self.sim
        assert sess is not None  # commands before Identify were refused (4003)
        if not isinstance(d, dict) or (gid := _snowflake(d.get("guild_id"))) is None:
            self.violate(4001, "Request Guild Members needs a 'guild_id'")
            return
        query, limit, user_ids = d.get("query"), d.get("limit"), d.get("user_ids")
        by_query = isinstance(query, str) and isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0
        if user_ids is not None and not isinstance(user_ids, list):
            user_ids = [user_ids]
        by_ids = user_ids is not None and all(_snowflake(u) is not None for u in user_ids)
        if by_query == by_ids:
            self.violate(4001, "Request Guild Members needs either 'query' with 'limit', or 'user_ids'")
            return
        presences = d.get("presences", False) is True and bool(sess.intents & traffic.INTENT_GUILD_PRESENCES)
        nonce = d.get("nonce")
        if not isinstance(nonce, str) or len(nonce.encode()) > 32:
            nonce = None
        k = sim.guild_index(gid)
        count = traffic.member_count(k, self.cfg.guild_size) if k is not None else 0
        base = {"guild_id": str(gid)}
        if nonce is not None:
            base["nonce"] = nonce
        if by_query and query == "" and limit == 0:
            if not sess.intents & traffic.INTENT_GUILD_MEMBERS:
                return  # the real gateway sends nothing at all without GUILD_MEMBERS
            retry = sim.member_request_retry_after(gid)
            if retry > 0:
                meta = dict(base)
                sess.dispatch(b"RATE_LIMITED", _encode({"opcode": 8, "retry_after": round(retry, 3), "meta": meta}))
                return
            members = [traffic.member(gid, i) for i in range(count)]
            not_found: list[str] | None = None
        elif by_query:
            cap = min(limit or 100, 100)
            members = [m for m in (traffic.member(gid, i) for i in range(count))
                       if m["user"]["username"].startswith(query)][:cap]
            not_found = None
        else:
            wanted = [u for u in map(_snowflake, user_ids or ()) if u is not None][:100]  # all valid (by_ids)
            first = (gid >> 8) + 1
            members = [traffic.member(gid, u - first) for u in wanted if 0 <= u - first < count]
            not_found = [str(u) for u in wanted if not 0 <= u - first < count]
        chunks = [members[i:i + 1000] for i in range(0, len(members), 1000)] or [[]]
        for index, chunk in enumerate(chunks):
            body = dict(base, members=chunk, chunk_index=index, chunk_count=len(chunks))
            if not_found is not None and index == 0:
                body["not_found"] = not_found
            if presences:
                body["presences"] = [{"user": {"id": m["user"]["id"]}, "status": "online", "activities": [],
                                      "client_status": {"desktop": "online"}} for m in chunk]
            sess.dispatch(b"GUILD_MEMBERS_CHUNK", _encode(body))

    def _on_soundboard(self, d: Any) -> None:
        ids = d.get("guild_ids") if isinstance(d, dict) else None
        if not isinstance(ids, list) or not ids or not all(_snowflake(g) is not None for g in ids):
            self.violate(4001, "Request Soundboard Sounds needs a list of 'guild_ids'")
            return
        sess = self.session
        assert sess is not None  # commands before Identify were refused (4003)
        for g in ids:
            sess.dispatch(b"SOUNDBOARD_SOUNDS", _encode({"guild_id": str(_snowflake(g)), "soundboard_sounds": []}))

    def _on_channel_info(self, d: Any) -> None:
        if (not isinstance(d, dict) or (gid := _snowflake(d.get("guild_id"))) is None
                or not isinstance(d.get("fields"), list) or not d["fields"]
                or not all(isinstance(f, str) and f in CHANNEL_INFO_FIELDS for f in d["fields"])):
            self.violate(4001, "Request Channel Info needs 'guild_id' and 'fields' from status, voice_start_time")
            return
        channels = []
        if (k := self.sim.guild_index(gid)) is not None:
            for c in range(0, traffic.SIZES[traffic.size_of(k, self.cfg.guild_size)][0], 5):
                info: dict[str, Any] = {"id": str(gid + 10_000 + c)}
                if "status" in d["fields"]:
                    info["status"] = None
                if "voice_start_time" in d["fields"]:
                    info["voice_start_time"] = None
                channels.append(info)
        assert self.session is not None  # commands before Identify were refused (4003)
        self.session.dispatch(b"CHANNEL_INFO", _encode({"guild_id": str(gid), "channels": channels}))

    # ---- helpers ---------------------------------------------------------------------------------

    def _bind_shard(self, shard_id: int) -> None:
        """Move this connection's accounting from 'unidentified' to its shard (once)."""
        self.shard = shard_id
        unident = self.sim.stats.shard(None)
        if self.stats is not unident:
            return
        self.stats = self.sim.stats.shard(shard_id)
        self.stats.connections += 1
        self.stats.open_connections += 1
        unident.connections -= 1
        unident.open_connections -= 1

    def _bind_set(self, sess: Session) -> SetStats:
        """Count this connection in the shard set of `sess` (its num_shards), leaving any earlier one; the set's
        stats."""
        self.leave_set()
        st = self.sim.stats.shard_set(sess.num_shards)
        self.set_stats, self.set_shard = st, sess.shard
        self.sim.stats.set_opened(st, sess.shard)
        return st

    def leave_set(self) -> None:
        """This connection no longer carries a session: stop counting it in its shard set."""
        if self.set_stats is not None:
            self.sim.stats.set_closed(self.set_stats, self.set_shard)
            self.set_stats = None

    def _count_close(self, key: int | str) -> None:
        """Count a close (a code, or "client N") for the shard and for the shard set."""
        self.stats.closes[key] += 1
        if self.set_stats is not None:
            self.set_stats.closes[key] += 1

    def later(self, delay: float, fn: Callable[[], object]) -> None:
        if delay <= 0:
            fn()
        else:
            self.loop.call_later(delay, lambda: None if self.closing else fn())

    def spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flood(self) -> None:
        """Write MESSAGE_CREATE dispatches as fast as the client reads them (TCP backpressure paces us)."""
        sess = self.session
        assert sess is not None  # the stream starts after Identify or Resume
        if self.cfg.flood_delay:
            await asyncio.sleep(self.cfg.flood_delay)
        pool = traffic.flood_pool(sess.shard, sess.num_shards, self.sim.total_guilds,
                                  bool(sess.intents & traffic.INTENT_MESSAGE_CONTENT))
        if self.cfg.flood_replay and isinstance(self.enc, ZlibStream):
            await self._flood_replay(pool)
            return
        n = len(pool)
        i = random.randrange(n)
        enc, buffer, stats = self.enc, sess.buffer, self.stats
        write = self.transport.write
        drained = self._drained
        while sess.conn is self and not self.closing:
            if self.write_paused or sess.stream_paused or self._delayed:
                await (drained.wait() if self.write_paused else asyncio.sleep(0.01))
                continue
            seq = sess.seq
            batch = []
            for _ in range(64):
                seq += 1
                data = b"%s%d}" % (pool[i], seq)
                batch.append(data)
                i = i + 1 if i + 1 < n else 0
            sess.seq = seq
            buffer.extend(batch)
            stats.dispatched += 64
            write(enc.encode_many(batch))
            await asyncio.sleep(0)

    async def _flood_replay(self, pool: tuple[bytes, ...]) -> None:
        """The benchmark flood: one pre-compressed segment written again and again (see SimConfig.flood_replay).

        Its dispatches carry sequence numbers after the session's current one, repeated on every pass;
        they are counted as dispatched but are not part of the session's replayable stream.
        """
        sess, enc = self.session, self.enc
        assert sess is not None and isinstance(enc, ZlibStream)  # flood() checked both
        start = sess.seq
        segment = replay_segment(traffic.numbered(pool, start + 1), self.cfg.zlib_level)
        # Live messages (ACKs, ...) now end with Z_FULL_FLUSH, so they never refer back into segment data;
        # the segment refers to nothing before itself.
        enc.independent()
        n = len(pool)
        stats, write, drained = self.stats, self.transport.write, self._drained
        while sess.conn is self and not self.closing:
            if self.write_paused or sess.stream_paused or self._delayed:
                await (drained.wait() if self.write_paused else asyncio.sleep(0.01))
                continue
            write(segment)
            stats.dispatched += n
            await asyncio.sleep(0)
