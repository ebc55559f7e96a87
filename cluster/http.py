"""The supervisor's small HTTP endpoint: /metrics, /healthz, /readyz, /status, POST /restart.

Bound to 127.0.0.1 by default: it exposes internals and a restart control.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

from cluster.metrics import render

if TYPE_CHECKING:
    from cluster.supervisor import Supervisor

__all__ = ["serve_http"]

log = logging.getLogger(__name__)
REASONS = {200: "OK", 202: "Accepted", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
           503: "Service Unavailable", 400: "Bad Request"}


def route(sup: Supervisor, method: str, path: str) -> tuple[int, str, bytes]:
    """Answer one request: (status, content type, body)."""
    path, _, query = path.partition("?")
    if path == "/metrics" and method == "GET":
        return 200, "text/plain; version=0.0.4; charset=utf-8", render(sup)
    if path == "/healthz" and method == "GET":
        problems = sup.health_problems()
        if problems:
            return 503, "text/plain", ("\n".join(problems) + "\n").encode()
        return 200, "text/plain", b"ok\n"
    if path == "/readyz" and method == "GET":
        active = sup.active_shards()
        ok = sup.shard_total > 0 and active == sup.shard_total and not sup.stopping
        return (200 if ok else 503), "text/plain", f"{active}/{sup.shard_total} shards active\n".encode()
    if path == "/status" and method == "GET":
        return 200, "application/json", json.dumps(sup.status()).encode()
    if path == "/restart":
        if method != "POST":
            return 405, "text/plain", b"use POST\n"
        if "rolling" not in query:
            return 400, "text/plain", b"only rolling restarts are supported: POST /restart?rolling=1\n"
        if sup.rolling_restart():
            return 202, "text/plain", b"rolling restart started\n"
        return 409, "text/plain", b"a rolling restart is already running\n"
    return 404, "text/plain", b"not found\n"


async def serve_http(sup: Supervisor, host: str, port: int) -> tuple[asyncio.AbstractServer, str]:
    """Start the server; return it and its base URL (``port`` 0 picks a free port)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, path, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            status, ctype, body = route(sup, method, path)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            status, ctype, body = 400, "text/plain", b"bad request\n"
        except Exception:  # noqa: BLE001
            log.exception("HTTP handler failed")
            status, ctype, body = 500, "text/plain", b"internal error\n"
        writer.write(f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(handle, host, port)
    sock_port = server.sockets[0].getsockname()[1]
    return server, f"http://{host}:{sock_port}"
