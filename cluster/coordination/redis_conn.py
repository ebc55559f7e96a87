"""Connecting to the coordinator's Redis: one checked client per supervisor, and the bot's key namespace.

:func:`connect` opens a ``redis.asyncio`` client (hiredis parses replies when installed) and checks
that the other end is a Redis that lets us in. A wrong password, a server that is not Redis, or a
bad URL is a :class:`~cluster.error.ConfigError` (the cluster exits 2 with one line); a Redis that
cannot be reached right now is :class:`~cluster.error.CoordinatorUnavailable`, which callers retry
with backoff. No message or log line holds the URL's password.
"""

from __future__ import annotations

import asyncio
import hashlib

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from cluster.coordination.redis_url import redacted_url, url_problem
from cluster.error import ConfigError, CoordinatorUnavailable
from cluster.state import token_user_id

__all__ = ["KEY_ROOT", "connect", "namespace", "raise_if_cancelling", "unavailable"]

KEY_ROOT = "shardstack"
"""Every key of every bot starts with ``shardstack:<cluster name>:``."""


def namespace(cluster_name: str | None, token: str) -> str:
    """The key prefix of this bot: ``shardstack:<cluster_name>:``, by default ``shardstack:bot-<user id>:``.

    A token that carries no user id (not Discord-shaped) gets a name from a hash of it, never the token."""
    if cluster_name is None:
        user_id = token_user_id(token)
        cluster_name = f"bot-{user_id}" if user_id is not None else "bot-" + hashlib.sha256(
            token.encode()).hexdigest()[:16]
    return f"{KEY_ROOT}:{cluster_name}:"


def raise_if_cancelling() -> None:
    """Re-raise a cancel that a Redis client turned into a connection error (a read cut short by the cancel):
    a loop that catches Redis trouble to retry must still end when its task is cancelled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


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
    # an outage still fails fast, and the callers' own loops wait it out
    client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                     health_check_interval=30, decode_responses=False,
                                     retry=Retry(NoBackoff(), 1), retry_on_error=[rx.ConnectionError])
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
