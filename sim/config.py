"""Simulator settings: one dataclass, shared by the Python API and the CLI."""

from __future__ import annotations

import base64
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

BOT_ID = 123456789012345678
"""The simulated bot user's (and application's) id."""

DEFAULT_TOKEN = (base64.b64encode(str(BOT_ID).encode()).decode().rstrip("=")
                 + ".GsimUA.c2ltdWxhdG9yLWJvdC10b2tlbi1zZWNyZXQ")
"""A realistic-format token: base64(bot id) . timestamp . hmac, as hikari expects."""

GUILD_SIZES = ("small", "medium", "large", "mixed")
GUILD_EVENT_KINDS = ("MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_REACTION_ADD", "TYPING_START")
"""The event types the shared guild stream can carry (see `sim.guild_events`)."""
COMPRESSIONS = ("zlib-stream", "zstd-stream")


def _opt(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - mirrors argparse's name
    return field(default=default, metadata={"help": help, **kw})


@dataclass(slots=True)
class SimConfig:
    """Every knob of the simulator. Each field is also a ``--kebab-case`` CLI option."""

    host: str = _opt("127.0.0.1", "interface to bind")
    port: int = _opt(0, "TCP port for REST, gateway and admin API (0 = pick a free one)")
    tls_cert: str | None = _opt(None, "PEM certificate chain: serve wss:// and https:// instead of ws:// and http://")
    tls_key: str | None = _opt(None, "PEM private key for --tls-cert (default: in the certificate file)")
    token: str = _opt(DEFAULT_TOKEN, "the accepted bot token (without the 'Bot ' prefix)")
    shards: int = _opt(1, "recommended shard count returned by GET /gateway/bot")
    max_concurrency: int = _opt(1, "identify buckets (session_start_limit.max_concurrency)")
    identify_window: float = _opt(5.0, "seconds between two Identifies of the same bucket")
    identify_violation_delay: float = _opt(0.0, "seconds before op 9 answers an Identify that broke the window")
    session_limit: int = _opt(1000, "daily session start budget (session_start_limit.total)")
    session_remaining: int | None = _opt(None, "starting session_start_limit.remaining (default: the limit)")
    session_reset_after: float = _opt(86400.0, "seconds until the session budget resets")
    session_ttl: float = _opt(120.0, "seconds a disconnected session stays resumable")
    heartbeat_interval: int = _opt(41250, "heartbeat_interval in Hello, in milliseconds")
    heartbeat_grace: float | None = _opt(None, "seconds without a client heartbeat before close 4009 "
                                               "(default 2x interval)")
    guilds_per_shard: int = _opt(2, "guilds per recommended shard (the bot's guild count is shards x this)")
    guild_size: str = _opt("small", "GUILD_CREATE size: small (~3 KB), medium (~100 KB), large (~1 MB) or mixed",
                           choices=GUILD_SIZES)
    max_guilds_per_shard: int = _opt(2500, "a session holding more guilds is closed with 4011")
    recommended_guilds_per_shard: int = _opt(1000, "GET /gateway/bot recommends one shard per this many guilds "
                                                   "(as Discord does), or --shards if that is more")
    shard_multiple: int = _opt(1, "num_shards must be a multiple of this (large-bot sharding), else 4010")
    events_per_second: float = _opt(0.0, "steady dispatch stream per session "
                                         "(MESSAGE_CREATE, PRESENCE_UPDATE, TYPING_START)")
    guild_events_per_second: float = _opt(0.0, "one shared MESSAGE_CREATE stream for the whole bot, spread over all "
                                                "its guilds: each event goes to every session (of any shard count) "
                                                "whose shard routes its guild (0 = off; changeable while running)")
    guild_event_kinds: str = _opt("MESSAGE_CREATE", "comma-separated event types the shared guild stream rotates "
                                                     "through: MESSAGE_CREATE, MESSAGE_UPDATE, MESSAGE_REACTION_ADD, "
                                                     "TYPING_START (the last three carry no creation id; their unique "
                                                     "snowflake is in id, message_id and user_id)")
    guild_event_id_skew: float = _opt(0.0, "seconds a shared stream MESSAGE_CREATE's id may predate its dispatch "
                                           "(random): ids reach the sessions out of order")
    guild_event_jitter: float = _opt(0.0, "each session receives each shared stream event after a random delay of up "
                                          "to this many seconds (in order within the session)")
    dm_fraction: float = _opt(0.05, "share of the stream sent as DMs (to shard 0 only)")
    flood: bool = _opt(False, "after READY, flood MESSAGE_CREATE as fast as the client reads (benchmarks)")
    flood_delay: float = _opt(0.0, "seconds after READY before the flood starts")
    flood_replay: bool = _opt(False, "zlib-stream floods replay one pre-compressed segment, so the sim costs almost "
                                     "nothing; its sequence numbers repeat and are not replayable "
                                     "(client benchmarks only)")
    zlib_level: int = _opt(6, "zlib-stream compression level (1 is cheaper for floods)")
    zlib_chunk: int = _opt(0, "split zlib-stream messages into WebSocket messages of at most this many bytes "
                              "(0 = never)")
    replay_buffer: int = _opt(10000, "dispatches kept per session for Resume replay")
    privileged_intents: int = _opt(0, "privileged intents the application may use (bitmask; 33026 = all three)")
    strict_intents: bool = _opt(True, "close 4013 on undocumented intent bits")
    strict_resume_url: bool = _opt(False, "answer a Resume sent to the main gateway URL with op 9 "
                                          "(it is always counted)")
    takeover_linger: float = _opt(30.0, "after a Resume takes a session from a connection that is still open, the old "
                                        "connection gets close 4000 but is read for this many seconds more (or until "
                                        "its client answers the close), counting each payload it still sends "
                                        "(frames_after_takeover); then it is dropped")
    reconnect_close_after: float = _opt(5.0, "after a chaos op 7, close with 4000 if the client has not gone")
    rate_limit_frames: int = _opt(120, "client frames allowed per rate-limit window before close 4008")
    rate_limit_window: float = _opt(60.0, "gateway send rate-limit window in seconds")
    member_chunk_interval: float = _opt(30.0, "seconds between two all-member requests for the same guild")
    rest_rate_limit: int = _opt(50, "REST requests per rest-rate-window before 429")
    rest_rate_window: float = _opt(1.0, "REST rate-limit window in seconds")
    http_request_timeout: float = _opt(10.0, "seconds an HTTP request may take to arrive whole (head and body), "
                                             "counted from its first byte, or from connecting for the first request; "
                                             "then 408 and the connection is closed (idle keep-alive connections stay)")
    # chaos at connect and close time (plain fields: a test may also change them on a running simulator)
    refuse_connections: int = _opt(0, "drop the next N gateway connections during the WebSocket handshake, without "
                                      "an answer (a failed connect); counts down as it refuses")
    refuse_resume_connections: int = _opt(0, "drop the next N connections to resume_gateway_url the same way, and "
                                             "only those (its host is unreachable while the main gateway URL "
                                             "answers); counts down as it refuses")
    silent_handshake: bool = _opt(False, "accept gateway connections but never answer the WebSocket handshake "
                                         "(a connect timeout)")
    ignore_close: bool = _opt(False, "never answer a client's close frame and drop what it sends after it, "
                                     "leaving the TCP connection open (a close handshake timeout)")

    def __post_init__(self) -> None:
        problems = []
        if self.shards < 1:
            problems.append("shards must be >= 1")
        if self.max_concurrency < 1:
            problems.append("max_concurrency must be >= 1")
        if self.identify_window < 0 or self.session_ttl < 0 or self.takeover_linger < 0:
            problems.append("identify_window, session_ttl and takeover_linger must be >= 0")
        if self.session_limit < 0:
            problems.append("session_limit must be >= 0")
        if self.session_remaining is not None and not 0 <= self.session_remaining <= self.session_limit:
            problems.append("session_remaining must be between 0 and session_limit")
        if self.heartbeat_interval < 1:
            problems.append("heartbeat_interval must be >= 1 ms")
        if self.guilds_per_shard < 0 or self.events_per_second < 0 or self.guild_events_per_second < 0:
            problems.append("guilds_per_shard, events_per_second and guild_events_per_second must be >= 0")
        kinds = self.guild_event_kinds.split(",")
        if not kinds or not set(kinds) <= set(GUILD_EVENT_KINDS):
            problems.append(f"guild_event_kinds must be a comma-separated list of {', '.join(GUILD_EVENT_KINDS)}")
        if not (self.guild_event_id_skew >= 0 and self.guild_event_jitter >= 0):
            problems.append("guild_event_id_skew and guild_event_jitter must be >= 0")
        if self.recommended_guilds_per_shard < 1:
            problems.append("recommended_guilds_per_shard must be >= 1")
        if self.guild_size not in GUILD_SIZES:
            problems.append(f"guild_size must be one of {', '.join(GUILD_SIZES)}")
        if not 0 <= self.dm_fraction <= 1:
            problems.append("dm_fraction must be between 0 and 1")
        if not 0 <= self.zlib_level <= 9:
            problems.append("zlib_level must be between 0 and 9")
        if self.token.startswith("Bot ") or not self.token:
            problems.append("token must be the bare token, without the 'Bot ' prefix")
        if self.rate_limit_frames < 1 or self.rest_rate_limit < 1:
            problems.append("rate limits must be >= 1")
        if not self.http_request_timeout > 0:
            problems.append("http_request_timeout must be > 0")
        problems += [f"{f.name} must be a finite number" for f in dataclasses.fields(self)
                     if isinstance(getattr(self, f.name), float) and not math.isfinite(getattr(self, f.name))]
        problems += [f"{name} must be >= 0" for name in ("refuse_connections", "refuse_resume_connections")
                     if getattr(self, name) < 0]
        if problems:
            raise ValueError("invalid simulator config: " + "; ".join(problems))

    @property
    def grace(self) -> float:
        """Seconds without a heartbeat before the connection is closed with 4009."""
        return self.heartbeat_grace if self.heartbeat_grace is not None else 2 * self.heartbeat_interval / 1000

    def __repr__(self) -> str:  # never show the token
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.name != "token"
        )
        return f"SimConfig({shown}, token=<redacted>)"
