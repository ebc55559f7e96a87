"""A Discord gateway shard with twilight-gateway's feature set: see `Shard`.

```python
from shard import Shard, ShardId, Intents
shard = Shard(ShardId.ONE, token, Intents.GUILD_MESSAGES)
```
"""

from .close_codes import CloseCode, CloseFrame
from .config import Config, Token, certifi_ssl_context, default_ssl_context
from .error import ErrorKind, GatewayError
from .event import Dispatch, Event
from .event_type import EventTypeFlags
from .id import ShardId, bucket
from .inflater import InflateError
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
    "Shard", "ShardId", "Config", "Intents", "EventTypeFlags", "Event", "Dispatch", "CloseFrame", "CloseCode", "Session",
    "ShardState", "GatewayError", "ErrorKind", "InMemoryQueue", "Queue", "UpdatePresence", "RequestGuildMembers",
    "UpdateVoiceState", "RequestSoundboardSounds", "Activity", "Hello", "Ready", "Resumed", "InvalidSession",
    "Identify", "IdentifyProperties", "Resume", "Latency", "CommandRatelimiter", "MessageSender", "Token",
    "InflateError", "bucket", "create_recommended", "fetch_gateway_bot", "run", "default_ssl_context",
    "certifi_ssl_context",
]
