"""Event: what `Shard.next_event` returns."""

from __future__ import annotations

import msgspec

from .parse import Seq
from .wire import JSONValue

__all__ = ["Event", "Dispatch", "EventData"]

EventData = JSONValue | msgspec.Struct
"""A decoded payload: JSON values by default, a typed Struct for gateway control events and registered types."""

_WIRE_NAMES = {"type": "t", "seq": "s", "data": "d"}


class Event(msgspec.Struct, frozen=True, gc=False, rename=_WIRE_NAMES):
    """One gateway event.

    - `type`: the dispatch name ("READY", "MESSAGE_CREATE", ...) or a GATEWAY_* name for other opcodes
      ("GATEWAY_HELLO", "GATEWAY_HEARTBEAT_ACK", "GATEWAY_RECONNECT", "GATEWAY_INVALID_SESSION",
      "GATEWAY_HEARTBEAT", "GATEWAY_CLOSE").
    - `seq`: the dispatch's sequence number, else None.
    - `data`: the decoded `d` (a CloseFrame for GATEWAY_CLOSE).

    `msgspec.json.encode(event)` gives the gateway's own field names: `{"t": ..., "s": ..., "d": ...}`.
    Events are immutable and, to stay cheap, not tracked by the cycle collector (msgspec `gc=False`):
    never put an event inside its own `data`.
    """

    type: str
    seq: int | None
    data: EventData


class Dispatch(Event, frozen=True, gc=False, rename=_WIRE_NAMES, tag_field="op", tag=0):
    """An Event decoded straight from a gateway payload in one msgspec pass (the default fast path).

    Dispatches the shard delivers this way are instances of this subclass; their `type` is always a str,
    and they encode with `"op": 0`, as on the wire. A payload with another `op` does not decode as one;
    a payload without `t` decodes with `type` None: both are handled as control messages instead.
    """

    type: str | None = None  # type: ignore[assignment]
    seq: Seq | None = None  # 0 <= seq < 2**63, checked while decoding
    data: object = None  # type: ignore[assignment]  # msgspec decodes `d` as any JSON: EventData
