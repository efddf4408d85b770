"""What a fault run's history must satisfy: the set/queue checks of Jepsen, for chat.

Pure analysis, no I/O, in the spirit of Jepsen's (Knossos') set and queue
checkers. A workload records one :class:`Op` per ``SendMessage`` attempt and
:class:`StatusSample` s of every node's role and term; after the faults heal it
reads every recipient's stored messages back (the *readback*) and dumps every
replica's state. :func:`check` then says whether what the cluster acknowledged,
stored and replicated is consistent, naming every violation in one line.

An op's outcome is what the client can prove about it:

- ``ok``: acknowledged with a message id; it must be stored, once, under that id.
- ``fail``: refused with a code that guarantees nothing changed
  (:data:`DEFINITE_FAILURES`); it must not be stored.
- ``info``: indeterminate (timeout, ``UNAVAILABLE``, connection lost, any other
  code); it may or may not be stored, but at most once.

Ids are log positions (docs/design.md), unique and increasing in commit order
across all recipients, so real-time order is checked across recipients: if op
a was acknowledged before op b was invoked, b's id must exceed a's.

The kinds of violation: ``lost`` (an ok op's body absent), ``duplicate`` (a
body stored twice, or one id holding two messages), ``phantom`` (a body no op
sent), ``failed-but-present``, ``wrong-id`` (stored under another id than
acknowledged), ``wrong-recipient``, ``order`` (an inbox not in increasing id
order, or real-time order broken), ``divergent`` (replica dumps differ) and
``two-leaders`` (two nodes sampled leading one term).
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NamedTuple

Outcome = Literal["ok", "info", "fail"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "info", "fail")

DEFINITE_FAILURES = frozenset(
    {"INVALID_ARGUMENT", "ALREADY_EXISTS", "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND"}
)
"""Status codes (by name) after which a SendMessage certainly changed nothing.

From docs/api.md: INVALID_ARGUMENT (validated before proposing),
UNAUTHENTICATED and PERMISSION_DENIED ("neither changes anything"),
ALREADY_EXISTS and NOT_FOUND (the op was refused, or applied as a stored error
that a retry with the same request id gets again). Everything else is
indeterminate: UNAVAILABLE may come after the op was proposed (too few in-sync
replicas, leadership lost mid-commit), DEADLINE_EXCEEDED and CANCELLED after it
reached a node, and RESOURCE_EXHAUSTED can also be a client-side gRPC limit, so
it is not proof either. Calling a definite failure "info" only weakens the
check; calling an indeterminate one "fail" would raise false alarms."""

ROW_TEXT_MAX = 160  # a row shown in a divergence line is cut to this many characters


# -- the data model -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Op:
    """One SendMessage as the client saw it, with times from the workload's one clock."""

    client: int
    body: str  # unique per op: it is how a stored message names the op that sent it
    recipient: str
    invoked: float
    completed: float
    outcome: Outcome
    message_id: int = 0  # the acknowledged id; 0 unless outcome is "ok"
    error: str = ""  # the failure's text (code and message); '' when ok

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {self.outcome!r}")
        if (self.outcome == "ok") != (self.message_id > 0):
            raise ValueError(f"op {self.body!r}: an id goes with outcome 'ok' and only with it")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Op:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class StatusSample:
    """One node's own GetClusterStatus answer: its role and term at time `at`."""

    at: float
    node: int
    role: str
    term: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StatusSample:
        return cls(**data)


class Stored(NamedTuple):
    """One message of a readback, as the server returned it; any 3-tuple will do."""

    message_id: int
    sender: str
    body: str


Readback = Mapping[str, Sequence[Stored]]
"""Recipient -> its stored messages, in the order the server returned them."""

ReplicaDump = Mapping[str, Sequence[Sequence[Any]]]
"""Table -> rows in a canonical order: equal replicas give equal dumps."""


def readback_to_dict(readback: Readback) -> dict[str, list[list[Any]]]:
    return {recipient: [list(row) for row in rows] for recipient, rows in readback.items()}


def readback_from_dict(data: Mapping[str, Sequence[Sequence[Any]]]) -> dict[str, list[Stored]]:
    return {recipient: [Stored(*row) for row in rows] for recipient, rows in data.items()}


