"""The cutover gate of live resharding: which events one shard delivers to its handler while two shard sets run.

Sans-I/O: the worker feeds each gated shard's events to its gate (:meth:`OldGate.admit`, :meth:`NewGate.admit`)
and acts on the :class:`Verdict`; the gate never sees a socket or a clock. Outside a reshard no shard has a gate.

The cut is a wall-clock time ``T`` the supervisor picks once every new shard is warm; :func:`snowflake_at` turns it
into a creation snowflake ``S``. Events carrying a creation snowflake (:func:`creation_id`: MESSAGE_CREATE and
INTERACTION_CREATE ``id``) are split exactly: the old set delivers ``id < S``, the new set ``id >= S``. Events
without one are split by each shard's own *marker*: the ACK of a heartbeat sent on its connection (one connection
is FIFO, so everything the gateway sent before the beat arrived before that ACK). The old set delivers those before
its marker, the new set those after its own, so the new set's markers must come first: then an event between the two
markers reaches both sets, never neither. That is an order, not a time: each new shard beats at ``T`` (its marker is
also passed by the first creation id ``>= S``) and reports passing it; only once every new shard passed does the
supervisor tell the old set to beat (:class:`OldGate`'s marker is its heartbeat's ACK alone), :data:`FANOUT_SKEW`
later, so an old shard's beat always leaves after every new shard's marker arrived, whatever their round trips.

The old set records a :func:`digest` of every event without an id it delivers while gated and sends them when it
passes; a new shard counts the digests it drops while armed, before its marker. At ``go`` the new set drops, per
digest, as many of its held events as the old set delivered beyond those it dropped itself
(:meth:`NewGate.old_delivered`): exactly the copies between the two markers, even for identical payloads, provided
both gates began counting at the same point of the guild's stream (see :meth:`NewGate.old_delivered` for the
residue).

A creation id below the cut is the old set's wherever it arrives, even after its shard's marker (ids are not
ordered across channels, and a message created just before ``T`` may reach the gateway after the cut's heartbeat
ACK): the old set delivers those until ``go``, and ``go`` comes :data:`GO_GRACE` seconds after the last old shard
passed, so that such stragglers still arrive in time. One that comes later still is dropped by both sets.

An old shard *holds* what it receives after its marker, and a new shard what it would deliver, until the
supervisor ends the cutover: ``go`` (the new set delivers its held events, the old drops its own) or a rollback
(the old set delivers its held events: nothing was lost; the new set is closed).

A new shard's worker may die after ``go``, before it delivered what it held. So that nothing is lost or repeated, a
new shard reports its session as of the first event it holds and has not handed over (:meth:`NewGate.resume_seq`),
and, at its marker, the sequence number the marker came after (:attr:`NewGate.marker_seq`) and the digests it dropped
before it; the restarted worker resumes there, and a :class:`ResumedGate` decides the replay (up to RESUMED) by
sequence number, as the lost gate did. An old shard's session stops before its first held event the same way, so
that an old worker that dies holding them resumes them (held again behind the same cut, or delivered at a rollback).
"""

from __future__ import annotations

import enum
import hashlib
from collections import Counter
from collections.abc import Callable, Iterable

import msgspec

__all__ = ["DISCORD_EPOCH_MS", "FANOUT_SKEW", "GO_GRACE", "NewGate", "OldGate", "ResumedGate", "Verdict",
           "creation_id", "digest", "snowflake_at", "snowflake_time"]

DISCORD_EPOCH_MS = 1_420_070_400_000
"""Milliseconds of the Unix epoch at Discord's epoch (the first second of 2015)."""
FANOUT_SKEW = 0.1
"""Seconds between the last new shard passing its marker and the old set's heartbeats. Not a guess at our round trips
(the order already guarantees the markers': every new one arrived before any old beat is sent) but an allowance for
the gateway itself, which may hand one event to two sessions at slightly different times: an event that reaches a
new shard up to this much later than an old one still lands between the two markers."""
GO_GRACE = 0.5
"""Seconds between the last old shard passing the cut (and the cut itself) and ``go``: the old set still delivers
creation ids from before the cut that reach it late (out of order across channels, or dispatched after the ACK)."""
_CREATION_EVENTS = frozenset({"MESSAGE_CREATE", "INTERACTION_CREATE"})
_HEARTBEAT_ACK = "GATEWAY_HEARTBEAT_ACK"
_WARMING_KEPT = frozenset({"READY", "GUILD_CREATE"})
_TRACKED = _WARMING_KEPT | {"RESUMED", "GATEWAY_INVALID_SESSION", "GUILD_DELETE"}


