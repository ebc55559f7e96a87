"""Handlers used by the cluster tests; workers import them by ``module:attribute``."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from typing import Any

import ipc


class Count(ipc.Call):
    """Per-worker counts of events by type, and the shards that delivered them."""


class Freeze(ipc.Call):
    """Blocks worker ``worker_id``'s event loop for ``seconds`` (a hung worker)."""

    worker_id: int
    seconds: float


class AskBroadcast(ipc.Call):
    """Asks a worker to broadcast Count itself and return the total (worker-to-all IPC)."""


class Recorder:
    """Counts events per shard and sets each shard's presence on READY; raises on every
    GUILD_CREATE and blocks once on the first MESSAGE_CREATE of worker 0, to show that both
    are survived and reported."""

    blocks = True

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()
        self.shard_ok = True
        self.blocked_once = False

    async def setup(self, ctx: Any) -> None:
        self.ctx = ctx

    async def on_event(self, shard: Any, event: Any) -> None:
        self.events[event.type] += 1
        if shard.id.number not in self.ctx.shards:
            self.shard_ok = False
        if event.type == "READY":  # a command through the shard the event came from
            from shard import UpdatePresence
            await shard.command(UpdatePresence(status="idle"))
        if event.type == "GUILD_CREATE":
            raise RuntimeError("handler bug on GUILD_CREATE")
        if self.blocks and event.type == "MESSAGE_CREATE" and self.ctx.worker_id == 0 and not self.blocked_once:
            self.blocked_once = True
            time.sleep(0.8)  # noqa: ASYNC251 - blocks the loop: the watchdog reports it

    async def on_call(self, call: ipc.Call) -> Any:
        if isinstance(call, Count):
            return {"worker": self.ctx.worker_id, "events": dict(self.events), "shard_ok": self.shard_ok,
                    "pid": os.getpid()}
        if isinstance(call, Freeze):
            if call.worker_id == self.ctx.worker_id:
                time.sleep(call.seconds)  # noqa: ASYNC251 - the fault: a frozen worker
            return "ok"
        if isinstance(call, AskBroadcast):
            replies = await self.ctx.broadcast(Count(), dict, timeout=5)
            status = await self.ctx.status()
            return {"workers": [r.worker_id for r in replies if r.ok],
                    "messages": sum(r.value["events"].get("MESSAGE_CREATE", 0) for r in replies if r.ok),
                    "active": status["active"]}
        raise LookupError(type(call).__name__)


class Quiet(Recorder):
    """A Recorder that never blocks on its own."""

    blocks = False


class Wedged:
    """Awaits forever on every MESSAGE_CREATE (a handler stuck on a lock, or on a request with no timeout): its
    shard's consumer is wedged while the worker's event loop, and the shard's heartbeats, go on."""

    async def on_event(self, shard: Any, event: Any) -> None:
        if event.type == "MESSAGE_CREATE":
            await asyncio.Event().wait()


class CrashOnReady:
    """Kills its own worker as soon as a shard is READY: every respawn must identify again."""

    async def on_event(self, shard: Any, event: Any) -> None:
        if event.type == "READY":
            os._exit(1)


class FailingSetup:
    async def setup(self, ctx: Any) -> None:
        raise RuntimeError("database unreachable")


class DieInSetup:
    """Its worker exits at once, before any shard connects, every time it is started: a crash loop."""

    async def setup(self, ctx: Any) -> None:
        os._exit(1)


class WhoAmI(ipc.Call):
    """A user-defined call that a worker sends to the supervisor (``ctx.request``)."""

    worker_id: int


class Greeter:
    """The supervisor's handler: answers WhoAmI."""

    def on_call(self, call: ipc.Call) -> str:
        if isinstance(call, WhoAmI):
            return f"worker {call.worker_id}, this is the supervisor (pid {os.getpid()})"
        raise LookupError(type(call).__name__)


class SyncHandler:
    """Every method plain (not async), as the README allows. On READY it asks the supervisor WhoAmI through
    ``ctx.request``; ``teardown`` writes what it saw to ``$CLUSTER_TEST_TEARDOWN_DIR/<worker>.json``."""

    def setup(self, ctx: Any) -> None:
        self.ctx = ctx
        self.events: Counter[str] = Counter()
        self.answers: list[str] = []
        self.tasks: set[Any] = set()

    def on_event(self, shard: Any, event: Any) -> None:
        self.events[event.type] += 1
        if event.type == "READY":
            import asyncio
            task = asyncio.get_running_loop().create_task(self._ask())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _ask(self) -> None:
        from cluster_handlers import WhoAmI
        self.answers.append(await self.ctx.request(WhoAmI(self.ctx.worker_id), str))

    def on_call(self, call: ipc.Call) -> Any:
        if isinstance(call, Count):
            return {"worker": self.ctx.worker_id, "events": dict(self.events), "answers": self.answers}
        raise LookupError(type(call).__name__)

    def teardown(self) -> None:
        import json
        report = {"events": dict(self.events), "closed": [s.sender().is_closed() for s in self.ctx.shards.values()]}
        path = os.path.join(os.environ["CLUSTER_TEST_TEARDOWN_DIR"], f"{self.ctx.worker_id}.json")
        with open(path, "w") as f:
            json.dump(report, f)


class SlowSeqLog:
    """A slow handler (``delay`` seconds per MESSAGE_CREATE, an HTTP call each, say) that, once done with an event,
    writes its sequence number and message id to ``<folder>/<pid>.seqs``, line-buffered, so a test reads what every
    worker process, killed or not, finished, in order (the event being handled at a kill is not in it). With
    ``hang_at`` n, the handler hangs on its n-th MESSAGE_CREATE, in the first worker process that gets that far."""

    def __init__(self, folder: str, delay: float, hang_at: int = 0) -> None:
        self.folder = folder
        self.delay = delay
        self.hang_at = hang_at

    async def setup(self, ctx: Any) -> None:
        path = os.path.join(self.folder, f"{os.getpid()}.seqs")
        self.file = open(path, "a", buffering=1)  # noqa: ASYNC230, SIM115 - a local file, opened once at setup
        self.count = 0

    async def on_event(self, shard: Any, event: Any) -> None:
        if event.type != "MESSAGE_CREATE":
            return
        self.count += 1
        if self.count == self.hang_at:
            try:
                os.close(os.open(os.path.join(self.folder, "hung"), os.O_CREAT | os.O_EXCL))  # once in all processes
            except FileExistsError:
                pass
            else:
                await asyncio.get_running_loop().create_future()  # never done: until the worker is killed
        await asyncio.sleep(self.delay)
        self.file.write(f"{event.seq} {event.data['id']}\n")
