"""``GET /gateway/bot``: the recommended shard count, gateway URL and session start limit."""

from __future__ import annotations

import asyncio
import urllib.error

import msgspec

from cluster.exitcodes import ClusterExit, ExitCode
from shard.recommended import RedirectRefused, get_authorized

__all__ = ["GatewayBot", "SessionStartLimit", "fetch_gateway_bot"]


class SessionStartLimit(msgspec.Struct, frozen=True):
    total: int
    remaining: int
    reset_after: int  # milliseconds
    max_concurrency: int = 1


class GatewayBot(msgspec.Struct, frozen=True):
    url: str
    shards: int
    session_start_limit: SessionStartLimit


def _get(api_url: str, token: str, timeout: float) -> bytes:
    auth = token if token.startswith("Bot ") else f"Bot {token}"
    return get_authorized(api_url.rstrip("/") + "/gateway/bot", auth, timeout=timeout,
                          user_agent="shardstack-cluster")


def _scrub(text: str, token: str) -> str:
    """``text`` (from the server: it may echo the request) without the token."""
    bare = token.removeprefix("Bot ").strip()
    return text.replace(bare, "<redacted>") if bare else text


async def fetch_gateway_bot(api_url: str, token: str, timeout: float = 10.0) -> GatewayBot:
    """Call ``GET /gateway/bot``; a 401 raises :class:`ClusterExit` (authentication failed).

    Redirects are never followed (the request carries the token) and a non-local API URL must be https.
    """
    try:
        body = await asyncio.to_thread(_get, api_url, token, timeout)
    except ValueError as exc:  # an API URL the token must not be sent to
        raise ClusterExit(ExitCode.CONFIG, f"invalid api_url: {exc}") from None
    except RedirectRefused as exc:
        raise ClusterExit(ExitCode.ERROR, str(exc)) from None
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise ClusterExit(ExitCode.AUTHENTICATION_FAILED, "authentication failed: GET /gateway/bot answered 401; "
                              "the bot token is invalid") from None
        detail = _scrub(exc.read()[:200].decode(errors="replace"), token)
        raise ClusterExit(ExitCode.ERROR, f"GET /gateway/bot failed: HTTP {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ClusterExit(ExitCode.ERROR, f"GET /gateway/bot failed: {exc}") from None
    try:
        return msgspec.json.decode(body, type=GatewayBot)
    except msgspec.DecodeError:
        raise ClusterExit(ExitCode.ERROR,
                          f"GET /gateway/bot returned invalid JSON: {_scrub(repr(body[:200]), token)}") from None
    except msgspec.ValidationError as exc:
        raise ClusterExit(ExitCode.ERROR, f"GET /gateway/bot returned an unexpected shape: {exc}") from None


