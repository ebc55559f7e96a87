"""Batched, cheap session reports: send only what changed since the last report."""

from __future__ import annotations

from collections.abc import Iterable

from ipc.protocol import SessionInfo

__all__ = ["SessionDiff"]


class SessionDiff:
    """Remembers the last reported session per shard and yields only changes.

    The worker calls :meth:`changes` on a timer with the current sessions of its shards
    (reading them is cheap: no per-event work), and sends the result as one
    ``SessionReport`` if it is not empty.
    """

    def __init__(self) -> None:
        self._last: dict[int, SessionInfo] = {}

    def changes(self, current: Iterable[SessionInfo]) -> list[SessionInfo]:
        out = []
        for info in current:
            if self._last.get(info.shard_id) != info:
                self._last[info.shard_id] = info
                out.append(info)
        return out

    def forget(self, shard_id: int) -> None:
        """Drop a shard (it was closed or moved), so its next session is reported again."""
        self._last.pop(shard_id, None)
