"""REST endpoints under /api/v10 that a gateway client needs, with Discord's auth and rate-limit behaviour."""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING

from . import traffic

if TYPE_CHECKING:
    from .server import Request, Response, Simulator

UNAUTHORIZED = {"message": "401: Unauthorized", "code": 0}
NOT_FOUND = {"message": "404: Not Found", "code": 0}


def _authorized(sim: Simulator, req: Request) -> bool:
    auth = req.headers.get("authorization", "")
    return (auth.startswith("Bot ") and sim.token_ok(auth[4:])
            and hmac.compare_digest(auth[4:].encode(), sim.token.encode()))


def _rate_limit(sim: Simulator) -> tuple[dict[str, str], float]:
    """Sliding-window REST limit: returns the X-RateLimit-* headers and the retry delay (0 = allowed)."""
    cfg = sim.config
    now = time.monotonic()
    window = sim._rest_window
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


def handle(sim: Simulator, req: Request) -> Response:
    from .server import json_response

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
    if route == "/gateway":
        return json_response({"url": sim.url.rstrip("/")}, 200, headers)
    if not _authorized(sim, req):
        return json_response(UNAUTHORIZED, 401, headers)
    if route == "/gateway/bot":
        cfg = sim.config
        return json_response({
            "url": sim.url.rstrip("/"), "shards": cfg.shards,
            "session_start_limit": {"total": cfg.session_limit, "remaining": sim.remaining,
                                    "reset_after": int(sim.reset_after() * 1000),
                                    "max_concurrency": cfg.max_concurrency},
        }, 200, headers)
    if route == "/users/@me":
        return json_response(traffic.BOT_USER, 200, headers)
    if route in ("/oauth2/applications/@me", "/applications/@me"):
        return json_response(dict(traffic.APPLICATION, approximate_guild_count=sim.total_guilds), 200, headers)
    return json_response(NOT_FOUND, 404, headers)
