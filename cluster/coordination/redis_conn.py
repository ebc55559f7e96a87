"""Connecting to the coordinator's Redis: one checked client per supervisor, and the bot's key namespace.

:func:`connect` opens a ``redis.asyncio`` client (hiredis parses replies when installed) and checks
that the other end is a Redis that lets us in. A wrong password, a server that is not Redis, or a
bad URL is a :class:`~cluster.error.ConfigError` (the cluster exits 2 with one line); a Redis that
cannot be reached right now is :class:`~cluster.error.CoordinatorUnavailable`, which callers retry
with backoff. No message or log line holds the URL's password.

Every loop that retries Redis calls catches their trouble with :func:`on_trouble` (or runs in
:func:`keep_trying` / :func:`keep_subscribed`, which use it), so that no loop can swallow its task's cancel.

A cancel is never lost inside the client either: on Python 3.11, redis-py sends each command under
``asyncio.wait_for`` (it does with a socket timeout, which :func:`connect` sets), which returns the command's result
instead of raising a cancel that lands just as the write finished (cpython gh-86296, fixed by 3.12's rewrite of
``wait_for``); the task then went on as if never cancelled. The client's connections (:class:`CancelSafeConnection`)
raise that cancel after all, and :func:`on_trouble` does for whatever else might swallow one in its block.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import NoReturn

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from cluster.coordination.redis_url import redacted_url, url_problem
from cluster.error import ConfigError, CoordinatorUnavailable
from cluster.state import token_user_id

__all__ = ["KEY_ROOT", "REDIS_DOWN", "REDIS_TROUBLE", "CancelSafeConnection", "Caught", "connect", "keep_subscribed",
           "keep_trying", "namespace", "on_trouble", "unavailable"]

KEY_ROOT = "shardstack"
"""Every key of every bot starts with ``shardstack:<cluster name>:``."""
HEALTH_CHECK = 1.0
"""Seconds a pooled connection may sit idle before it is checked (PING, tried once more on a new connection) on its
next use: one left stale by a Redis restart is then replaced quietly, instead of failing a call seconds after the
outage was over (and being logged as a new one). A command whose connection fails (ConnectionError, TimeoutError)
is sent once more on a new connection, at once; past that the callers' loops retry. A connection can fail after a
script ran, so a script may run twice: its owner and epoch checks keep a repeat from taking what another host holds."""
REDIS_TROUBLE: tuple[type[BaseException], ...] = (rx.RedisError, OSError, TimeoutError)
"""What a Redis call raises when Redis is unavailable or answers with an error: retried by the loops."""
REDIS_DOWN: tuple[type[BaseException], ...] = (rx.ConnectionError, rx.TimeoutError, TimeoutError, OSError)
"""What a Redis call raises when Redis cannot be reached right now."""


def namespace(cluster_name: str | None, token: str) -> str:
    """The key prefix of this bot: ``shardstack:<cluster_name>:``, by default ``shardstack:bot-<user id>:``.

    A token that carries no user id (not Discord-shaped) gets a name from a hash of it, never the token."""
    if cluster_name is None:
        user_id = token_user_id(token)
        cluster_name = f"bot-{user_id}" if user_id is not None else "bot-" + hashlib.sha256(
            token.encode()).hexdigest()[:16]
    return f"{KEY_ROOT}:{cluster_name}:"


class Caught:
    """What an :func:`on_trouble` block caught: ``exc``, or None if the block ran through."""

    __slots__ = ("exc",)

    def __init__(self) -> None:
        self.exc: BaseException | None = None


def _cancels() -> int:
    """How many cancels of the current task are pending (requested, not yet withdrawn by ``uncancel``)."""
    task = asyncio.current_task()
    return 0 if task is None else task.cancelling()


@contextlib.contextmanager
def on_trouble(kinds: tuple[type[BaseException], ...] = REDIS_TROUBLE) -> Iterator[Caught]:
    """Catch Redis trouble (``kinds``) raised in the block into ``caught.exc``, for the caller to retry or report.
    Every Redis call that is retried goes through here, so that a cancel is never swallowed: the client turns a
    cancel that cuts a read short into a connection error, and that is re-raised as the cancel it was; a cancel
    that came during the block and that something in it swallowed (the block ran through with one more cancel
    pending than when it began) is raised at its end."""
    caught = Caught()
    before = _cancels()
    try:
        yield caught
    except kinds as exc:
        if _cancels():
            raise asyncio.CancelledError from exc
        caught.exc = exc
    if _cancels() > before:
        raise asyncio.CancelledError


async def keep_trying(step: Callable[[], Awaitable[object]], every: float, *, retry: float | None = None,
                      start_after: float = 0.0, on_error: Callable[[BaseException], None] | None = None,
                      on_ok: Callable[[], None] | None = None,
                      kinds: tuple[type[BaseException], ...] = REDIS_TROUBLE) -> NoReturn:
    """Run ``step`` every ``every`` seconds (the first after ``start_after``) until cancelled: Redis trouble is
    told to ``on_error`` and tried again after ``retry`` seconds (default ``every``), a success to ``on_ok``."""
    await asyncio.sleep(start_after)
    while True:
        with on_trouble(kinds) as caught:
            await step()
        if caught.exc is None:
            if on_ok is not None:
                on_ok()
        elif on_error is not None:
            on_error(caught.exc)
        await asyncio.sleep(every if caught.exc is None or retry is None else retry)


async def keep_subscribed(client: aioredis.Redis, channels: Sequence[str], on_message: Callable[[bytes], None], *,
                          on_subscribed: Callable[[], Awaitable[object]] | None = None,
                          on_error: Callable[[BaseException], None] | None = None, retry: tuple[float, float],
                          kinds: tuple[type[BaseException], ...] = REDIS_TROUBLE) -> NoReturn:
    """Hand every message of ``channels`` to ``on_message`` until cancelled; after each subscription await
    ``on_subscribed``. Redis trouble is told to ``on_error`` and the subscription made again, ``retry`` (first,
    longest) seconds apart with doubling."""
    delay = retry[0]
    while True:
        pubsub = client.pubsub()
        try:
            with on_trouble(kinds) as caught:
                await pubsub.subscribe(*channels)
                if on_subscribed is not None:
                    await on_subscribed()
                delay = retry[0]
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message is not None:
                        on_message(message["data"])
        finally:
            await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        if caught.exc is not None and on_error is not None:
            on_error(caught.exc)
        await asyncio.sleep(delay)
        delay = min(retry[1], delay * 2)


class CancelSafeConnection(Connection):
    """A connection that raises a cancel which redis-py's ``asyncio.wait_for`` swallowed while sending a command
    (Python 3.11: the write finished as the cancel came, and ``wait_for`` returned instead of raising), after
    dropping the connection, whose reply would otherwise be read as the next command's."""

    async def send_packed_command(self, command: bytes | str | Iterable[bytes], check_health: bool = True) -> None:
        before = _cancels()
        await super().send_packed_command(command, check_health)
        if _cancels() > before:
            await self.disconnect(nowait=True)
            raise asyncio.CancelledError


