"""Exit codes of ``python -m cluster run``, and the gateway close codes that map to them."""

from __future__ import annotations

import enum

from cluster.error import ClusterExit

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


_CLOSE = {
    4004: (ExitCode.AUTHENTICATION_FAILED, "authentication failed (4004): the bot token is invalid or was reset"),
    4010: (ExitCode.SHARDING_REJECTED, "invalid shard (4010): Discord refused this shard count; "
                                       "large bots must use a multiple of their assigned number"),
    4011: (ExitCode.SHARDING_REJECTED, "sharding required (4011): a shard would hold too many guilds; "
                                       "use more shards (or leave --shards unset)"),
    4012: (ExitCode.SHARDING_REJECTED, "invalid API version (4012)"),
    4013: (ExitCode.DISALLOWED_INTENTS, "invalid intents (4013): the intents value is malformed"),
    4014: (ExitCode.DISALLOWED_INTENTS, "disallowed intents (4014): enable the privileged intents in the "
                                       "Developer Portal or remove them from --intents"),
}


def for_close_code(code: int | None) -> tuple[ExitCode, str]:
    """The exit code and plain-English reason for a fatal gateway close code."""
    return _CLOSE.get(code or 0, (ExitCode.ERROR, f"fatal gateway close code {code}"))


