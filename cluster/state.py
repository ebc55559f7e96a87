"""The session state file: sessions saved on shutdown so that the next start resumes.

The file is trusted with the bot token: a session in it is resumed by sending Resume, token
included, to its ``resume_url``. So :func:`load_sessions` checks every field before using it:
the file's time and shard total, the bot it was written for (``user_id``), and per session the
shard id, session id, sequence and resume URL (``wss://`` on Discord's gateway domain, or the
configured gateway's own host). What does not fit is ignored, with one warning saying what and why.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import os
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Annotated, Any

import msgspec

from ipc.protocol import SessionInfo

__all__ = ["StateFile", "check_sessions", "load_sessions", "resume_url_problem", "save_sessions", "saved_problem",
           "skipped_note", "token_user_id"]

log = logging.getLogger(__name__)
VERSION = 2
"""2 added ``user_id``; a version-1 file (no user id) is still read."""
MAX_SEQ = 2**63 - 1
CLOCK_SKEW = 60.0
"""Seconds a file's ``saved_at`` may lie in the future (a clock stepped back) before it is ignored."""
DISCORD_GATEWAY_DOMAIN = "discord.gg"
"""Resume URLs Discord hands out are ``wss://`` hosts in this domain (gateway-us-east1-b.discord.gg)."""
_SHOWN = 3  # problems named in the warning; the rest are counted

SessionId = Annotated[str, msgspec.Meta(pattern=r"^[!-~]{1,128}$")]  # visible ASCII, no spaces
Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
UserId = Annotated[int, msgspec.Meta(gt=0, le=2**63 - 1)]  # a snowflake


class SavedSession(msgspec.Struct, frozen=True):
    shard_id: Annotated[int, msgspec.Meta(ge=0)]
    session_id: SessionId
    seq: Seq
    resume_url: Annotated[str, msgspec.Meta(max_length=2048)] | None = None


class StateFile(msgspec.Struct, frozen=True, omit_defaults=True):
    """The file's JSON: when it was written (Unix time), for which shard total and bot user, the sessions.

    ``sessions`` are checked one by one when loading, so that one bad entry costs only its own shard.
    """

    version: int
    saved_at: float
    shard_total: Annotated[int, msgspec.Meta(ge=1)]
    sessions: list[Any]
    user_id: UserId | None = None


