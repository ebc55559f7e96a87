"""Event: what `Shard.next_event` returns."""

from __future__ import annotations

import msgspec

from .wire import JSONValue

__all__ = ["Event", "EventData"]

EventData = JSONValue | msgspec.Struct
"""A decoded payload: JSON values by default, a typed Struct for gateway control events and registered types."""


class Event(msgspec.Struct, frozen=True, gc=False):
    """One gateway event.

    - `type`: the dispatch name ("READY", "MESSAGE_CREATE", ...) or a GATEWAY_* name for other opcodes
      ("GATEWAY_HELLO", "GATEWAY_HEARTBEAT_ACK", "GATEWAY_RECONNECT", "GATEWAY_INVALID_SESSION",
      "GATEWAY_HEARTBEAT", "GATEWAY_CLOSE").
    - `seq`: the dispatch's sequence number, else None.
    - `data`: the decoded `d` (a CloseFrame for GATEWAY_CLOSE).
    """

    type: str
    seq: int | None
    data: EventData
