"""Gateway close codes and the shard's policy for each: stop, start a new session, or resume."""

from __future__ import annotations

import enum
from typing import ClassVar

import msgspec

__all__ = ["CloseCode", "CloseFrame", "CloseAction", "close_action", "close_reason"]


class CloseCode(enum.IntEnum):
    """Discord gateway close codes (RFC 6455 codes are plain ints)."""

    UNKNOWN_ERROR = 4000
    UNKNOWN_OPCODE = 4001
    DECODE_ERROR = 4002
    NOT_AUTHENTICATED = 4003
    AUTHENTICATION_FAILED = 4004
    ALREADY_AUTHENTICATED = 4005
    INVALID_SEQUENCE = 4007
    RATE_LIMITED = 4008
    SESSION_TIMED_OUT = 4009
    INVALID_SHARD = 4010
    SHARDING_REQUIRED = 4011
    INVALID_API_VERSION = 4012
    INVALID_INTENTS = 4013
    DISALLOWED_INTENTS = 4014


class CloseAction(enum.Enum):
    """What the shard does after a connection closes."""

    FATAL = "fatal"          # stop; never reconnect
    IDENTIFY = "identify"    # drop the session, reconnect to the gateway URL and Identify
    RESUME = "resume"        # keep the session, reconnect to the resume URL and Resume


class CloseFrame(msgspec.Struct, frozen=True):
    """A WebSocket close frame: `code` and `reason`."""

    code: int
    reason: str = ""

    NORMAL: ClassVar[CloseFrame]
    RESUME: ClassVar[CloseFrame]

    def ends_session(self) -> bool:
        """True for 1000/1001, which make Discord invalidate the session."""
        return self.code in (1000, 1001)


CloseFrame.NORMAL = CloseFrame(1000, "closing connection")
CloseFrame.RESUME = CloseFrame(4000, "resuming connection")

_FATAL = frozenset({CloseCode.AUTHENTICATION_FAILED, CloseCode.INVALID_SHARD, CloseCode.SHARDING_REQUIRED,
                    CloseCode.INVALID_API_VERSION, CloseCode.INVALID_INTENTS, CloseCode.DISALLOWED_INTENTS})
# Re-identify (the reference's close policy, gateway-protocol.md section 10 item 7; discord.js does the same):
# 4007 and 4009 ask for a new session, 4003 also means the session was invalidated (since 2024-08), and after
# 4005 or 4008 Discord does not say the session is still resumable.
_NEW_SESSION = frozenset({CloseCode.NOT_AUTHENTICATED, CloseCode.ALREADY_AUTHENTICATED, CloseCode.INVALID_SEQUENCE,
                          CloseCode.RATE_LIMITED, CloseCode.SESSION_TIMED_OUT})

_REASONS: dict[int, str] = {
    1000: "the gateway closed the connection normally",
    1001: "the gateway is going away",
    1006: "the connection was lost without a close frame",
    4000: "the gateway hit an unknown error",
    4001: "the gateway received an unknown opcode or an invalid payload",
    4002: "the gateway could not decode a payload (bad JSON, or over 4096 bytes)",
    4003: "a payload was sent before identifying, or the session was invalidated",
    4004: "the token is invalid: authentication failed",
    4005: "the shard identified twice on one connection",
    4007: "the sequence sent in Resume was invalid; a new session is needed",
    4008: "the shard sent commands too fast and was rate limited",
    4009: "the session timed out; a new session is needed",
    4010: "the shard number or shard count sent in Identify is invalid",
    4011: "the bot is in too many guilds for this shard count: sharding is required",
    4012: "the gateway API version is invalid",
    4013: "the intents sent in Identify are invalid",
    4014: "a privileged intent was requested that is not enabled for this application",
}


def close_action(code: int | None) -> CloseAction:
    """The shard's policy for a close by the gateway (None means no close code, as for 1006)."""
    if code in _FATAL:
        return CloseAction.FATAL
    if code in _NEW_SESSION:
        return CloseAction.IDENTIFY
    return CloseAction.RESUME


def close_reason(code: int | None) -> str:
    """A plain-English explanation of a close code."""
    if code is None:
        return _REASONS[1006]
    return _REASONS.get(code, f"the gateway closed the connection with code {code}")
