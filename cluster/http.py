"""The supervisor's small HTTP endpoint: /metrics, /healthz, /readyz, /status, the status page /, POST /restart and
POST /reshard.

Bound to 127.0.0.1 by default. The read-only endpoints are open (probes, Prometheus). The one
that acts, ``POST /restart?rolling=1``, is off unless an HTTP token is configured, and then
needs ``Authorization: Bearer <token>`` and a Host header naming this server (the bind address,
a loopback name or ``http_allowed_hosts``), so that a web page cannot reach it through DNS
rebinding. ``POST /reshard[?shards=N]`` starts a live reshard under the same rules (202, or 409 with the reason it
was refused). At most ``http_max_connections`` connections are open at once, each for at most
``http_timeout`` seconds per step, so idle clients cannot use up the file descriptors that
worker restarts need.

``/`` is a live status page for people (``/status.js`` and ``/status.css`` beside it, package data in
``cluster/static``): it polls ``/status`` and redraws in place. It loads nothing from elsewhere, and every answer
carries a Content-Security-Policy that allows only this server's own script, style and ``/status``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from importlib import resources
from typing import Protocol
from urllib.parse import parse_qs

from cluster.config import ClusterConfig
from cluster.metrics import MetricsPage
from cluster.reshard import ReshardRefused
from cluster.snapshot import ClusterSnapshot, ReshardSnapshot

__all__ = ["serve_http"]

log = logging.getLogger(__name__)
REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 500: "Internal Server Error",
           503: "Service Unavailable"}
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
STATIC = {"/": ("status.html", "text/html; charset=utf-8"),
          "/status.js": ("status.js", "text/javascript; charset=utf-8"),
          "/status.css": ("status.css", "text/css; charset=utf-8")}
"""The status page's routes: (file in ``cluster/static``, content type)."""
SECURITY_HEADERS = ("Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "
                    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
                    "frame-ancestors 'none'\r\nX-Content-Type-Options: nosniff\r\n")
"""On every answer: a page may run only this server's own script and style and fetch only from it."""

Answer = tuple[int, str, bytes]


class Served(Protocol):
    """What the endpoint needs of a supervisor: its config, snapshots to show, and the one action."""

    config: ClusterConfig

    def snapshot(self) -> ClusterSnapshot: ...

    def rolling_restart(self) -> bool: ...

    async def reshard(self, shards: int | None = None) -> ReshardSnapshot: ...


