"""The client side of the network fault tests: writers, a status poller, the readback.

It runs as a subprocess inside the client network namespace, first for the run
and then, once the faults have healed, for the readback::

    python -m tests.netns.workload run --cluster 1=10.77.0.11:7001,... \\
        --secs 30 --writers 4 --setup --out run.json
    python -m tests.netns.workload readback --cluster ... --out readback.json

``run`` starts W writers, each its own account and :class:`ChatClient`,
sending unique bodies round-robin to a few recipient accounts, and records an
:class:`~tests.netns.checker.Op` per send; beside them a poller asks every
member for its own status every 50 ms. The file it writes is a
:class:`~tests.netns.checker.History` (times from this process's monotonic
clock). ``readback`` logs in as each recipient and writes every stored
message, read or not, in id order. ``--setup`` first creates the accounts (an
existing one is fine). The test process reads the replicas' ``state.db``
itself with :func:`dump_replica` and hands it all to
:func:`~tests.netns.checker.check`.

Bodies are ``<run tag>/w<writer>/<seq>``: unique across the runs of one
cluster too, so a second run's readback also shows the first run's messages,
and that run's history must then be checked with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from client.cli import add_cluster_flag, add_tls_flags, tls_from_args
from client.connect import open_channel
from client.library import AlreadyExists, ChatClient, ChatError, RetryPolicy
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from proto.cli import Parser, member_addresses
from tests.netns.checker import (
    DEFINITE_FAILURES,
    History,
    Op,
    Outcome,
    StatusSample,
    Stored,
    readback_from_dict,
    readback_to_dict,
)

PASSWORD = "workload password"
RECIPIENTS = 3
OP_POLICY = RetryPolicy(
    deadline_s=3.0, attempt_timeout_s=1.0, probe_timeout_s=0.5, max_backoff_s=0.25
)
"""Each send gives up (as "info") after about 3 s, so a writer cut off by a partition
keeps producing ops rather than retrying one for the library's default 10 s."""
OP_BOUND_S = OP_POLICY.deadline_s + 2 * OP_POLICY.attempt_timeout_s
"""A backstop over the library's own deadline: no op may hang a writer."""
SETUP_POLICY = RetryPolicy()  # setup and readback run on a healed cluster: the default 10 s
STATUS_EVERY_S = 0.05
STATUS_TIMEOUT_S = 0.25  # a node cut off or paused never answers; move on to the next poll
READBACK_TIMEOUT_S = 60.0  # one recipient's whole inbox
NODE_LOCAL_TABLES = frozenset({"meta"})
"""Tables of state.db that are not replicated content: meta holds the applied index,
how far this node has got, not what it holds."""


def writer_name(client: int) -> str:
    return f"writer-{client}"


def recipient_names(count: int) -> list[str]:
    return [f"inbox-{i}" for i in range(count)]


# -- setup --------------------------------------------------------------------------------


async def setup(
    addresses: Sequence[str],
    credentials: grpc.ChannelCredentials | None,
    writers: int,
    recipients: int,
) -> None:
    """Create every account the workload uses; one that exists already is fine."""
    names = [writer_name(i) for i in range(writers)] + recipient_names(recipients)
    async with ChatClient(addresses, credentials=credentials, policy=SETUP_POLICY) as chat:
        for name in names:
            with contextlib.suppress(AlreadyExists):
                await chat.create_account(name, PASSWORD)


# -- the run --------------------------------------------------------------------------------


def classify(error: ChatError) -> tuple[Outcome, str]:
    """'fail' only for a code that proves nothing changed (checker.DEFINITE_FAILURES)."""
    outcome: Outcome = "fail" if error.code.name in DEFINITE_FAILURES else "info"
    return outcome, f"{error.code.name}: {error}"


async def send_one(chat: ChatClient, client: int, recipient: str, body: str) -> Op:
    """One SendMessage, timed and classified; never raises for a failed send."""
    invoked = time.monotonic()
    outcome: Outcome = "ok"
    message_id, error = 0, ""
    try:
        async with asyncio.timeout(OP_BOUND_S):
            message_id = (await chat.send_message(recipient, body)).message_id
    except ChatError as exc:
        outcome, error = classify(exc)
    except TimeoutError:
        outcome, error = "info", f"no answer within {OP_BOUND_S:g}s"
    return Op(client, body, recipient, invoked, time.monotonic(), outcome, message_id, error)


@dataclass
class Until:
    """When the writers stop: after the run's seconds, or sooner on SIGTERM (a test that
    runs writes across an operation of unknown length ends the run when it is done)."""

    at: float

    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def now(self) -> None:
        self.at = min(self.at, time.monotonic())


async def log_in_until(chat: ChatClient, name: str, until: Until) -> bool:
    """Log in, retrying through outages until `until`; False if the run ended first.

    A definite refusal (no such account) is a usage error and raised."""
    while not until.passed():
        try:
            await chat.login(name, PASSWORD)
            return True
        except ChatError as exc:
            if classify(exc)[0] == "fail":
                raise
            await asyncio.sleep(OP_POLICY.first_backoff_s)  # a pause, should it fail at once
    return False


