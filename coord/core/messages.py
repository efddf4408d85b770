"""Peer-to-peer messages: small frozen values with plain fields.

Encoding them (protobuf in ``replication.proto``) is the shell's business; the
core only builds and reads these. Every message carries the sender's ``term``
and id. Heartbeats are :class:`Append` messages, with or without entries: each
one carries its send time on the leader's clock, which the reply echoes, so the
leader can time leases and ISR shrink without comparing clocks across machines.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from coord.core.entry import Entry, EntryKind
from coord.core.errors import RemoteProtocolError

MAX_INT64 = 2**63 - 1
"""The largest value any field may hold: SQLite stores integers as signed int64."""


@dataclass(frozen=True, slots=True)
class Append:
    """Leader to follower: entries after ``prev_index``, the commit index, the leader's view."""

    term: int
    sender: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    epoch: int
    isr: tuple[int, ...]
    sent_at_ms: int
    fence: int


@dataclass(frozen=True, slots=True)
class AppendReply:
    """Follower to leader, sent only after the acked entries are durable.

    On success ``match_index`` is the last index known to equal the leader's
    log. On a mismatch ``reject_index`` is the ``prev_index`` that did not match
    and ``hint_index`` where the leader should retry from (+1).

    ``fence`` is a number the follower draws at start and after every stall;
    the leader echoes the latest one in :attr:`Append.fence`. An Append with
    the follower's current fence was sent after the leader heard from this
    incarnation, so the view it carries is current, not a message that queued
    up while the follower was stopped: only such an Append clears ``restarted``.
    """

    term: int
    sender: int
    success: bool
    match_index: int
    reject_index: int
    hint_index: int
    echo_sent_at_ms: int
    fence: int


@dataclass(frozen=True, slots=True)
class VoteRequest:
    """Candidate to voter. ``pre_vote`` asks "would you?" without changing anyone's term.

    ``term`` is the term the candidate runs for (its term + 1 for a pre-vote).
    ``campaign`` tells replies of this round from late replies of an earlier one.
    ``transfer`` is set when the leader handed over with :class:`TimeoutNow`:
    voters then ignore their lease on that leader, who has stepped down.
    """

    term: int
    sender: int
    pre_vote: bool
    campaign: int
    last_log_term: int
    last_log_index: int
    epoch: int
    epoch_term: int
    transfer_from: int


@dataclass(frozen=True, slots=True)
class VoteReply:
    """A voter's answer, with its whole state in every case (coord/PROTOCOL.md §8.1)."""

    term: int
    sender: int
    pre_vote: bool
    campaign: int
    granted: bool
    last_log_term: int
    last_log_index: int
    epoch: int
    epoch_term: int
    isr: tuple[int, ...]
    restarted: bool
    has_live_leader: bool
    leader_id: int


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leader to a caught-up in-sync follower: campaign now, I have stepped down."""

    term: int
    sender: int


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """The shell's word that a snapshot from the leader is staged (not yet installed).

    The leader's shell streams a consistent copy of its state at its applied
    index; the follower's shell stages it (temp file, fsync) and feeds this to
    the core, which answers with ``Ready.install_snapshot`` if it wants it.
    ``config`` is the latest config entry at or before ``index``.
    """

    term: int
    sender: int
    index: int
    index_term: int
    config: Entry


Message = Append | AppendReply | VoteRequest | VoteReply | TimeoutNow | InstallSnapshot


NO_HEARTBEAT = -1
"""The echo_sent_at_ms of an AppendReply that answers no heartbeat (an InstallSnapshot, or
one refused for its term): it stamps no round trip."""

# Fields that may be negative: send times are readings of the leader's monotonic
# clock, and NO_HEARTBEAT is echoed by replies that answer none.
_SIGNED = frozenset({"sent_at_ms", "echo_sent_at_ms"})
_IDS = frozenset({"sender"})


def check_shape(msg: Message) -> None:
    """Refuse values no correct peer sends, whatever the receiver's state.

    Every integer must fit SQLite's signed int64 (a term of 2**63 would make
    the hard-state write fail on every later attempt), counts and indexes must
    not be negative, ids are positive, entries have a known kind. The checks
    that need the receiver's state live in :mod:`coord.core.node`.
    """
    for field in fields(msg):
        value = getattr(msg, field.name)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            low = -MAX_INT64 - 1 if field.name in _SIGNED else 1 if field.name in _IDS else 0
            _check_int(field.name, value, low)
        elif field.name == "isr":
            _check_ids("isr", value)
        elif field.name == "entries":
            for entry in value:
                check_entry(entry)
        elif field.name == "config":
            check_entry(value)


def check_entry(entry: Entry) -> None:
    """A log entry as any correct leader writes it."""
    if not isinstance(entry, Entry) or not isinstance(entry.kind, EntryKind):
        raise RemoteProtocolError(f"entry of unknown kind: {entry!r:.80}")
    _check_int("entry index", entry.index, 1)
    _check_int("entry term", entry.term, 0)
    if not isinstance(entry.payload, bytes):
        raise RemoteProtocolError(f"entry {entry.index} has no byte payload")


def _check_int(name: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= MAX_INT64:
        raise RemoteProtocolError(f"{name} {value!r:.40} is outside [{low}, 2**63-1]")


def _check_ids(name: str, ids: object) -> None:
    if not isinstance(ids, tuple) or len(set(ids)) != len(ids):
        raise RemoteProtocolError(f"{name} is not a list of distinct ids")
    for node_id in ids:
        _check_int(name, node_id, 1)
