"""Exit codes of ``python -m cluster run``, and the gateway close codes that map to them."""

from __future__ import annotations

import enum

from cluster.error import ClusterExit
from shard.close_codes import CloseCode

__all__ = ["ClusterExit", "ExitCode", "for_close_code"]


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1
    CONFIG = 2
    HANDLER_IMPORT = 3
    AUTHENTICATION_FAILED = 4  # 4004
    DISALLOWED_INTENTS = 5  # 4013, 4014
    SHARDING_REJECTED = 6  # 4010, 4011, 4012
    CRASH_LOOP = 7
    SESSION_BUDGET = 8
    HANDLER_SETUP = 9


_CLOSE: dict[int, tuple[ExitCode, str]] = {
    CloseCode.AUTHENTICATION_FAILED: (
        ExitCode.AUTHENTICATION_FAILED, "authentication failed (4004): the bot token is invalid or was reset"),
    CloseCode.INVALID_SHARD: (
        ExitCode.SHARDING_REJECTED, "invalid shard (4010): Discord refused this shard count; "
                                    "large bots must use a multiple of their assigned number"),
    CloseCode.SHARDING_REQUIRED: (
        ExitCode.SHARDING_REJECTED, "sharding required (4011): a shard would hold too many guilds; "
                                    "use more shards (or leave --shards unset)"),
    CloseCode.INVALID_API_VERSION: (ExitCode.SHARDING_REJECTED, "invalid API version (4012)"),
    CloseCode.INVALID_INTENTS: (ExitCode.DISALLOWED_INTENTS, "invalid intents (4013): the intents value is malformed"),
    CloseCode.DISALLOWED_INTENTS: (
        ExitCode.DISALLOWED_INTENTS, "disallowed intents (4014): enable the privileged intents in the "
                                     "Developer Portal or remove them from --intents"),
}


def for_close_code(code: int | None) -> tuple[ExitCode, str]:
    """The exit code and plain-English reason for a fatal gateway close code."""
    return _CLOSE.get(code or 0, (ExitCode.ERROR, f"fatal gateway close code {code}"))


