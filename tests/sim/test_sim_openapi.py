"""Every REST answer of the simulator validates against Discord's published OpenAPI schema.

The schema is a subset of discord/discord-api-spec (MIT; the 200 responses of the GETs the sim serves), copied
beside this file from the team's reference docs. Each route the sim serves is called over a real socket and its
body is validated, `$ref`s and formats included, against the 200 response schema of that route in the spec; the
rate-limit headers the spec lists are checked for presence and type.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from sim_client import rest

from sim import rest as sim_rest
from sim import traffic

SPEC_PATH = Path(__file__).with_name("discord-openapi-subset.json")
SPEC_URI = "urn:discord-openapi-subset"


def _spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())


formats = jsonschema.FormatChecker()
# OpenAPI's own formats, which jsonschema does not know: check what they promise.
formats.checks("int32")(lambda v: not isinstance(v, int) or -2**31 <= v < 2**31)
formats.checks("int64")(lambda v: not isinstance(v, int) or -2**63 <= v < 2**63)
formats.checks("snowflake")(lambda v: not isinstance(v, str) or (v.isdigit() and int(v) < 2**64))
formats.checks("uri")(lambda v: not isinstance(v, str) or bool(urlsplit(v).scheme and urlsplit(v).netloc))


def validator(spec: dict[str, Any], route: str) -> jsonschema.Draft202012Validator:
    """A validator for the 200 body of `route`; `#/...` references resolve inside the spec document."""
    registry = Registry().with_resource(SPEC_URI, DRAFT202012.create_resource(spec))
    pointer = "/paths/" + route.replace("~", "~0").replace("/", "~1") + "/content/application~1json/schema"
    return jsonschema.Draft202012Validator({"$ref": f"{SPEC_URI}#{pointer}"}, registry=registry,
                                           format_checker=formats)


def header_types(spec: dict[str, Any], route: str) -> dict[str, str]:
    """Header name -> JSON type, for the headers the spec lists on the route's 200 response."""
    out = {}
    for name, header in spec["paths"][route].get("headers", {}).items():
        if "$ref" in header:
            header = spec["components"]["headers"][header["$ref"].rsplit("/", 1)[1]]
        out[name] = header["schema"]["type"]
    return out


PARSERS = {"integer": int, "number": float, "string": str}


def test_the_sim_serves_exactly_the_routes_of_the_spec():
    assert set(sim_rest.ROUTES) == set(_spec()["paths"])


@pytest.mark.parametrize("route", sorted(sim_rest.ROUTES))
async def test_rest_answer_validates_against_openapi(make_sim, route):
    sim = await make_sim(shards=4, guilds_per_shard=3)
    spec = _spec()
    status, head, body = await rest(sim.api_url + route, {"Authorization": f"Bot {sim.token}"})
    assert status == 200 and head["content-type"] == "application/json"
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
              for e in validator(spec, route).iter_errors(json.loads(body))]
    assert errors == [], f"GET {route} does not match the spec:\n" + "\n".join(errors)
    for name, kind in header_types(spec, route).items():
        PARSERS[kind](head[name.lower()])  # present, and of the declared type


def test_validation_is_not_vacuous():
    """The same validators reject an answer that lacks a required field or has a wrong type."""
    spec = _spec()
    app = {k: v for k, v in traffic.APPLICATION.items() if k != "flags_new"}
    assert not validator(spec, "/applications/@me").is_valid(app)
    assert not validator(spec, "/users/@me").is_valid(dict(traffic.BOT_USER, id=123))
    assert not validator(spec, "/gateway/bot").is_valid(
        {"url": "ws://x", "shards": 2**31, "session_start_limit": {"total": 1, "remaining": 1, "reset_after": 0,
                                                                   "max_concurrency": 1}})
    assert not validator(spec, "/gateway").is_valid({"url": "not a uri"})
