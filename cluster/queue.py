"""The worker side of identify coordination: the shard's ``Queue`` protocol over IPC."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ipc.protocol import (IdentifyCancel, IdentifyDone, IdentifyGrant, IdentifyRefused,
                          IdentifyRequest, IdentifyStarted, IdentifyUnused, Packet)

__all__ = ["IpcQueue"]

log = logging.getLogger(__name__)


class IpcQueue:
    """Implements ``shard.Queue`` by asking the supervisor's coordinator for a slot.

    ``send`` writes a packet to the supervisor; the worker feeds the supervisor's
    :class:`IdentifyGrant` / :class:`IdentifyRefused` packets to :meth:`feed`.
    ``reason(shard_id)`` labels why a shard identifies (for metrics); ``on_identified`` is
    told of every outcome (the worker paces new connections with it).
    """

    def __init__(self, send: Callable[[Packet], None],
                 reason: Callable[[int], str] = lambda shard_id: "initial",
                 on_identified: Callable[[int, bool], None] | None = None) -> None:
        self._send = send
        self._reason = reason
        self._on_identified = on_identified
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._not_before: dict[int, float] = {}  # granted early: no Identify before this time.monotonic()
        self.refusals: dict[int, str] = {}

    @property
    def waiting(self) -> list[int]:
        return sorted(self._waiters)

    async def enqueue(self, shard_id: int) -> None:
        """Return when the shard may send Identify (cancel-safe).

        If the supervisor refuses (the session budget is guarded), this keeps waiting:
        the supervisor is stopping the cluster, and the shard must not identify.
        """
        if shard_id in self._waiters:
            raise RuntimeError(f"shard {shard_id} is already waiting for an identify slot")
        fut = asyncio.get_running_loop().create_future()
        self._waiters[shard_id] = fut
        try:
            self._send(IdentifyRequest(shard_id, self._reason(shard_id)))
            await fut
        except BaseException:
            # cancelled (or the pipe broke): give the slot back, granted or not
            try:
                self._send(IdentifyCancel(shard_id))
            except Exception:  # noqa: BLE001 - the supervisor is gone; nothing to release
                pass
            raise
        finally:
            self._waiters.pop(shard_id, None)

    def not_before(self, shard_id: int) -> float:
        """When the shard's latest grant lets its Identify go out (``time.monotonic()``; 0: at once). The hold is
        counted from the grant's arrival here, so IPC latency only makes it later, never earlier."""
        return self._not_before.pop(shard_id, 0.0)

    def sent(self, shard_id: int) -> None:
        """The shard wrote its Identify: the coordinator starts the bucket's window now (not at the grant:
        connecting and Hello take time, and the next grant must not overtake this Identify)."""
        try:
            self._send(IdentifyStarted(shard_id))
        except Exception:  # noqa: BLE001 - a dead supervisor expires the hold by itself
            log.debug("could not report the identify of shard %d", shard_id)

    def identified(self, shard_id: int, ready: bool) -> None:
        """Identify ended: READY (True) or INVALID_SESSION/close before READY (False)."""
        if self._on_identified is not None:
            self._on_identified(shard_id, ready)
        try:
            self._send(IdentifyDone(shard_id, ready))
        except Exception:  # noqa: BLE001 - a dead supervisor expires the hold by itself
            log.debug("could not report identify result of shard %d", shard_id)

    def unused(self, shard_id: int) -> None:
        """The grant was given back without an Identify (the connection failed first): the coordinator
        refunds the session start and the bucket's window."""
        try:
            self._send(IdentifyUnused(shard_id))
        except Exception:  # noqa: BLE001 - a dead supervisor has nothing to refund
            log.debug("could not return the unused grant of shard %d", shard_id)

    def feed(self, packet: IdentifyGrant | IdentifyRefused) -> None:
        """Deliver the supervisor's answer."""
        fut = self._waiters.get(packet.shard_id)
        if isinstance(packet, IdentifyRefused):
            self.refusals[packet.shard_id] = packet.reason
            log.error("shard %d may not identify: %s", packet.shard_id, packet.reason)
            return
        if fut is None or fut.done():
            # a grant nobody waits for any more: release it at once
            self._send(IdentifyCancel(packet.shard_id))
            return
        if packet.hold > 0:
            self._not_before[packet.shard_id] = time.monotonic() + packet.hold
        else:
            self._not_before.pop(packet.shard_id, None)
        fut.set_result(None)
