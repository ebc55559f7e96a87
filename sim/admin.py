"""The admin HTTP API under /_sim/: stats and chaos controls, for tests and for humans poking a running sim.

    GET  /_sim/stats                             accounting snapshot (JSON)
    GET  /_sim/config                            the settings (token redacted)
    POST /_sim/shards/{n}/reconnect              op 7
    POST /_sim/shards/{n}/invalidate?resumable=false   op 9
    POST /_sim/shards/{n}/zombie?on=true         stop ACKing heartbeats
    POST /_sim/shards/{n}/drop                   TCP drop, no close frame
    POST /_sim/shards/{n}/close?code=4000&reason=...
    POST /_sim/shards/{n}/heartbeat              server-sent op 1
    POST /_sim/shards/{n}/corrupt?kind=compressed|json|opcode|event
    POST /_sim/shards/{n}/pause | unpause        pause the event stream
    POST /_sim/shards/{n}/delay?seconds=0.5[&shards=16]      delay all output (of the sessions of that count)
    POST /_sim/shards/{n}/ack-delay?seconds=0.5[&shards=16]   answer heartbeats late (the sessions of that count)
    GET  /_sim/guild-events?since_id=ID          the shared guild stream: total, per guild, ids after since_id
    POST /_sim/guild-events {"count": N}         emit N events now; {"per_second": R} sets the stream's rate
    GET  /_sim/guilds                            the bot's guild count and the recommended shard count
    POST /_sim/guilds {"count": N}               the bot joins N guilds (GUILD_CREATE, or 4011 if a shard is full)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol, runtime_checkable

import msgspec

from . import traffic
from .config import SimConfig
from .guild_events import GuildEventSnapshot
from .http import Request, Response, json_response
from .stats import Stats


@runtime_checkable
class AdminHost(Protocol):
    """What the admin API reads and drives on the simulator (sim.server.Simulator): each returns how many
    connections or sessions of the shard it affected."""

    config: SimConfig
    stats: Stats

    def reconnect(self, shard: int) -> int: ...
    def invalidate(self, shard: int, resumable: bool = False) -> int: ...
    def zombie(self, shard: int, on: bool = True) -> int: ...
    def drop(self, shard: int) -> int: ...
    def close(self, shard: int, code: int, reason: str = ...) -> int: ...
    def request_heartbeat(self, shard: int) -> int: ...
    def corrupt(self, shard: int, kind: str) -> int: ...
    def pause(self, shard: int, paused: bool = True) -> int: ...
    def unpause(self, shard: int) -> int: ...
    def delay(self, shard: int, seconds: float, num_shards: int | None = None) -> int: ...
    def ack_delay(self, shard: int, seconds: float, num_shards: int | None = None) -> int: ...
    @property
    def total_guilds(self) -> int: ...
    @property
    def recommended_shards(self) -> int: ...
    def emit_guild_events(self, count: int = 1) -> list[int]: ...
    def guild_event_log(self, since_id: int | None = None) -> GuildEventSnapshot: ...
    def add_guilds(self, count: int) -> traffic.GuildsAdded: ...


def _shown(value: str) -> str:
    """A caller's value for an error message: short, whatever was sent."""
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _int(name: str, value: str, digits: int = 9) -> int:
    """A plain decimal integer (no sign, '_' or spaces) of at most `digits` digits (9: any real shard number
    or close code; 20: a snowflake)."""
    if not (value.isascii() and value.isdigit() and len(value) <= digits):
        raise ValueError(f"{name} must be a non-negative integer, got {_shown(value)}")
    return int(value)


