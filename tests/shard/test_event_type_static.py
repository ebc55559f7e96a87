"""EventTypeFlags has static members (type checkers and IDEs see them) equal to what the name list builds."""

import ast
import enum
import inspect
from functools import reduce

from shard import EventTypeFlags, event_type
from shard.event_type import _NAMES

# The groups as the dynamic construction defined them (before the members were written out).
_GROUPS = {
    "GUILDS": ("CHANNEL_CREATE", "CHANNEL_UPDATE", "CHANNEL_DELETE", "CHANNEL_PINS_UPDATE", "CHANNEL_INFO",
               "GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE", "GUILD_ROLE_CREATE", "GUILD_ROLE_UPDATE",
               "GUILD_ROLE_DELETE", "STAGE_INSTANCE_CREATE", "STAGE_INSTANCE_UPDATE", "STAGE_INSTANCE_DELETE",
               "THREAD_CREATE", "THREAD_UPDATE", "THREAD_DELETE", "THREAD_LIST_SYNC", "THREAD_MEMBER_UPDATE",
               "THREAD_MEMBERS_UPDATE", "VOICE_CHANNEL_STATUS_UPDATE", "VOICE_CHANNEL_START_TIME_UPDATE"),
    "GUILD_MESSAGES": ("MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE", "MESSAGE_DELETE_BULK"),
    "GUILD_MESSAGE_REACTIONS": ("MESSAGE_REACTION_ADD", "MESSAGE_REACTION_REMOVE", "MESSAGE_REACTION_REMOVE_ALL",
                                "MESSAGE_REACTION_REMOVE_EMOJI"),
    "GUILD_MEMBERS": ("GUILD_MEMBER_ADD", "GUILD_MEMBER_REMOVE", "GUILD_MEMBER_UPDATE", "THREAD_MEMBERS_UPDATE"),
    "GUILD_MODERATION": ("GUILD_AUDIT_LOG_ENTRY_CREATE", "GUILD_BAN_ADD", "GUILD_BAN_REMOVE"),
    "GUILD_VOICE_STATES": ("VOICE_STATE_UPDATE",),
    "GUILD_PRESENCES": ("PRESENCE_UPDATE",),
    "GUILD_MESSAGE_TYPING": ("TYPING_START",),
    "GUILD_MESSAGE_POLLS": ("MESSAGE_POLL_VOTE_ADD", "MESSAGE_POLL_VOTE_REMOVE"),
    "GATEWAY": ("GATEWAY_CLOSE", "GATEWAY_HEARTBEAT", "GATEWAY_HEARTBEAT_ACK", "GATEWAY_HELLO",
                "GATEWAY_INVALID_SESSION", "GATEWAY_RECONNECT"),
}


def _dynamic() -> type[enum.IntFlag]:
    """The former construction: one bit per name of _NAMES in order, then the groups and ALL."""
    members = [(name, 1 << bit) for bit, name in enumerate(_NAMES)]
    bits = dict(members)
    extra = {g: reduce(lambda acc, n: acc | bits[n], names, 0) for g, names in _GROUPS.items()}
    extra["ALL"] = (1 << len(_NAMES)) - 1
    return enum.IntFlag("EventTypeFlags", members + list(extra.items()))


def test_static_members_equal_the_dynamic_construction_from_the_name_list():
    expected = {name: m.value for name, m in _dynamic().__members__.items()}
    actual = {name: m.value for name, m in EventTypeFlags.__members__.items()}
    assert actual == expected
    assert [m.name for m in EventTypeFlags if m.value.bit_count() == 1] == list(_NAMES)  # one bit each, in order


def test_every_member_is_written_in_the_class_body():
    """What a type checker reads: a ``class EventTypeFlags`` with every member assigned in its body."""
    tree = ast.parse(inspect.getsource(event_type))
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EventTypeFlags"]
    assert classes, "EventTypeFlags is not a class statement"
    assigned = {t.id for node in classes[0].body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    assert assigned == set(EventTypeFlags.__members__)
    assert EventTypeFlags.READY | EventTypeFlags.GUILD_CREATE in EventTypeFlags.ALL
