"""Scenario scripts for the protocol core, in the style of etcd raft's datadriven testdata.

A script (``tests/core/testdata/*.txt``) is a sequence of blocks: a command
line, a line ``----``, the output the command must print, and a blank line.
Lines starting with ``#`` between blocks are comments (each file's header says
what it shows and which section of coord/PROTOCOL.md it demonstrates). The
commands drive a :class:`~coord.testing.harness.Cluster` on its fake clock and
print what the nodes do, one event a line, in the simulator's ``--trace``
form (:func:`coord.testing.sim.event_line`): each Ready that writes or
commits something, each role change, each message as it is put on the wire
(``n2 <- ...`` is a message for node 2), each entry applied.

Commands:

``add-nodes N [mode=failstop|quorum] [min-insync=K]``
    a brand-new cluster of N members (quorum mode means ``min_insync`` N//2+1)
``add ID`` / ``remove ID``
    an empty process ID, then the leader adds it; the leader removes ID
``campaign ID``
    ID starts an election now (a pre-vote first, as an expired lease would)
``advance MS``
    the clock moves MS ms in half-heartbeat steps; every running node gets its
    messages, then a tick, at each step. Heartbeats (Appends without entries)
    and every AppendReply are not printed here, only counted.
``stabilize``
    messages are delivered until no node has any left; the clock stands still
``propose ID DATA`` / ``transfer FROM TO`` / ``force-leader ID``
    what a client or an operator asks of a node
``crash ID`` / ``restart ID`` / ``partition ID`` / ``heal``
    faults: kill -9, a new process over the durable state, every link of ID cut
``compact ID KEEP``
    ID drops its log up to KEEP entries behind its applied index
``status ID``
    the node's :class:`~coord.core.status.Status`, one line and one per member

With ``REWRITE=1`` in the environment the runner writes what the commands
print as each block's expected output; review every line before committing.
"""

from __future__ import annotations

import difflib
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coord.core.config import AddMember, ClusterConfig, RemoveMember
from coord.core.entry import Entry, EntryKind
from coord.core.errors import CoordError
from coord.core.messages import Append, AppendReply, Message
from coord.core.node import Node
from coord.core.ready import Ready
from coord.testing.harness import TEST_SETTINGS, CoreCluster
from coord.testing.sim import describe, describe_apply, describe_soft, event_line

__all__ = ["Interpreter", "run_file"]

SEPARATOR = "----"


@dataclass(frozen=True, slots=True)
class Block:
    """One command of a script and the comment lines before it (its expected output is
    compared as part of the whole file)."""

    comments: tuple[str, ...]
    command: str


def parse(text: str) -> tuple[list[Block], tuple[str, ...]]:
    """The blocks of a script, and the comment lines after the last one."""
    blocks: list[Block] = []
    comments: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            if line.strip():
                comments.append(line)
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1] != SEPARATOR:
            raise ValueError(f"line {i + 1}: {line!r} is not followed by {SEPARATOR!r}")
        end = i + 2
        while end < len(lines) and lines[end].strip():
            end += 1
        blocks.append(Block(tuple(comments), line))
        comments = []
        i = end
    return blocks, tuple(comments)


def render(blocks: list[Block], outputs: list[str], trailer: tuple[str, ...]) -> str:
    """A script with ``outputs`` as the blocks' expected output (for ``REWRITE=1``)."""
    parts = []
    for block, output in zip(blocks, outputs, strict=True):
        head = "\n".join(block.comments)
        parts.append((head + "\n" if head else "") + f"{block.command}\n{SEPARATOR}\n{output}")
    text = "\n\n".join(parts) + "\n"
    return text + ("\n" + "\n".join(trailer) + "\n" if trailer else "")


class TracedNode(Node):
    """A :class:`Node` that passes each Ready it hands out to ``show`` first."""

    show: Callable[[int, Ready], None]

    def ready(self) -> Ready:
        ready = super().ready()
        self.show(self.id, ready)
        return ready


