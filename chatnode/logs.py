"""What a node's log lines look like: prose for people, or JSON for a log pipeline.

Every record carries the same fields in both forms: time, level, node, term, role,
event and message. ``event`` is a short stable name for what happened (``serving``,
``leader_elected``, ``disk_fault``; docs/operations.md lists them) that queries and
alerts can match while the prose around it is free to change. A log call names its
event with ``extra={"event": ...}``; a record without one (grpc's, asyncio's) is
named after its logger. The term and role are the node's as it last saw its
leadership change, so a line can be placed in the history of elections without
reading the ones around it.

The text form drops its own timestamp when its stream is the journal, which stamps
every line itself; the JSON form always keeps ``time``, since a pipeline reading it
may not be the journal.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

FORMATS = ("text", "json")

# A node's last line before exiting stays the one plain sentence that scripts and
# people already read (``chatnode: fatal: ...``; docs/design.md, "Faults nobody sees").
LAST_WORDS = frozenset({"fatal", "start_failed"})

_TEXT_FIELDS = "%(levelname)s node=%(node)s term=%(term)s role=%(role)s event=%(event)s"
_JSON_FIELDS = "%(levelname)s %(node)s %(term)s %(role)s %(event)s %(name)s %(message)s"


class NodeFields(logging.Filter):
    """Stamps node, term, role and a default event on every record a handler emits.

    It sits on the handler, not on a logger, so records from every library the node
    runs carry them too. A record that names its own term or role (the one saying
    leadership changed knows the new ones before anyone is told) keeps them.
    """

    def __init__(self, node_id: int) -> None:
        super().__init__()
        self.node_id = node_id
        self.term = 0
        self.role = "follower"

    def follow(self, term: int, role: str) -> None:
        """Stamp ``term`` and ``role`` on the records from now on."""
        self.term, self.role = term, role

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node_id
        for name, value in (("term", self.term), ("role", self.role), ("event", record.name)):
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class TextFormatter(logging.Formatter):
    """One line of prose after the node's fields; a node's last words stay plain."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "event", None) in LAST_WORDS:
            return f"chatnode: {record.getMessage()}"
        return super().format(record)


def writes_to_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether ``stream`` is the journal: systemd sets ``JOURNAL_STREAM`` to the device and
    inode of the stream it connected, and a child whose stderr was redirected elsewhere
    inherits the variable but not the stream, so the two are compared (sd-daemon(3))."""
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):  # a stream without a descriptor is not the journal
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{device}:{inode}"


def formatter(log_format: str, journal: bool) -> logging.Formatter:
    """The formatter for ``log_format`` (one of FORMATS); ``journal``: the text form leaves
    the time to the journal."""
    if log_format == "json":
        return JsonFormatter(
            _JSON_FIELDS,
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        )
    if log_format != "text":
        raise ValueError(f"unknown log format {log_format!r}: use one of {', '.join(FORMATS)}")
    return TextFormatter(
        f"{_TEXT_FIELDS}: %(message)s" if journal else f"%(asctime)s {_TEXT_FIELDS}: %(message)s"
    )


def handler(
    log_format: str, node_id: int, stream: TextIO, environ: Mapping[str, str]
) -> tuple[logging.Handler, NodeFields]:
    """A handler writing to ``stream`` in ``log_format``, and the filter on it that stamps
    the node's term and role, for the node to keep current.

    Raises ValueError for an unknown format.
    """
    fields = NodeFields(node_id)
    out = logging.StreamHandler(stream)
    out.setFormatter(formatter(log_format, writes_to_journal(stream, environ)))
    out.addFilter(fields)
    return out, fields


def configure(log_format: str, level: str, node_id: int) -> NodeFields:
    """Send the process's records at ``level`` or above to stderr in ``log_format`` (unless
    its logging is set up already, as logging.basicConfig does); return the stamp filter.

    Raises ValueError for an unknown format or level (a usage error).
    """
    if level.upper() not in logging.getLevelNamesMapping():
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    out, fields = handler(log_format, node_id, sys.stderr, os.environ)
    logging.basicConfig(level=level.upper(), handlers=[out])
    return fields
