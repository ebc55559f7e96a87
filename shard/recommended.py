"""`create_recommended`: ask `GET /gateway/bot` for the shard count and limits, then build the shards."""

from __future__ import annotations

import asyncio
import ssl as _ssl
import urllib.request
from collections.abc import Callable

import msgspec

from .config import DEFAULT_API_URL, DEFAULT_GATEWAY_URL, Config, Token, default_ssl_context
from .id import ShardId
from .queue import InMemoryQueue
from .shard import Shard

__all__ = ["create_recommended", "GatewayBot", "SessionStartLimit", "fetch_gateway_bot"]


class SessionStartLimit(msgspec.Struct, frozen=True):
    total: int
    remaining: int
    reset_after: int  # milliseconds, as Discord sends it
    max_concurrency: int


class GatewayBot(msgspec.Struct, frozen=True):
    url: str
    shards: int
    session_start_limit: SessionStartLimit


async def fetch_gateway_bot(token: str | Token, *, api_url: str = DEFAULT_API_URL,
                            ssl: _ssl.SSLContext | None = None, timeout: float = 10.0) -> GatewayBot:
    """`GET {api_url}/gateway/bot` with the bot's Authorization header."""
    auth = Token(token).authorization
    request = urllib.request.Request(api_url.rstrip("/") + "/gateway/bot",
                                     headers={"Authorization": auth, "User-Agent": "DiscordBot (shardstack, 0.1)"})
    context = ssl if ssl is not None else default_ssl_context()

    def fetch() -> bytes:
        kwargs = {"context": context} if request.full_url.startswith("https") else {}
        try:
            with urllib.request.urlopen(request, timeout=timeout, **kwargs) as response:  # noqa: S310
                return response.read()
        except urllib.error.HTTPError as exc:  # never echo the request (it carries the token)
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
