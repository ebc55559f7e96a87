"""REST under /api/v10: auth, exact Content-Type, /gateway/bot shape, 429 with Discord's headers and body."""

from __future__ import annotations

import json

import pytest
from sim_client import rest


def auth(sim) -> dict[str, str]:
    return {"Authorization": f"Bot {sim.token}"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bot wrong"}, {"Authorization": "Bearer x"}, "bare"])
async def test_unauthorized_is_401_json(sim, headers):
    if headers == "bare":  # the right token without the "Bot " prefix
        headers = {"Authorization": sim.token}
    for route in ("/gateway/bot", "/users/@me", "/oauth2/applications/@me", "/applications/@me"):
        status, head, body = await rest(sim.api_url + route, headers)
        assert status == 401, route
        assert head["content-type"] == "application/json"
        assert json.loads(body) == {"message": "401: Unauthorized", "code": 0}


async def test_content_type_is_exactly_application_json(sim):
    for route in ("/gateway", "/gateway/bot", "/users/@me", "/oauth2/applications/@me", "/applications/@me", "/nope"):
        status, head, body = await rest(sim.api_url + route, auth(sim))
        assert head["content-type"] == "application/json", route  # no "; charset=..." (discord.py needs this)
        json.loads(body)
        assert status == (404 if route == "/nope" else 200)


async def test_gateway_bot_shape(make_sim):
    sim = await make_sim(shards=16, max_concurrency=4, session_limit=1000, session_remaining=900)
    status, _, body = await rest(sim.api_url + "/gateway/bot", auth(sim))
    assert status == 200
    d = json.loads(body)
    assert set(d) == {"url", "shards", "session_start_limit"}
    assert d["url"] == sim.url.rstrip("/") and d["url"].startswith("ws://")
    assert d["shards"] == 16
    limit = d["session_start_limit"]
    assert set(limit) == {"total", "remaining", "reset_after", "max_concurrency"}
    assert limit["total"] == 1000 and limit["remaining"] == 900 and limit["max_concurrency"] == 4
    assert isinstance(limit["reset_after"], int) and 0 < limit["reset_after"] <= 86_400_000
    # GET /gateway needs no auth
    status, _, body = await rest(sim.api_url + "/gateway")
    assert status == 200 and json.loads(body) == {"url": d["url"]}


async def test_users_and_application(sim):
    _, _, body = await rest(sim.api_url + "/users/@me", auth(sim))
    user = json.loads(body)
    assert user["bot"] is True and {"id", "username", "discriminator", "avatar"} <= set(user)
    for route in ("/oauth2/applications/@me", "/applications/@me"):
        _, _, body = await rest(sim.api_url + route, auth(sim))
        app = json.loads(body)
        assert app["id"] == user["id"] and app["owner"]["id"] == user["id"]
        assert {"name", "description", "icon", "bot_public", "bot_require_code_grant", "verify_key"} <= set(app)


async def test_rate_limit_429_with_headers_and_body(make_sim):
    sim = await make_sim(rest_rate_limit=3, rest_rate_window=30.0)
    remaining = []
    for _ in range(3):
        status, head, _ = await rest(sim.api_url + "/users/@me", auth(sim))
        assert status == 200
        assert head["x-ratelimit-limit"] == "3"
        remaining.append(int(head["x-ratelimit-remaining"]))
        for name in ("x-ratelimit-reset", "x-ratelimit-reset-after", "x-ratelimit-bucket"):
            assert name in head
    assert remaining == [2, 1, 0]
    status, head, body = await rest(sim.api_url + "/users/@me", auth(sim))
    assert status == 429
    assert head["content-type"] == "application/json"
    d = json.loads(body)
    assert d["message"] == "You are being rate limited." and d["global"] is False
    assert 0 < d["retry_after"] <= 30
    assert head["x-ratelimit-remaining"] == "0" and head["x-ratelimit-scope"] == "user"
    assert int(head["retry-after"]) >= 1 and float(head["x-ratelimit-reset-after"]) > 0
    snap = sim.stats.snapshot()
    assert snap["total"]["rest_rate_limited"] == 1 and snap["total"]["rest_requests"] == 4


async def test_non_get_is_405_and_unknown_is_404(sim):
    status, head, body = await rest(sim.api_url + "/gateway/bot", auth(sim), method="POST")
    assert status == 405 and head["content-type"] == "application/json"
    status, _, _ = await rest(f"http://{sim.base}/api/v6/gateway")
    assert status == 404
    status, _, body = await rest(sim.url)  # the gateway path without an upgrade
    assert status == 426 and "WebSocket" in json.loads(body)["message"]
