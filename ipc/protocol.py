"""The supervisor <-> worker wire protocol: msgspec Structs in one tagged union.

Every packet is a :class:`Packet` subclass, encoded as a msgpack array whose first
element is the tag. :data:`AnyPacket` is the union a :class:`ipc.Channel` decodes.
Direction is noted per class: W→S (worker to supervisor), S→W, or both.
"""

from __future__ import annotations

from typing import dataclass_transform

import msgspec
from msgspec import Struct

__all__ = [
    "AnyPacket", "Assign", "Assignment", "Drain", "Drained", "Hello",
    "IdentifyCancel", "IdentifyDone", "IdentifyGrant", "IdentifyRefused", "IdentifyRequest", "IdentifyUnused",
    "IdentifyStarted", "CutLate", "CutMark", "CutPassed", "Cutover", "CutoverEnd", "Flushed", "LeaseDeadline",
    "Packet", "Regate", "ShardWarm", "Ping",
    "Pong", "Request", "Response", "RestartShard", "SessionInfo", "SessionReport",
    "ShardFatal", "ShardStatus", "StatusReport", "WorkerFatal", "decode", "encode",
]


# msgspec passes frozen=True on to the subclasses; dataclass_transform tells type checkers so.
@dataclass_transform(frozen_default=True)
class Packet(Struct, tag=True, array_like=True, frozen=True):
    """Base of every wire packet."""


class SessionInfo(Struct, array_like=True, frozen=True):
    """What a shard needs to Resume: its session id, last sequence and resume URL."""

    shard_id: int
    session_id: str
    seq: int
    resume_url: str | None = None


# --- lifecycle -----------------------------------------------------------------------------


class Hello(Packet, tag="hello"):
    """W→S: the worker process is up, its handler imported, and it is ready for shards."""

    worker_id: int
    pid: int


class Assignment(Struct, array_like=True, frozen=True):
    """One shard for a worker to run, with the session to resume if there is one."""

    shard_id: int
    session: SessionInfo | None = None


class Assign(Packet, tag="assign"):
    """S→W: start these shards (of ``shard_total``; identify buckets: ``max_concurrency``). With ``hold`` (the new
    set of a live reshard) they deliver nothing until a :class:`CutoverEnd` says go (:mod:`cluster.cutover`)."""

    shard_total: int
    shards: list[Assignment]
    max_concurrency: int = 1
    hold: bool = False


class Drain(Packet, tag="drain"):
    """S→W: close every shard (resumably if ``resumable``), answer :class:`Drained`, exit."""

    resumable: bool = True


class Drained(Packet, tag="drained"):
    """W→S: all shards closed; here are their final sessions."""

    sessions: list[SessionInfo]


class LeaseDeadline(Packet, tag="lease"):
    """S→W (``--assign auto``): this worker's block may run until ``deadline`` (``time.monotonic()``, one clock
    for every process of the machine); past it, unless extended, the worker kills itself without a frame
    (:mod:`cluster.fence`). Sent before :class:`Assign` and after every lease renewal."""

    deadline: float


class RestartShard(Packet, tag="restart_shard"):
    """S→W: reconnect one shard (it resumes if its session allows)."""

    shard_id: int
    reason: str


class WorkerFatal(Packet, tag="worker_fatal"):
    """W→S: the worker cannot run (e.g. the handler failed to import or set up)."""

    kind: str
    message: str


class ShardFatal(Packet, tag="shard_fatal"):
    """W→S: a shard was closed with a fatal gateway code (4004, 4010-4014)."""

    shard_id: int
    code: int | None
    reason: str


# --- live resharding (cluster.cutover) ----------------------------------------------------


class ShardWarm(Packet, tag="shard_warm"):
    """W→S: a held shard (the new set) is READY and has a GUILD_CREATE for every guild of its READY (or resumed
    its session in a restarted worker); ``warm`` False: it lost its session (it re-identifies), so it is not."""

    shard_id: int
    warm: bool = True


class Cutover(Packet, tag="cutover"):
    """S→W: the cut is at ``at`` (Unix seconds): ``old`` shards deliver what came before it, the new set what
    came after, held until :class:`CutoverEnd`."""

    at: float
    old: bool


class CutMark(Packet, tag="cut_mark"):
    """S→W, to the old set: every new shard passed its marker; at ``at`` (Unix seconds) each old shard sends the
    heartbeat whose ACK is its own marker (:mod:`cluster.cutover`)."""

    at: float


class CutPassed(Packet, tag="cut_passed"):
    """W→S: a gated shard passed its marker. An old one delivered everything from before it and holds what follows;
    ``digests``: those of the events without a creation id it delivered while gated (:func:`cluster.cutover.digest`).
    A new one delivers what follows at go: once all have, the old set may mark (:class:`CutMark`); its ``digests`` are
    those it dropped before its marker, and ``marker_seq`` the sequence number of the last dispatch before it (both
    kept to gate a restart of its worker after go: :class:`Regate`)."""

    shard_id: int
    digests: list[int] = []
    marker_seq: int | None = None


class CutLate(Packet, tag="cut_late"):
    """W→S: a new shard got the cut too late (it had already dropped an event from after it); ``ahead``: by how many
    seconds that event's creation time was past the cut (this host's clock is about that much behind Discord's)."""

    shard_id: int
    ahead: float = 0.0


