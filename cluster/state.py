"""The session state file: sessions saved on shutdown so that the next start resumes."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import msgspec

from ipc.protocol import SessionInfo

__all__ = ["StateFile", "load_sessions", "save_sessions"]

log = logging.getLogger(__name__)
VERSION = 1


class SavedSession(msgspec.Struct, frozen=True):
    shard_id: int
    session_id: str
    seq: int
    resume_url: str | None = None


class StateFile(msgspec.Struct, frozen=True):
    """The file's JSON: when it was written (Unix time), for which shard total, the sessions."""

    version: int
    saved_at: float
    shard_total: int
    sessions: list[SavedSession]


def save_sessions(path: str | os.PathLike[str], shard_total: int, sessions: list[SessionInfo],
                  *, now: float | None = None) -> None:
    """Write the state file atomically: a temp file in the same directory, fsync, rename."""
    path = Path(path)
    state = StateFile(VERSION, time.time() if now is None else now, shard_total,
                      [SavedSession(s.shard_id, s.session_id, s.seq, s.resume_url)
                       for s in sorted(sessions, key=lambda s: s.shard_id)])
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


def load_sessions(path: str | os.PathLike[str], shard_total: int, ttl: float,
                  *, now: float | None = None) -> tuple[dict[int, SessionInfo], str]:
    """Read the sessions that can still be resumed, and a note saying what was used and why.

    Nothing is used if the file is missing, unreadable, older than ``ttl`` seconds (the
    gateway will have dropped the sessions) or written for another shard total.
    """
    path = Path(path)
    now = time.time() if now is None else now
    try:
        state = msgspec.json.decode(path.read_bytes(), type=StateFile)
    except FileNotFoundError:
        return {}, f"no state file at {path}: identifying"
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        return {}, f"ignoring unreadable state file {path}: {exc}"
    if state.version != VERSION:
        return {}, f"ignoring state file {path}: version {state.version}, expected {VERSION}"
    age = now - state.saved_at
    if age > ttl:
        return {}, f"ignoring state file {path}: written {age:.0f} s ago, past the {ttl:.0f} s session TTL"
    if state.shard_total != shard_total:
        return {}, (f"ignoring state file {path}: it is for {state.shard_total} shards, "
                    f"this run has {shard_total}")
    sessions = {s.shard_id: SessionInfo(s.shard_id, s.session_id, s.seq, s.resume_url)
                for s in state.sessions if 0 <= s.shard_id < shard_total}
    return sessions, f"resuming {len(sessions)} sessions from {path} (written {age:.0f} s ago)"
