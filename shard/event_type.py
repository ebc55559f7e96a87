"""EventTypeFlags: one bit per gateway event name, used to skip events before their payload is decoded."""

from __future__ import annotations

import enum
from functools import reduce

__all__ = ["EventTypeFlags", "DISPATCH_NAMES", "flag_for_name", "names_for_flags"]

# Every documented dispatch name (`t`), plus twilight's synthetic GATEWAY_* events for non-dispatch opcodes.
# Members are created from this tuple with consecutive bits, so no two names can share a bit.
_NAMES: tuple[str, ...] = (
    "GATEWAY_CLOSE", "GATEWAY_HEARTBEAT", "GATEWAY_HEARTBEAT_ACK", "GATEWAY_HELLO",
    "GATEWAY_INVALID_SESSION", "GATEWAY_RECONNECT",
    "READY", "RESUMED",
    "APPLICATION_COMMAND_PERMISSIONS_UPDATE",
    "AUTO_MODERATION_RULE_CREATE", "AUTO_MODERATION_RULE_UPDATE", "AUTO_MODERATION_RULE_DELETE",
    "AUTO_MODERATION_ACTION_EXECUTION",
    "CHANNEL_CREATE", "CHANNEL_UPDATE", "CHANNEL_DELETE", "CHANNEL_PINS_UPDATE", "CHANNEL_INFO",
    "THREAD_CREATE", "THREAD_UPDATE", "THREAD_DELETE", "THREAD_LIST_SYNC", "THREAD_MEMBER_UPDATE",
    "THREAD_MEMBERS_UPDATE",
    "ENTITLEMENT_CREATE", "ENTITLEMENT_UPDATE", "ENTITLEMENT_DELETE",
    "GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE", "GUILD_AUDIT_LOG_ENTRY_CREATE", "GUILD_BAN_ADD",
    "GUILD_BAN_REMOVE", "GUILD_EMOJIS_UPDATE", "GUILD_STICKERS_UPDATE", "GUILD_INTEGRATIONS_UPDATE",
    "GUILD_MEMBER_ADD", "GUILD_MEMBER_REMOVE", "GUILD_MEMBER_UPDATE", "GUILD_MEMBERS_CHUNK",
    "GUILD_ROLE_CREATE", "GUILD_ROLE_UPDATE", "GUILD_ROLE_DELETE",
    "GUILD_SCHEDULED_EVENT_CREATE", "GUILD_SCHEDULED_EVENT_UPDATE", "GUILD_SCHEDULED_EVENT_DELETE",
    "GUILD_SCHEDULED_EVENT_USER_ADD", "GUILD_SCHEDULED_EVENT_USER_REMOVE",
    "GUILD_SOUNDBOARD_SOUND_CREATE", "GUILD_SOUNDBOARD_SOUND_UPDATE", "GUILD_SOUNDBOARD_SOUND_DELETE",
    "GUILD_SOUNDBOARD_SOUNDS_UPDATE", "SOUNDBOARD_SOUNDS",
    "INTEGRATION_CREATE", "INTEGRATION_UPDATE", "INTEGRATION_DELETE",
    "INTERACTION_CREATE",
    "INVITE_CREATE", "INVITE_DELETE",
    "MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE", "MESSAGE_DELETE_BULK",
    "MESSAGE_REACTION_ADD", "MESSAGE_REACTION_REMOVE", "MESSAGE_REACTION_REMOVE_ALL",
    "MESSAGE_REACTION_REMOVE_EMOJI", "MESSAGE_POLL_VOTE_ADD", "MESSAGE_POLL_VOTE_REMOVE",
    "PRESENCE_UPDATE",
    "RATE_LIMITED",
    "STAGE_INSTANCE_CREATE", "STAGE_INSTANCE_UPDATE", "STAGE_INSTANCE_DELETE",
    "SUBSCRIPTION_CREATE", "SUBSCRIPTION_UPDATE", "SUBSCRIPTION_DELETE",
    "TYPING_START",
    "USER_UPDATE",
    "VOICE_CHANNEL_EFFECT_SEND", "VOICE_CHANNEL_STATUS_UPDATE", "VOICE_CHANNEL_START_TIME_UPDATE",
    "VOICE_STATE_UPDATE", "VOICE_SERVER_UPDATE",
    "WEBHOOKS_UPDATE",
)

