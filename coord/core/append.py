"""How a follower takes an Append or a snapshot (coord/PROTOCOL.md §9, §10), as pure functions.

The follower's decisions: where the leader's entries connect to its log, which
of them it already holds, where a conflicting suffix starts (it is replaced
from there), what its ack claims and how far its commit index moves, which
view it holds after the write; and whether a snapshot is news to it. They see
the log only through ``term_of`` (the term at an index, None if beyond the log
or compacted) and ``config_up_to``, so each reads and tests apart from the
:class:`~coord.core.node.Node` that carries them out (``tests/core/test_append.py``
holds their tables). Nothing at or below the follower's commit index is ever
replaced: :func:`~coord.core.checks.check_append` has refused an Append that
would change it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from coord.core.config import View
from coord.core.entry import Entry, EntryKind
from coord.core.messages import Append

__all__ = [
    "Accepted",
    "TermOf",
    "accept_append",
    "installs_snapshot",
    "new_suffix",
    "view_after_write",
]

TermOf = Callable[[int], int | None]
"""The term of our log at an index; None if the log does not reach it or compacted it."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """What a follower does with an Append that connects to its log.

    ``suffix``: the entries to write (the first it does not hold and every one
    after it; empty when it holds them all). ``match``: the last index the
    Append shows it holds as the leader does, which its ack claims.
    ``commit``: its commit index after the Append (never lower than before).
    """

    suffix: tuple[Entry, ...]
    match: int
    commit: int


def accept_append(msg: Append, commit: int, term_of: TermOf) -> Accepted | None:
    """Take ``msg`` against a log with commit index ``commit``; None: it does not connect.

    It connects where our log has ``prev_term`` at ``prev_index``, or at our
    commit index when ``prev`` is before it (what we committed is the leader's
    too). Entries at or below our commit index are skipped, never compared.
    """
    if msg.prev_index < commit:
        connects = commit
    elif term_of(msg.prev_index) == msg.prev_term:
        connects = msg.prev_index
    else:
        return None
    match = max(connects, msg.prev_index + len(msg.entries))
    suffix = new_suffix([e for e in msg.entries if e.index > commit], term_of)
    return Accepted(suffix, match, max(commit, min(msg.commit, match)))


def new_suffix(entries: Sequence[Entry], term_of: TermOf) -> tuple[Entry, ...]:
    """The entries from the first we do not hold (same index and term) on; () if we hold all.

    By Log Matching, an entry we hold makes every one before it ours too, so
    the first one we lack (beyond our log, or of another term: a conflict,
    whose suffix is cut) starts the part to write.
    """
    for position, entry in enumerate(entries):
        if term_of(entry.index) != entry.term:
            return tuple(entries[position:])
    return ()


def installs_snapshot(index: int, index_term: int, commit: int, term_of: TermOf) -> bool:
    """Whether a snapshot through ``(index, index_term)`` replaces our log.

    Only beyond our commit index, and only when our log lacks its last entry:
    holding that entry, we hold everything the snapshot covers (Log Matching)
    and keep our log, the entries after it included.
    """
    return index > commit and term_of(index) != index_term


def view_after_write(
    view: View | None,
    cut: int | None,
    written: Sequence[Entry],
    config_up_to: Callable[[int], Entry | None],
) -> View | None:
    """Our view once ``written`` is in the log (from ``cut`` on, if it replaced a suffix).

    A config entry takes effect when written, committed or not: the last one
    written is the view. Without one, a cut that removed the entry our view
    came from falls back to the last config before the cut (``config_up_to``,
    asked only then); otherwise the view stays.
    """
    configs = [e for e in written if e.kind is EntryKind.CONFIG]
    if configs:
        return View.of(configs[-1])
    if cut is not None and view is not None and view.epoch >= cut:
        entry = config_up_to(cut - 1)
        return View.of(entry) if entry else None
    return view
