"""Peer-message validation: what no correct peer sends, refused before anything changes.

Each function raises :class:`~coord.core.errors.RemoteProtocolError` for a
message that could only come from a bug or a broken safety assumption on the
other side, and returns for one the node may take (which may still be ignored
or answered with a rejection). They read the node's state, passed in as plain
values, and change nothing: a refused message leaves the node exactly as it
was ("not applied"), which ``tests/core/test_forged.py`` checks message by
message. :meth:`coord.core.node.Node.receive` calls them before its clock
moves, after :func:`may_speak` (who may speak to us at all).
"""

from __future__ import annotations

from collections.abc import Collection

from coord.core.config import ClusterConfig, View
from coord.core.election import Ballot
from coord.core.entry import Entry, EntryKind
from coord.core.errors import RemoteProtocolError
from coord.core.log import NO_NODE, RaftLog
from coord.core.messages import (
    MAX_INT64,
    Append,
    AppendReply,
    InstallSnapshot,
    Message,
    VoteReply,
    VoteRequest,
)
from coord.core.progress import Progress

__all__ = [
    "check_append",
    "check_append_reply",
    "check_entry_run",
    "check_install_snapshot",
    "check_vote_reply",
    "may_speak",
]


def check_append(
    msg: Append, *, term: int, leading: bool, term_leader: int, commit: int, log: RaftLog
) -> None:
    """An Append of a lower term is only answered; one of ours must come from its leader,
    connect to what we committed, and carry configs and a view that are consistent."""
    if msg.term < term:
        return  # answered with a rejection; nothing else of it is used
    if msg.term == term and leading:
        raise RemoteProtocolError(f"node {msg.sender} claims to lead term {msg.term} too")
    if msg.term == term and term_leader not in (NO_NODE, msg.sender):
        raise RemoteProtocolError(
            f"node {msg.sender} claims term {msg.term}, which node {term_leader} leads"
        )
    check_entry_run(msg.prev_index, msg.prev_term, msg.entries, msg.term)
    _check_committed_prefix(msg, commit, log)
    accepted = msg.prev_index < commit or log.match_term(msg.prev_index, msg.prev_term)
    _check_configs(msg, accepted, commit, log)
    if accepted:
        _check_append_view(msg, commit, log)


def check_entry_run(prev_index: int, prev_term: int, entries: tuple[Entry, ...], term: int) -> None:
    """Entries continue ``prev_index`` one by one, terms never falling, none above ``term``."""
    if prev_term > term:
        raise RemoteProtocolError(f"prev_term {prev_term} is above the message's term {term}")
    index, last_term = prev_index, prev_term
    for entry in entries:
        if entry.index != index + 1:
            raise RemoteProtocolError(f"entry {entry.index} does not follow {index}")
        if not last_term <= entry.term <= term:
            raise RemoteProtocolError(f"entry {entry.index} of term {entry.term} is out of order")
        index, last_term = entry.index, entry.term
    if index > MAX_INT64:
        raise RemoteProtocolError("entries run beyond 2**63-1")


def _check_committed_prefix(msg: Append, commit: int, log: RaftLog) -> None:
    """What we hold up to our commit index is final: the leader's log must agree with it."""
    if msg.prev_index <= commit:
        held = log.term(msg.prev_index)
        if held is not None and held != msg.prev_term:
            raise RemoteProtocolError(
                f"prev {msg.prev_index}/{msg.prev_term} contradicts committed term {held}"
            )
    overlap = [e for e in msg.entries if e.index <= commit]
    if not overlap:
        return
    lo = max(overlap[0].index, log.first_available())
    ours = {e.index: e for e in log.entries(lo, overlap[-1].index + 1, MAX_INT64) or ()}
    for entry in overlap:
        if entry.index in ours and ours[entry.index] != entry:
            raise RemoteProtocolError(f"entry {entry.index} differs from our committed one")


def _check_configs(msg: Append, accepted: bool, commit: int, log: RaftLog) -> None:
    """Every config entry decodes, and each new one follows the config before it.

    Checked before anything is appended: a config entry that fails to decode
    once it is in the log makes the node fail on every restart.
    """
    base: tuple[int, ClusterConfig] | None = None
    held = log.last_config(msg.prev_index) if accepted else None
    if held is not None:
        base = (held.index, ClusterConfig.decode(held.payload))
    for entry in msg.entries:
        if entry.kind is not EntryKind.CONFIG:
            continue
        config = ClusterConfig.decode(entry.payload)
        if base is not None and entry.index <= base[0]:
            continue  # a compacted stretch the snapshot's config already covers
        if base is not None and entry.index > commit and not config.follows(base[1]):
            raise RemoteProtocolError(
                f"config entry {entry.index} changes min_insync or several members at once"
            )
        base = (entry.index, config)


