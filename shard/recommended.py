"""`create_recommended`: ask `GET /gateway/bot` for the shard count and limits, then build the shards."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl as _ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

import msgspec

from .config import DEFAULT_API_URL, DEFAULT_GATEWAY_URL, Config, Token, default_ssl_context
from .error import RedirectRefused
from .id import ShardId
from .queue import InMemoryQueue
from .shard import Shard

__all__ = ["create_recommended", "GatewayBot", "SessionStartLimit", "RedirectRefused", "check_api_url",
           "fetch_gateway_bot", "get_authorized"]


class SessionStartLimit(msgspec.Struct, frozen=True):
    total: int
    remaining: int
    reset_after: int  # milliseconds, as Discord sends it
    max_concurrency: int


class GatewayBot(msgspec.Struct, frozen=True):
    url: str
    shards: int
    session_start_limit: SessionStartLimit


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib's own handler resends every header, Authorization included, to whatever host the
    # Location names; returning None makes the 3xx an HTTPError instead.
    def redirect_request(self, *args: object) -> None:
        return None


def _is_local(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_url(api_url: str) -> None:
    """Raise ValueError unless `api_url` is https://, or http:// to this machine (the simulator, tests):
    the bot token is sent to it."""
    parts = urllib.parse.urlsplit(api_url)
    if (parts.scheme == "https" and parts.hostname) or (parts.scheme == "http" and _is_local(parts.hostname)):
        return
    raise ValueError(f"the API URL must be https:// (http:// only to localhost), got {parts.scheme}://"
                     f"{parts.hostname or ''}; the bot token is not sent there")


def get_authorized(url: str, authorization: str, *, timeout: float, ssl: _ssl.SSLContext | None = None,
                   user_agent: str = "DiscordBot (shardstack, 0.1)") -> bytes:
    """Blocking GET of `url` with the Authorization header; redirects are not followed.

    Raises ValueError for a URL the token must not go to (`check_api_url`), RedirectRefused for a
    3xx answer, urllib.error.HTTPError for any other error status and OSError for network errors.
    """
    check_api_url(url)
    handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
    if ssl is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ssl))
    request = urllib.request.Request(url, headers={"Authorization": authorization, "User-Agent": user_agent})
    try:
        with urllib.request.build_opener(*handlers).open(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        if not 300 <= exc.code < 400:
            raise
        exc.close()
        where = urllib.parse.urlsplit(exc.headers.get("Location", "")).hostname or "another URL"
        raise RedirectRefused(f"GET {urllib.parse.urlsplit(url).path} answered HTTP {exc.code}, a redirect to "
                              f"{where}; not followed, as the request carries the bot token") from None


async def fetch_gateway_bot(token: str | Token, *, api_url: str = DEFAULT_API_URL,
                            ssl: _ssl.SSLContext | None = None, timeout: float = 10.0) -> GatewayBot:
    """`GET {api_url}/gateway/bot` with the bot's Authorization header.

    Raises ValueError for a plain-http API URL that is not local, RedirectRefused for a redirect (never
    followed with the token), RuntimeError for an error status and OSError for network errors."""
    auth = Token(token).authorization
    url = api_url.rstrip("/") + "/gateway/bot"
    context = ssl if ssl is not None else default_ssl_context()

    def fetch() -> bytes:
        try:
            return get_authorized(url, auth, timeout=timeout, ssl=context)
        except urllib.error.HTTPError as exc:  # never echo the request (it carries the token)
            exc.close()
            raise RuntimeError(f"GET /gateway/bot failed with HTTP {exc.code}") from None

    body = await asyncio.to_thread(fetch)
    return msgspec.json.decode(body, type=GatewayBot)


async def create_recommended(token: str | Token, config_factory: Callable[[ShardId], Config], *,
                             api_url: str = DEFAULT_API_URL) -> list[Shard]:
    """Shards `0..n-1` for Discord's recommended count `n`, sharing one InMemoryQueue sized from
    `session_start_limit`. `config_factory(shard_id)` builds each Config; a Config without a queue gets the
    shared one, and one with the default gateway URL gets the URL Discord returned."""
    info = await fetch_gateway_bot(token, api_url=api_url)
    limit = info.session_start_limit
    queue = InMemoryQueue(limit.max_concurrency, limit.remaining, limit.reset_after / 1000.0, limit.total)
    shards = []
    for number in range(info.shards):
        shard_id = ShardId(number, info.shards)
        config = config_factory(shard_id)
        changes: dict[str, object] = {}
        if config.queue is None:
            changes["queue"] = queue
        if config.gateway_url == DEFAULT_GATEWAY_URL and info.url:
            changes["gateway_url"] = info.url
        if changes:
            config = config.replace(**changes)
        shards.append(Shard.with_config(shard_id, config))
    return shards
