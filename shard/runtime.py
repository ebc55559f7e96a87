"""Running the event loop: uvloop when it is installed."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import ModuleType
from typing import TypeVar

__all__ = ["run", "new_event_loop", "HAS_UVLOOP"]

T = TypeVar("T")

_uvloop: ModuleType | None
try:
    import uvloop as _uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency, but stay usable without it
    _uvloop = None

HAS_UVLOOP = _uvloop is not None


def run(main: Coroutine[object, object, T]) -> T:
    """`asyncio.run(main)` on uvloop when installed."""
    if _uvloop is not None:
        return _uvloop.run(main)
    return asyncio.run(main)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new uvloop loop when installed, else asyncio's default."""
    if _uvloop is not None:
        return _uvloop.new_event_loop()
    return asyncio.new_event_loop()