class ScriptCluster(CoreCluster):
    """The harness's cluster, printing every Ready, message and apply as it happens."""

    def __init__(self, out: Callable[[str], None], n: int, min_insync: int) -> None:
        self._out = out
        self.quiet_heartbeats = False
        self.heartbeats = 0
        super().__init__(
            n,
            settings=TEST_SETTINGS,
            min_insync=min_insync,
            node_factory=self._node,
            on_message=self._show_message,
        )

    def _node(self, *args: Any, **kwargs: Any) -> Node:
        """The harness's node factory: a node that shows us each Ready it hands out."""
        node = TracedNode(*args, **kwargs)
        node.show = self._show_ready
        return node

    def note(self, node_id: int, text: str) -> None:
        self._out(event_line(self.now, node_id, text))

    def _show_ready(self, node_id: int, ready: Ready) -> None:
        parts = []
        if ready.install_snapshot is not None:
            parts.append(f"install snapshot at {ready.install_snapshot.index}")
        if ready.hard_state is not None:
            hard = ready.hard_state
            parts.append(f"term {hard.term} vote {hard.voted_for}")
        if ready.entries:
            parts.append("entries " + ", ".join(map(_entry, ready.entries)))
        if parts:
            self.note(node_id, "ready: " + "; ".join(parts))
        for election in ready.elections:  # each decision with its reason
            self.note(node_id, str(election))
        if ready.soft_state is not None:
            self.note(node_id, describe_soft(ready.soft_state))
        for entry in ready.committed:  # the shell applies them as it carries the Ready out
            self.note(node_id, describe_apply(entry))

    def _show_message(self, sender: int, to: int, msg: Message) -> None:
        heartbeat = isinstance(msg, AppendReply) or (isinstance(msg, Append) and not msg.entries)
        if self.quiet_heartbeats and heartbeat:
            self.heartbeats += 1
        else:
            fate = ""
            if (sender, to) in self.cut:
                fate = " (link cut)"
            elif to in self.crashed:
                fate = f" (refused: n{to} is down)"
            self.note(to, f"<- {describe(msg)}{fate}")

    def deliver(self, node_id: int) -> None:
        seen = len(self.refused)
        super().deliver(node_id)
        for _, msg, error in self.refused[seen:]:
            self.note(node_id, f"refused {describe(msg)}: {error}")


def _entry(entry: Entry) -> str:
    text = f"{entry.index}/t{entry.term} {entry.kind.name}"
    if entry.kind is EntryKind.CONFIG:
        config = ClusterConfig.decode(entry.payload)
        return f"{text} members {list(config.member_ids)} isr {sorted(config.isr)}"
    if entry.kind is EntryKind.OP:
        return f"{text} {entry.payload.decode(errors='replace')}"
    return text


