"""GatewayError: every error a shard reports, with whether it is fatal and why."""

from __future__ import annotations

import enum

from .close_codes import close_action, close_reason, CloseAction

__all__ = ["GatewayError", "ErrorKind"]


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


class GatewayError(Exception):
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
