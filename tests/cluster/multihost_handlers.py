"""Handlers of the multi-host tests; workers import them by ``module:attribute``."""

from __future__ import annotations

import os
from typing import Any

import ipc


class Where(ipc.Call):
    """Which worker answers, in which process, under which supervisor."""


class AskAll(ipc.Call):
    """Asks a worker to broadcast Where to every worker of every host and return what came back."""

    timeout: float


class Answerer:
    async def setup(self, ctx: Any) -> None:
        self.ctx = ctx

    async def on_call(self, call: ipc.Call) -> Any:
        if isinstance(call, Where):
            return {"worker": self.ctx.worker_id, "pid": os.getpid(), "supervisor": os.getppid()}
        if isinstance(call, AskAll):
            replies = await self.ctx.broadcast(Where(), dict, timeout=call.timeout)
            return [{"host": r.host, "worker": r.worker_id, "value": r.value, "error": r.error} for r in replies]
        raise LookupError(type(call).__name__)
