"""The shard package's errors: `GatewayError` (what a shard reports, with whether it is fatal and why) and the rest.

The hierarchy::

    ShardError                  root of every error the package defines
    ├── GatewayError            public: a shard's error; `kind` is an `ErrorKind`, `is_fatal()` says if it stopped
    ├── RedirectRefused         public (also a RuntimeError): `fetch_gateway_bot` refused to follow a redirect
    ├── InflateError            internal: the compressed stream is corrupt or over a bound; the core reports it
    │                           as a `GatewayError` of kind COMPRESSION and resumes on a new connection
    └── HandshakeError          internal: the WebSocket upgrade was refused; the driver reports it as a
                                `GatewayError` of kind RECONNECT and retries

The public ones are exported from `shard`; the internal ones never reach a user of `Shard`.
"""

from __future__ import annotations

import enum

from .close_codes import close_action, close_reason, CloseAction

__all__ = ["ShardError", "GatewayError", "ErrorKind", "RedirectRefused", "InflateError", "HandshakeError"]


class ShardError(Exception):
    """The root of the shard package's errors (see the tree above)."""


class ErrorKind(enum.Enum):
    """What went wrong."""

    FATALLY_CLOSED = "fatally closed"        # the gateway closed with a code that forbids reconnecting
    CLOSED = "closed"                        # the shard was closed by the user
    RECONNECT = "reconnect"                  # a connection attempt failed; the shard retries
    CONNECTION_LOST = "connection lost"      # the connection dropped or was closed; the shard reconnects
    COMPRESSION = "compression"              # the compressed stream is corrupt; the shard reconnects and resumes
    DESERIALIZING = "deserializing"          # a wanted event could not be decoded; it is skipped
    PAYLOAD_TOO_LARGE = "payload too large"  # an outgoing payload is over 4096 bytes; it was not sent
    SEND_QUEUE_FULL = "send queue full"      # the bounded outgoing queue is full; the payload was not queued


class GatewayError(ShardError):
    """An error from a shard. `is_fatal()` says the shard will not reconnect; `close_code` is the gateway's code."""

    def __init__(self, kind: ErrorKind, reason: str, *, close_code: int | None = None,
                 event_type: str | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.close_code = close_code
        self.event_type = event_type

    def is_fatal(self) -> bool:
        """True when the shard has stopped for good (fatal close code, or closed by the user)."""
        return self.kind in (ErrorKind.FATALLY_CLOSED, ErrorKind.CLOSED)

    @classmethod
    def from_close(cls, code: int | None, reason: str = "") -> GatewayError:
        """The error for a close by the gateway; fatal for 4004 and 4010-4014."""
        text = close_reason(code)
        if reason:
            text = f"{text} (gateway said: {reason[:120]})"
        kind = ErrorKind.FATALLY_CLOSED if close_action(code) is CloseAction.FATAL else ErrorKind.CONNECTION_LOST
        return cls(kind, text, close_code=code)

    def __repr__(self) -> str:
        return f"GatewayError({self.kind.name}, {self.reason!r}, close_code={self.close_code})"


class RedirectRefused(ShardError, RuntimeError):
    """An authorized request was answered with a redirect, which is not followed (it would carry the token)."""


class InflateError(ShardError):
    """The compressed stream is corrupt, or a message is over a size bound (the connection must be replaced).

    `inflated`: from `feed_whole`, the messages of the run that inflated before the corrupt one."""

    def __init__(self, message: str, inflated: list[bytes] | None = None) -> None:
        super().__init__(message)
        self.inflated: list[bytes] = inflated if inflated is not None else []


class HandshakeError(ShardError):
    """The server did not accept the WebSocket upgrade."""
