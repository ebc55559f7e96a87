"""Synthetic Discord data: guilds routed to shards, GUILD_CREATE bodies, and pre-encoded event pools."""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any, TypedDict

import msgspec

from .config import BOT_ID

_enc = msgspec.json.Encoder()
encode = _enc.encode

GUILD_BASE = 250_000_000_000
"""Guild k of the bot has id ((GUILD_BASE + k) << 22) | k, so (id >> 22) % n routes it."""

SIZES = {"small": (3, 2, 10), "medium": (120, 40, 400), "large": (500, 250, 4000)}
"""(channels, roles, members) per guild size."""

INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_GUILD_MESSAGE_TYPING = 1 << 11
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15

_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by word "
    "but not what all were we when your can said there use an each which she do how their if will up other about "
    "out many then them these so some her would make like him into time has look two more write go see number no "
    "way could people my than first water been call who oil its now find long down day did get come made may part "
    "lol gg pog :) xd ok brb afk https://example.com/abc?x=1 ```code``` \u00e9t\u00e9 \u65e5\u672c \U0001f600"
).split()

BOT_USER = {
    "id": str(BOT_ID), "username": "simbot", "discriminator": "0", "global_name": None, "avatar": None,
    "bot": True, "system": False, "mfa_enabled": False, "verified": True, "email": None, "flags": 0,
    "public_flags": 0, "premium_type": 0, "locale": "en-US", "banner": None, "accent_color": None,
    "primary_guild": None,
}
# Every field Discord's OpenAPI spec requires of a PrivateApplicationResponse (tests/sim/test_sim_openapi.py).
APPLICATION = {
    "id": str(BOT_ID), "name": "simbot", "icon": None, "description": "", "rpc_origins": [], "bot_public": True,
    "bot_require_code_grant": False, "verify_key": "00" * 32, "team": None, "flags": 0, "flags_new": "0", "summary": "",
    "type": None, "hook": True, "redirect_uris": [], "interactions_endpoint_url": None,
    "role_connections_verification_url": None, "tags": [], "explicit_content_filter": 0,
    "eligible_oauth2_scopes": ["applications.commands", "bot"],
    "owner": {k: BOT_USER[k] for k in ("id", "username", "discriminator", "avatar", "public_flags", "flags",
                                       "global_name", "primary_guild")},
    "bot": BOT_USER, "approximate_guild_count": 0, "approximate_user_install_count": 0,
    "approximate_user_authorization_count": 0,
}


def guild_id(k: int) -> int:
    return ((GUILD_BASE + k) << 22) | (k & 0x3FFFFF)


def shard_for(gid: int, num_shards: int) -> int:
    return (gid >> 22) % num_shards


def guilds_for(shard_id: int, num_shards: int, total_guilds: int) -> range:
    """Indexes k of the bot's guilds that route to shard (shard_id, num_shards)."""
    first = (shard_id - GUILD_BASE) % num_shards
    return range(first, total_guilds, num_shards)