def _check_append_view(msg: Append, commit: int, log: RaftLog) -> None:
    """The leader's (epoch, ISR) must be those of its config entry at ``epoch``, if held."""
    if msg.epoch < 1:
        raise RemoteProtocolError("an Append without the leader's epoch")
    if msg.epoch > max(commit, msg.prev_index + len(msg.entries)):
        return  # beyond what we will hold: nothing to compare with
    sent = [e for e in msg.entries if e.index == msg.epoch]
    entry = sent[0] if sent else log.last_config(msg.epoch)
    if entry is None or entry.index != msg.epoch:
        if msg.epoch >= log.first_available():
            raise RemoteProtocolError(f"epoch {msg.epoch} is not a config entry")
        return  # compacted: cannot tell
    if entry.kind is not EntryKind.CONFIG:
        raise RemoteProtocolError(f"epoch {msg.epoch} is not a config entry")
    if frozenset(msg.isr) != ClusterConfig.decode(entry.payload).isr:
        raise RemoteProtocolError(f"ISR {list(msg.isr)} is not that of epoch {msg.epoch}")


def check_append_reply(
    msg: AppendReply,
    progress: Progress | None,
    *,
    term: int,
    leading: bool,
    commit: int,
    snapshot_peers: Collection[int],
) -> None:
    """A reply may claim only what the leader sent: its echo a send time of ours, its index
    no further than the Appends (or the snapshot) reached."""
    if not leading or msg.term != term or progress is None:
        return  # a higher term deposes us; anything else is ignored
    echo = msg.echo_sent_at_ms
    if 0 <= echo < progress.created_ms:
        return  # answers an Append from before this bookkeeping (a member re-added)
    if echo < -1 or echo > progress.last_sent_ms:
        raise RemoteProtocolError(f"echo of send time {echo}: no Append was sent then")
    if echo == -1 and msg.success and not progress.snapshot_ordered:
        if msg.sender in snapshot_peers:
            return  # answers a snapshot ordered before this bookkeeping (member re-added)
        raise RemoteProtocolError("a snapshot ack, but no snapshot was ordered")
    bound = progress.ack_bound(commit)
    claimed = msg.match_index if msg.success else msg.reject_index
    if claimed > bound:
        raise RemoteProtocolError(f"reply about index {claimed}, beyond {bound} that was sent")


def check_vote_reply(msg: VoteReply, ballot: Ballot | None) -> None:
    """A grant must be for the term the ballot asked about (a pre-vote's: the next one)."""
    if ballot is None or (msg.campaign, msg.pre_vote) != (ballot.campaign, ballot.pre_vote):
        return  # a late reply to an earlier round: ignored
    if msg.granted and (msg.term >= ballot.term if msg.pre_vote else msg.term != ballot.term):
        raise RemoteProtocolError(f"a grant in term {msg.term} for a ballot of {ballot.term}")


def check_install_snapshot(
    msg: InstallSnapshot, *, term: int, leading: bool, term_leader: int, commit: int, log: RaftLog
) -> None:
    """Only from the leader we follow, in our term, never on a leader; fields consistent.

    A leader orders a snapshot only after the follower answered it this term,
    so a higher term, or a leader other than ours, is no correct peer's doing.
    Our own term while we follow nobody (restarted since, or campaigning) is:
    the node drops that one, and the leader orders again.
    """
    config = msg.config
    if config.kind is not EntryKind.CONFIG or config.index > msg.index:
        raise RemoteProtocolError(f"snapshot at {msg.index} carries no valid config")
    if not config.term <= msg.index_term <= msg.term:
        raise RemoteProtocolError(f"snapshot terms {config.term}/{msg.index_term} out of order")
    ClusterConfig.decode(config.payload)
    if msg.term < term:
        return  # answered with a rejection
    if leading:
        raise RemoteProtocolError(f"node {msg.sender} sends a snapshot to a leader")
    if msg.term > term or term_leader not in (NO_NODE, msg.sender):
        raise RemoteProtocolError(
            f"snapshot from node {msg.sender} in term {msg.term}, not our leader's"
        )
    held = log.term(msg.index)
    if msg.index <= commit and held is not None and held != msg.index_term:
        raise RemoteProtocolError(f"snapshot at {msg.index} contradicts our committed log")


def may_speak(
    msg: Message,
    view: View | None,
    term: int,
    tracked: Collection[int],
    log: RaftLog,
    commit: int,
) -> bool:
    """Only members speak to us (PROTOCOL.md, "Who may speak").

    Exceptions, so that nobody who is owed an answer is shut out: a node
    without a view (joining) hears anyone; a leader whose view is newer than
    ours may be a member added in a config we have not seen yet; a member
    being removed still acks the entries that remove it (``tracked``: the
    peers a leader keeps progress for). Votes from non-members are answered
    "not granted". What changes nothing passes: a stale term gets its
    rejection (a deposed leader learns the term), late replies are ignored,
    and so is a reply from a member of our latest committed config, though
    not of our view: it is being removed, and may honestly answer, in a
    higher term, an Append we sent while we led (the bookkeeping that let its
    replies in is gone once we stepped down).
    """
    if view is None or msg.sender in view.config.member_ids:
        return True
    match msg:
        case Append():
            newer = (msg.term, msg.epoch) > view.key  # a leader's view is of its own term
            return newer or msg.term < term
        case InstallSnapshot():
            return (msg.config.term, msg.config.index) > view.key or msg.term < term
        case VoteRequest():
            return True
        case AppendReply() | VoteReply():
            if msg.term <= term or msg.sender in tracked:
                return True
            committed = log.last_config(commit)
            return (
                committed is not None
                and msg.sender in ClusterConfig.decode(committed.payload).member_ids
            )
    return False
