"""Peer-to-peer messages: small frozen values with plain fields.

Encoding them (protobuf in ``replication.proto``) is the shell's business; the
core only builds and reads these. Every message carries the sender's ``term``
and id. Heartbeats are :class:`Append` messages, with or without entries: each
one carries its send time on the leader's clock, which the reply echoes, so the
leader can time leases and ISR shrink without comparing clocks across machines.
"""

from __future__ import annotations

from dataclasses import dataclass

from coord.boundary import Entry


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
    """A voter's answer, with its whole state in every case (DESIGN.md section 3)."""

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