class CutoverEnd(Packet, tag="cutover_end"):
    """S→W: ``go``: the new set delivers what it held and goes live, the old set drops what it held; not ``go``
    (a rollback): the old set delivers what it held and goes on. ``delivered``: at ``go``, to the new set, the
    digests the old set reported (:class:`CutPassed`): held events among them are dropped."""

    go: bool
    delivered: list[int] = []


class Flushed(Packet, tag="flushed"):
    """W→S: after ``go``, a new shard delivered what it held (or its worker's replay, :class:`Regate`) and reported its
    session: a restart of its worker needs no gate any more."""

    shard_id: int


class Regate(Packet, tag="regate"):
    """S→W, right after the Assign of a new-set worker restarted after ``go`` whose shards had not delivered all they
    held: gate the replay of each shard of ``marks`` (shard id: its ``marker_seq``, None if unknown) with the cut at
    ``at``, the old set's ``delivered`` digests less those the shard had dropped (``dropped``, by shard id)
    (:class:`cluster.cutover.ResumedGate`)."""

    at: float
    marks: dict[int, int | None]
    delivered: list[int] = []
    dropped: dict[int, list[int]] = {}


# --- liveness ------------------------------------------------------------------------------


class Ping(Packet, tag="ping"):
    """S→W: IPC heartbeat; the worker's event loop answers with :class:`Pong`."""

    nonce: int


class Pong(Packet, tag="pong"):
    """W→S: answer to :class:`Ping`."""

    nonce: int


# --- identify coordination -----------------------------------------------------------------


class IdentifyRequest(Packet, tag="id_req"):
    """W→S: the shard wants an identify slot. ``reason``: why it must identify."""

    shard_id: int
    reason: str = "initial"


class IdentifyGrant(Packet, tag="id_grant"):
    """S→W: the shard may connect now and send Identify ``hold`` seconds after this arrives, not earlier (a
    grant given early, so that connecting and Hello overlap the end of the bucket's window)."""

    shard_id: int
    hold: float = 0.0


class IdentifyRefused(Packet, tag="id_refused"):
    """S→W: the supervisor will not let the shard identify (the session budget is guarded)."""

    shard_id: int
    reason: str


class IdentifyStarted(Packet, tag="id_started"):
    """W→S: the granted shard is sending Identify now; its bucket's window starts here."""

    shard_id: int


class IdentifyDone(Packet, tag="id_done"):
    """W→S: the Identify ended: READY (``ready``) or INVALID_SESSION / close before READY."""

    shard_id: int
    ready: bool


class IdentifyCancel(Packet, tag="id_cancel"):
    """W→S: the shard stopped waiting (or never used its grant)."""

    shard_id: int


class IdentifyUnused(Packet, tag="id_unused"):
    """W→S: the shard gave its grant back without sending Identify (its connection failed first)."""

    shard_id: int


# --- reports -------------------------------------------------------------------------------


class SessionReport(Packet, tag="sessions"):
    """W→S: sessions that changed since the last report (batched)."""

    sessions: list[SessionInfo]


class ShardStatus(Struct, array_like=True, frozen=True):
    """One shard's health in a :class:`StatusReport`. Counters are deltas since the last report."""

    shard_id: int
    state: str
    latency: float | None = None
    last_event_age: float | None = None
    events: dict[str, int] = {}


class StatusReport(Packet, tag="status"):
    """W→S: periodic worker health: its shards, memory and event-loop lag."""

    shards: list[ShardStatus]
    rss: int = 0
    loop_lag: float = 0.0
    blocked: int = 0
    handler_errors: int = 0
    consumer_errors: int = 0
    """Unexpected exceptions from the shards' ``next_event`` (each shard goes on)."""


# --- calls ---------------------------------------------------------------------------------


class Request(Packet, tag="request"):
    """Both ways: a typed call. ``name`` is an :class:`ipc.Call` type, ``body`` its msgpack.

    With ``broadcast`` (W→S only) the supervisor fans the call out to every worker and
    answers with one :class:`Response` whose body is a list of :class:`ipc.Reply`.
    """

    id: int
    name: str
    body: bytes
    broadcast: bool = False
    timeout: float = 5.0


class Response(Packet, tag="response"):
    """Both ways: the answer to :class:`Request` ``id``: msgpack ``body`` or an ``error``."""

    id: int
    body: bytes | None = None
    error: str | None = None


AnyPacket = (
    Hello | Assign | Drain | Drained | RestartShard | WorkerFatal | ShardFatal | Ping | Pong
    | IdentifyRequest | IdentifyGrant | IdentifyRefused | IdentifyStarted | IdentifyDone
    | IdentifyCancel | IdentifyUnused | SessionReport | StatusReport | Request | Response | LeaseDeadline
    | ShardWarm | Cutover | CutMark | CutPassed | CutLate | CutoverEnd | Flushed | Regate
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyPacket)


def encode(packet: Packet) -> bytes:
    """Encode one packet to msgpack (without framing)."""
    return _encoder.encode(packet)


def decode(data: bytes) -> Packet:
    """Decode one packet; raises ``msgspec.DecodeError`` or ``ValidationError`` if malformed."""
    return _decoder.decode(data)