class _CancelSafeSSLConnection(CancelSafeConnection, SSLConnection):
    """``rediss://``: :class:`CancelSafeConnection` over TLS."""


def _cancel_safe(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """The cancel-safe class for the URL's connection class (``redis://`` or ``rediss://``)."""
    return _CancelSafeSSLConnection if issubclass(cls, SSLConnection) else CancelSafeConnection


def unavailable(url: str, exc: BaseException) -> CoordinatorUnavailable:
    """The error for a Redis that cannot be reached (or timed out), naming the URL without its password."""
    detail = type(exc).__name__ if isinstance(exc, (TimeoutError, rx.TimeoutError)) else str(exc) or type(exc).__name__
    return CoordinatorUnavailable(f"coordinator {redacted_url(url)} unavailable: {_scrub(detail, url)}")


def _scrub(text: str, url: str) -> str:
    """``text`` without the URL's password, should a driver message ever quote it."""
    from urllib.parse import urlsplit  # noqa: PLC0415
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text


async def connect(url: str, *, timeout: float = 5.0) -> aioredis.Redis:
    """A client for ``url`` whose server answered PING and says it is Redis.

    Raises ConfigError for a bad URL, a refused login, or a server that is not Redis; CoordinatorUnavailable
    if it cannot be reached within ``timeout`` seconds (retry later)."""
    if (problem := url_problem(url)) is not None:
        raise ConfigError(problem)
    # a pooled connection that went stale with a Redis restart fails its next command once ("Connection closed by
    # server"), whenever that is: it is reconnected and the command sent again at once (one retry, no backoff);
    # an outage still fails fast, and the callers' own loops wait it out (see HEALTH_CHECK)
    client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                     health_check_interval=HEALTH_CHECK, retry=Retry(NoBackoff(), 1),
                                     decode_responses=False)
    client.connection_pool.connection_class = _cancel_safe(client.connection_pool.connection_class)
    shown = redacted_url(url)
    try:
        await client.ping()
        info = await client.info("server")
    except (rx.AuthenticationError, rx.AuthenticationWrongNumberOfArgsError, rx.NoPermissionError) as exc:
        await client.aclose()
        raise ConfigError(f"coordinator {shown} refused the login: {_scrub(str(exc), url)}") from None
    except rx.ResponseError as exc:
        await client.aclose()
        message = str(exc)
        if "NOAUTH" in message or "WRONGPASS" in message or "invalid password" in message.lower():
            raise ConfigError(f"coordinator {shown} refused the login: {_scrub(message, url)}") from None
        raise ConfigError(f"coordinator {shown} does not answer like Redis: {_scrub(message, url)}") from None
    except (rx.ConnectionError, rx.TimeoutError, TimeoutError, OSError) as exc:
        await client.aclose()
        if isinstance(exc, rx.ConnectionError) and _protocol_garbage(exc):
            raise ConfigError(f"coordinator {shown} does not answer like Redis ({_scrub(str(exc), url)})") from None
        raise unavailable(url, exc) from None
    except rx.RedisError as exc:  # InvalidResponse and other protocol errors: not a Redis at the other end
        await client.aclose()
        raise ConfigError(f"coordinator {shown} does not answer like Redis ({_scrub(str(exc), url)})") from None
    if not isinstance(info, dict) or "redis_version" not in info:
        await client.aclose()
        raise ConfigError(f"coordinator {shown} does not answer like Redis (no redis_version in INFO)")
    return client


def _protocol_garbage(exc: rx.ConnectionError) -> bool:
    """A connection error that is really an unparsable reply (an HTTP server, say), not an unreachable host."""
    text = str(exc).lower()
    return "protocol error" in text or "invalid response" in text