def recommended_shards(configured: int, guilds: int, guilds_per_shard: int) -> int:
    """`GET /gateway/bot`'s `shards`: the configured count, or one shard per `guilds_per_shard` guilds once the
    bot has more (Discord recommends one per 1,000)."""
    return max(configured, -(-guilds // guilds_per_shard))


class GuildsAdded(TypedDict):
    """What `Simulator.add_guilds` (and `POST /_sim/guilds`) returns: how many guilds were `added`, the bot's
    `guilds` now, the `recommended_shards` for them, the GUILD_CREATEs sent and the sessions `closed` with 4011."""

    added: int
    guilds: int
    recommended_shards: int
    guild_creates: int
    closed: int


def size_of(k: int, mode: str) -> str:
    if mode != "mixed":
        return mode
    roll = random.Random(k).random()  # Zipf-ish: most guilds small, a few huge
    return "large" if roll < 0.01 else "medium" if roll < 0.1 else "small"


def _random_user(rng: random.Random, uid: int) -> dict[str, Any]:
    return {"id": str(uid), "username": "u%x" % rng.getrandbits(36), "discriminator": "0",
            "global_name": "Name %x" % rng.getrandbits(24), "avatar": "%032x" % rng.getrandbits(128),
            "public_flags": rng.choice((0, 64, 128, 256)), "avatar_decoration_data": None, "clan": None,
            "primary_guild": None, "collectibles": None}


def member(gid: int, i: int) -> dict[str, Any]:
    """Member i of guild gid (deterministic)."""
    rng = random.Random(gid * 1_000_003 + i)
    uid = (gid >> 8) + i + 1
    return {"user": _random_user(rng, uid), "roles": [], "nick": None, "avatar": None, "banner": None,
            "joined_at": "2024-%02d-%02dT10:00:00.000000+00:00" % (rng.randrange(1, 13), rng.randrange(1, 28)),
            "premium_since": None, "deaf": False, "mute": False, "flags": 0, "pending": False,
            "communication_disabled_until": None}


def member_count(k: int, mode: str) -> int:
    return SIZES[size_of(k, mode)][2]


@lru_cache(maxsize=4096)
def guild_create(k: int, mode: str) -> bytes:
    """The encoded `d` of GUILD_CREATE for the bot's guild k."""
    gid = guild_id(k)
    channels_n, roles_n, members_n = SIZES[size_of(k, mode)]
    rng = random.Random(gid)
    roles = [{"id": str(gid + r), "name": "@everyone" if r == 0 else f"role {r}", "color": rng.randrange(1 << 24),
              "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None}, "hoist": False,
              "icon": None, "unicode_emoji": None, "position": r, "permissions": "1071698660929",
              "managed": False, "mentionable": False, "flags": 0} for r in range(roles_n)]
    channels: list[dict[str, Any]] = [{"id": str(gid + 10_000 + c), "type": 0 if c % 5 else 2, "position": c,
                 "permission_overwrites": [], "name": f"channel-{c}", "topic": None, "nsfw": False,
                 "last_message_id": None, "rate_limit_per_user": 0, "parent_id": None, "flags": 0,
                 "bitrate": 64000, "user_limit": 0} for c in range(channels_n)]
    members = [member(gid, i) for i in range(min(members_n, 1000))]
    guild: dict[str, Any] = {
        "id": str(gid), "name": f"sim guild {k}", "icon": None, "icon_hash": None, "splash": None,
        "discovery_splash": None, "owner_id": str(BOT_ID), "afk_channel_id": None, "afk_timeout": 300,
        "widget_enabled": False, "verification_level": 0, "default_message_notifications": 0,
        "explicit_content_filter": 0, "roles": roles, "emojis": [], "features": [], "mfa_level": 0,
        "application_id": None, "system_channel_id": None, "system_channel_flags": 0, "rules_channel_id": None,
        "max_presences": None, "max_members": 500000, "vanity_url_code": None, "description": None,
        "banner": None, "premium_tier": 0, "premium_subscription_count": 0, "preferred_locale": "en-US",
        "public_updates_channel_id": None, "max_video_channel_users": 25, "max_stage_video_channel_users": 50,
        "nsfw_level": 0, "nsfw": False, "stickers": [], "premium_progress_bar_enabled": False,
        "safety_alerts_channel_id": None, "incidents_data": None,
        "joined_at": "2024-01-01T00:00:00.000000+00:00", "large": members_n > 50, "unavailable": False,
        "member_count": members_n, "voice_states": [], "members": members, "channels": channels, "threads": [],
        "presences": [], "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
        "lazy": True, "embedded_activities": [], "application_command_counts": {}, "home_header": None,
        "latest_onboarding_question_id": None, "hub_type": None, "version": 0, "inventory_settings": None,
        "region": "deprecated",
    }
    return encode(guild)


def message(rng: random.Random, gid: int | None, content: bool) -> dict[str, Any]:
    uid = rng.randrange(10**17, 10**18)
    msg = {
        "type": 0, "tts": False, "pinned": False, "mention_everyone": False, "mentions": [], "mention_roles": [],
        "timestamp": "2025-01-01T%02d:%02d:%02d.%06d+00:00" % (
            rng.randrange(24), rng.randrange(60), rng.randrange(60), rng.randrange(10**6)),
        "nonce": str(rng.randrange(10**18, 10**19)), "id": str(rng.randrange(10**18, 2 * 10**18)), "flags": 0,
        "embeds": [], "edited_timestamp": None, "components": [], "attachments": [],
        "content": " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(2, 40))) if content else "",
        "author": _random_user(rng, uid),
    }
    if gid is None:
        msg["channel_id"] = str(rng.randrange(10**17, 10**18))
        msg["channel_type"] = 1
    else:
        msg["channel_id"] = str(gid + 10_000 + rng.randrange(3))
        msg["channel_type"] = 0
        msg["guild_id"] = str(gid)
        msg["member"] = {"roles": [str(gid + r) for r in range(rng.randrange(0, 3))], "premium_since": None,
                         "pending": False, "nick": None, "mute": False, "deaf": False, "flags": 0,
                         "joined_at": "2024-%02d-%02dT10:00:00.000000+00:00" % (rng.randrange(1, 13),
                                                                               rng.randrange(1, 28)),
                         "communication_disabled_until": None, "banner": None, "avatar": None}
    return msg


def presence(rng: random.Random, gid: int) -> dict[str, Any]:
    return {"user": {"id": str(rng.randrange(10**17, 10**18))}, "guild_id": str(gid),
            "status": rng.choice(("online", "idle", "dnd", "offline")),
            "activities": [{"name": "a game", "type": 0, "created_at": 1735689600000}] if rng.random() < 0.5 else [],
            "client_status": {"desktop": "online"}}


def typing(rng: random.Random, gid: int) -> dict[str, Any]:
    uid = rng.randrange(10**17, 10**18)
    return {"channel_id": str(gid + 10_000), "guild_id": str(gid), "user_id": str(uid),
            "timestamp": 1735689600 + rng.randrange(10**6), "member": {"user": _random_user(rng, uid), "roles": [],
            "joined_at": "2024-01-01T00:00:00.000000+00:00", "deaf": False, "mute": False, "flags": 0}}


POOL_SIZE = 256


@lru_cache(maxsize=1024)
def event_pool(shard_id: int, num_shards: int, total_guilds: int, intents: int,
               dm_fraction: float) -> tuple[tuple[bytes, bytes], ...]:
    """Pre-encoded (event name, `d`) pairs for a session's steady stream, honouring intents and routing.

    Guild events only use guilds routed to this shard; DMs appear only on shard 0.
    """
    rng = random.Random(shard_id * 7919 + num_shards)
    gids = [guild_id(k) for k in guilds_for(shard_id, num_shards, total_guilds)]
    content = bool(intents & INTENT_MESSAGE_CONTENT)
    kinds = []
    if gids and intents & INTENT_GUILD_MESSAGES:
        kinds += ["MESSAGE_CREATE"] * 6
    if gids and intents & INTENT_GUILD_PRESENCES:
        kinds += ["PRESENCE_UPDATE"] * 2
    if gids and intents & INTENT_GUILD_MESSAGE_TYPING:
        kinds += ["TYPING_START"]
    dms = shard_id == 0 and bool(intents & INTENT_DIRECT_MESSAGES)
    out = []
    for _ in range(POOL_SIZE):
        if dms and (not kinds or rng.random() < dm_fraction):
            out.append((b"MESSAGE_CREATE", encode(message(rng, None, True))))
            continue
        if not kinds:
            break
        kind = rng.choice(kinds)
        gid = rng.choice(gids)
        body = (message(rng, gid, content) if kind == "MESSAGE_CREATE" else
                presence(rng, gid) if kind == "PRESENCE_UPDATE" else typing(rng, gid))
        out.append((kind.encode(), encode(body)))
    return tuple(out)


def numbered(pool: tuple[bytes, ...], first_seq: int) -> list[bytes]:
    """The flood pool's dispatches completed with consecutive sequence numbers from `first_seq`."""
    return [b"%s%d}" % (p, first_seq + i) for i, p in enumerate(pool)]


@lru_cache(maxsize=256)
def flood_pool(shard_id: int, num_shards: int, total_guilds: int, content: bool) -> tuple[bytes, ...]:
    """Pre-encoded MESSAGE_CREATE dispatch prefixes for flood mode:
    each is b'{"t":"MESSAGE_CREATE","op":0,"d":{...},"s":'."""
    rng = random.Random(shard_id + 1)
    gids: list[int | None] = [guild_id(k) for k in guilds_for(shard_id, num_shards, total_guilds)] or [None]
    return tuple(b'{"t":"MESSAGE_CREATE","op":0,"d":' + encode(message(rng, rng.choice(gids), content)) + b',"s":'
                 for _ in range(POOL_SIZE * 4))