@dataclass(frozen=True, slots=True)
class History:
    """What a workload run records, as one JSON-ready value (the run file)."""

    ops: tuple[Op, ...] = ()
    samples: tuple[StatusSample, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "ops": [op.to_dict() for op in self.ops],
            "samples": [sample.to_dict() for sample in self.samples],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        return cls(
            tuple(Op.from_dict(op) for op in data.get("ops", ())),
            tuple(StatusSample.from_dict(s) for s in data.get("samples", ())),
        )


# -- the verdict ------------------------------------------------------------------------

Kind = Literal[
    "lost",
    "duplicate",
    "phantom",
    "failed-but-present",
    "wrong-id",
    "wrong-recipient",
    "order",
    "divergent",
    "two-leaders",
]


@dataclass(frozen=True, slots=True)
class Violation:
    kind: Kind
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Counts:
    """How many ops ended each way, how many messages the readback holds, and how many
    indeterminate ops turned out applied."""

    ok: int = 0
    info: int = 0
    fail: int = 0
    present: int = 0
    info_present: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    violations: tuple[Violation, ...] = ()
    counts: Counts = field(default_factory=Counts)

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_kind(self) -> Counter[str]:
        return Counter(v.kind for v in self.violations)

    def summary(self, limit: int = 20) -> str:
        """A header line, then up to `limit` violation lines (all are in .violations)."""
        c = self.counts
        head = (
            f"{'valid' if self.ok else 'INVALID'}: {c.ok + c.info + c.fail} ops "
            f"({c.ok} ok, {c.info} info of which {c.info_present} present, {c.fail} fail), "
            f"{c.present} messages present"
        )
        if self.ok:
            return head
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.by_kind().items()))
        lines = [f"{head}; {len(self.violations)} violations: {kinds}"]
        lines += [str(v) for v in self.violations[:limit]]
        if len(self.violations) > limit:
            lines.append(f"... and {len(self.violations) - limit} more")
        return "\n".join(lines)


# -- the checks -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Found:
    """Where a body was found in the readback."""

    recipient: str
    message_id: int


def _locations(readback: Readback) -> dict[str, list[_Found]]:
    found: dict[str, list[_Found]] = defaultdict(list)
    for recipient, rows in readback.items():
        for message_id, _sender, body in rows:
            found[body].append(_Found(recipient, message_id))
    return found


def check(
    ops: Sequence[Op],
    samples: Iterable[StatusSample],
    readback: Readback,
    replicas: Mapping[int, ReplicaDump],
) -> Verdict:
    """Every violation the history shows, each as one line; see the module docstring."""
    by_body = _ops_by_body(ops)
    found = _locations(readback)
    violations = [
        *_check_bodies(by_body, found),
        *_check_ids(readback),
        *_check_recipient_order(readback),
        *_check_real_time(ops, found),
        *_check_replicas(replicas),
        *_check_leaders(samples),
    ]
    outcomes = Counter(op.outcome for op in ops)
    counts = Counts(
        ok=outcomes["ok"],
        info=outcomes["info"],
        fail=outcomes["fail"],
        present=sum(len(rows) for rows in readback.values()),
        info_present=len(info_present(ops, readback)),
    )
    return Verdict(tuple(violations), counts)


def info_present(ops: Iterable[Op], readback: Readback) -> list[Op]:
    """The indeterminate ops that were applied after all (worth a note in a report)."""
    found = _locations(readback)
    return [op for op in ops if op.outcome == "info" and op.body in found]


def _ops_by_body(ops: Iterable[Op]) -> dict[str, Op]:
    by_body: dict[str, Op] = {}
    for op in ops:
        if op.body in by_body:
            raise ValueError(f"two ops share the body {op.body!r}: bodies must be unique")
        by_body[op.body] = op
    return by_body


def _check_bodies(by_body: Mapping[str, Op], found: Mapping[str, list[_Found]]) -> list[Violation]:
    """What each op's body says: lost, failed-but-present, wrong-id, duplicate, phantom."""
    out: list[Violation] = []
    for body, op in by_body.items():
        places = found.get(body, [])
        if op.outcome == "ok" and not places:
            out.append(Violation("lost", f"{body!r} acknowledged as id {op.message_id}, absent"))
        if op.outcome == "fail" and places:
            out.append(
                Violation(
                    "failed-but-present",
                    f"{body!r} failed ({op.error}) yet is stored as id {places[0].message_id}",
                )
            )
        if op.outcome == "ok" and places and all(p.message_id != op.message_id for p in places):
            ids = ", ".join(str(p.message_id) for p in places)
            out.append(
                Violation(
                    "wrong-id", f"{body!r} acknowledged as id {op.message_id}, stored as {ids}"
                )
            )
        if any(p.recipient != op.recipient for p in places):
            where = ", ".join(sorted({p.recipient for p in places}))
            out.append(
                Violation("wrong-recipient", f"{body!r} sent to {op.recipient}, stored for {where}")
            )
    for body, places in found.items():
        if len(places) > 1:
            where = ", ".join(f"{p.recipient}#{p.message_id}" for p in places)
            out.append(Violation("duplicate", f"{body!r} stored {len(places)} times: {where}"))
        if body not in by_body:
            where = ", ".join(f"{p.recipient}#{p.message_id}" for p in places)
            out.append(Violation("phantom", f"{body!r} stored ({where}) but never sent"))
    return out


