"""Peer-message validation as tables (coord/core/checks.py): message -> refused or taken,
with the reason a refusal gives."""

from __future__ import annotations

import pytest

from coord.core.checks import check_entry_run, check_vote_reply, may_speak
from coord.core.config import ClusterConfig, View, config_entry
from coord.core.election import Ballot
from coord.core.entry import Entry, EntryKind
from coord.core.errors import RemoteProtocolError
from coord.core.log import MemoryStorage, RaftLog
from coord.core.messages import Append, AppendReply, Message, VoteReply, VoteRequest

CONFIG = ClusterConfig.create({1: "a", 2: "b", 3: "c"}, min_insync=1)
VIEW = View.of(config_entry(4, 2, CONFIG))  # epoch 4, of term 2
VIEW_NOW = View.of(config_entry(4, 3, CONFIG))  # epoch 4, written in our term 3


def op(index: int, term: int) -> Entry:
    return Entry(index, term, EntryKind.OP, b"x")


@pytest.mark.parametrize(
    ("prev_index", "prev_term", "entries", "term", "refusal"),
    [
        (5, 2, (op(6, 2), op(7, 3)), 3, None),
        (5, 2, (), 3, None),  # a heartbeat
        (5, 4, (), 3, "prev_term 4 is above the message's term 3"),
        (5, 2, (op(7, 2),), 3, "entry 7 does not follow 5"),
        (5, 2, (op(6, 3), op(7, 2)), 3, "entry 7 of term 2 is out of order"),
        (5, 2, (op(6, 4),), 3, "entry 6 of term 4 is out of order"),
        (2**63 - 1, 2, (op(2**63, 2),), 3, "entries run beyond 2\\*\\*63-1"),
    ],
)
def test_check_entry_run(
    prev_index: int, prev_term: int, entries: tuple[Entry, ...], term: int, refusal: str | None
) -> None:
    if refusal is None:
        check_entry_run(prev_index, prev_term, entries, term)
    else:
        with pytest.raises(RemoteProtocolError, match=refusal):
            check_entry_run(prev_index, prev_term, entries, term)


def vote_reply(*, term: int, pre_vote: bool, granted: bool = True, campaign: int = 7) -> VoteReply:
    return VoteReply(term, 2, pre_vote, campaign, granted, 1, 1, 1, 0, (1, 2, 3), False, False, 0)


VOTE = Ballot(False, 5, 7, 0, frozenset({2, 3}), 0)  # a real vote for term 5
PRE_VOTE = Ballot(True, 5, 7, 0, frozenset({2, 3}), 0)  # a pre-vote for term 5, from term 4


@pytest.mark.parametrize(
    ("msg", "ballot", "refusal"),
    [
        (vote_reply(term=5, pre_vote=False), VOTE, None),
        (vote_reply(term=6, pre_vote=False, granted=False), VOTE, None),  # a refusal: any term
        (vote_reply(term=6, pre_vote=False), VOTE, "a grant in term 6 for a ballot of 5"),
        (vote_reply(term=4, pre_vote=True), PRE_VOTE, None),  # the voter is still in term 4
        (vote_reply(term=5, pre_vote=True), PRE_VOTE, "a grant in term 5 for a ballot of 5"),
        (vote_reply(term=9, pre_vote=False, campaign=1), VOTE, None),  # another round: ignored
        (vote_reply(term=9, pre_vote=False), None, None),  # no ballot: ignored
    ],
)
def test_check_vote_reply(msg: VoteReply, ballot: Ballot | None, refusal: str | None) -> None:
    if refusal is None:
        check_vote_reply(msg, ballot)
    else:
        with pytest.raises(RemoteProtocolError, match=refusal):
            check_vote_reply(msg, ballot)


def append(sender: int, term: int, epoch: int) -> Append:
    return Append(term, sender, 0, 0, (), 0, epoch, (1,), 0, 0)


def append_reply(sender: int, term: int) -> AppendReply:
    return AppendReply(term, sender, True, 0, 0, 0, 0, 0)


def vote_request(sender: int) -> VoteRequest:
    return VoteRequest(3, sender, True, 0, 0, 0, 0, 0, 0)


EMPTY_LOG = RaftLog(MemoryStorage(), cached_entries=16)


@pytest.mark.parametrize(
    ("msg", "view", "tracked", "expected"),
    [
        (append(9, 3, 1), None, (), True),  # no view yet (joining): anyone
        (append(2, 3, 1), VIEW, (), True),  # a member
        (append(9, 3, 5), VIEW, (), True),  # a leader with a newer view: maybe added since
        (append(9, 2, 9), VIEW, (), True),  # its view of term 2 at 9 is newer than ours (2, 4)
        (append(9, 3, 1), VIEW_NOW, (), False),  # an older view than ours: no say
        (append(9, 2, 1), VIEW, (), True),  # a stale term: it gets its rejection
        (vote_request(9), VIEW, (), True),  # answered "not granted"
        (append_reply(9, 3), VIEW, (), True),  # a late reply: ignored
        (append_reply(9, 4), VIEW, (), False),  # a stranger's reply of a higher term
        (append_reply(9, 4), VIEW, (9,), True),  # a member being removed still acks
    ],
)
def test_may_speak(
    msg: Message, view: View | None, tracked: tuple[int, ...], expected: bool
) -> None:
    assert may_speak(msg, view, 3, tracked, EMPTY_LOG, 0) is expected