class Interpreter:
    """Runs the commands of one script over one cluster, collecting what they print."""

    def __init__(self) -> None:
        self.cluster: ScriptCluster | None = None
        self.lines: list[str] = []

    def run(self, command: str) -> str:
        self.lines.clear()
        name, *args = shlex.split(command)
        handler = getattr(self, "do_" + name.replace("-", "_"), None)
        if handler is None:
            raise ValueError(f"unknown command {name!r}")
        try:
            handler(*args)
        except CoordError as exc:
            self.lines.append(f"error: {type(exc).__name__}: {exc}")
        return "\n".join(self.lines) if self.lines else "ok"

    @property
    def c(self) -> ScriptCluster:
        if self.cluster is None:
            raise ValueError("add-nodes first")
        return self.cluster

    def _node(self, node_id: str) -> Node:
        return self.c.node(int(node_id))

    # -- commands ----------------------------------------------------------------

    def do_add_nodes(self, n: str, *options: str) -> None:
        settings = dict(option.split("=", 1) for option in options)
        count = int(n)
        mode = settings.pop("mode", "failstop")
        default = count // 2 + 1 if mode == "quorum" else 1
        min_insync = int(settings.pop("min-insync", default))
        if settings or mode not in ("failstop", "quorum"):
            raise ValueError(f"unknown options {options}")
        self.cluster = ScriptCluster(self.lines.append, count, min_insync)

    def do_campaign(self, node_id: str) -> None:
        node = self._node(node_id)
        node.campaign(self.c.now)
        self.c.flush(node.id)

    def do_advance(self, ms: str) -> None:
        c = self.c
        c.quiet_heartbeats, c.heartbeats = True, 0
        try:
            c.run(int(ms))
        finally:
            c.quiet_heartbeats = False
        if c.heartbeats:
            self.lines.append(f"({c.heartbeats} heartbeats and replies not shown)")

    def do_stabilize(self) -> None:
        """Deliver, and carry out Readys (a refused send makes one after its flush), until
        every running node is quiet."""
        c = self.c
        for _ in range(1000):
            running = [i for i in sorted(c.shells) if i not in c.crashed and i not in c.paused]
            busy = [i for i in running if c.inbox[i] or c.node(i).has_ready()]
            if not busy:
                return
            for node_id in busy:
                c.deliver(node_id)
                c.flush(node_id)
        raise AssertionError("messages still flowing after 1000 rounds")

    def do_propose(self, node_id: str, data: str) -> None:
        node = self._node(node_id)
        index, term = node.propose(data.encode(), self.c.now)
        self.lines.append(f"proposed at {index}/t{term}")
        self.c.flush(node.id)

    def do_transfer(self, source: str, target: str) -> None:
        node = self._node(source)
        node.transfer_leadership(int(target), self.c.now)
        self.c.flush(node.id)

    def do_force_leader(self, node_id: str) -> None:
        node = self._node(node_id)
        node.force_leader(self.c.now)
        self.c.flush(node.id)

    def do_add(self, node_id: str) -> None:
        self.c.add_node(int(node_id))
        self._change(AddMember(int(node_id), f"node{node_id}:7000"))

    def do_remove(self, node_id: str) -> None:
        self._change(RemoveMember(int(node_id)))

    def _change(self, change: AddMember | RemoveMember) -> None:
        leader = self.c.leader()
        index, term = self.c.node(leader).propose_config_change(change, self.c.now)
        self.lines.append(f"n{leader} proposed the change at {index}/t{term}")
        self.c.flush(leader)

    def do_crash(self, node_id: str) -> None:
        self.c.crash(int(node_id))

    def do_restart(self, node_id: str) -> None:
        self.c.restart(int(node_id))

    def do_partition(self, node_id: str) -> None:
        self.c.isolate(int(node_id))

    def do_heal(self) -> None:
        self.c.heal()

    def do_compact(self, node_id: str, keep: str) -> None:
        shell = self.c.shells[int(node_id)]
        shell.compact(int(keep))
        self.lines.append(f"n{node_id} log starts at {shell.storage.first_index()}")

    def do_status(self, node_id: str) -> None:
        node = self._node(node_id)
        s = node.status(self.c.now)
        self.lines.append(
            f"n{s.node_id} {s.role} term {s.term} leader {s.leader_id} commit {s.commit_index}"
            f" last {node.log.last_index()} epoch {s.config_epoch} min-insync {s.min_insync}"
            f" restarted {node.inspect().restarted}"
        )
        for m in s.members:
            self.lines.append(
                f"  n{m.id} in-sync {m.in_sync} match {m.match_index} reachable {m.reachable}"
            )


def run_file(path: Path, *, rewrite: bool | None = None) -> str:
    """Run one script; return a diff of expected and actual output ('' when they agree).

    With ``rewrite`` (default: ``REWRITE=1`` in the environment) the file is
    rewritten with the actual output instead, and '' is returned.
    """
    if rewrite is None:
        rewrite = os.environ.get("REWRITE") == "1"
    text = path.read_text()
    blocks, trailer = parse(text)
    interpreter = Interpreter()
    outputs = [interpreter.run(block.command) for block in blocks]
    actual = render(blocks, outputs, trailer)
    if rewrite:
        path.write_text(actual)
        return ""
    if actual == text:
        return ""
    diff = difflib.unified_diff(
        text.splitlines(), actual.splitlines(), f"{path.name} (expected)", "actual", lineterm=""
    )
    return "\n".join(diff)
