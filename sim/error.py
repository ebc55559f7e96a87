"""The simulator's errors: a client that broke the rules of HTTP or of WebSocket framing.

The hierarchy::

    SimError                    root of every error the simulator defines
    ├── HttpError               a request the front end refuses before routing it (``status``, then close)
    └── FrameError              the client broke the WebSocket or gateway framing rules (``code``, the close code)

Both are internal: the simulator answers them on the wire and never lets them out of ``Simulator``. This module
imports nothing, so the leaf modules that raise them (``http``, ``wsframe``) stay leaves.
"""

from __future__ import annotations

__all__ = ["FrameError", "HttpError", "SimError"]


class SimError(Exception):
    """The root of the simulator's errors (see the tree above)."""


class HttpError(SimError):
    """A request the front end refuses before routing it: answered with `status` and closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class FrameError(SimError):
    """The client broke the WebSocket or gateway framing rules; `code` is the close code to send."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
