"""Handlers for the hostile-input worker tests; workers import them by ``module:attribute``."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

import ipc


class Count(ipc.Call):
    """Per-worker counts of the events the handler received, by type."""


class PoisonSequence(ipc.Call):
    """Gives shard ``shard_id``'s session a sequence number beyond msgpack's 64 bits (what a gateway
    sending ``"s": 10**25`` left behind before the shard checked ``s``)."""

    shard_id: int


class ExplodingMessage(msgspec.Struct):
    """Decoding it raises an exception that is neither a GatewayError nor a msgspec error."""

    id: str = ""

    def __post_init__(self) -> None:
        raise RuntimeError("a struct that cannot be built")


class RaisingDecode:
    """Registers ExplodingMessage for MESSAGE_CREATE on every shard: each one makes ``next_event`` raise."""

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()

    async def setup(self, ctx: Any) -> None:
        for shard in ctx.shards.values():
            shard.register("MESSAGE_CREATE", ExplodingMessage)

    async def on_event(self, shard: Any, event: Any) -> None:
        self.events[event.type] += 1

    async def on_call(self, call: ipc.Call) -> Any:
        if isinstance(call, Count):
            return dict(self.events)
        raise LookupError(type(call).__name__)


class Poisoner:
    """Answers PoisonSequence."""

    async def setup(self, ctx: Any) -> None:
        self.ctx = ctx

    async def on_call(self, call: ipc.Call) -> Any:
        if isinstance(call, PoisonSequence):
            shard = self.ctx.shards.get(call.shard_id)
            if shard is None:
                return False
            shard._protocol.sequence = 10**25
            return True
        raise LookupError(type(call).__name__)