def _float(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {_shown(value)}") from None


def _bool(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {_shown(value)}")


def _body(req: Request, example: str) -> dict[str, Any]:
    """The request's JSON object body, else ValueError naming what was expected."""
    try:
        body = msgspec.json.decode(req.body) if req.body.strip() else None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise ValueError(f"the body must be a JSON object like {example}, got invalid JSON") from None
    if not isinstance(body, dict):
        raise ValueError(f"the body must be a JSON object like {example}")
    return body


def _guild_events(sim: AdminHost, req: Request) -> Response:
    if req.method == "GET":
        since = req.arg("since_id")
        return json_response(sim.guild_event_log(None if since is None else _int("since_id", since, 20)))
    if req.method != "POST":
        return json_response({"message": "use GET or POST"}, 405)
    body = _body(req, '{"count": 10} or {"per_second": 50}')
    unknown = sorted(set(body) - {"count", "per_second"})
    if unknown or not body:
        raise ValueError(f"unknown fields {unknown}: use count and/or per_second" if unknown
                         else 'give "count" (events to emit now) and/or "per_second" (the stream\'s rate)')
    rate = body.get("per_second")
    if rate is not None and (not isinstance(rate, (int, float)) or isinstance(rate, bool)
                             or not 0 <= rate < math.inf):
        raise ValueError(f"per_second must be a finite number >= 0, got {str(rate)[:40]!r}")
    ids = sim.emit_guild_events(body["count"]) if "count" in body else []
    if rate is not None:
        sim.config.guild_events_per_second = float(rate)
    return json_response({"emitted": len(ids), "ids": [str(i) for i in ids],
                          "per_second": sim.config.guild_events_per_second})


def _guilds(sim: AdminHost, req: Request) -> Response:
    if req.method == "GET":
        return json_response({"guilds": sim.total_guilds, "recommended_shards": sim.recommended_shards})
    if req.method != "POST":
        return json_response({"message": "use GET or POST"}, 405)
    body = _body(req, '{"count": 1000}')
    if set(body) != {"count"}:
        raise ValueError('the body must be {"count": N}, the number of guilds to add')
    return json_response(sim.add_guilds(body["count"]))


def handle(sim: AdminHost, req: Request) -> Response:
    parts = [p for p in req.path.split("/") if p][1:]  # drop "_sim"
    if parts in (["guild-events"], ["guilds"]):
        try:
            return (_guild_events if parts[0] == "guild-events" else _guilds)(sim, req)
        except ValueError as err:
            return json_response({"message": str(err)}, 400)
    if parts == ["stats"] and req.method == "GET":
        return json_response(sim.stats.snapshot())
    if parts == ["config"] and req.method == "GET":
        cfg = dataclasses.asdict(sim.config)
        cfg["token"] = "<redacted>"
        return json_response(cfg)
    if len(parts) == 3 and parts[0] == "shards":
        if req.method != "POST":
            return json_response({"message": "chaos controls are POST requests"}, 405)
        try:
            shard = _int("shard", parts[1])
            action = parts[2]
            if action == "reconnect":
                n = sim.reconnect(shard)
            elif action == "invalidate":
                n = sim.invalidate(shard, _bool(req.arg("resumable"), False))
            elif action == "zombie":
                n = sim.zombie(shard, _bool(req.arg("on"), True))
            elif action == "drop":
                n = sim.drop(shard)
            elif action == "close":
                n = sim.close(shard, _int("code", req.arg("code", "4000")),
                              req.arg("reason", "closed by chaos control"))
            elif action == "heartbeat":
                n = sim.request_heartbeat(shard)
            elif action == "corrupt":
                n = sim.corrupt(shard, req.arg("kind", "compressed"))
            elif action == "pause":
                n = sim.pause(shard)
            elif action == "unpause":
                n = sim.unpause(shard)
            elif action in ("delay", "ack-delay"):  # of the sessions of one shard count, or of any
                count = req.arg("shards")
                n = (sim.delay if action == "delay" else sim.ack_delay)(
                    shard, _float("seconds", req.arg("seconds", "0")), None if count is None else _int("shards", count))
            else:
                return json_response({"message": f"unknown chaos action {_shown(action)}"}, 404)
        except ValueError as err:
            return json_response({"message": str(err)}, 400)
        return json_response({"shard": shard, "action": action, "affected": n})
    return json_response({"message": "404: Not Found", "code": 0}, 404)


__all__ = ["handle"]
