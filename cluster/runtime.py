"""What the supervisor's parts share: the cluster's layout, the latest known state of its workers, shards and
sessions, the counters that observers read, and the supervisor's tasks.

The parts (:mod:`cluster.workers`, :mod:`cluster.routing`, :mod:`cluster.loops`) each take one
:class:`Runtime` and what they need of each other as plain callables, so that none imports another
or the supervisor.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from cluster.config import ClusterConfig
from cluster.coordination import Coordination, IdentifyEvent
from cluster.exitcodes import ClusterExit
from cluster.restart import RestartPolicy
from cluster.snapshot import ShardPhase, WaitHistogram, WorkerState
from ipc import Channel, HeartbeatMonitor
from ipc.protocol import SessionInfo

__all__ = ["ACTIVE", "LOOP_RETRY_DELAY", "Runtime", "ShardView", "WorkerHandle", "WorkerState"]

log = logging.getLogger("cluster")

ACTIVE = ShardPhase.ACTIVE
LOOP_RETRY_DELAY = 1.0
"""Seconds before a supervisor loop that raised an unexpected exception runs again."""


@dataclass
class ShardView:
    """What the supervisor knows about one shard (from its worker's reports)."""

    shard_id: int
    worker_id: int
    state: str = ShardPhase.PENDING  # what the worker reported (a ShardPhase value)
    since: float = 0.0
    latency: float | None = None
    last_event_age: float | None = None
    generation: int = 0
    restarted_at: float = -math.inf
    events: Counter[str] = field(default_factory=Counter)


@dataclass(eq=False)
class WorkerHandle:
    worker_id: int
    shard_ids: range
    generation: int
    process: Any
    policy: RestartPolicy
    state: WorkerState = WorkerState.STARTING
    channel: Channel | None = None
    heartbeat: HeartbeatMonitor | None = None
    pid: int | None = None
    started_at: float = 0.0
    exitcode: int | None = None
    retiring: bool = False
    id_base: int = 0
    """Added to its shard ids in the identify coordinator (a live reshard's two sets use two key ranges)."""
    last_fatal: str | None = None
    rss: int = 0
    loop_lag: float = 0.0
    blocked: int = 0
    handler_errors: int = 0
    consumer_errors: int = 0
    hello: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    drained: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    exited: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Runtime:
    """The shared state of one supervisor, and the tasks it runs.

    ``stop(code, message)`` asks the supervisor to shut down; ``token()`` is the bot token (read once)."""

    def __init__(self, config: ClusterConfig, *, stop: Callable[[int, str], None],
                 token: Callable[[], str]) -> None:
        self.config = config
        self.stop = stop
        self.token = token
        self.workers: dict[int, WorkerHandle] = {}
        self.shards: dict[int, ShardView] = {}
        self.sessions: dict[int, SessionInfo] = {}
        self.sessions_version = 0  # bumped by every session report; the state file has the one it saved
        self.shard_total = 0
        self.max_concurrency = 1
        self.gateway_url: str | None = config.gateway_url
        self.id_base = 0  # added to this layout's shard ids in the identify coordinator (cluster.resharder)
        self.coordinator: Coordination | None = None
        self.identify_events: deque[tuple[float, IdentifyEvent]] = deque()  # for the identify pump
        self.budget_update: tuple[int, int, float, float] | None = None  # (total, remaining, reset_after, now): for it
        self.wake = asyncio.Event()  # the identify pump has something to do
        self.identifies: Counter[str] = Counter()
        self.restarts: Counter[tuple[int, str]] = Counter()
        self.identify_waits = WaitHistogram()
        self.errors: Counter[tuple[str, str]] = Counter()  # (where, exception type): contained failures
        self.loop_lags: deque[float] = deque(maxlen=64)  # this process's event-loop lag, per heartbeat tick
        self.heartbeat_due = math.inf  # when the heartbeat loop should next run
        self.stopping = False
        self.rolling_task: asyncio.Task[None] | None = None
        self.listeners: list[Any] = []  # callables(event: str, **info) for tests and the display
        self.tasks: set[asyncio.Task[Any]] = set()

    @property
    def rolling(self) -> bool:
        return self.rolling_task is not None and not self.rolling_task.done()

    def active_shards(self) -> int:
        return sum(1 for v in self.shards.values() if v.state == ACTIVE)

    def running_channels(self) -> dict[int, Channel]:
        """The IPC channel of every running worker, by worker id."""
        return {w.worker_id: w.channel for w in self.workers.values()
                if w.state == WorkerState.RUNNING and w.channel is not None}

    def record_sessions(self, sessions: list[SessionInfo]) -> None:
        for info in sessions:
            self.sessions[info.shard_id] = info
        self.sessions_version += 1

    def queue_identify(self, now: float, event: IdentifyEvent, id_base: int = 0) -> None:
        """Hand an identify report to the identify pump (the one caller of the coordinator), its shard id moved to
        the coordinator's key range ``id_base``."""
        if id_base:
            event = msgspec.structs.replace(event, shard_id=event.shard_id + id_base)
        self.identify_events.append((now, event))
        self.wake.set()

    def spawn_task(self, coro: Any, where: str, name: str | None = None) -> asyncio.Task[Any]:
        """Run ``coro`` as a supervisor task named ``name`` (default ``where``; a log line about a task that outlived
        its cancel shows it). A :class:`ClusterExit` from it stops the cluster with its code (the documented fatal
        conditions); any other exception is logged and counted under ``where``, and the cluster goes on (one failed
        request, restart or kill is not worth every shard)."""
        task = asyncio.get_running_loop().create_task(coro, name=name or where)
        self.tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self.tasks.discard(t)
            if not t.cancelled() and (exc := t.exception()) is not None:
                if isinstance(exc, ClusterExit):
                    self.stop(exc.code, str(exc))
                else:
                    self.failed(where, exc, f"supervisor task {where} failed", "the cluster goes on")

        task.add_done_callback(done)
        return task

    def spawn_loop(self, where: str, loop: Any, *args: Any) -> asyncio.Task[Any]:
        """Run the supervisor loop ``loop(*args)``; restart it :data:`LOOP_RETRY_DELAY` seconds after an
        unexpected exception (logged and counted in ``cluster_supervisor_errors_total``)."""

        async def keep_running() -> None:
            while True:
                try:
                    return await loop(*args)
                except (ClusterExit, asyncio.CancelledError):
                    raise
                except Exception as exc:  # noqa: BLE001 - contained: logged, counted, retried
                    self.failed(where, exc, f"supervisor loop {where} failed",
                                f"running it again in {LOOP_RETRY_DELAY:g} s")
                await asyncio.sleep(LOOP_RETRY_DELAY)

        return self.spawn_task(keep_running(), where)

    def failed(self, where: str, exc: BaseException, what: str, then: str) -> None:
        """Log and count (``cluster_supervisor_errors_total{where,error}``) a failure that the supervisor
        contains; an OSError (EMFILE, ...) is logged without its traceback, anything else with it."""
        self.errors[(where, type(exc).__name__)] += 1
        log.error("%s: %s: %s; %s", what, type(exc).__name__, exc, then,
                  exc_info=None if isinstance(exc, OSError) else exc)

    def emit(self, event: str, **info: Any) -> None:
        for fn in self.listeners:
            try:
                fn(event, **info)
            except Exception:
                log.exception("listener failed")
