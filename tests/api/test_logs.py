"""The node's log lines (chatnode/logs.py): both forms carry time, level, node, term, role,
event and message; the text form leaves the time to the journal; the term and role follow
the node's leadership; and every line an operator sees is named and documented."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TextIO

import pytest

from chatnode.logs import NodeFields, handler
from proto.credentials import ClusterSecret
from tests.support.nodes import elected, in_process_cluster

ROOT = Path(__file__).resolve().parents[2]
LOGGING_SOURCES = ("chatnode", "coord/shell")
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}
FIELDS = {"time", "level", "node", "term", "role", "event", "message"}
TEXT_LINE = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} )?"
    r"(?P<level>[A-Z]+) node=(?P<node>\d+) term=(?P<term>\d+) role=(?P<role>\w+) "
    r"event=(?P<event>[\w.]+): (?P<message>.*)"
)


def emit(stream: TextIO, log_format: str, environ: dict[str, str] | None = None) -> NodeFields:
    """Log through a fresh handler of the given form into stream: one line naming an event,
    one from a library (no event), after the node became leader of term 7."""
    out, fields = handler(log_format, 4, stream, environ or {})
    fields.follow(7, "leader")
    with attached(out, "tests.logs") as logger:
        logger.warning("disk %s is full", "log", extra={"event": "disk_fault"})
    with attached(out, "grpc.example") as library:
        library.info("from a library")
    return fields


@contextlib.contextmanager
def attached(out: logging.Handler, name: str) -> Iterator[logging.Logger]:
    """The named logger writing only to out, for the time of a with block."""
    logger = logging.getLogger(name)
    logger.addHandler(out)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger
    finally:
        logger.removeHandler(out)
        logger.propagate = True


def test_json_lines_parse_and_carry_every_field() -> None:
    stream = io.StringIO()
    emit(stream, "json")
    named, library = (json.loads(line) for line in stream.getvalue().splitlines())
    assert named.keys() >= FIELDS and library.keys() >= FIELDS
    assert {k: named[k] for k in FIELDS - {"time"}} == {
        "level": "WARNING",
        "node": 4,
        "term": 7,
        "role": "leader",
        "event": "disk_fault",
        "message": "disk log is full",
    }
    assert datetime.fromisoformat(named["time"]).utcoffset() is not None
    assert library["event"] == "grpc.example"  # no event named: its logger's name


def test_json_keeps_a_traceback_inside_its_one_line() -> None:
    stream = io.StringIO()
    out, _ = handler("json", 1, stream, {})
    with attached(out, "tests.logs") as logger:
        try:
            raise RuntimeError("a bug")
        except RuntimeError:
            logger.exception("call failed", extra={"event": "internal_error"})
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "internal_error"
    assert "RuntimeError: a bug" in record["exc_info"]


def test_text_lines_carry_every_field() -> None:
    stream = io.StringIO()
    emit(stream, "text")
    named, library = (TEXT_LINE.fullmatch(line) for line in stream.getvalue().splitlines())
    assert named is not None and library is not None, stream.getvalue()
    assert named.groupdict() == {
        "time": named["time"],
        "level": "WARNING",
        "node": "4",
        "term": "7",
        "role": "leader",
        "event": "disk_fault",
        "message": "disk log is full",
    }
    assert named["time"] is not None
    assert library["event"] == "grpc.example"


def journal_stream(stream: TextIO) -> str:
    """JOURNAL_STREAM as systemd sets it for a service whose stderr is stream."""
    st = os.fstat(stream.fileno())
    return f"{st.st_dev}:{st.st_ino}"


def test_under_the_journal_text_lines_leave_the_time_to_it(tmp_path: Path) -> None:
    with (tmp_path / "journal").open("w+") as journal, (tmp_path / "file").open("w+") as file:
        emit(journal, "text", {"JOURNAL_STREAM": journal_stream(journal)})
        # A child that inherited the variable but writes elsewhere keeps its timestamps.
        emit(file, "text", {"JOURNAL_STREAM": journal_stream(journal)})
        journal.seek(0)
        file.seek(0)
        journal_lines = [TEXT_LINE.fullmatch(line) for line in journal.read().splitlines()]
        file_lines = [TEXT_LINE.fullmatch(line) for line in file.read().splitlines()]
    assert len(journal_lines) == 2 and all(m and m["time"] is None for m in journal_lines)
    assert len(file_lines) == 2 and all(m and m["time"] for m in file_lines)


def test_under_the_journal_json_keeps_its_time(tmp_path: Path) -> None:
    with (tmp_path / "journal").open("w+") as journal:
        emit(journal, "json", {"JOURNAL_STREAM": journal_stream(journal)})
        journal.seek(0)
        records = [json.loads(line) for line in journal.read().splitlines()]
    assert len(records) == 2 and all("time" in r for r in records)


def test_last_words_stay_plain_in_text_and_are_records_in_json() -> None:
    for log_format in ("text", "json"):
        stream = io.StringIO()
        out, _ = handler(log_format, 1, stream, {})
        with attached(out, "tests.logs") as logger:
            logger.critical("fatal: %s; exiting for a restart", "x", extra={"event": "fatal"})
        line = stream.getvalue().strip()
        if log_format == "text":
            assert line == "chatnode: fatal: x; exiting for a restart"
        else:
            assert json.loads(line)["event"] == "fatal"


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="xml"):
        handler("xml", 1, io.StringIO(), {})


def test_the_stamp_follows_and_a_record_that_knows_its_term_keeps_it() -> None:
    stream = io.StringIO()
    out, fields = handler("json", 2, stream, {})
    with attached(out, "tests.logs") as logger:
        logger.info("before")
        fields.follow(3, "candidate")
        logger.info("after")
        logger.info("changed", extra={"event": "leader_known", "term": 4, "role": "follower"})
    stamps = [(r["term"], r["role"]) for r in map(json.loads, stream.getvalue().splitlines())]
    assert stamps == [(0, "follower"), (3, "candidate"), (4, "follower")]


class Seen(NodeFields):
    """NodeFields that also queues each (term, role) it is told, for a test to await."""

    def __init__(self, node_id: int) -> None:
        super().__init__(node_id)
        self.told: asyncio.Queue[tuple[int, str]] = asyncio.Queue()

    def follow(self, term: int, role: str) -> None:
        super().follow(term, role)
        self.told.put_nowait((term, role))

    async def until(self, role: str, above_term: int) -> int:
        """Wait until told ``role`` in a term above ``above_term``; that term."""
        async with asyncio.timeout(10):
            while True:
                term, told = await self.told.get()
                if told == role and term > above_term:
                    return term


async def test_a_node_keeps_its_stamp_on_its_leadership(tmp_path: Path) -> None:
    secret = ClusterSecret(secrets.token_bytes(32))
    stamps = {i: Seen(i) for i in (1, 2, 3)}

    def options(node_id: int) -> dict[str, object]:
        return {"cluster_secret": secret, "log_fields": stamps[node_id]}

    async with in_process_cluster(tmp_path, options) as nodes:
        leader = await elected(nodes)
        old = leader.config.node_id
        term = await stamps[old].until("leader", 0)
        new = next(i for i in stamps if i != old)
        leader.coordinator.transfer_leadership(new)
        new_term = await stamps[new].until("leader", term)
        await stamps[old].until("follower", term - 1)
    assert new_term > term
    assert (stamps[old].term, stamps[old].role) == (new_term, "follower")


def log_calls(tree: ast.AST) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in LOG_METHODS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "log"
        ):
            yield node


def event_names(call: ast.Call, tree: ast.AST) -> set[str]:
    """The event names a log call can give: its ``extra`` dict's "event" value, or the
    value assigned to the variable it names."""
    extra = next((k.value for k in call.keywords if k.arg == "extra"), None)
    assert isinstance(extra, ast.Dict), f"line {call.lineno}: no extra={{'event': ...}}"
    keys = [k.value if isinstance(k, ast.Constant) else None for k in extra.keys]
    assert "event" in keys, f"line {call.lineno}: extra names no event"
    value = extra.values[keys.index("event")]
    if isinstance(value, ast.Name):
        value = next(
            a.value
            for a in ast.walk(tree)
            if isinstance(a, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == value.id for t in a.targets)
        )
    return {c.value for c in ast.walk(value) if isinstance(c, ast.Constant)}


def product_events() -> dict[str, set[str]]:
    """Each product module that logs, and the event names its log calls give."""
    found: dict[str, set[str]] = {}
    for folder in LOGGING_SOURCES:
        for path in sorted((ROOT / folder).glob("*.py")):
            tree = ast.parse(path.read_text())
            for call in log_calls(tree):
                try:
                    names = event_names(call, tree)
                except (AssertionError, StopIteration) as exc:
                    raise AssertionError(f"{path.relative_to(ROOT)}: {exc}") from None
                found.setdefault(str(path.relative_to(ROOT)), set()).update(names)
    return found


def test_every_log_call_names_an_event_that_operations_md_documents() -> None:
    found = product_events()
    assert {"chatnode/main.py", "chatnode/server.py", "coord/shell/driver.py"} <= found.keys()
    events = set().union(*found.values())
    assert {"serving", "leader_elected", "leader_lost", "fatal", "disk_fault"} <= events
    events_section = read_operations().partition("### Events")[2].partition("\n## ")[0]
    rows = re.findall(r"^\| `(\w+)`(?:, `(\w+)`)? \|", events_section, re.M)
    documented_names = {name for pair in rows for name in pair if name}
    assert events <= documented_names, events - documented_names
    assert documented_names <= events, documented_names - events  # no stale rows


def read_operations() -> str:
    return (ROOT / "docs" / "operations.md").read_text()


def test_the_event_check_can_fail() -> None:
    tree = ast.parse('log.info("a")\nlog.info("b", extra={"event": "x"})\n')
    first, second = log_calls(tree)
    with pytest.raises(AssertionError, match="no extra"):
        event_names(first, tree)
    assert event_names(second, tree) == {"x"}
