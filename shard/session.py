"""Session: what a shard needs to Resume (serialisable, so it survives a process restart)."""

from __future__ import annotations

import msgspec

__all__ = ["Session"]


class Session(msgspec.Struct, frozen=True):
    """A gateway session: its `id` and the last `sequence` received. Encodes as {"id", "sequence"}."""

    id: str
    sequence: int

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> Session:
        return msgspec.json.decode(data, type=cls)