def host_name(value: str) -> str:
    """The name in a Host header, without the port: ``[::1]:9100`` -> ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


class Endpoint:
    """Routes the requests of one supervisor's HTTP server."""

    def __init__(self, sup: Served, host: str, token: str | None) -> None:
        cfg = sup.config
        self.sup = sup
        self._token = token.encode() if token else None
        extra = {h.strip().lower() for h in (cfg.http_allowed_hosts or "").split(",") if h.strip()}
        self.allowed_hosts = LOOPBACK_NAMES | {host.lower()} | extra
        self.metrics = MetricsPage(sup.snapshot, cfg.metrics_cache_interval)
        static = resources.files("cluster").joinpath("static")
        self.static = {path: (ctype, static.joinpath(name).read_bytes()) for path, (name, ctype) in STATIC.items()}

    async def route(self, method: str, target: str, headers: dict[str, str]) -> Answer:
        """Answer one request: (status, content type, body)."""
        path, _, query = target.partition("?")
        if path == "/metrics" and method == "GET":
            return 200, "text/plain; version=0.0.4; charset=utf-8", await self.metrics.get()
        if path == "/healthz" and method == "GET":
            problems = self.sup.snapshot().problems
            if problems:
                return 503, "text/plain", ("\n".join(problems) + "\n").encode()
            return 200, "text/plain", b"ok\n"
        if path == "/readyz" and method == "GET":
            snap = self.sup.snapshot()
            text = f"{snap.active}/{len(snap.shards)} shards active\n"
            if not snap.coordinator_up:
                text = "coordinator unavailable: identifies wait\n" + text
            return (200 if snap.ready else 503), "text/plain", text.encode()
        if path == "/status" and method == "GET":
            return 200, "application/json", json.dumps(self.sup.snapshot().status()).encode()
        if path in self.static and method == "GET":
            return 200, *self.static[path]
        if path == "/restart":
            return self.restart(method, query, headers)
        if path == "/reshard":
            return await self.reshard(method, query, headers)
        return 404, "text/plain", b"not found\n"

    def _refused(self, path: str, method: str, headers: dict[str, str]) -> Answer | None:
        """Why a request to an endpoint that acts is refused (None: it may act)."""
        if method != "POST":
            return 405, "text/plain", b"use POST\n"
        if self._token is None:
            extra = ", or send SIGHUP to the supervisor" if path == "/restart" else ""
            return 403, "text/plain", (f"POST {path} is off: configure an HTTP token (CLUSTER_HTTP_TOKEN or "
                                       f"--http-token-file){extra}\n").encode()
        if host_name(headers.get("host", "")) not in self.allowed_hosts:
            return 403, "text/plain", b"this Host header is not accepted (see --http-allowed-hosts)\n"
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode(), self._token):
            return 401, "text/plain", b"a valid Authorization: Bearer <token> header is required\n"
        return None

    async def reshard(self, method: str, query: str, headers: dict[str, str]) -> Answer:
        if (refused := self._refused("/reshard", method, headers)) is not None:
            return refused
        values = parse_qs(query, keep_blank_values=True).get("shards")
        shards = None
        if values is not None:
            if len(values) != 1 or not values[0].isdigit() or not 0 < int(values[0]) <= 1_000_000:
                return 400, "text/plain", b"shards must be one positive whole number: POST /reshard?shards=N\n"
            shards = int(values[0])
        try:
            snap = await self.sup.reshard(shards)
        except ReshardRefused as exc:
            return 409, "text/plain", f"reshard refused: {exc}\n".encode()
        return 202, "application/json", json.dumps(snap.status()).encode()

    def restart(self, method: str, query: str, headers: dict[str, str]) -> Answer:
        if (refused := self._refused("/restart", method, headers)) is not None:
            return refused
        if parse_qs(query, keep_blank_values=True).get("rolling") != ["1"]:
            return 400, "text/plain", b"only rolling restarts are supported: POST /restart?rolling=1\n"
        if self.sup.rolling_restart():
            return 202, "text/plain", b"rolling restart started\n"
        return 409, "text/plain", b"a rolling restart is already running\n"


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """Method, target and headers (names lower-cased) of a request head; ValueError if malformed."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError("malformed header line")
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


async def serve_http(sup: Served, host: str, port: int,
                     token: str | None = None) -> tuple[asyncio.AbstractServer, str]:
    """Start the server; return it and its base URL (``port`` 0 picks a free port).

    ``token`` enables ``POST /restart`` (see the module docstring)."""
    cfg = sup.config
    endpoint = Endpoint(sup, host, token)
    limit, timeout = cfg.http_max_connections, cfg.http_timeout
    open_connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_connections
        if open_connections >= limit:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n"
                         b"Connection: close\r\nRetry-After: 1\r\n\r\ntoo many connections\n")
            writer.close()
            return
        open_connections += 1
        try:
            await respond(reader, writer)
        finally:
            open_connections -= 1
            writer.close()

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(timeout):
                head = await reader.readuntil(b"\r\n\r\n")
            status, ctype, body = await endpoint.route(*_parse_head(head))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            status, ctype, body = 400, "text/plain", b"bad request\n"
        except Exception:
            log.exception("HTTP handler failed")
            status, ctype, body = 500, "text/plain", b"internal error\n"
        extra = ("WWW-Authenticate: Bearer\r\n" if status == 401 else "") + SECURITY_HEADERS
        writer.write(f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
                     f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n".encode() + body)
        try:
            async with asyncio.timeout(timeout):
                await writer.drain()
        except TimeoutError:
            writer.transport.abort()  # a client that does not read its answer
        except ConnectionError:
            pass

    server = await asyncio.start_server(handle, host, port)
    sock_port = server.sockets[0].getsockname()[1]
    return server, f"http://{host}:{sock_port}"
