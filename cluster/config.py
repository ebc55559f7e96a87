"""Cluster configuration from flags, the environment and a TOML file.

Precedence: command-line flags, then ``CLUSTER_*`` environment variables, then the TOML
file (``--config``), then the defaults below. Every key has the same name in all three
(dashes in flags, upper case with a ``CLUSTER_`` prefix in the environment).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from typing import Any

import msgspec

from cluster.coordination.redis_url import redacted_url, url_problem
from cluster.error import ConfigError
from cluster.state import token_user_id
from shard.config import DEFAULT_API_URL
from shard.intents import Intents
from shard.queue import HOLD_TIMEOUT, IDENTIFY_INTERVAL

__all__ = ["ClusterConfig", "ConfigError", "ENV_PREFIX", "check_identify_timing", "load_config"]

ENV_PREFIX = "CLUSTER_"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_NAME_OK = re.compile(r"^[A-Za-z0-9_.-]{1,64}$").fullmatch


class ClusterConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Everything the supervisor needs. ``None`` means "ask Discord" (``GET /gateway/bot``)."""

    token_env: str = "DISCORD_TOKEN"
    """Name of the environment variable holding the bot token (the token is never a flag)."""
    handler: str | None = None
    """``module:attribute`` of the per-worker handler class or factory."""
    shards: int | None = None
    """Shard total; rounded up to a multiple of max_concurrency. None: Discord's recommendation."""
    workers: int | None = None
    shards_per_worker: int | None = None
    max_concurrency: int | None = None
    intents: int = int(Intents.GUILDS | Intents.GUILD_MESSAGES)  # 513
    gateway_url: str | None = None
    api_url: str = DEFAULT_API_URL
    compression: str | None = "zlib-stream"
    identify_window: float = IDENTIFY_INTERVAL
    identify_hold_timeout: float = HOLD_TIMEOUT
    """Seconds a granted identify slot is held until the shard reports READY or INVALID_SESSION. Must be
    longer than the shards' connect_timeout (10 s): a shard sends its Identify within that of its grant
    (connect and Hello included) or gives the slot back, and the bucket's window starts at the send."""
    budget_reserve: int | None = None
    """Identifies never spent (the safety margin). None: the shard count, at most 5% of the daily total."""
    budget_pace_below: int | None = None
    """Below this many identifies left, space them out until the reset. None: 2 x the margin."""
    state_file: str | None = None
    """Where the sessions are saved. None: ``$XDG_STATE_HOME/shardstack/<name>.json`` (``~/.local/state`` without
    XDG_STATE_HOME), ``<name>`` being cluster_name or ``bot-<user id>``: see :meth:`state_path`."""
    state_save_interval: float = 5.0
    """Seconds between saves of the sessions while running (a killed supervisor resumes from the last
    one); 0 saves only at shutdown."""
    fresh: bool = False
    """Ignore the state file: identify every shard."""
    session_ttl: float = 120.0
    http_host: str = "127.0.0.1"
    http_port: int | None = 9100
    """Port of /metrics, /healthz, /readyz and /status; None disables; 0 picks a free port."""
    http_token: str | None = None
    """Bearer token that enables ``POST /restart``; without one (or http_token_file) it answers 403.
    Never logged nor shown in reprs."""
    http_token_file: str | None = None
    """File holding http_token (first line), e.g. a systemd credential or a Docker secret."""
    http_allowed_hosts: str | None = None
    """Comma-separated Host header names that POST /restart also accepts, besides the bind address,
    localhost, 127.0.0.1 and ::1 (a DNS-rebinding page sends its own name)."""
    http_max_connections: int = 64
    """Open HTTP connections at most; more are answered 503 and closed at once."""
    http_timeout: float = 5.0
    """Seconds a client has to send its request, and to take the answer; then it is disconnected."""
    metrics_cache_interval: float = 1.0
    """Seconds a rendered /metrics page is served again (rendered off the event loop, once for
    all concurrent scrapes); 0 renders every scrape."""
    budget_refresh_interval: float = 300.0
    """Seconds between GET /gateway/bot refreshes of the session budget; 0 disables them."""
    ipc_heartbeat_interval: float = 1.0
    ipc_heartbeat_missed: int = 10
    report_interval: float = 1.0
    restart_min_alive: float = 30.0
    restart_max_failures: int = 5
    restart_backoff_base: float = 1.0
    restart_backoff_cap: float = 60.0
    shard_stuck_timeout: float = 60.0
    """A shard not Active for this long is restarted by its worker."""
    blocked_threshold: float = 0.5
    """A handler blocking the worker's event loop this long is reported."""
    shutdown_timeout: float = 10.0
    status_line: bool | None = None
    """Progress bar and live status line on stderr; None: only when stderr is a terminal."""
    log_level: str = "INFO"
    coordinator: str | None = None
    """Where identify coordination, the session budget and the sessions live: None (in this process,
    one host) or ``redis://[:password@]host:port/db`` (``rediss://`` for TLS), shared by every host of
    the bot. The password is never logged nor shown in reprs."""
    cluster_name: str | None = None
    """Namespace of this bot's keys in the coordinator, so several bots can share one Redis.
    None: derived from the bot's user id (``bot-<id>``)."""
    shard_range: str | None = None
    """``A-B``: this host runs only shards A to B (inclusive) of the cluster. None: see host_index."""
    host_index: str | int | None = None
    """This host's part (0-based) of host_count consecutive shard ranges, or ``auto``: the ordinal at the end
    of the host name (a Kubernetes StatefulSet pod ``bot-3`` is 3)."""
    host_count: int | None = None
    """How many hosts split the shards (with host_index). None with no shard_range: this host runs them all."""
    host_ttl: float = 10.0
    """Seconds a host's record in the coordinator outlives its last renewal (every second): a host killed without a
    clean stop keeps its range this long. A host restarted on the same machine (pod) waits that out."""
    assign: str = "static"
    """``static``: this host runs the shards of shard_range or host_index/host_count (or all). ``auto`` (needs
    coordinator): the shards are cut into blocks of shards_per_worker, and the live hosts share the blocks through
    leases in Redis, taking over a dead host's blocks and rebalancing when hosts join or leave
    (:mod:`cluster.leases`)."""
    lease_ttl: float = 10.0
    auto_reshard: bool = False
    """Reshard live by itself: when a shard is closed with 4011 (sharding required), and when GET /gateway/bot, asked
    every auto_reshard_interval seconds, recommends more shards than run by more than auto_reshard_margin (with a
    coordinator, every host checks and the first to begin leads the whole cluster; the others take part)."""
    auto_reshard_interval: float = 3600.0
    auto_reshard_margin: float = 0.5
    """With auto_reshard: reshard once the recommendation exceeds the running count by this fraction (0.5: 50%)."""
    reshard_cut_timeout: float = 10.0
    """Seconds a live reshard waits for every old shard to pass the cut before it switches anyway (logged)."""
    """Seconds a block's lease outlives its last renewal (renewed every lease_ttl / 3). A dead host's blocks resume
    elsewhere about this long after it died; a host that cannot renew stops its blocks a quarter of it earlier."""

    def __post_init__(self) -> None:
        problems = []
        for name in ("shards", "workers", "shards_per_worker", "max_concurrency"):
            v = getattr(self, name)
            if v is not None and v < 1:
                problems.append(f"{name} must be >= 1, got {v}")
        if self.workers is not None and self.shards_per_worker is not None:
            problems.append("give workers or shards_per_worker, not both")
        if self.compression not in (None, "zlib-stream", "zstd-stream"):
            problems.append(f"compression must be zlib-stream, zstd-stream or none, got {self.compression!r}")
        if self.handler is not None and ":" not in self.handler:
            problems.append(f"handler must look like module:attribute, got {self.handler!r}")
        if self.log_level.upper() not in _LOG_LEVELS:
            problems.append(f"log_level must be one of {', '.join(_LOG_LEVELS)}, got {self.log_level!r}")
        if self.http_port is not None and not 0 <= self.http_port <= 65535:
            problems.append(f"http_port out of range: {self.http_port}")
        for name in ("identify_window", "ipc_heartbeat_interval", "report_interval", "session_ttl"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0")
        if self.state_save_interval < 0:
            problems.append("state_save_interval must be >= 0 (0: save only at shutdown)")
        for name in ("metrics_cache_interval", "budget_refresh_interval"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        if self.http_timeout <= 0:
            problems.append("http_timeout must be > 0")
        if self.http_max_connections < 1:
            problems.append(f"http_max_connections must be >= 1, got {self.http_max_connections}")
        if self.http_token is not None and self.http_token_file is not None:
            problems.append("give http_token or http_token_file, not both")
        if self.coordinator is not None and (problem := url_problem(self.coordinator)) is not None:
            problems.append(problem)
        problems += self._host_problems()
        if self.cluster_name is not None and not _NAME_OK(self.cluster_name):
            problems.append(f"cluster_name must be 1-64 letters, digits, '-', '_' or '.', got {self.cluster_name!r}")
        if problems:
            raise ConfigError("; ".join(problems))

    def _host_problems(self) -> list[str]:
        problems = []
        if isinstance(self.host_index, str):
            text = self.host_index.strip().lower()
            if text.isdigit():
                self.host_index = int(text)
            elif text == "auto":
                self.host_index = "auto"
            else:
                problems.append(f"host_index must be a number or auto, got {self.host_index!r}")
        if self.shard_range is not None:
            from cluster.hosts import parse_shard_range  # noqa: PLC0415 - hosts imports this package's layout
            try:
                parse_shard_range(self.shard_range)
            except ConfigError as exc:
                problems.append(str(exc))
            if self.host_index is not None or self.host_count is not None:
                problems.append("give shard_range or host_index and host_count, not both")
        elif (self.host_index is None) != (self.host_count is None):
            problems.append("host_index and host_count go together")
        if self.host_ttl < 2:
            problems.append(f"host_ttl must be >= 2 (records are renewed every second), got {self.host_ttl:g}")
        if self.host_count is not None and self.host_count < 1:
            problems.append(f"host_count must be >= 1, got {self.host_count}")
        if self.assign not in ("static", "auto"):
            problems.append(f"assign must be static or auto, got {self.assign!r}")
        elif self.assign == "auto":
            if self.coordinator is None:
                problems.append("assign auto needs a coordinator (--coordinator redis://...): the leases live there")
            if self.shard_range is not None or self.host_index is not None or self.host_count is not None:
                problems.append("assign auto chooses each host's shards itself: give no shard_range, host_index "
                                "or host_count")
            if self.workers is not None:
                problems.append("assign auto cuts the shards into blocks of shards_per_worker: give that, not workers")
        if self.auto_reshard_interval <= 0 or self.auto_reshard_margin < 0 or self.reshard_cut_timeout <= 0:
            problems.append("auto_reshard_interval and reshard_cut_timeout must be > 0, auto_reshard_margin >= 0")
        if self.lease_ttl < 1:
            problems.append(f"lease_ttl must be >= 1 (leases are renewed every third of it), got {self.lease_ttl:g}")
        index, count = self.host_index, self.host_count
        if isinstance(index, int) and count is not None and not 0 <= index < count:
            problems.append(f"host_index must be 0 to host_count - 1 ({count - 1}), got {index}")
        return problems

    def host_shards(self, shard_total: int) -> range:
        """The shards this host runs out of ``shard_total`` (all of them unless shard_range or host_index/host_count
        say otherwise). ConfigError if they do not fit, or if host_index is auto and the host name has no ordinal."""
        from cluster.hosts import host_ordinal, host_range, parse_shard_range  # noqa: PLC0415
        index = host_ordinal() if self.host_index == "auto" else self.host_index
        if index is not None and self.host_count is not None and not 0 <= int(index) < self.host_count:
            raise ConfigError(f"host_index {index} (from the host name) is not below host_count {self.host_count}")
        return host_range(shard_total, shard_range=None if self.shard_range is None else parse_shard_range(
            self.shard_range), host_index=None if index is None else int(index), host_count=self.host_count)

    def __repr__(self) -> str:  # the HTTP token stays out of logs and tracebacks
        return f"ClusterConfig({', '.join(f'{k}={v!r}' for k, v in self.__rich_repr__())})"

    def __rich_repr__(self) -> Any:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name == "http_token" and value is not None:
                value = "<hidden>"
            elif name == "coordinator" and value is not None:
                value = redacted_url(value)
            yield name, value

    def http_secret(self) -> str | None:
        """The token that enables ``POST /restart`` (http_token, or read from http_token_file), or None."""
        if self.http_token_file is None:
            return (self.http_token or "").strip() or None
        try:
            with open(self.http_token_file, encoding="utf-8") as f:
                value = f.readline().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read http_token_file {self.http_token_file}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"http_token_file {self.http_token_file} is empty")
        return value

    def state_path(self, token: str, env: Mapping[str, str] | None = None) -> str:
        """The state file: state_file, or ``$XDG_STATE_HOME/shardstack/<cluster_name or bot-<user id>>.json``."""
        if self.state_file is not None:
            return self.state_file
        env = os.environ if env is None else env
        base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        name = self.cluster_name or f"bot-{token_user_id(token) or 'unknown'}"
        return os.path.join(base, "shardstack", f"{name}.json")

    def token(self, env: Mapping[str, str] | None = None) -> str:
        """The bot token from the environment variable named by ``token_env``."""
        value = (os.environ if env is None else env).get(self.token_env, "").strip()
        if not value:
            raise ConfigError(f"no bot token: set the {self.token_env} environment variable")
        return value


HELP: dict[str, str] = {
    "token_env": "environment variable that holds the bot token (the token is never a flag)",
    "handler": "per-worker handler, as module:attribute (a class or a factory)",
    "shards": "total shard count, rounded up to a multiple of max_concurrency (default: GET /gateway/bot)",
    "workers": "number of worker processes (or give --shards-per-worker)",
    "shards_per_worker": "shards per worker process, as consecutive ranges (or give --workers)",
    "max_concurrency": "identify buckets (default: session_start_limit.max_concurrency from /gateway/bot)",
    "intents": "gateway intents bitmask",
    "gateway_url": "gateway URL (default: the url from /gateway/bot); for testing against sim/",
    "api_url": "REST base URL; point it at sim/ for testing",
    "compression": "transport compression: zlib-stream, zstd-stream or none",
    "identify_window": "seconds between two identifies of the same bucket",
    "identify_hold_timeout": "seconds an identify slot is held waiting for READY or INVALID_SESSION; "
                             "must exceed the shards' connect timeout (10 s)",
    "budget_reserve": "identifies never spent: the safety margin "
                      "(default: the shard count, at most 5%% of the daily total)",
    "budget_pace_below": "below this many identifies left, space them out until the reset (default: 2x the margin)",
    "state_file": "where sessions are saved (at shutdown and while running) so that the next start resumes them "
                  "(default: $XDG_STATE_HOME/shardstack/<cluster name or bot-<user id>>.json, "
                  "~/.local/state without XDG_STATE_HOME)",
    "state_save_interval": "seconds between saves of the sessions while running, so that a killed supervisor's "
                           "successor resumes them (0: only at shutdown)",
    "fresh": "ignore the state file and identify every shard",
    "session_ttl": "seconds a saved session is considered resumable",
    "http_host": "interface of /metrics, /healthz, /readyz and /status",
    "http_port": "port of /metrics, /healthz, /readyz and /status (0 picks a free one, none disables)",
    "ipc_heartbeat_interval": "seconds between IPC heartbeats to each worker",
    "ipc_heartbeat_missed": "missed IPC heartbeats before a worker counts as stuck and is restarted",
    "report_interval": "seconds between the workers' batched session and metrics reports",
    "restart_min_alive": "a worker that dies sooner than this counts toward the crash-loop breaker",
    "restart_max_failures": "consecutive early deaths before the supervisor gives up",
    "restart_backoff_base": "first restart delay in seconds (doubles with jitter)",
    "restart_backoff_cap": "longest restart delay in seconds",
    "shard_stuck_timeout": "a shard not Active for this long is restarted by its worker",
    "blocked_threshold": "a handler blocking the worker's event loop this long is reported",
"http_token": "bearer token that enables POST /restart (prefer CLUSTER_HTTP_TOKEN or --http-token-file: "
                  "a flag shows in ps); without one POST /restart answers 403. Read-only endpoints stay open",
    "http_token_file": "file whose first line is the HTTP token (a systemd credential, a Docker secret)",
    "http_allowed_hosts": "comma-separated extra Host names POST /restart accepts (default: the bind address, "
                          "localhost, 127.0.0.1, ::1); other Host headers get 403 (DNS rebinding)",
    "http_max_connections": "open HTTP connections at most; more get 503 and are closed at once",
    "http_timeout": "seconds an HTTP client has to send its request and to read the answer",
    "metrics_cache_interval": "seconds a rendered /metrics page is reused (rendered off the event loop, "
                              "once for concurrent scrapes); 0: every scrape",
    "budget_refresh_interval": "seconds between GET /gateway/bot refreshes of the session budget; 0: never",
    "shutdown_timeout": "seconds to wait for workers to close their shards on shutdown",
    "status_line": "progress bar and live status line on stderr (default: when stderr is a terminal)",
    "log_level": "logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL",
    "coordinator": "redis://[:password@]host:port/db (rediss:// for TLS) shared by every host of the bot, for "
                   "identify coordination, the session budget and sessions; default: in this process (one host)",
    "cluster_name": "namespace of this bot's keys in the coordinator (default: bot-<user id>), so bots can share "
                    "one Redis",
    "shard_range": "A-B: this host runs only shards A to B (inclusive); overlapping live hosts are refused "
                   "(needs --coordinator)",
    "host_index": "this host's part (0-based) of --host-count consecutive shard ranges, or auto: the ordinal of a "
                  "StatefulSet pod name in HOSTNAME (bot-3 -> 3)",
    "host_count": "how many hosts split the shards (with --host-index)",
    "assign": "static (--shard-range, --host-index or all shards) or auto: hosts share blocks of "
              "--shards-per-worker shards through leases in the coordinator, take over a dead host's blocks and "
              "rebalance when hosts join or leave (needs --coordinator)",
    "lease_ttl": "with --assign auto: seconds a block's lease outlives its last renewal; a dead host's shards resume "
                 "elsewhere after about this long, and a host cut off from the coordinator stops its blocks before",
    "auto_reshard": "reshard live by itself when a shard is closed with 4011 (sharding required) or when "
                    "GET /gateway/bot recommends more shards by --auto-reshard-margin (with --coordinator: the whole "
                    "cluster)",
    "auto_reshard_interval": "with --auto-reshard: seconds between checks of GET /gateway/bot's recommendation",
    "auto_reshard_margin": "with --auto-reshard: reshard once the recommendation exceeds the running shard count by "
                           "this fraction",
    "reshard_cut_timeout": "seconds a live reshard waits for every old shard to pass the cut before switching "
                           "anyway (logged)",
    "host_ttl": "seconds a host's record in the coordinator outlives its last renewal (every second); a host "
                "killed without a clean stop keeps its range this long, and its restart on the same machine waits",
}
"""The help text of every setting, shown by ``python -m cluster run --help``."""

FIELDS = frozenset(ClusterConfig.__struct_fields__)
NULLABLE = frozenset(f.name for f in msgspec.structs.fields(ClusterConfig)
                     if type(None) in typing.get_args(f.type))
"""The settings that take None (written none, null, auto or empty in flags, the environment and the file)."""
NONE_WORDS = {"", "none", "null", "auto"}
_AUTO_IS_A_VALUE = frozenset({"host_index", "assign"})  # "auto" is one of their values, not "unset"


def _check_keys(keys: Any, source: str) -> None:
    for key in keys:
        if key not in FIELDS:
            hint = difflib.get_close_matches(key, FIELDS, n=1)
            raise ConfigError(f"unknown setting {key!r} in {source}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX):].lower()
        if key not in FIELDS:
            _check_keys([key], f"environment variable {name}")
        out[key] = None if _is_none(key, value, every_field=True) else value
    return out


def _is_none(key: str, value: Any, *, every_field: bool = False) -> bool:
    """Whether ``value`` is a word for None (none, null, auto or empty) for the setting ``key``: the same words
    in flags, the environment and the file. Only settings that can be None take them, except in the environment
    (``every_field``), where any setting may be unset with an empty value."""
    if not isinstance(value, str) or (key not in NULLABLE and not every_field):
        return False
    word = value.strip().lower()
    return word in NONE_WORDS and not (key in _AUTO_IS_A_VALUE and word == "auto")


def _from_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    data = data.get("cluster", data)  # a [cluster] table or top-level keys
    data = {k.replace("-", "_"): v for k, v in data.items()}
    _check_keys(data, f"config file {path}")
    return {k: None if _is_none(k, v) else v for k, v in data.items()}


def check_identify_timing(config: ClusterConfig, shard_options: Mapping[str, Any]) -> None:
    """Raise ConfigError unless an identify slot is held longer than a shard may take from its grant to
    its Identify (its ``connect_timeout``, for connect and Hello). A shorter hold lets the bucket's next
    grant overtake an Identify still on its way."""
    from shard.config import DEFAULT_CONNECT_TIMEOUT

    connect_timeout = shard_options.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    if config.identify_hold_timeout <= connect_timeout:
        raise ConfigError(f"identify_hold_timeout ({config.identify_hold_timeout:g} s) must exceed the shards' "
                          f"connect_timeout ({connect_timeout:g} s), within which a granted shard sends Identify")


def load_config(flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                file: str | None = None) -> ClusterConfig:
    """Merge ``flags`` (only the ones given), ``env`` and the TOML ``file`` into a config."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    _check_keys(flags, "flags")
    flags = {k: None if _is_none(k, v) else v for k, v in flags.items()}
    layers = [("config file " + file, _from_file(file)) if file else ("", {}),
              ("environment", _from_env(os.environ if env is None else env)),
              ("flags", flags)]
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source, layer in layers:
        for key, value in layer.items():
            merged[key] = value
            origin[key] = source
    try:
        return msgspec.convert(merged, ClusterConfig, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if "$." in text:
            key = text.rsplit("$.", 1)[1].split("[")[0].strip("` ")
            if key in origin:
                message = text.split(" - at ")[0].replace("`", "")
                shown = "<hidden>" if key == "http_token" else repr(merged[key])
                raise ConfigError(f"invalid {key} = {shown} (from {origin[key]}): "
                                  f"{message}") from None
        raise ConfigError(f"invalid configuration: {text}") from None
    except ConfigError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