def token_user_id(token: str) -> int | None:
    """The bot's user id from its token, or None if the token does not carry one.

    A Discord bot token is ``base64(user id) . timestamp . hmac``; the first segment is all that is read.
    """
    head = token.removeprefix("Bot ").strip().split(".", 1)[0]
    if not 0 < len(head) <= 40:
        return None
    try:
        text = base64.b64decode(head + "=" * (-len(head) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 20):
        return None
    value = int(text)
    return value if 0 < value < 2**63 else None


def resume_url_problem(url: str, gateway_url: str | None) -> str | None:
    """Why the bot token must not be sent to ``url`` in a Resume, or None if it may.

    Allowed: ``wss://`` on Discord's gateway domain, or the configured gateway's own host and port
    (with its scheme or wss://), which is how the simulator and tests are reached.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
        gateway = urllib.parse.urlsplit(gateway_url) if gateway_url else None
        if gateway is not None and host and (host, port) == (gateway.hostname, gateway.port) \
                and parts.scheme in ("wss", gateway.scheme):
            return None
    except ValueError:
        return "is not a valid URL"
    if parts.scheme == "wss" and host and (host == DISCORD_GATEWAY_DOMAIN
                                           or host.endswith("." + DISCORD_GATEWAY_DOMAIN)):
        return None
    return (f"is neither wss:// on {DISCORD_GATEWAY_DOMAIN} nor the configured gateway's host "
            f"({'none' if gateway is None else gateway.netloc})")


def save_sessions(path: str | os.PathLike[str], shard_total: int, sessions: list[SessionInfo],
                  *, user_id: int | None = None, now: float | None = None) -> None:
    """Write the state file atomically: a temp file in the same directory, fsync, rename.

    ``user_id`` (the bot's, see :func:`token_user_id`) binds the file to the bot.
    """
    path = Path(path)
    state = StateFile(VERSION, time.time() if now is None else now, shard_total,
                      [SavedSession(s.shard_id, s.session_id, s.seq, s.resume_url)
                       for s in sorted(sessions, key=lambda s: s.shard_id)], user_id)
    data = msgspec.json.format(msgspec.json.encode(state))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)  # session ids let anyone holding the token resume
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def saved_problem(state: StateFile, shard_total: int, ttl: float, now: float, user_id: int | None) -> str | None:
    """Why what ``state`` heads (a file, or one session saved elsewhere) must not be resumed, or None: its
    version, its time (from the future, or older than ``ttl``), its shard total or its bot user."""
    if state.version not in (1, VERSION):
        return f"version {state.version}, expected {VERSION}"
    if not math.isfinite(state.saved_at) or state.saved_at > now + CLOCK_SKEW:
        return f"saved_at {state.saved_at!r} is in the future (this clock says {now:.0f})"
    age = now - state.saved_at
    if age > ttl:
        return f"written {age:.0f} s ago, past the {ttl:.0f} s session TTL"
    if state.shard_total != shard_total:
        return f"it is for {state.shard_total} shards, this run has {shard_total}"
    if state.user_id is not None and state.user_id != user_id:
        if user_id is None:
            return (f"it is for bot user {state.user_id} and this token does not show its bot's user id "
                    f"(not a Discord bot token)")
        return f"it is for bot user {state.user_id}, this token is for bot user {user_id}"
    return None


def _check_session(raw: Any, index: int, shard_total: int, gateway_url: str | None) -> SavedSession | str:
    """One saved session, or what is wrong with it (naming its shard, else its place in the list)."""
    try:
        s = msgspec.convert(raw, SavedSession)
    except msgspec.ValidationError as exc:
        shard = raw.get("shard_id") if isinstance(raw, dict) else None
        where = f"shard {shard}" if type(shard) is int else f"entry {index}"
        return f"{where}: {str(exc).replace('`', '')}"
    if s.shard_id >= shard_total:
        return f"shard {s.shard_id}: no such shard in a run of {shard_total}"
    if s.resume_url is not None and (problem := resume_url_problem(s.resume_url, gateway_url)):
        return f"shard {s.shard_id}: resume_url {s.resume_url[:100]!r} {problem}"
    return s


def load_sessions(path: str | os.PathLike[str], shard_total: int, ttl: float, *, user_id: int | None = None,
                  gateway_url: str | None = None, now: float | None = None) -> tuple[dict[int, SessionInfo], str]:
    """Read the sessions that can still be resumed, and a note saying what was used and why.

    The note is also logged: as info when everything fitted, else as one warning. Nothing is used if
    the file is missing, unreadable, from the future or older than ``ttl`` seconds (the gateway will
    have dropped the sessions), written for another shard total, or for another bot than ``user_id``
    (a file without a user id, as version 1 wrote it, is used). A session is skipped if any of its
    fields does not fit, its shard is listed twice, or its ``resume_url`` is not one the token may
    be sent to (see :func:`resume_url_problem`; ``gateway_url`` is the configured gateway).
    """
    path = Path(path)
    now = time.time() if now is None else now
    try:
        state = msgspec.json.decode(path.read_bytes(), type=StateFile)
    except FileNotFoundError:
        return _noted({}, f"no state file at {path}: identifying", warn=False)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _noted({}, f"ignoring unreadable state file {path}: {str(exc).replace('`', '')}; identifying")
    problem = saved_problem(state, shard_total, ttl, now, user_id)
    if problem:
        return _noted({}, f"ignoring state file {path}: {problem}; identifying every shard")
    sessions, skipped = check_sessions(state.sessions, shard_total, gateway_url)
    note = f"resuming {len(sessions)} sessions from {path} (written {now - state.saved_at:.0f} s ago)"
    if state.user_id is None:
        why = "an older version wrote it" if state.version == 1 else "the token that wrote it does not show one"
        note += f"; the file names no bot user ({why}), so it was not checked against this token's bot"
    return skipped_note(sessions, note, skipped)


def check_sessions(raws: list[Any], shard_total: int, gateway_url: str | None) -> tuple[dict[int, SessionInfo],
                                                                                        list[str]]:
    """The saved sessions (decoded JSON or msgpack objects) that fit, by shard, and what is wrong with the rest,
    one line each: a field that does not fit, a shard out of range or listed twice, a foreign ``resume_url``."""
    sessions: dict[int, SessionInfo] = {}
    skipped: list[str] = []
    twice: set[int] = set()
    for index, raw in enumerate(raws):
        s = _check_session(raw, index, shard_total, gateway_url)
        if isinstance(s, str):
            skipped.append(s)
        elif s.shard_id in sessions or s.shard_id in twice:
            twice.add(s.shard_id)
            sessions.pop(s.shard_id, None)
        else:
            sessions[s.shard_id] = SessionInfo(s.shard_id, s.session_id, s.seq, s.resume_url)
    skipped += [f"shard {shard}: listed more than once" for shard in sorted(twice)]
    return sessions, skipped


def skipped_note(sessions: dict[int, SessionInfo], note: str,
                 skipped: list[str]) -> tuple[dict[int, SessionInfo], str]:
    """Log ``note`` (what is resumed) as info, or with the ``skipped`` problems as one warning; return both."""
    if not skipped:
        return _noted(sessions, note, warn=False)
    more = f" and {len(skipped) - _SHOWN} more" if len(skipped) > _SHOWN else ""
    return _noted(sessions, f"{note}; ignored {len(skipped)} saved sessions that do not fit, which identify: "
                            f"{'; '.join(skipped[:_SHOWN])}{more}")


def _noted(sessions: dict[int, SessionInfo], note: str, *, warn: bool = True) -> tuple[dict[int, SessionInfo], str]:
    log.log(logging.WARNING if warn else logging.INFO, "%s", note)
    return sessions, note
