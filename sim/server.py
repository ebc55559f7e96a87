"""The simulator: one TCP port serving REST (/api/v10), the gateway WebSocket, and the admin API (/_sim/)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import random
import ssl
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from . import admin, rest, traffic
from .config import SimConfig
from .guild_events import INTENTS, GuildEventLog, GuildEventSnapshot, SnowflakeClock, guild_event, snowflake
from .gateway import HEARTBEAT_REQUEST, INVALID_SESSION, RECONNECT, GatewayConnection
from .http import MAX_HEAD, REASONS, HttpError, Request, Response, json_response, parse_head
from .session import DETACHED, EXPIRED, INVALIDATED, Session
from .stats import Stats

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
RESUME_PATH = "/resume-gateway/"
MAX_EMIT = 100_000
"""Most guild events one `emit_guild_events` call (or one stream tick) emits."""
MAX_ADD_GUILDS = 100_000
"""Most guilds one `add_guilds` call adds."""


def _count(name: str, value: object, most: int) -> int:
    """A count given by a caller: an integer from 0 to `most`, else ValueError with a one-line reason."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= most:
        raise ValueError(f"{name} must be an integer from 0 to {most}, got {str(value)[:40]!r}")
    return value


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive; hands the transport to a GatewayConnection after a WebSocket upgrade.

    A request must arrive whole within `http_request_timeout` of its first byte (the first request: of the
    connection), or it is answered 408 and the connection closed; an idle keep-alive connection has no deadline.
    """

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._arm_deadline()

    def _arm_deadline(self) -> None:
        timeout = self.sim.config.http_request_timeout
        self._deadline = asyncio.get_running_loop().call_later(timeout, self._request_timed_out, timeout)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _request_timed_out(self, timeout: float) -> None:
        self._deadline = None
        if self.transport is not None and not self.transport.is_closing():
            self._respond(json_response({"message": f"request not complete within {timeout:g} s"}, 408), close=True)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.transport is not None and not self.transport.is_closing():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self._respond(json_response({"message": "request head too large"}, 431), close=True)
                break
            try:
                method, url, version, headers, length = parse_head(bytes(self.buf[:end]).decode("latin-1"))
            except HttpError as err:
                self._respond(json_response({"message": str(err), "code": 0}, err.status), close=True)
                return
            if len(self.buf) < end + 4 + length:
                break
            self._cancel_deadline()
            body = bytes(self.buf[end + 4:end + 4 + length])
            rest_bytes = bytes(self.buf[end + 4 + length:])
            self.buf = bytearray()
            req = Request(method, url.path, parse_qs(url.query), headers, body)
            if headers.get("upgrade", "").lower() == "websocket":
                self._upgrade(req, rest_bytes)
                return
            self.buf += rest_bytes
            keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            try:
                resp = self.sim.handle_http(req)
            except Exception as err:  # noqa: BLE001 - a bad request must never take the server down
                resp = json_response({"message": f"500: {type(err).__name__}", "code": 0}, 500)
            self._respond(resp, close=not keep)
        if self.buf and self._deadline is None and self.transport is not None and not self.transport.is_closing():
            self._arm_deadline()  # the next request has begun

    def _respond(self, resp: Response, close: bool = False) -> None:
        head = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Error')}",
                f"Content-Length: {len(resp.body)}", f"Connection: {'close' if close else 'keep-alive'}",
                "Via: 1.1 sim"]
        head += [f"{k}: {v}" for k, v in resp.headers.items()]
        transport = self.transport
        assert transport is not None  # nothing is answered once the connection is handed to the gateway
        transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + resp.body)
        if close:
            transport.close()

    def _upgrade(self, req: Request, extra: bytes) -> None:
        sim, transport = self.sim, self.transport
        assert transport is not None  # data_received() reads nothing once the connection is handed over
        key = req.headers.get("sec-websocket-key", "")
        try:
            key_ok = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            key_ok = False
        if (req.method != "GET" or "upgrade" not in req.headers.get("connection", "").lower()
                or req.headers.get("sec-websocket-version") != "13" or not key_ok):
            self._respond(json_response({"message": "invalid WebSocket handshake"}, 400), close=True)
            return
        if req.path not in ("/", "", RESUME_PATH, RESUME_PATH.rstrip("/")):
            self._respond(json_response({"message": "404: Not Found", "code": 0}, 404), close=True)
            return
        on_resume_url = req.path.rstrip("/") == RESUME_PATH.rstrip("/")
        if on_resume_url and sim.config.refuse_resume_connections > 0:  # chaos: the resume host is unreachable
            sim.config.refuse_resume_connections -= 1
            transport.abort()
            return
        if sim.config.refuse_connections > 0:  # chaos: the connect fails before the handshake completes
            sim.config.refuse_connections -= 1
            transport.abort()
            return
        if sim.config.silent_handshake:  # chaos: the 101 never comes; what the client sends is dropped
            self.transport, self.buf = None, bytearray()
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
        transport.write((
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        compress = req.arg("compress")
        conn = GatewayConnection(sim, transport, compress if compress in ("zlib-stream", "zstd-stream") else None,
                                 on_resume_url)
        transport.set_protocol(conn)
        self.transport = None
        version, encoding = req.arg("v"), req.arg("encoding", "json")
        problem = (f"invalid API version {version!r}: use v=10" if version not in ("9", "10") else
                   f"encoding={encoding} is not supported by the simulator (use json)" if encoding != "json" else
                   f"unknown compress={compress}" if compress not in (None, "zlib-stream", "zstd-stream") else None)
        conn.start(hello=problem is None)  # a refused connection is closed at once, without Hello
        if problem is not None:
            conn.violate(4012 if problem.startswith("invalid API version") else 4002, problem)
        elif extra and not transport.is_closing():
            conn.data_received(extra)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._cancel_deadline()


class Simulator:
    """A strict local Discord: REST + gateway + chaos controls + accounting, on one port.

    ``async with Simulator(shards=4, max_concurrency=2) as sim:`` then point a client at ``sim.url``
    (gateway) and ``sim.api_url`` (REST). Keyword arguments are the fields of `SimConfig`.
    """

    def __init__(self, config: SimConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            raise TypeError("pass either a SimConfig or keyword options, not both")
        self.config = config or SimConfig(**options)
        self.stats = Stats()
        self.sessions: dict[str, Session] = {}
        self.connections: set[GatewayConnection] = set()
        remaining = self.config.session_remaining
        self.remaining = self.config.session_limit if remaining is None else remaining
        self.token_revoked = False
        self._bucket_last: dict[int, float] = {}
        self._budget_reset_at = time.monotonic() + self.config.session_reset_after
        self._member_requests: dict[int, float] = {}
        self.rest_window: list[float] = []
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port = self.config.port
        self.guild_count = self.config.shards * self.config.guilds_per_shard
        """The bot's guilds now (indexes 0..guild_count-1); `add_guilds` raises it."""
        self.guild_events = GuildEventLog()
        """Every event of the shared guild stream (see `emit_guild_events`)."""
        self._snowflakes = SnowflakeClock()
        self._next_guild = 0
        self._next_kind = 0
        self._skewed = 0  # the increment of the next backdated message id (--guild-event-id-skew)
        self._jitter_due: dict[int, float] = {}  # per session (by id()): when its last delayed event is delivered
        self._routes: dict[int, dict[int, set[Session]]] = {}  # num_shards -> shard -> its live sessions
        self._guild_stream_task: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> Simulator:
        loop = asyncio.get_running_loop()
        tls = None
        if self.config.tls_cert:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        self._server = await loop.create_server(lambda: HttpProtocol(self), self.config.host, self.config.port,
                                                backlog=4096, reuse_address=True, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = loop.create_task(self._sweep())
        self._guild_stream_task = loop.create_task(self._guild_stream())
        return self

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        if self._guild_stream_task:
            self._guild_stream_task.cancel()
        for sess in list(self.sessions.values()):
            if sess.stream_task:
                sess.stream_task.cancel()
        if self._server:
            self._server.close()
        for conn in list(self.connections):
            conn.abort()
        if self._server:
            await self._server.wait_closed()
        await asyncio.sleep(0)

    async def __aenter__(self) -> Simulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, max(self.config.session_ttl / 4, 0.05)))
            self.expire_sessions()

    # ---- addresses -------------------------------------------------------------------------------

    @property
    def base(self) -> str:
        return f"{self.config.host}:{self.port}"

    @property
    def _tls(self) -> str:
        return "s" if self.config.tls_cert else ""

    @property
    def url(self) -> str:
        """The gateway URL, as returned by GET /gateway/bot."""
        return f"ws{self._tls}://{self.base}/"

    @property
    def resume_url(self) -> str:
        """The resume_gateway_url handed out in READY: a distinct path, so clients that ignore it are caught."""
        return f"ws{self._tls}://{self.base}{RESUME_PATH}"

    @property
    def api_url(self) -> str:
        return f"http{self._tls}://{self.base}/api/v10"

    @property
    def admin_url(self) -> str:
        return f"http{self._tls}://{self.base}/_sim"

    @property
    def token(self) -> str:
        return self.config.token

    @property
    def total_guilds(self) -> int:
        return self.guild_count

    @property
    def recommended_shards(self) -> int:
        """`GET /gateway/bot`'s `shards`: --shards, or more as guilds are added (`recommended_guilds_per_shard`)."""
        return traffic.recommended_shards(self.config.shards, self.guild_count,
                                          self.config.recommended_guilds_per_shard)

    def guild_index(self, gid: int) -> int | None:
        k = (gid >> 22) - traffic.GUILD_BASE
        return k if 0 <= k < self.total_guilds and traffic.guild_id(k) == gid else None

    # ---- rules shared by connections -------------------------------------------------------------

    def _roll_budget(self) -> None:
        now = time.monotonic()
        if now >= self._budget_reset_at:
            self.remaining = self.config.session_limit
            self.token_revoked = False
            while self._budget_reset_at <= now:
                self._budget_reset_at += max(self.config.session_reset_after, 0.001)

    def token_ok(self, token: str) -> bool:
        self._roll_budget()
        if token.startswith("Bot "):
            token = token[4:]
        return not self.token_revoked and hmac.compare_digest(token.encode(), self.config.token.encode())

    def identify_slot(self, shard_id: int) -> bool:
        """Take the identify slot of this shard's bucket, if the window allows it."""
        key = shard_id % self.config.max_concurrency
        now = time.monotonic()
        last = self._bucket_last.get(key)
        if last is not None and now - last < self.config.identify_window:
            return False
        self._bucket_last[key] = now
        return True

    def spend_session_start(self) -> bool:
        """Spend one session start. At zero, the token is reset and every session is closed with 4004."""
        self._roll_budget()
        if self.remaining <= 0:
            self.token_revoked = True
            for conn in list(self.connections):
                conn.violate(4004, "authentication failed: session start limit exhausted, token reset")
            return False
        self.remaining -= 1
        return True

    def reset_after(self) -> float:
        self._roll_budget()
        return max(self._budget_reset_at - time.monotonic(), 0.0)

    def member_request_retry_after(self, gid: int) -> float:
        now = time.monotonic()
        last = self._member_requests.get(gid)
        if last is not None and now - last < self.config.member_chunk_interval:
            return self.config.member_chunk_interval - (now - last)
        self._member_requests[gid] = now
        return 0.0

    def expire_sessions(self) -> None:
        now = time.monotonic()
        ttl = self.config.session_ttl
        for sess in self.sessions.values():
            if sess.state == DETACHED and now - sess.detached_at > ttl:
                sess.end(EXPIRED, f"not resumed within {ttl:g} s")
                self.stats.changed()

    def start_stream(self, sess: Session) -> None:
        """Start what flows to a session after READY or RESUMED: it joins the shared guild stream's routing,
        and gets its own stream (flood or `events_per_second`) if configured."""
        self._routes.setdefault(sess.num_shards, {}).setdefault(sess.shard, set()).add(sess)
        conn = sess.conn
        if self.config.flood:
            if conn is not None:
                conn.spawn(conn.flood())
        elif self.config.events_per_second > 0 and sess.stream_task is None:
            sess.stream_task = asyncio.get_running_loop().create_task(self._stream(sess))

    async def _stream(self, sess: Session) -> None:
        """The steady event stream of one session; keeps running while it is disconnected (replayed on Resume)."""
        pool = traffic.event_pool(sess.shard, sess.num_shards, self.total_guilds, sess.intents, self.config.dm_fraction)
        if not pool:
            return
        loop = asyncio.get_running_loop()
        rate = self.config.events_per_second
        tick = max(1.0 / rate, 0.02)
        last, carry, i = loop.time(), 0.0, 0
        n = len(pool)
        while sess.resumable:
            await asyncio.sleep(tick)
            now = loop.time()
            carry += (now - last) * rate
            last = now
            due = int(carry)
            carry -= due
            conn = sess.conn
            if sess.stream_paused or (conn is not None and (conn.write_paused or conn.closing)):
                carry = 0.0
                continue
            for _ in range(min(due, 10_000)):
                t, d = pool[i]
                i = i + 1 if i + 1 < n else 0
                sess.dispatch(t, d)
            if due:
                self.stats.changed()

    # ---- the shared guild stream and the bot's guilds --------------------------------------------

    def emit_guild_events(self, count: int = 1) -> list[int]:
        """Emit `count` events now, in the bot's guilds in turn, each to every live session (of any shard count)
        whose shard routes its guild and that has the event's intent. Returns their ids (see `guild_events.KINDS`:
        the kinds rotate through `guild_event_kinds`; a message id predates its dispatch by up to
        `guild_event_id_skew` seconds, and each session gets each event up to `guild_event_jitter` seconds late).

        Each event is dispatched through its session (own sequence number, replay buffer, replayed on Resume)
        and recorded in `guild_events` with the number of sessions it was queued to (0 if no session routes its
        guild: the event still happened). A bot without guilds emits nothing.
        """
        count = _count("count", count, MAX_EMIT)
        ids: list[int] = []
        if not self.guild_count:
            return ids
        cfg = self.config
        kinds = cfg.guild_event_kinds.split(",")
        for _ in range(count):
            k = self._next_guild % self.guild_count
            self._next_guild = k + 1
            kind = kinds[self._next_kind % len(kinds)]
            self._next_kind += 1
            if kind == "MESSAGE_CREATE" and cfg.guild_event_id_skew > 0:  # created a little earlier, unique still
                self._skewed += 1
                ms = time.time_ns() // 1_000_000 - int(random.uniform(0, cfg.guild_event_id_skew) * 1000)
                sid = snowflake(ms, self._skewed)
            else:
                sid = self._snowflakes.next()
            event = guild_event(kind, sid, k)
            intent, t = INTENTS[kind], kind.encode()
            queued = 0
            for num_shards, shards in self._routes.items():
                sessions = shards.get(traffic.shard_for(event.guild_id, num_shards))
                if not sessions:
                    continue
                for sess in list(sessions):
                    if not sess.resumable:
                        sessions.discard(sess)
                    elif sess.intents & intent:
                        self._dispatch_late(sess, t, event.body if sess.intents & traffic.INTENT_MESSAGE_CONTENT
                                            else event.body_without_content)
                        queued += 1
            self.guild_events.record(event, queued)
            ids.append(event.id)
        if ids:
            self.stats.changed()
        return ids

    def _dispatch_late(self, sess: Session, t: bytes, d: bytes) -> None:
        """Dispatch now, or after a random delay of up to `guild_event_jitter` (in order within the session)."""
        jitter = self.config.guild_event_jitter
        if jitter <= 0:
            sess.dispatch(t, d)
            return
        loop = asyncio.get_running_loop()
        due = max(self._jitter_due.get(id(sess), 0.0), loop.time() + random.uniform(0, jitter))
        self._jitter_due[id(sess)] = due

        def deliver() -> None:
            if sess.resumable:
                sess.dispatch(t, d)
            if self._jitter_due.get(id(sess)) == due:
                del self._jitter_due[id(sess)]

        loop.call_at(due, deliver)

    def guild_event_log(self, since_id: int | None = None) -> GuildEventSnapshot:
        """What the shared guild stream emitted (what `GET /_sim/guild-events` returns); the `ids` and `events`
        lists hold only the events after message id `since_id`."""
        return self.guild_events.snapshot(since_id)

    async def _guild_stream(self) -> None:
        """Emit `guild_events_per_second` events a second (read at every tick, so it can change while running)."""
        loop = asyncio.get_running_loop()
        last, carry = loop.time(), 0.0
        while True:
            rate = self.config.guild_events_per_second
            await asyncio.sleep(max(1.0 / rate, 0.02) if rate > 0 else 0.05)
            now = loop.time()
            rate = self.config.guild_events_per_second
            carry += (now - last) * rate if rate > 0 else 0.0
            last = now
            due = int(carry)
            carry -= due
            if due:
                self.emit_guild_events(min(due, MAX_EMIT))

    def add_guilds(self, count: int) -> traffic.GuildsAdded:
        """The bot joins `count` more guilds. Each live session whose shard now routes a new guild gets its
        GUILD_CREATE (with the GUILDS intent); a session whose shard would hold more than `max_guilds_per_shard`
        guilds is closed with 4011 instead (sharding required; not resumable), or ended if it is disconnected."""
        count = _count("count", count, MAX_ADD_GUILDS)
        old = self.guild_count
        self.guild_count += count
        created = closed = 0
        for sess in list(self.sessions.values()):
            if not sess.resumable:
                continue
            guilds = traffic.guilds_for(sess.shard, sess.num_shards, self.guild_count)
            if len(guilds) > self.config.max_guilds_per_shard:
                closed += 1
                reason = (f"sharding required: shard [{sess.shard}, {sess.num_shards}] would hold {len(guilds)} "
                          f"guilds (at most {self.config.max_guilds_per_shard})")
                conn = sess.conn
                if conn is not None and not conn.closing:
                    conn.close(4011, reason)
                else:
                    sess.end(INVALIDATED, reason)
                continue
            sess.guilds = guilds
            if sess.intents & traffic.INTENT_GUILDS:
                first_new = max(0, -(-(old - guilds.start) // guilds.step))
                for k in guilds[first_new:]:
                    sess.dispatch(b"GUILD_CREATE", traffic.guild_create(k, self.config.guild_size))
                    created += 1
        self.stats.changed()
        return {"added": count, "guilds": self.guild_count,
                "recommended_shards": self.recommended_shards,
                "guild_creates": created, "closed": closed}

    # ---- HTTP routing ----------------------------------------------------------------------------

    def handle_http(self, req: Request) -> Response:
        if req.path.startswith("/api/"):
            return rest.handle(self, req)
        if req.path.startswith("/_sim/") or req.path == "/_sim":
            return admin.handle(self, req)
        if req.path in ("/", RESUME_PATH):
            return json_response({"message": "this is the gateway: connect with a WebSocket"}, 426)
        return json_response({"message": "404: Not Found", "code": 0}, 404)

    # ---- chaos controls --------------------------------------------------------------------------

    def connections_of(self, shard: int) -> list[GatewayConnection]:
        """Live connections whose session belongs to `shard`."""
        return [c for c in self.connections if c.session is not None and c.session.shard == shard and not c.closing]

    def _apply(self, shard: int, fn: Callable[[GatewayConnection], object], num_shards: int | None = None) -> int:
        """Call `fn` on each live connection of `shard` (of a session of `num_shards` shards, or any count); the
        number of connections."""
        conns = [c for c in self.connections_of(shard)
                 if num_shards is None or (c.session is not None and c.session.num_shards == num_shards)]
        for c in conns:
            fn(c)
        self.stats.changed()
        return len(conns)

    def reconnect(self, shard: int) -> int:
        """Send op 7; close with 4000 after `reconnect_close_after` if the client stays."""
        def go(c: GatewayConnection) -> None:
            c.send_payload(RECONNECT)
            c.later(self.config.reconnect_close_after, lambda: c.close(4000, "reconnect requested"))
        return self._apply(shard, go)

    def invalidate(self, shard: int, resumable: bool = False) -> int:
        """Send op 9. With resumable=False the session ends; the socket stays open for a new Identify."""
        def go(c: GatewayConnection) -> None:
            sess = c.session
            if not resumable and sess is not None:
                sess.end(INVALIDATED, "op 9 sent by chaos control")
                sess.conn = None
                c.session = None
                c.leave_set()
            c.send_payload(INVALID_SESSION[resumable])
        return self._apply(shard, go)

    def zombie(self, shard: int, on: bool = True) -> int:
        """Stop (or restart) ACKing the heartbeats of the shard's current connections."""
        return self._apply(shard, lambda c: setattr(c, "zombie", on))

    def drop(self, shard: int) -> int:
        """Drop the TCP connection without a close frame."""
        return self._apply(shard, lambda c: c.abort())

    def close(self, shard: int, code: int, reason: str = "closed by chaos control") -> int:
        # RFC 6455 7.4: 1005, 1006 and 1015 must never be sent, and codes outside 1000-4999 do not exist.
        if not 1000 <= code <= 4999 or code in (1004, 1005, 1006, 1015):
            raise ValueError(f"close code {code} cannot be sent: use 1000-4999 except 1004, 1005, 1006, 1015")
        return self._apply(shard, lambda c: c.close(code, reason))

    def request_heartbeat(self, shard: int) -> int:
        """Send op 1 to the client, which must answer with a heartbeat at once."""
        return self._apply(shard, lambda c: c.send_payload(HEARTBEAT_REQUEST))

    def corrupt(self, shard: int, kind: str) -> int:
        """Send garbage: 'compressed' (a broken compressed frame), 'json', 'opcode' (op 99) or 'event' (unknown t)."""
        if kind == "compressed":
            return self._apply(shard, lambda c: c.write_raw(c.enc.corrupt()))
        if kind == "json":
            return self._apply(shard, lambda c: c.send_payload(b'{"t":"MESSAGE_CREATE","s":,"op":0,"d":{"id":'))
        if kind == "opcode":
            return self._apply(shard, lambda c: c.send_payload(b'{"t":null,"s":null,"op":99,"d":{"sim":true}}'))
        if kind == "event":
            def unknown(c: GatewayConnection) -> None:
                if c.session is not None:  # always: connections_of() picks connections with a session
                    c.session.dispatch(b"SIM_UNKNOWN_EVENT", b'{"sim":true}')
            return self._apply(shard, unknown)
        raise ValueError(f"unknown corruption kind {kind!r}: use compressed, json, opcode or event")

    def pause(self, shard: int, paused: bool = True) -> int:
        """Pause (or unpause) the event stream of the shard's sessions."""
        sessions = [s for s in self.sessions.values() if s.shard == shard and s.resumable]
        for s in sessions:
            s.stream_paused = paused
        return len(sessions)

    def unpause(self, shard: int) -> int:
        return self.pause(shard, False)

    def ack_delay(self, shard: int, seconds: float, num_shards: int | None = None) -> int:
        """Answer each heartbeat of the shard's sessions (of ``num_shards`` shards, or any count) `seconds` late
        (finite, >= 0): the events the session generates meanwhile reach the client before the ACK, as over a
        long round trip. It stays with the session across resumes."""
        _check_seconds("ack delay", seconds)
        sessions = [s for s in self.sessions.values() if s.shard == shard and s.resumable
                    and (num_shards is None or s.num_shards == num_shards)]
        for s in sessions:
            s.ack_delay = seconds
        return len(sessions)

    def delay(self, shard: int, seconds: float, num_shards: int | None = None) -> int:
        """Delay everything sent to the shard's current connections (of sessions of ``num_shards`` shards, or any
        count) by `seconds` (finite, >= 0)."""
        _check_seconds("delay", seconds)
        return self._apply(shard, lambda c: setattr(c, "delay", seconds), num_shards)

    async def wait_until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """Wait until `predicate(stats snapshot)` holds; re-checked on every change. Returns the snapshot."""
        return await self.stats.wait_until(predicate, timeout)


def _check_seconds(what: str, seconds: float) -> None:
    """Raise ValueError unless ``seconds`` is finite and >= 0 (a chaos control's delay)."""
    if not 0 <= seconds < math.inf:  # also false for nan
        raise ValueError(f"{what} must be a finite number of seconds >= 0, got {seconds!r}")