async def write(
    client: int,
    chat: ChatClient,
    recipients: Sequence[str],
    tag: str,
    until: Until,
    ops: list[Op],
) -> None:
    """Send unique bodies, one at a time, round-robin over recipients until `until`."""
    if not await log_in_until(chat, writer_name(client), until):
        return
    for seq in itertools.count():
        if until.passed():
            return
        recipient = recipients[(client + seq) % len(recipients)]
        ops.append(await send_one(chat, client, recipient, f"{tag}/w{client}/{seq}"))


async def poll_member(
    channel: grpc.aio.Channel, stop: asyncio.Event, samples: list[StatusSample]
) -> None:
    """Ask one member for its own status every STATUS_EVERY_S until stop is set."""
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    loop = asyncio.get_running_loop()
    next_poll = loop.time()
    while not stop.is_set():
        with contextlib.suppress(grpc.aio.AioRpcError):
            status = await stub.GetClusterStatus(
                pb.GetClusterStatusRequest(), timeout=STATUS_TIMEOUT_S
            )
            samples.append(StatusSample(time.monotonic(), status.node_id, status.role, status.term))
        next_poll = max(next_poll + STATUS_EVERY_S, loop.time())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(next_poll):
                await stop.wait()  # the poll period, cut short by the end of the run


async def poll_status(
    addresses: Sequence[str],
    credentials: grpc.ChannelCredentials | None,
    stop: asyncio.Event,
    samples: list[StatusSample],
) -> None:
    """Every member's own role and term for the whole run, each address asked directly."""
    channels = [open_channel(address, credentials) for address in addresses]
    try:
        await asyncio.gather(*(poll_member(c, stop, samples) for c in channels))
    finally:
        for channel in channels:
            await channel.close()


async def run(
    addresses: Sequence[str],
    credentials: grpc.ChannelCredentials | None,
    secs: float,
    writers: int,
    recipients: int = RECIPIENTS,
    tag: str = "",
) -> History:
    """W writers for `secs` seconds (ops in flight then are finished) and the poller."""
    tag = tag or uuid.uuid4().hex[:8]
    names = recipient_names(recipients)
    ops: list[Op] = []
    samples: list[StatusSample] = []
    stop = asyncio.Event()
    poller = asyncio.create_task(poll_status(addresses, credentials, stop, samples))
    until = Until(time.monotonic() + secs)
    with contextlib.suppress(NotImplementedError, RuntimeError):  # not in the main thread
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, until.now)
    clients = [
        ChatClient(addresses, credentials=credentials, policy=OP_POLICY) for _ in range(writers)
    ]
    try:
        await asyncio.gather(
            *(write(i, chat, names, tag, until, ops) for i, chat in enumerate(clients))
        )
    finally:
        stop.set()
        for chat in clients:
            await chat.close()
        await poller
    return History(tuple(ops), tuple(samples))


# -- the readback ----------------------------------------------------------------------------


async def read_inbox(
    addresses: Sequence[str], credentials: grpc.ChannelCredentials | None, name: str
) -> list[Stored]:
    """Every message stored for `name`, read or not, in id order, changing none of them.

    Login (a replicated write, so linearizable) tells the newest id; Subscribe
    from id 0 streams the stored messages up to it. ReadMessages would not do:
    it returns only unread messages and marks them read, so a second readback
    would see less.
    """
    async with ChatClient(addresses, credentials=credentials, policy=SETUP_POLICY) as chat:
        newest = (await chat.login(name, PASSWORD)).last_message_id
        inbox: list[Stored] = []
        if newest == 0:
            return inbox
        try:
            async with (
                asyncio.timeout(READBACK_TIMEOUT_S),
                contextlib.aclosing(chat.subscribe(after_id=0)) as stream,
            ):
                async for message in stream:
                    inbox.append(Stored(message.id, message.sender, message.body))
                    if message.id >= newest:
                        break
        except TimeoutError:
            raise TimeoutError(
                f"{name}'s messages up to id {newest} did not all arrive within "
                f"{READBACK_TIMEOUT_S:g}s ({len(inbox)} did)"
            ) from None
        return inbox


async def readback(
    addresses: Sequence[str], credentials: grpc.ChannelCredentials | None, recipients: int
) -> dict[str, list[Stored]]:
    return {
        name: await read_inbox(addresses, credentials, name) for name in recipient_names(recipients)
    }


# -- the replicas -------------------------------------------------------------------------------


