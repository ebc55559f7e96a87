"""REST endpoints under /api/v10 that a gateway client needs, with Discord's auth and rate-limit behaviour."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from . import traffic
from .config import SimConfig
from .http import Request, Response, json_response
from .stats import Stats

UNAUTHORIZED = {"message": "401: Unauthorized", "code": 0}
NOT_FOUND = {"message": "404: Not Found", "code": 0}


@runtime_checkable
class RestHost(Protocol):
    """What the REST API reads and counts on the simulator (sim.server.Simulator)."""

    config: SimConfig
    stats: Stats
    remaining: int
    rest_window: list[float]
    """Monotonic times of the REST requests inside the current rate-limit window, oldest first."""

    @property
    def url(self) -> str: ...
    @property
    def token(self) -> str: ...
    @property
    def total_guilds(self) -> int: ...
    @property
    def recommended_shards(self) -> int: ...
    def token_ok(self, token: str) -> bool: ...
    def reset_after(self) -> float: ...


def _authorized(sim: RestHost, req: Request) -> bool:
    auth = req.headers.get("authorization", "")
    return (auth.startswith("Bot ") and sim.token_ok(auth[4:])
            and hmac.compare_digest(auth[4:].encode(), sim.token.encode()))


def _rate_limit(sim: RestHost) -> tuple[dict[str, str], float]:
    """Sliding-window REST limit: returns the X-RateLimit-* headers and the retry delay (0 = allowed)."""
    cfg = sim.config
    now = time.monotonic()
    window = sim.rest_window
    while window and window[0] <= now - cfg.rest_rate_window:
        window.pop(0)
    retry = 0.0
    if len(window) >= cfg.rest_rate_limit:
        retry = window[0] + cfg.rest_rate_window - now
    else:
        window.append(now)
    reset_after = (window[0] + cfg.rest_rate_window - now) if window else cfg.rest_rate_window
    headers = {
        "X-RateLimit-Limit": str(cfg.rest_rate_limit),
        "X-RateLimit-Remaining": str(max(cfg.rest_rate_limit - len(window), 0)),
        "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        "X-RateLimit-Reset-After": f"{reset_after:.3f}",
        "X-RateLimit-Bucket": "sim-global-bucket",
    }
    return headers, retry


def _gateway(sim: RestHost) -> dict[str, Any]:
    return {"url": sim.url.rstrip("/")}


def _gateway_bot(sim: RestHost) -> dict[str, Any]:
    cfg = sim.config
    return {"url": sim.url.rstrip("/"), "shards": sim.recommended_shards,
            "session_start_limit": {"total": cfg.session_limit, "remaining": sim.remaining,
                                    "reset_after": int(sim.reset_after() * 1000),
                                    "max_concurrency": cfg.max_concurrency}}


def _user(sim: RestHost) -> dict[str, Any]:
    return traffic.BOT_USER


def _application(sim: RestHost) -> dict[str, Any]:
    return dict(traffic.APPLICATION, approximate_guild_count=sim.total_guilds)


ROUTES: dict[str, Callable[[RestHost], dict[str, Any]]] = {
    "/gateway": _gateway, "/gateway/bot": _gateway_bot, "/users/@me": _user,
    "/oauth2/applications/@me": _application, "/applications/@me": _application,
}
"""Every GET route served under /api/v10, and the function building its 200 body (tests validate each one
against Discord's OpenAPI schema)."""
PUBLIC_ROUTES = frozenset(("/gateway",))
"""Routes that need no Authorization."""


def handle(sim: RestHost, req: Request) -> Response:
    sim.stats.rest_requests += 1
    parts = req.path.split("/")  # "", "api", "v10", ...
    if len(parts) > 2 and parts[2] in ("v9", "v10"):
        route = "/" + "/".join(parts[3:])
    else:
        return json_response(NOT_FOUND, 404)
    headers, retry = _rate_limit(sim)
    if retry > 0:
        sim.stats.rest_rate_limited += 1
        headers.update({"Retry-After": str(max(int(retry + 0.999), 1)), "X-RateLimit-Scope": "user",
                        "X-RateLimit-Global": "false"})
        return json_response({"message": "You are being rate limited.", "retry_after": round(retry, 3),
                              "global": False}, 429, headers)
    if req.method != "GET":
        return json_response({"message": "405: Method Not Allowed", "code": 0}, 405, headers)
    if route not in PUBLIC_ROUTES and not _authorized(sim, req):
        return json_response(UNAUTHORIZED, 401, headers)
    build = ROUTES.get(route)
    if build is None:
        return json_response(NOT_FOUND, 404, headers)
    return json_response(build(sim), 200, headers)
