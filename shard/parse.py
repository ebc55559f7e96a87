"""Decoding: a cheap envelope scan (op, t, s, with `d` left undecoded), then `d` by event type.

msgspec is the default backend: the envelope decoder skips over `d` and keeps it as `msgspec.Raw`
(no copy), so events the shard does not want are never decoded. The stdlib `json` backend is
selectable; it decodes the whole payload at once. Users may register a `msgspec.Struct` per event
type to decode only the fields they declare.
"""

from __future__ import annotations

import json as _json
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from .wire import JSONValue

__all__ = ["Envelope", "PayloadDecoder", "DecodeError", "DECODE_ERRORS", "Seq", "SEQ_END"]

DecodeError = msgspec.DecodeError
DECODE_ERRORS = (msgspec.DecodeError, RecursionError)
"""What decoding one hostile message can raise (msgspec's ValidationError is a DecodeError; about 1,000
levels of nesting raise RecursionError, even inside a skipped `d`): each becomes a DESERIALIZING error."""
SEQ_END = 1 << 63
Seq = Annotated[int, msgspec.Meta(ge=0, le=SEQ_END - 1)]
"""A dispatch's `s`: 0 <= s < 2**63, checked by msgspec while decoding (a larger one would overflow the
msgpack reports of a cluster worker; a negative one would go into Heartbeat and Resume)."""
_NULL = msgspec.Raw(b"null")
_T = TypeVar("_T")


class Envelope(msgspec.Struct, gc=False):
    """The gateway envelope with `d` undecoded."""

    op: int
    t: str | None = None
    s: Seq | None = None
    d: msgspec.Raw = _NULL


class PayloadDecoder:
    """Envelope scan and `d` decoding for one shard's settings."""

    __slots__ = ("backend", "_env", "_default", "_typed", "_types")

    def __init__(self, backend: Literal["msgspec", "json"] = "msgspec",
                 types: Mapping[str, type[msgspec.Struct]] | None = None) -> None:
        self.backend = backend
        self._env = msgspec.json.Decoder(Envelope)
        self._default = msgspec.json.Decoder()
        self._types: dict[str, type[msgspec.Struct]] = {}
        self._typed: dict[str, msgspec.json.Decoder[Any]] = {}
        for name, typ in (types or {}).items():
            self.register(name, typ)

    def register(self, event_type: str, typ: type[msgspec.Struct]) -> None:
        """Decode `d` of `event_type` dispatches into `typ` (fields not declared are skipped)."""
        self._types[event_type] = typ
        self._typed[event_type] = msgspec.json.Decoder(typ)

    @property
    def typed(self) -> bool:
        """True when some event types decode into registered Structs."""
        return bool(self._types)

    def envelope(self, payload: bytes) -> Envelope:
        """op, t and s of a payload; `d` stays raw with msgspec, or is decoded with the json backend."""
        if self.backend == "msgspec":
            return self._env.decode(payload)
        try:
            obj = _json.loads(payload)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"JSON is malformed: {exc}") from None
        if not isinstance(obj, dict) or type(obj.get("op")) is not int:
            raise DecodeError("payload is not a gateway envelope")
        t, s = obj.get("t"), obj.get("s")
        if (t is not None and type(t) is not str) or (s is not None and (type(s) is not int or not 0 <= s < SEQ_END)):
            raise DecodeError("the envelope's t must be a string and s an integer from 0 to 2**63 - 1")
        env = Envelope(obj["op"], t, s)
        env.d = obj.get("d")  # type: ignore[assignment]  # decoded already
        return env

    def decode(self, event_type: str, d: msgspec.Raw | JSONValue) -> JSONValue | msgspec.Struct:
        """Decode a dispatch's `d` (a registered Struct, else plain JSON values)."""
        if type(d) is msgspec.Raw:
            dec = self._typed.get(event_type)
            return (dec or self._default).decode(d)
        typ = self._types.get(event_type)
        return msgspec.convert(d, typ) if typ is not None else d

    def decode_as(self, d: object, typ: type[_T]) -> _T:
        """Decode `d` (a payload's `d`: msgspec.Raw or JSON values) into a gateway control Struct (or `typ`)."""
        if type(d) is msgspec.Raw:
            return msgspec.json.decode(d, type=typ)
        return msgspec.convert(d, typ, strict=False)
