"""The simulator's HTTP/1.1 messages: Request, Response, json_response, and parse_head for the front end.

The REST API (rest.py), the admin API (admin.py) and the front end (server.py) all speak in these types, so
this module imports nothing else of the simulator but `sim.error` (itself a leaf): it is the leaf they share
instead of importing each other.
"""

from __future__ import annotations

from typing import Any, overload
from urllib.parse import SplitResult, urlsplit

import msgspec

from .error import HttpError

_encode = msgspec.json.Encoder().encode

MAX_HEAD = 16384
MAX_BODY = 1 << 20
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 413: "Payload Too Large", 426: "Upgrade Required", 429: "Too Many Requests",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented"}


class Request:
    __slots__ = ("method", "path", "query", "headers", "body")

    def __init__(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
                 body: bytes) -> None:
        self.method, self.path, self.query, self.headers, self.body = method, path, query, headers, body

    @overload
    def arg(self, name: str) -> str | None: ...
    @overload
    def arg(self, name: str, default: str) -> str: ...
    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default


class Response:
    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # discord.py requires exactly "application/json", with no charset parameter.
    return Response(status, _encode(obj), {"Content-Type": "application/json", **(headers or {})})


def parse_head(head: str) -> tuple[str, SplitResult, str, dict[str, str], int]:
    """The method, split target, version, headers (lower-case names) and body length of one request head.

    Raises HttpError for anything the front end will not route: the connection cannot be trusted after it.
    """
    lines = head.split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
        url = urlsplit(target)  # ValueError for "http://[::1" and the like
    except ValueError:
        raise HttpError(400, "malformed request line") from None
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(400, "malformed request line: the version must be HTTP/1.0 or HTTP/1.1")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length" and headers.get(name, value) != value:  # RFC 9112 6.3: no guessing which
            raise HttpError(400, "conflicting Content-Length headers")
        headers[name] = value
    if "transfer-encoding" in headers:  # RFC 9112 6.1: a coding the server does not implement is a 501
        raise HttpError(501, "Transfer-Encoding is not supported: send the body with a Content-Length")
    raw = headers.get("content-length", "0")
    if not (raw.isascii() and raw.isdigit()):  # RFC 9110 8.6: 1*DIGIT, so no sign, no '_', no spaces
        raise HttpError(400, "Content-Length must be a non-negative decimal integer")
    length = int(raw) if len(raw) <= 9 else MAX_BODY + 1  # int() of thousands of digits is slow, then refused
    if length > MAX_BODY:
        raise HttpError(413, "request body too large")
    return method, url, version, headers, length


__all__ = ["MAX_BODY", "MAX_HEAD", "REASONS", "HttpError", "Request", "Response", "json_response", "parse_head"]
