"""A Discord gateway shard with twilight-gateway's feature set: see `Shard`.

```python
from shard import Shard, ShardId, Intents
shard = Shard(ShardId.ONE, token, Intents.GUILD_MESSAGES)
```

Errors: every error the package defines is a `ShardError` (the tree is in `shard.error`); a shard reports
`GatewayError`, `fetch_gateway_bot` raises `RedirectRefused`.
"""

__version__ = "0.1.0"  # the release, as in pyproject.toml (tests/test_packaging.py checks)

import warnings as _warnings

from .close_codes import CloseCode, CloseFrame
from .config import Config, Token, certifi_ssl_context, default_ssl_context
from .error import ErrorKind, GatewayError, RedirectRefused, ShardError
from .event import Dispatch, Event
from .event_type import EventTypeFlags
from .id import ShardId, bucket
from .intents import Intents
from .latency import Latency
from .queue import InMemoryQueue, Queue
from .ratelimiter import CommandRatelimiter
from .recommended import create_recommended, fetch_gateway_bot
from .runtime import run
from .session import Session
from .shard import MessageSender, Shard
from .state import ShardState
from .wire import (Activity, Hello, Identify, IdentifyProperties, InvalidSession, Ready, RequestGuildMembers,
                   RequestSoundboardSounds, Resume, Resumed, UpdatePresence, UpdateVoiceState)

__all__ = [
    "Shard", "ShardId", "Config", "Intents", "EventTypeFlags", "Event", "Dispatch", "CloseFrame", "CloseCode",
    "Session",
    "ShardState", "GatewayError", "ErrorKind", "InMemoryQueue", "Queue", "UpdatePresence", "RequestGuildMembers",
    "UpdateVoiceState", "RequestSoundboardSounds", "Activity", "Hello", "Ready", "Resumed", "InvalidSession",
    "Identify", "IdentifyProperties", "Resume", "Latency", "CommandRatelimiter", "MessageSender", "Token",
    "ShardError", "RedirectRefused", "bucket", "create_recommended", "fetch_gateway_bot", "run", "default_ssl_context",
    "certifi_ssl_context",
]


def __getattr__(name: str) -> object:
    # InflateError is internal (the core reports it as GatewayError of kind COMPRESSION); the old name still imports.
    if name == "InflateError":
        _warnings.warn("shard.InflateError is internal and deprecated here: a Shard reports a corrupt stream as "
                       "GatewayError(ErrorKind.COMPRESSION); import it from shard.error if you feed an inflater "
                       "yourself", DeprecationWarning, stacklevel=2)
        from .error import InflateError
        return InflateError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
