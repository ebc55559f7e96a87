"""Typed gateway payloads: what the shard receives (Hello, Ready, ...) and sends (Identify, Resume, commands)."""

from __future__ import annotations

import enum
import platform
from typing import ClassVar, Literal

import msgspec

__all__ = [
    "OpCode", "Hello", "Ready", "Resumed", "InvalidSession", "Reconnect", "HeartbeatRequest", "HeartbeatAck",
    "Identify", "IdentifyProperties", "Resume", "Activity", "UpdatePresence", "RequestGuildMembers",
    "UpdateVoiceState", "RequestSoundboardSounds", "Command", "JSONValue", "encode_command",
    "default_identify_properties",
]

JSONValue = dict[str, object] | list[object] | str | int | float | bool | None
"""Decoded JSON: dicts, lists, str, int, float, bool or None (nested values likewise)."""


class OpCode(enum.IntEnum):
    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    PRESENCE_UPDATE = 3
    VOICE_STATE_UPDATE = 4
    RESUME = 6
    RECONNECT = 7
    REQUEST_GUILD_MEMBERS = 8
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11
    REQUEST_SOUNDBOARD_SOUNDS = 31
    REQUEST_CHANNEL_INFO = 43


# ---- received ------------------------------------------------------------------------------------

class Hello(msgspec.Struct, frozen=True):
    """op 10: `heartbeat_interval` in milliseconds."""

    heartbeat_interval: int


class Ready(msgspec.Struct, frozen=True):
    """The READY dispatch: the new session."""

    session_id: str
    resume_gateway_url: str
    v: int = 10
    user: dict[str, object] = {}
    guilds: list[dict[str, object]] = []
    shard: list[int] | None = None
    application: dict[str, object] | None = None


class Resumed(msgspec.Struct, frozen=True):
    """The RESUMED dispatch: missed events were replayed."""


class InvalidSession(msgspec.Struct, frozen=True):
    """op 9: `resumable` is the `d` boolean."""

    resumable: bool


class Reconnect(msgspec.Struct, frozen=True):
    """op 7: the gateway asks the shard to reconnect and resume."""


class HeartbeatRequest(msgspec.Struct, frozen=True):
    """op 1 from the gateway: it asks for a heartbeat now."""


class HeartbeatAck(msgspec.Struct, frozen=True):
    """op 11: the last heartbeat was received."""


# ---- sent ----------------------------------------------------------------------------------------

class IdentifyProperties(msgspec.Struct, frozen=True):
    os: str
    browser: str
    device: str


def default_identify_properties() -> IdentifyProperties:
    system = platform.system().lower() or "unknown"
    return IdentifyProperties(os=system, browser="shardstack", device="shardstack")


class Activity(msgspec.Struct, frozen=True, omit_defaults=True):
    """A bot activity: bots may set `name`, `state`, `type` and `url`."""

    name: str
    type: int = 0
    state: str | None = None
    url: str | None = None


class UpdatePresence(msgspec.Struct, frozen=True):
    """op 3 Presence Update. `since` is a Unix time in ms (or None)."""

    status: Literal["online", "dnd", "idle", "invisible", "offline"] = "online"
    activities: list[Activity] = []
    afk: bool = False
    since: int | None = None

    OP: ClassVar[int] = 3


class RequestGuildMembers(msgspec.Struct, frozen=True, omit_defaults=True):
    """op 8 Request Guild Members: either `query` (+`limit`) or `user_ids`."""

    guild_id: str
    query: str | None = None
    limit: int | None = None
    presences: bool = False
    user_ids: list[str] | str | None = None
    nonce: str | None = None

    OP: ClassVar[int] = 8

    def __post_init__(self) -> None:
        if self.query is not None and self.limit is None:
            msgspec.structs.force_setattr(self, "limit", 0)  # `limit` is required with `query`
        if (self.query is None) == (self.user_ids is None):
            raise ValueError("RequestGuildMembers needs exactly one of query or user_ids")


class UpdateVoiceState(msgspec.Struct, frozen=True):
    """op 4 Voice State Update."""

    guild_id: str
    channel_id: str | None
    self_mute: bool = False
    self_deaf: bool = False

    OP: ClassVar[int] = 4


class RequestSoundboardSounds(msgspec.Struct, frozen=True):
    """op 31 Request Soundboard Sounds."""

    guild_ids: list[str]

    OP: ClassVar[int] = 31


Command = UpdatePresence | RequestGuildMembers | UpdateVoiceState | RequestSoundboardSounds


class _Envelope(msgspec.Struct):
    op: int
    d: object


def encode_command(command: Command) -> bytes:
    """The wire form `{"op": N, "d": {...}}` of a command."""
    return msgspec.json.encode(_Envelope(type(command).OP, command))


class _Redacted:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<redacted>"


_REDACTED = _Redacted()


def _repr(shown: list[tuple[str, object]], name: str) -> str:
    return f"{name}({', '.join(f'{key}={value!r}' for key, value in shown)})"


class Identify(msgspec.Struct, frozen=True, omit_defaults=True):
    """op 2 `d`. Its repr (and rich's `__rich_repr__`, which msgspec would fill with every field) hides the token."""

    token: str
    properties: IdentifyProperties
    intents: int
    shard: list[int]
    large_threshold: int = 50
    presence: UpdatePresence | None = None
    compress: bool = False

    OP: ClassVar[int] = 2

    def __rich_repr__(self) -> list[tuple[str, object]]:
        return [("token", _REDACTED), ("intents", self.intents), ("shard", self.shard)]

    def __repr__(self) -> str:
        return _repr(self.__rich_repr__(), "Identify")


class Resume(msgspec.Struct, frozen=True):
    """op 6 `d`. Its repr (and `__rich_repr__`) hides the token."""

    token: str
    session_id: str
    seq: int

    OP: ClassVar[int] = 6

    def __rich_repr__(self) -> list[tuple[str, object]]:
        return [("token", _REDACTED), ("session_id", self.session_id), ("seq", self.seq)]

    def __repr__(self) -> str:
        return _repr(self.__rich_repr__(), "Resume")