@contextlib.contextmanager
def _snapshot(state_db: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection inside one read transaction: a consistent view of the state,
    even while the node applies (WAL keeps the snapshot)."""
    uri = state_db.resolve().as_uri() + "?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as db:
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")


def read_replica(
    state_db: Path, only: Sequence[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """A node's replicated tables (all but NODE_LOCAL_TABLES, or just `only`), each row a
    column -> value dict, rows sorted by every column in declared order (id first)."""
    with _snapshot(state_db) as db:
        tables = [
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                " ORDER BY name"
            )
            if name not in NODE_LOCAL_TABLES and (only is None or name in only)
        ]
        return {table: _rows(db, table) for table in tables}


def _rows(db: sqlite3.Connection, table: str) -> list[dict[str, Any]]:
    columns = [row[1] for row in db.execute(f'PRAGMA table_info("{table}")')]
    order = ", ".join(str(i) for i in range(1, len(columns) + 1))
    cursor = db.execute(f'SELECT * FROM "{table}" ORDER BY {order}')
    return [dict(zip(columns, row, strict=True)) for row in cursor]


def dump_replica(state_db: Path) -> dict[str, tuple[tuple[Any, ...], ...]]:
    """The replicated content of a node's state.db, canonical: equal replicas, equal dumps.

    Accounts, sessions, messages and stored request results all are functions
    of the applied log; only the applied index (meta) is the node's own."""
    return {
        table: tuple(tuple(row.values()) for row in rows)
        for table, rows in read_replica(state_db).items()
    }


def replica_inbox(state_db: Path, recipient: str) -> list[tuple[int, str, str]]:
    """(id, sender, body) of the messages to recipient in one node's own applied state."""
    messages = read_replica(state_db, only=("messages",))["messages"]
    return [(m["id"], m["sender"], m["body"]) for m in messages if m["recipient"] == recipient]


# -- files ------------------------------------------------------------------------------------


def write_json(path: Path, value: Any) -> None:
    """Whole or not at all: a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=None, separators=(",", ":")) + "\n")
    os.replace(partial, path)


def load_history(path: Path) -> History:
    return History.from_dict(json.loads(path.read_text()))


def load_readback(path: Path) -> dict[str, list[Stored]]:
    return readback_from_dict(json.loads(path.read_text())["readback"])


def save_readback(path: Path, inboxes: Mapping[str, Sequence[Stored]]) -> None:
    write_json(path, {"readback": readback_to_dict(inboxes)})


# -- the command line -----------------------------------------------------------------------------


def _parser() -> Parser:
    parser = Parser(prog="workload", description="The fault tests' client: run, then read back.")
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=Parser)
    for verb, text in (
        ("run", "W writers for S seconds, with a status poller; the history to --out"),
        ("readback", "every recipient's stored messages, in id order, to --out"),
    ):
        sub = verbs.add_parser(verb, help=text, description=text)
        add_cluster_flag(sub)
        add_tls_flags(sub)
        sub.add_argument("--out", type=Path, required=True, metavar="FILE")
        sub.add_argument("--writers", type=int, default=3, metavar="W")
        sub.add_argument("--recipients", type=int, default=RECIPIENTS, metavar="R")
        sub.add_argument("--setup", action="store_true", help="create the accounts first")
        if verb == "run":
            sub.add_argument(
                "--secs",
                type=float,
                required=True,
                metavar="S",
                help="how long to write; SIGTERM ends the run sooner",
            )
            sub.add_argument("--tag", default="", help="the bodies' prefix (random if unset)")
    dump = verbs.add_parser(
        "dump",
        help="a node's replicated state as JSON on stdout (run on the node's own machine)",
    )
    dump.add_argument("--state-db", type=Path, required=True, metavar="FILE")
    return parser


async def _main(args: argparse.Namespace) -> str:
    """Run the verb; the one line to print about it."""
    addresses = member_addresses(args.cluster)
    credentials = tls_from_args(args)
    if args.setup:
        await setup(addresses, credentials, args.writers, args.recipients)
    if args.verb == "run":
        history = await run(
            addresses, credentials, args.secs, args.writers, args.recipients, args.tag
        )
        write_json(args.out, history.to_dict())
        ends = [op.outcome for op in history.ops]
        counts = ", ".join(f"{ends.count(o)} {o}" for o in ("ok", "info", "fail"))
        return f"run: {len(ends)} ops ({counts}), {len(history.samples)} status samples"
    inboxes = await readback(addresses, credentials, args.recipients)
    save_readback(args.out, inboxes)
    return f"readback: {sum(map(len, inboxes.values()))} messages for {len(inboxes)} recipients"


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.verb == "dump":
        # Only through the path the node itself uses: SQLite's locks are per file as
        # the kernel sees it, and a reader that bypasses them (an overlay's upper
        # layer, say) may rebuild the WAL index under the node: SIGBUS there.
        print(json.dumps(dump_replica(args.state_db)))
        return
    if args.writers < 1 or args.recipients < 1 or getattr(args, "secs", 1) < 0:
        parser.error("--writers and --recipients must be at least 1, --secs at least 0")
    try:
        member_addresses(args.cluster)
        tls_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        parser.exit(1, f"workload: {exc}\n")
    try:
        print(asyncio.run(_main(args)))
    except (ChatError, OSError, TimeoutError) as exc:
        print(f"workload {args.verb}: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
