"""The per-worker handler API.

A handler is any object with some of these methods (all optional, each may be sync or
async)::

    class Handler:
        async def setup(self, ctx: WorkerContext) -> None: ...     # before the shards start
        async def on_event(self, shard: Shard, event: Event) -> None: ...   # every event, with its shard
        async def on_call(self, call: ipc.Call) -> Any: ...        # typed calls and broadcasts
        async def teardown(self) -> None: ...                      # after the shards closed

Give it as ``module:attribute`` (a class or a zero-argument factory, called once in each
worker, or an instance) or as the object itself from Python. A handler that raises is
logged and its shard goes on; one that blocks the event loop is reported.

Each shard's events reach ``on_event`` one at a time, in order. An event counts as handled once
``on_event`` returned (or raised). An event not handled yet when its worker is drained (its handler is
cancelled) or killed comes again after the resume, with every event behind it: at least once. After a
kill, so do the events handled since the worker's last session report (``--report-interval``, 1 s):
make ``on_event`` idempotent, or deduplicate by id.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import ipc

from cluster.error import HandlerImportError

if TYPE_CHECKING:
    from ipc.channel import Channel
    from shard import Event, Shard

__all__ = ["ClusterStatus", "Handler", "HandlerImportError", "WorkerContext", "check_handler", "load_handler",
           "maybe_await"]

T = TypeVar("T")


@runtime_checkable
class Handler(Protocol):
    """What a worker calls on the user's handler (every method is optional)."""

    async def setup(self, ctx: WorkerContext) -> None: ...
    async def on_event(self, shard: Shard, event: Event) -> None: ...
    async def on_call(self, call: ipc.Call) -> Any: ...
    async def teardown(self) -> None: ...


class ClusterStatus(ipc.Call):
    """Built-in call answered by the supervisor: the status table as a dict (see /status)."""


def _resolve(ref: str) -> Any:
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise HandlerImportError(f"handler must look like module:attribute, got {ref!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise HandlerImportError(
            f"cannot import handler module {module_name!r}: {type(exc).__name__}: {exc}") from exc
    try:
        for part in attr.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise HandlerImportError(f"module {module_name!r} has no attribute {attr!r}") from None
    return target


def check_handler(ref: str) -> None:
    """Import a ``module:attribute`` handler without creating it (the supervisor's early check)."""
    _resolve(ref)


def load_handler(ref: Any) -> Any:
    """Resolve a handler reference into a handler object.

    ``ref`` is ``"module:attribute"`` or an object; a class or other callable found there is
    called with no arguments (a factory), anything else is used as is.
    """
    target = _resolve(ref) if isinstance(ref, str) else ref
    if inspect.isclass(target) or (callable(target) and not hasattr(target, "on_event")):
        try:
            target = target()
        except Exception as exc:
            raise HandlerImportError(f"creating handler {ref!r} failed: {type(exc).__name__}: {exc}") from exc
    return target


async def maybe_await(value: Any) -> Any:
    """Await ``value`` if it is awaitable (handler methods may be sync or async)."""
    if inspect.isawaitable(value):
        return await value
    return value


class WorkerContext:
    """What a handler gets in ``setup``: its worker, its shards, and typed IPC."""

    def __init__(self, worker_id: int, shards: dict[int, Shard], shard_total: int, channel: Channel) -> None:
        self.worker_id = worker_id
        self.shards = shards
        """This worker's shards by shard id (the live ``shard.Shard`` objects)."""
        self.shard_total = shard_total
        self.log = logging.getLogger(f"cluster.worker.{worker_id}")
        self._channel = channel

    def shard_for_guild(self, guild_id: int) -> Shard | None:
        """The shard of this worker that receives ``guild_id``'s events, if it runs here."""
        return self.shards.get((guild_id >> 22) % self.shard_total)

    async def request(self, call: ipc.Call, reply_type: type[T] | Any = Any, *, timeout: float = 5.0) -> T:
        """Send a typed call to the supervisor and return its reply."""
        return await self._channel.call(call, reply_type, timeout=timeout)

    async def broadcast(self, call: ipc.Call, reply_type: type[T] | Any = Any, *,
                        timeout: float = 5.0) -> list[ipc.Reply]:
        """Send a typed call to every worker (this one included) and gather the replies, one per worker.

        With a coordinator this reaches the workers of every host of the bot, and each reply's ``host`` names
        the host; a host that does not answer within ``timeout`` gets an error reply per worker."""
        return await self._channel.broadcast(call, reply_type, timeout=timeout)

    async def status(self) -> dict[str, Any]:
        """The cluster status, as the supervisor sees it."""
        return await self.request(ClusterStatus(), dict)
