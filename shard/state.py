"""ShardState: Active, Disconnected(reconnect_attempts), FatallyClosed, Identifying or Resuming."""

from __future__ import annotations

import enum
from typing import ClassVar

import msgspec

__all__ = ["ShardState", "StateKind"]


class StateKind(enum.Enum):
    ACTIVE = "active"
    DISCONNECTED = "disconnected"
    FATALLY_CLOSED = "fatally_closed"
    IDENTIFYING = "identifying"
    RESUMING = "resuming"


class ShardState(msgspec.Struct, frozen=True):
    """The shard's connection state. Compare with the constants, e.g. `shard.state == ShardState.ACTIVE`,
    or use `state.kind`; `Disconnected` carries `reconnect_attempts`.

    - `Disconnected(n)`: not started yet, or waiting (backoff) before reconnect attempt `n`.
    - `Identifying`: the identify phase. It starts while the shard waits for its identify queue turn, *before*
      any connection is opened (so a long queue holds no idle gateway connections), and lasts through
      connecting, Hello and Identify until READY.
    - `Resuming`: connected to resume a session (resumes never wait on the queue) until RESUMED.
    - `Active`: READY or RESUMED received. `FatallyClosed`: stopped by a fatal close code."""

    kind: StateKind
    reconnect_attempts: int = 0

    Kind: ClassVar[type[StateKind]] = StateKind
    ACTIVE: ClassVar[ShardState]
    FATALLY_CLOSED: ClassVar[ShardState]
    IDENTIFYING: ClassVar[ShardState]
    RESUMING: ClassVar[ShardState]

    @classmethod
    def Disconnected(cls, reconnect_attempts: int = 0) -> ShardState:  # noqa: N802 - mirrors twilight
        return cls(StateKind.DISCONNECTED, reconnect_attempts)

    @property
    def name(self) -> str:
        return self.kind.name

    def is_identified(self) -> bool:
        """True while the session is usable: Active or Resuming."""
        return self.kind in (StateKind.ACTIVE, StateKind.RESUMING)

    def __repr__(self) -> str:
        if self.kind is StateKind.DISCONNECTED:
            return f"ShardState.Disconnected(reconnect_attempts={self.reconnect_attempts})"
        return f"ShardState.{self.kind.name}"


ShardState.ACTIVE = ShardState(StateKind.ACTIVE)
ShardState.FATALLY_CLOSED = ShardState(StateKind.FATALLY_CLOSED)
ShardState.IDENTIFYING = ShardState(StateKind.IDENTIFYING)
ShardState.RESUMING = ShardState(StateKind.RESUMING)
# twilight's variant names
ShardState.Active = ShardState.ACTIVE  # type: ignore[attr-defined]
ShardState.FatallyClosed = ShardState.FATALLY_CLOSED  # type: ignore[attr-defined]
ShardState.Identifying = ShardState.IDENTIFYING  # type: ignore[attr-defined]
ShardState.Resuming = ShardState.RESUMING  # type: ignore[attr-defined]