DISPATCH_NAMES: frozenset[str] = frozenset(n for n in _NAMES if not n.startswith("GATEWAY_"))


def _groups(flags: type[enum.IntFlag]) -> dict[str, int]:
    def pick(*names: str) -> int:
        return reduce(lambda acc, n: acc | flags[n].value, names, 0)

    return {
        "GUILDS": pick(
            "CHANNEL_CREATE", "CHANNEL_UPDATE", "CHANNEL_DELETE", "CHANNEL_PINS_UPDATE", "CHANNEL_INFO",
            "GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE", "GUILD_ROLE_CREATE", "GUILD_ROLE_UPDATE",
            "GUILD_ROLE_DELETE", "STAGE_INSTANCE_CREATE", "STAGE_INSTANCE_UPDATE", "STAGE_INSTANCE_DELETE",
            "THREAD_CREATE", "THREAD_UPDATE", "THREAD_DELETE", "THREAD_LIST_SYNC", "THREAD_MEMBER_UPDATE",
            "THREAD_MEMBERS_UPDATE", "VOICE_CHANNEL_STATUS_UPDATE", "VOICE_CHANNEL_START_TIME_UPDATE"),
        "GUILD_MESSAGES": pick("MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE", "MESSAGE_DELETE_BULK"),
        "GUILD_MESSAGE_REACTIONS": pick(
            "MESSAGE_REACTION_ADD", "MESSAGE_REACTION_REMOVE", "MESSAGE_REACTION_REMOVE_ALL",
            "MESSAGE_REACTION_REMOVE_EMOJI"),
        "GUILD_MEMBERS": pick("GUILD_MEMBER_ADD", "GUILD_MEMBER_REMOVE", "GUILD_MEMBER_UPDATE",
                              "THREAD_MEMBERS_UPDATE"),
        "GUILD_MODERATION": pick("GUILD_AUDIT_LOG_ENTRY_CREATE", "GUILD_BAN_ADD", "GUILD_BAN_REMOVE"),
        "GUILD_VOICE_STATES": pick("VOICE_STATE_UPDATE"),
        "GUILD_PRESENCES": pick("PRESENCE_UPDATE"),
        "GUILD_MESSAGE_TYPING": pick("TYPING_START"),
        "GUILD_MESSAGE_POLLS": pick("MESSAGE_POLL_VOTE_ADD", "MESSAGE_POLL_VOTE_REMOVE"),
        "GATEWAY": pick("GATEWAY_CLOSE", "GATEWAY_HEARTBEAT", "GATEWAY_HEARTBEAT_ACK", "GATEWAY_HELLO",
                        "GATEWAY_INVALID_SESSION", "GATEWAY_RECONNECT"),
    }


def _build() -> type[enum.IntFlag]:
    members: list[tuple[str, int]] = [(name, 1 << bit) for bit, name in enumerate(_NAMES)]
    base = enum.IntFlag("EventTypeFlags", members, module=__name__)
    extra = _groups(base)
    extra["ALL"] = (1 << len(_NAMES)) - 1
    # Recreate with the group aliases (multi-bit values) included.
    return enum.IntFlag("EventTypeFlags", members + list(extra.items()), module=__name__)


EventTypeFlags = _build()
EventTypeFlags.__doc__ = (
    "One flag per gateway event name (dispatch `t` values plus GATEWAY_* for control opcodes), "
    "group aliases per intent (GUILDS, GUILD_MESSAGES, ...), and ALL. "
    "Combine with `|`; events not selected are skipped before their `d` is decoded."
)
EventTypeFlags.__qualname__ = "EventTypeFlags"

_BY_NAME: dict[str, int] = {name: 1 << bit for bit, name in enumerate(_NAMES)}
_ALL_VALUE: int = (1 << len(_NAMES)) - 1


def flag_for_name(name: str) -> int | None:
    """The bit for an event name, or None for a name this version does not know."""
    return _BY_NAME.get(name)


def names_for_flags(flags: int) -> frozenset[str]:
    """The event names selected by `flags`."""
    value = int(flags)
    return frozenset(name for name, bit in _BY_NAME.items() if value & bit)


def is_all(flags: int) -> bool:
    """True when every known bit is set (unknown event names are then let through too)."""
    return int(flags) & _ALL_VALUE == _ALL_VALUE