class Verdict(enum.Enum):
    DELIVER = "deliver"
    DROP = "drop"
    HOLD = "hold"


def snowflake_at(unix_seconds: float) -> int:
    """The smallest snowflake created at ``unix_seconds`` (wall clock) or later."""
    return max(0, int(unix_seconds * 1000) - DISCORD_EPOCH_MS) << 22


def snowflake_time(snowflake: int) -> float:
    """The wall-clock time (Unix seconds) a snowflake was created at."""
    return ((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000


def creation_id(event_type: str, data: object) -> int | None:
    """The creation snowflake an event carries (its ``id``, in plain JSON or a registered Struct), or None."""
    if event_type not in _CREATION_EVENTS:
        return None
    value = data.get("id") if isinstance(data, dict) else getattr(data, "id", None)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def digest(event_type: str, data: object) -> int:
    """A compact identity of an event without a creation id: its type and its payload (the same on every session)."""
    h = hashlib.blake2b(event_type.encode(), digest_size=8)
    h.update(msgspec.json.encode(data))
    return int.from_bytes(h.digest(), "big")


def _take(delivered: Counter[int], event_type: str, data: object) -> bool:
    """Whether an event without a creation id is one of the old set's ``delivered`` digests (then one copy is used)."""
    if not delivered or creation_id(event_type, data) is not None:
        return False
    key = digest(event_type, data)
    if delivered[key] <= 0:
        return False
    delivered[key] -= 1
    return True


def _id_of(data: object) -> str:
    """A guild's ``id`` as a string, from plain JSON or a registered Struct."""
    return str(data.get("id") if isinstance(data, dict) else getattr(data, "id", None))


class _Marker:
    """Finds a shard's marker: the ACK of its marker heartbeat or, with a ``cut``, a creation id at or past it."""

    def __init__(self, cut: int | None, on_pass: Callable[[], None]) -> None:
        self.cut = cut
        self.passed = False
        self.acks_left: int | None = None  # counting ACKs once the cut's heartbeats were sent
        self._on_pass = on_pass

    def heartbeats_sent(self, count: int) -> None:
        """The marker heartbeat was sent: its ACK is the ``count``-th from now on (the beats still unacknowledged
        before it answered first: :meth:`shard.Shard.beat_now`)."""
        if not self.passed:
            self.acks_left = count

    def see(self, event_type: str, message_id: int | None) -> None:
        if self.passed:
            return
        if message_id is not None and self.cut is not None and message_id >= self.cut:
            self._pass()
        elif event_type == _HEARTBEAT_ACK and self.acks_left is not None:
            self.acks_left -= 1
            if self.acks_left <= 0:
                self._pass()

    def _pass(self) -> None:
        self.passed = True
        self._on_pass()


class _Gate:
    """What every cutover gate shares: the session a restart must resume after while the gate holds events.

    A held event counts as handled once the worker asks for the next one, so the session the worker reports must not
    move past the first held event not handed over yet (or dropped), else a restarted worker resumes past it and it
    is lost: :meth:`resume_seq` caps it just before that event, and :meth:`released` moves the cap on as the held
    events are delivered or dropped, in order."""

    def __init__(self) -> None:
        self._cap: int | None = None  # resume after this: before the first held event not handed over

    def _held(self, seq: int | None) -> None:
        """Dispatch ``seq`` is held: the first one caps the session (a restart resumes before it)."""
        if seq is not None and self._cap is None:
            self._cap = seq - 1

    def released(self, seq: int | None) -> None:
        """The worker handed held dispatch ``seq`` over (or dropped it): a restart resumes after it."""
        if seq is not None and self._cap is not None and seq > self._cap:
            self._cap = seq

    def resume_seq(self, handled: int) -> int:
        """The sequence a restarted worker must resume this shard's session after, ``handled`` being the last one its
        consumer finished: never past the first held event not handed over yet."""
        return handled if self._cap is None else min(handled, self._cap)


class OldGate(_Gate):
    """An old-set shard during the cutover at snowflake ``cut``. Its marker is the ACK of the heartbeat it sends once
    every new shard passed its own (never a creation id: a time would say nothing of the new set's markers).
    ``on_pass()`` is called once, at the marker; :attr:`digests` are then complete.

    Fed each dispatch's sequence number, it caps the session to report before the first event it holds
    (:meth:`_Gate.resume_seq`): a restarted old worker resumes there, and its new gate (the same cut and mark) decides
    the replay: what the lost gate held is held again (or, before the new marker, delivered with its digest: the
    marker came later), so that a rollback still delivers it. A creation id below the cut that the lost gate delivered
    after its first held event is replayed and delivered again (at least once, as after any worker's death)."""

    def __init__(self, cut: int, on_pass: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.cut = cut
        self.marker = _Marker(None, on_pass)
        self.ended: bool | None = None  # None while the cutover runs; True after go, False after a rollback
        self.digests: list[int] = []
        """The :func:`digest` of every event without a creation id this shard delivered while gated."""

    @property
    def passed(self) -> bool:
        return self.marker.passed

    def resume_seq(self, handled: int) -> int:
        """As :meth:`_Gate.resume_seq`; after ``go`` the new set delivers what this shard held: ``handled``."""
        return handled if self.ended else super().resume_seq(handled)

    def admit(self, event_type: str, data: object, seq: int | None = None) -> Verdict:
        """What to do with the next event this shard received (``seq``: its sequence number, None if not a dispatch)."""
        verdict = self._admit(event_type, data)
        if verdict is Verdict.HOLD:
            self._held(seq)
        return verdict

    def _admit(self, event_type: str, data: object) -> Verdict:
        if self.ended:
            return Verdict.DROP  # the new set delivers now; this shard is about to be closed
        marker = self.marker
        message_id = creation_id(event_type, data)
        if message_id is not None and message_id < self.cut:
            return Verdict.DELIVER  # created before the cut, however late it came: the new set drops it
        if marker.passed:
            return Verdict.HOLD
        if message_id is None and not event_type.startswith("GATEWAY_"):
            self.digests.append(digest(event_type, data))  # before see(): on_pass() sends them
            return Verdict.DELIVER
        marker.see(event_type, message_id)
        return Verdict.HOLD if message_id is not None else Verdict.DELIVER  # the marker's own ACK is delivered


class NewGate(_Gate):
    """A new-set shard: delivers nothing until ``go``.

    While *warming* (no cut yet) it keeps READY and GUILD_CREATE (handed over at the switch, so that a handler
    with a cache sees its guilds) and drops the rest, which the old set delivers; ``on_warm()`` is called once
    READY arrived and a GUILD_CREATE for each guild it listed, or at RESUMED before any READY (a restarted worker
    resumed the session that warmed up). ``on_cold()`` is called when a warm shard loses its session (op 9 not
    resumable, or a new READY): the events of its guilds until it is warm again reach only the old set, so it must
    warm up again before the cut, and after the cut the reshard must roll back. Once *armed* with the cut, it holds
    creation ids ``>= cut`` and, after its marker, every other event.

    The warm-up payloads reach the handler at ``go``, before the held events, so that a handler with a cache knows
    its guilds; a GUILD_CREATE of a guild the bot left during the warm-up is not handed over (the old set delivered
    the GUILD_DELETE). Other changes during the warm-up (GUILD_UPDATE, roles, channels) were delivered by the old set
    before the switch: a cache rebuilt from a warm-up GUILD_CREATE is older than them until their next update.

    Fed each dispatch's sequence number, it records its :attr:`marker_seq` and tells the session's sequence a restart
    must resume after (:meth:`resume_seq`), which the worker reports instead of the last one handled."""

    def __init__(self, on_warm: Callable[[], None] = lambda: None, on_cold: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.marker: _Marker | None = None
        self.cut: int  # the cut's snowflake, set when armed (read only once there is a marker)
        self.last_seq: int | None = None  # the sequence number of the last dispatch decided on
        self.marker_seq: int | None = None
        """The sequence number of the last dispatch before the marker (0 if none came before it), once passed."""
        self.max_seen = 0  # the largest creation id seen while warming (to tell a cut that came too late)
        self.warm = False
        self.mode = "warming"
        """``warming`` (no cut yet), ``armed`` (cut known), ``flushing`` (go: the worker delivers what was held;
        everything new is held behind it), ``live`` (delivers, but still drops creation ids before the cut until its
        marker)."""
        self._pending: set[str] | None = None  # guilds of READY without their GUILD_CREATE yet
        self._on_warm = on_warm
        self._on_cold = on_cold
        self._old_delivered: Counter[int] = Counter()
        self._dropped: Counter[int] = Counter()  # digests of events without id dropped while armed, before the marker
        self._left: set[str] = set()  # guilds the bot left after their held warm-up GUILD_CREATE

    def arm(self, cut: int, on_pass: Callable[[], None] = lambda: None) -> bool:
        """Set the cut. False if it came too late: a creation id at or past it was already dropped."""
        def passed() -> None:
            self.marker_seq = self.last_seq or 0
            on_pass()

        self.cut = cut
        self.marker = _Marker(cut, passed)
        self.mode = "armed"
        return self.max_seen < cut

    @property
    def passed(self) -> bool:
        return self.marker is not None and self.marker.passed

    def old_delivered(self, digests: list[int]) -> None:
        """At ``go``: the digests of the events without a creation id the old set delivered while gated.

        Per digest, the old set delivered ``a`` copies and this shard dropped ``b`` before its marker; since its
        marker came first, each copy it dropped was one the old set delivered, so the held copies the old set
        delivered too are the first ``a - b`` (:meth:`delivered_by_old`), identical payloads included. Exact when
        both gates began counting at the same point of the stream; they begin at the cutover's packet, which the
        old and the new workers read a few milliseconds apart: a copy that reaches its shards in between, while
        another copy with the same digest falls between the markers, is the residue (one copy lost if the old gate
        began first, one repeated if the new one did). A digest covers the payload, which names its guild (or the
        event is not a guild's and reaches shard 0 of both sets), so the copies of one digest meet one new shard."""
        self._old_delivered = Counter(digests)
        self._old_delivered.subtract(self._dropped)

    def delivered_by_old(self, event_type: str, data: object) -> bool:
        """Whether a held event is one the old set delivered already (then it is dropped, once per digest), or a
        warm-up GUILD_CREATE of a guild the bot left later (the old set delivered its GUILD_DELETE: handing the
        stale GUILD_CREATE over at the switch would bring the guild back into the handler's caches)."""
        if event_type == "GUILD_CREATE" and _id_of(data) in self._left:
            return True
        return _take(self._old_delivered, event_type, data)

    @property
    def dropped(self) -> list[int]:
        """The digests of the events without a creation id it dropped while armed, before its marker."""
        return list(self._dropped.elements())

    def resume_seq(self, handled: int) -> int:
        """The sequence a restarted worker must resume this shard's session after, ``handled`` being the last one its
        consumer finished: until it is live, the last dispatch decided on, or just before the first held one (from the
        cut on) not handed over yet, so that the replay brings back exactly what was not delivered."""
        if self.mode == "live":
            return handled
        if self._cap is None and self.last_seq is not None:
            return min(handled, self.last_seq)  # nothing held yet: the last dispatch decided on
        return super().resume_seq(handled)

    def _cold(self) -> None:
        if self.warm:
            self.warm = False
            self._on_cold()

    def _track_guilds(self, event_type: str, data: object) -> None:
        if event_type == "READY":  # a READY lists the session's guilds (unavailable until their GUILD_CREATE)
            self._cold()  # a second READY: a new session, which missed what happened since the last one
            guilds = data.get("guilds") if isinstance(data, dict) else getattr(data, "guilds", None)
            self._pending = {_id_of(g) for g in guilds or ()}
        elif event_type == "RESUMED":
            if self._pending is None:  # no READY in this worker: it resumed the session that warmed up before
                self._pending = set()
        elif event_type == "GUILD_DELETE":  # the bot left it (unless it is only unavailable: an outage)
            unavailable = data.get("unavailable") if isinstance(data, dict) else getattr(data, "unavailable", None)
            if not unavailable:
                self._left.add(_id_of(data))
        elif event_type == "GATEWAY_INVALID_SESSION":
            if not getattr(data, "resumable", True):
                self._cold()
                self._pending = None  # warm again after the next READY's guilds
        else:  # a GUILD_CREATE, in plain JSON or a registered Struct
            self._left.discard(_id_of(data))  # joined (again): this one is current
            if self._pending is not None:
                self._pending.discard(_id_of(data))
        if not self.warm and self._pending is not None and not self._pending:
            self.warm = True
            self._on_warm()

    def admit(self, event_type: str, data: object, seq: int | None = None) -> Verdict:
        """What to do with the next event this shard received (``seq``: its sequence number, None if not a dispatch)."""
        if seq is not None and self.last_seq is not None and seq <= self.last_seq and event_type != "READY":
            return Verdict.DROP  # replayed after its shard was restarted in this worker (a new session's READY: 1)
        verdict = self._admit(event_type, data)
        if seq is not None:
            if verdict is Verdict.HOLD and self.marker is not None:  # (the warm-up's are handed over at go)
                self._held(seq)
            self.last_seq = seq
        return verdict

    def _admit(self, event_type: str, data: object) -> Verdict:
        if event_type in _TRACKED:
            self._track_guilds(event_type, data)
        message_id = creation_id(event_type, data)
        marker = self.marker
        if marker is None:
            if message_id is not None and message_id > self.max_seen:
                self.max_seen = message_id
            return Verdict.HOLD if event_type in _WARMING_KEPT else Verdict.DROP
        was = marker.passed
        marker.see(event_type, message_id)
        if message_id is not None and message_id < self.cut:
            return Verdict.DROP  # the old set delivers it (this copy came late)
        if self.mode == "live":
            return Verdict.DELIVER
        if self.mode == "flushing" or message_id is not None or was:
            return Verdict.HOLD
        if not event_type.startswith("GATEWAY_"):
            self._dropped[digest(event_type, data)] += 1  # the old set delivers it: not to be dropped twice at go
        return Verdict.DROP


class ResumedGate(_Gate):
    """A new shard whose worker was restarted after ``go`` before it delivered all it held: the session resumes just
    before the first event it had not handed over (:meth:`NewGate.resume_seq`), and this gate decides the replay as the
    lost :class:`NewGate` did, by sequence number instead of heartbeat ACKs (those are not replayed): a creation id
    below the cut is dropped, one at or past it delivered; another event is dropped up to ``marker_seq`` (before the
    new set's marker: the old set's), and after it once per digest the old set ``delivered`` beyond those the shard
    had ``dropped`` before its marker (:meth:`NewGate.old_delivered`). ``on_done()`` is called at RESUMED (the replay
    is over; the shard is ungated) or READY (the session could not be resumed). Without a ``marker_seq`` (the shard had
    not reported it) every event without a creation id is delivered: none is lost, some may repeat."""

    def __init__(self, cut: int, marker_seq: int | None, delivered: Iterable[int], dropped: Iterable[int] = (),
                 on_done: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.cut = cut
        self.marker_seq = marker_seq
        self.done = False
        self._old_delivered = Counter(delivered)
        self._old_delivered.subtract(dropped)
        self._on_done = on_done

    def admit(self, event_type: str, data: object, seq: int | None = None) -> Verdict:
        """What to do with the next (replayed) event."""
        if self.done:
            return Verdict.DELIVER
        if event_type in ("RESUMED", "READY"):
            self.done = True
            self._on_done()
            return Verdict.DELIVER
        message_id = creation_id(event_type, data)
        if message_id is not None:
            return Verdict.DELIVER if message_id >= self.cut else Verdict.DROP
        if seq is None or self.marker_seq is None:
            return Verdict.DELIVER
        if seq <= self.marker_seq or _take(self._old_delivered, event_type, data):
            return Verdict.DROP
        return Verdict.DELIVER
