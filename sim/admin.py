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
    POST /_sim/shards/{n}/delay?seconds=0.5      delay all output
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

from .config import SimConfig
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
    def delay(self, shard: int, seconds: float) -> int: ...


def _shown(value: str) -> str:
    """A caller's value for an error message: short, whatever was sent."""
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _int(name: str, value: str) -> int:
    """A plain decimal integer (no sign, '_' or spaces), as short as any real shard number or close code."""
    if not (value.isascii() and value.isdigit() and len(value) <= 9):
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


def handle(sim: AdminHost, req: Request) -> Response:
    parts = [p for p in req.path.split("/") if p][1:]  # drop "_sim"
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
            elif action == "delay":
                n = sim.delay(shard, _float("seconds", req.arg("seconds", "0")))
            else:
                return json_response({"message": f"unknown chaos action {_shown(action)}"}, 404)
        except ValueError as err:
            return json_response({"message": str(err)}, 400)
        return json_response({"shard": shard, "action": action, "affected": n})
    return json_response({"message": "404: Not Found", "code": 0}, 404)


__all__ = ["handle"]
