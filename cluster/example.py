"""An example per-worker handler (used by ``python -m cluster.demo``).

It counts messages per shard and answers a typed ``MessageCount`` call, so that any worker
can broadcast it and sum the cluster's total.
"""

from __future__ import annotations

import logging
from collections import Counter

import ipc
from cluster.handler import WorkerContext
from shard import Event, Shard

log = logging.getLogger(__name__)


class MessageCount(ipc.Call):
    """Broadcast this to get every worker's MESSAGE_CREATE count."""


class ExampleHandler:
    def __init__(self) -> None:
        self.messages: Counter[int] = Counter()

    async def setup(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        log.info("worker %d handles shards %s", ctx.worker_id, sorted(ctx.shards))

    async def on_event(self, shard: Shard, event: Event) -> None:
        if event.type == "MESSAGE_CREATE":
            self.messages[shard.id.number] += 1

    async def on_call(self, call: ipc.Call) -> int:
        if isinstance(call, MessageCount):
            return sum(self.messages.values())
        raise LookupError(type(call).__name__)

    async def teardown(self) -> None:
        log.info("worker %d saw %d messages", self.ctx.worker_id, sum(self.messages.values()))
