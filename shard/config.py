"""Config: everything a Shard needs. The token is kept in a wrapper that never prints it."""

from __future__ import annotations

import ssl as _ssl
from collections.abc import Mapping
from typing import Literal

import msgspec

from .event_type import EventTypeFlags
from .inflater import MAX_BUFFERED, MAX_INFLATED, Compression, ZlibBackend
from .intents import Intents
from .queue import Queue
from .session import Session
from .wire import IdentifyProperties, UpdatePresence

__all__ = ["Config", "Token", "DEFAULT_GATEWAY_URL", "DEFAULT_API_URL", "default_ssl_context", "certifi_ssl_context"]

DEFAULT_GATEWAY_URL = "wss://gateway.discord.gg"
DEFAULT_API_URL = "https://discord.com/api/v10"
API_VERSION = 10
DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds for TCP + WebSocket handshake, and again for Hello; a granted identify turn gets one in all."""
Decoder = Literal["msgspec", "json"]
TLSOption = _ssl.SSLContext | Literal["system", "certifi"] | None


class Token:
    """A bot token. `str()`/`repr()` never show it; `.authorization` is "Bot <token>" for REST and
    `.gateway` is the bare token sent in Identify and Resume."""

    __slots__ = ("__value",)
    __value: str

    def __init__(self, token: str | Token) -> None:
        if isinstance(token, Token):
            value = token.__value
        else:
            if not isinstance(token, str) or not token.strip():
                raise ValueError("a bot token is required")
            value = token.strip()
            if not value.startswith("Bot "):
                value = "Bot " + value
        self.__value = value

    @property
    def authorization(self) -> str:
        """The Authorization header value, with the "Bot " prefix."""
        return self.__value

    @property
    def gateway(self) -> str:
        """The token as Identify and Resume carry it (without the "Bot " prefix)."""
        return self.__value[4:]

    def __repr__(self) -> str:
        return "Token(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Token) and other.__value == self.__value

    def __hash__(self) -> int:
        return hash(self.__value)

    def __reduce__(self) -> tuple[type[Token], tuple[str]]:  # picklable for multiprocess workers
        return (Token, (self.__value,))


_SSL_CONTEXTS: dict[str, _ssl.SSLContext] = {}


def default_ssl_context() -> _ssl.SSLContext:
    """One process-wide context with the system trust store, shared by every shard (twilight #1058)."""
    ctx = _SSL_CONTEXTS.get("system")
    if ctx is None:
        ctx = _SSL_CONTEXTS["system"] = _ssl.create_default_context()
    return ctx


def certifi_ssl_context() -> _ssl.SSLContext:
    """One process-wide context with certifi's roots (needs the `certifi` extra)."""
    ctx = _SSL_CONTEXTS.get("certifi")
    if ctx is None:
        try:
            import certifi
        except ImportError as exc:  # pragma: no cover - optional extra
            raise ValueError('ssl="certifi" needs the certifi package (extra "certifi")') from exc
        ctx = _SSL_CONTEXTS["certifi"] = _ssl.create_default_context(cafile=certifi.where())
    return ctx


class Config:
    """Shard configuration. `token` and `intents` are positional; everything else is keyword-only.

    - gateway_url: default "wss://gateway.discord.gg" (query parameters are added by the shard).
    - compression: "zlib-stream" (default), "zstd-stream" (extra "zstd") or None; zlib_backend "auto"
      (zlib-ng when installed), "zlib" or "zlib-ng".
    - event_types: EventTypeFlags; events not selected are skipped before `d` is decoded.
    - session, resume_url: resume a session saved by an earlier process (resume_url is ignored without one).
    - queue: identify queue (default: a new InMemoryQueue()).
    - large_threshold (50-250), presence, identify_properties: sent in Identify.
    - ratelimit_messages: apply the 120/60 s command ratelimiter (default True).
    - ssl: an SSLContext, "system" (default, one shared context) or "certifi".
    - decoder: "msgspec" (default) or "json" (stdlib); event_structs: {event name: msgspec.Struct type}.
    - connect_timeout, close_timeout (seconds); backoff_base, backoff_max (seconds). connect_timeout bounds
      the TCP + WebSocket handshake, and then Hello; a connection that will Identify after the identify
      queue's grant gets one connect_timeout from the grant for all of it, so a queue may hold the bucket
      that long and start its window when the Identify is sent.
    - write_timeout: seconds writing may stay paused because the gateway reads nothing we send (the socket's
      buffers are full) before the connection is dropped and resumed on a new one (default 10). While
      paused, pongs are not queued: only the latest is kept and sent when writing resumes.
    - invalid_session_delay: (min, max) seconds before re-identifying after op 9 false (default 1-5 s).
    - max_pending_events: received events buffered before reading pauses; send_queue_size: outgoing bound.
    - metrics: publish prometheus metrics for this shard (default True).
    - max_message_size: the largest compressed message, whole or buffered in parts until zlib-stream's
      00 00 ff ff suffix (default 64 MiB); max_inflated_size: the largest message once inflated (default
      64 MiB). Past either bound the shard reports a COMPRESSION GatewayError (not fatal), drops the
      buffered bytes and reconnects to resume (decompression bombs).
    - heartbeat_interval_range: (min, max) seconds; Hello's `heartbeat_interval` is clamped into it
      (default 1-120 s; Discord sends about 41 s), so a hostile 1 ms cannot flood the gateway and a huge
      value cannot turn heartbeats and zombie detection off.
    """

    __slots__ = ("token", "intents", "gateway_url", "compression", "zlib_backend", "event_types", "session",
                 "resume_url", "queue", "large_threshold", "presence", "identify_properties",
                 "ratelimit_messages", "ssl", "decoder", "event_structs", "connect_timeout", "close_timeout",
                 "backoff_base", "backoff_max", "invalid_session_delay", "max_pending_events",
                 "send_queue_size", "metrics", "max_message_size", "max_inflated_size", "heartbeat_interval_range",
                 "write_timeout")

    def __init__(
        self,
        token: str | Token,
        intents: Intents | int,
        *,
        gateway_url: str = DEFAULT_GATEWAY_URL,
        compression: Compression = "zlib-stream",
        zlib_backend: ZlibBackend = "auto",
        event_types: EventTypeFlags | int = EventTypeFlags.ALL,
        session: Session | None = None,
        resume_url: str | None = None,
        queue: Queue | None = None,
        large_threshold: int = 50,
        presence: UpdatePresence | None = None,
        identify_properties: IdentifyProperties | None = None,
        ratelimit_messages: bool = True,
        ssl: TLSOption = None,
        decoder: Decoder = "msgspec",
        event_structs: Mapping[str, type[msgspec.Struct]] | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        close_timeout: float = 5.0,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        invalid_session_delay: tuple[float, float] = (1.0, 5.0),
        max_pending_events: int = 4096,
        send_queue_size: int = 128,
        metrics: bool = True,
        max_message_size: int = MAX_BUFFERED,
        max_inflated_size: int = MAX_INFLATED,
        heartbeat_interval_range: tuple[float, float] = (1.0, 120.0),
        write_timeout: float = 10.0,
    ) -> None:
        if not 50 <= large_threshold <= 250:
            raise ValueError("large_threshold must be between 50 and 250")
        if compression not in ("zlib-stream", "zstd-stream", None):
            raise ValueError(f"unknown compression {compression!r}")
        if decoder not in ("msgspec", "json"):
            raise ValueError(f"unknown decoder {decoder!r}")
        if not gateway_url.startswith(("ws://", "wss://")):
            raise ValueError("gateway_url must be a ws:// or wss:// URL")
        if max_message_size < 1 or max_inflated_size < 1:
            raise ValueError("max_message_size and max_inflated_size must be positive")
        low, high = heartbeat_interval_range
        if not 0 < low <= high:
            raise ValueError("heartbeat_interval_range must be (min, max) seconds with 0 < min <= max")
        if not write_timeout > 0:
            raise ValueError("write_timeout must be > 0 seconds")
        self.token = Token(token)
        self.intents = int(intents)
        self.gateway_url = gateway_url
        self.compression = compression
        self.zlib_backend = zlib_backend
        self.event_types = int(event_types)
        self.session = session
        self.resume_url = resume_url if session is not None else None
        self.queue = queue
        self.large_threshold = large_threshold
        self.presence = presence
        self.identify_properties = identify_properties
        self.ratelimit_messages = ratelimit_messages
        self.ssl = ssl
        self.decoder = decoder
        self.event_structs = dict(event_structs or {})
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.invalid_session_delay = invalid_session_delay
        self.max_pending_events = max_pending_events
        self.send_queue_size = send_queue_size
        self.metrics = metrics
        self.max_message_size = max_message_size
        self.max_inflated_size = max_inflated_size
        self.heartbeat_interval_range = (float(low), float(high))
        self.write_timeout = write_timeout

    def replace(self, **changes: object) -> Config:
        """A copy with some options changed."""
        values = {name: getattr(self, name) for name in self.__slots__}
        values.update(changes)
        token = values.pop("token")
        intents = values.pop("intents")
        return Config(token, intents, **values)

    def ssl_context(self) -> _ssl.SSLContext:
        """The TLS context for wss:// connections."""
        if isinstance(self.ssl, _ssl.SSLContext):
            return self.ssl
        if self.ssl == "certifi":
            return certifi_ssl_context()
        return default_ssl_context()

    def __repr__(self) -> str:
        return (f"Config(token=<redacted>, intents={self.intents}, gateway_url={self.gateway_url!r}, "
                f"compression={self.compression!r}, event_types={self.event_types}, "
                f"session={'set' if self.session else None})")
