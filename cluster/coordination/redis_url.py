"""Coordinator URLs: checked, and shown without their password. Imports no Redis client.

``redis://[[user]:password@]host[:port][/db]``, or ``rediss://`` for TLS. The URL may hold the
password of a shared Redis, so everything that logs, raises or shows a coordinator URL goes
through :func:`redacted_url`.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["SCHEMES", "redacted_url", "url_problem"]

SCHEMES = ("redis", "rediss")
_HIDDEN = "***"


def redacted_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (an unparsable URL is not shown at all)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None and "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    # "user:password" keeps the user; a lone "secret@" may be a password written without its colon
    shown = f"{parts.username}:{_HIDDEN}" if ":" in userinfo and parts.username else _HIDDEN
    if ":" in userinfo and not parts.username:
        shown = f":{_HIDDEN}"
    return urlunsplit((parts.scheme, f"{shown}@{host}", parts.path, parts.query, parts.fragment))


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable coordinator URL (a one-line message without the password), or None."""
    shown = redacted_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"coordinator must be a redis:// or rediss:// URL with a valid port, got {shown!r}"
    if parts.scheme not in SCHEMES:
        return f"coordinator must be a redis:// or rediss:// URL, got {shown!r}"
    if not parts.hostname:
        return f"coordinator URL has no host: {shown!r}"
    if port == 0:
        return f"coordinator URL has port 0: {shown!r}"
    db = parts.path.strip("/")
    if db and not (db.isascii() and db.isdigit() and len(db) <= 5):
        return f"coordinator URL's database must be a number (redis://host:port/0), got {shown!r}"
    return None