def _check_ids(readback: Readback) -> list[Violation]:
    """One id names one message, across all recipients (ids are log positions)."""
    holders: dict[int, list[str]] = defaultdict(list)
    for recipient, rows in readback.items():
        for message_id, _sender, body in rows:
            holders[message_id].append(f"{recipient}:{body!r}")
    return [
        Violation("duplicate", f"id {message_id} holds {len(held)} messages: {', '.join(held)}")
        for message_id, held in sorted(holders.items())
        if len(held) > 1
    ]


def _check_recipient_order(readback: Readback) -> list[Violation]:
    out: list[Violation] = []
    for recipient, rows in readback.items():
        for before, after in itertools.pairwise(rows):
            if after[0] <= before[0]:
                out.append(
                    Violation(
                        "order",
                        f"{recipient}'s messages not in increasing id order: "
                        f"id {after[0]} ({after[2]!r}) after id {before[0]} ({before[2]!r})",
                    )
                )
    return out


def _check_real_time(ops: Sequence[Op], found: Mapping[str, list[_Found]]) -> list[Violation]:
    """An op acknowledged before another was invoked must have the lower id.

    Only an acknowledged op has provably taken effect by its completion; any
    stored op (ok or info) took effect after its invocation. So for each stored
    op b, the highest acknowledged id among ops completed before b was invoked
    must be below b's stored id.
    """
    acked = sorted((op for op in ops if op.outcome == "ok"), key=lambda op: op.completed)
    completions = [op.completed for op in acked]
    highest: list[Op] = []  # highest[i]: the op with the top id among acked[: i + 1]
    for op in acked:
        highest.append(op if not highest or op.message_id > highest[-1].message_id else highest[-1])
    out: list[Violation] = []
    for op in ops:
        places = found.get(op.body)
        if not places:
            continue
        earlier = bisect.bisect_left(completions, op.invoked)  # acked[:earlier] ended before
        if not earlier:
            continue
        top = highest[earlier - 1]
        stored_id = places[0].message_id
        if stored_id < top.message_id:
            out.append(
                Violation(
                    "order",
                    f"{op.body!r} (id {stored_id}) was invoked at {op.invoked:.3f}, after "
                    f"{top.body!r} (id {top.message_id}) was acknowledged at {top.completed:.3f}",
                )
            )
    return out


def _check_replicas(replicas: Mapping[int, ReplicaDump]) -> list[Violation]:
    """Every replica equal to the lowest-numbered one; the first differing row named."""
    if not replicas:
        return []
    first, *others = sorted(replicas)
    return [
        Violation("divergent", difference)
        for node in others
        if (difference := _first_difference(first, replicas[first], node, replicas[node]))
    ]


def _first_difference(a: int, dump_a: ReplicaDump, b: int, dump_b: ReplicaDump) -> str:
    """'' if the two dumps are equal, else one line naming the first differing row."""
    for table in sorted(set(dump_a) | set(dump_b)):
        if (table in dump_a) != (table in dump_b):
            has, lacks = (a, b) if table in dump_a else (b, a)
            return f"node {has} has table {table}, node {lacks} has not"
        rows_a = [tuple(row) for row in dump_a[table]]
        rows_b = [tuple(row) for row in dump_b[table]]
        if rows_a == rows_b:
            continue
        at = next(
            (i for i, (x, y) in enumerate(zip(rows_a, rows_b, strict=False)) if x != y),
            min(len(rows_a), len(rows_b)),
        )
        return (
            f"nodes {a} and {b} differ in {table} ({len(rows_a)} vs {len(rows_b)} rows) at "
            f"row {at}: node {a} has {_row_text(rows_a, at)}, node {b} has {_row_text(rows_b, at)}"
        )
    return ""


def _row_text(rows: Sequence[tuple[Any, ...]], at: int) -> str:
    if at >= len(rows):
        return "no row"
    text = repr(rows[at])
    return text if len(text) <= ROW_TEXT_MAX else text[: ROW_TEXT_MAX - 3] + "..."


def _check_leaders(samples: Iterable[StatusSample]) -> list[Violation]:
    """At most one node leads per term (coord/PROTOCOL.md §8.6, Claim 1)."""
    leaders: dict[int, dict[int, float]] = defaultdict(dict)  # term -> node -> first seen
    for sample in samples:
        if sample.role == "leader":
            leaders[sample.term].setdefault(sample.node, sample.at)
    out: list[Violation] = []
    for term, nodes in sorted(leaders.items()):
        if len(nodes) > 1:
            seen = ", ".join(f"node {n} at {at:.3f}" for n, at in sorted(nodes.items()))
            out.append(Violation("two-leaders", f"term {term} was led by {seen}"))
    return out
