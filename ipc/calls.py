"""Typed calls: user-defined msgspec Structs sent between processes instead of code strings.

Subclass :class:`Call` in a module both processes import; the subclass registers itself
under ``module:QualName``. The receiving side decodes the body into that class, so only
declared types cross the pipe and nothing is ever evaluated::

    class GuildCount(ipc.Call):
        pass

    replies = await ctx.broadcast(GuildCount(), reply_type=int)
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar, dataclass_transform

import msgspec

from ipc.error import CallError, UnknownCall

__all__ = ["Call", "CallError", "Reply", "UnknownCall", "call_name", "decode_call", "decode_value",
           "encode_call", "encode_value"]

T = TypeVar("T")

_registry: dict[str, type[Call]] = {}
_encoder = msgspec.msgpack.Encoder()


# msgspec passes frozen=True on to the subclasses (every user's call); dataclass_transform tells type checkers so.
@dataclass_transform(frozen_default=True)
class Call(msgspec.Struct, frozen=True):
    """Base class of typed IPC calls. Subclasses register themselves by :func:`call_name`."""

    __call_name__: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__call_name__ = f"{cls.__module__}:{cls.__qualname__}"
        _registry[cls.__call_name__] = cls


class Reply(msgspec.Struct, frozen=True):
    """One worker's answer to a broadcast: a ``value`` or an ``error`` message."""

    worker_id: int
    value: Any = None
    error: str | None = None
    host: str | None = None
    """The host whose worker this is, when the cluster spans hosts (a coordinator is set); else None."""

    @property
    def ok(self) -> bool:
        return self.error is None


def call_name(cls: type[Call]) -> str:
    """The registry name of a Call type: ``module:QualName``."""
    return cls.__call_name__


def encode_call(call: Call) -> tuple[str, bytes]:
    """Return the (name, msgpack body) of ``call``."""
    if not isinstance(call, Call):
        raise TypeError(f"expected an ipc.Call instance, got {type(call).__name__}")
    return call.__call_name__, _encoder.encode(call)


def decode_call(name: str, body: bytes) -> Call:
    """Rebuild a call from its name and body; raise :class:`UnknownCall` if not registered."""
    cls = _registry.get(name)
    if cls is None:
        raise UnknownCall(f"no ipc.Call type named {name!r} is imported in this process")
    return msgspec.msgpack.decode(body, type=cls)


def encode_value(value: Any) -> bytes:
    """Encode a reply value (anything msgspec can encode)."""
    return _encoder.encode(value)


def decode_value(body: bytes, type: type[T] | Any = Any) -> T:  # noqa: A002
    """Decode a reply value, validating it against ``type``."""
    return msgspec.msgpack.decode(body, type=type)
