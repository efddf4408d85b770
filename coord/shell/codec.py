"""Protocol messages <-> protobuf (``proto/replication.proto``).

Each dataclass of :mod:`coord.core.messages` has a protobuf twin with the same name
and field names, so one generic mapping serves them all; only entries need
converting by hand.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from coord.core import messages
from coord.core.entry import Entry, EntryKind
from proto import replication_pb2 as rpb

# oneof field name in PeerMessage for each message type
_ONEOF = {
    messages.Append: "append",
    messages.AppendReply: "append_reply",
    messages.VoteRequest: "vote_request",
    messages.VoteReply: "vote_reply",
    messages.TimeoutNow: "timeout_now",
}
_TYPES = {name: cls for cls, name in _ONEOF.items()}


def entry_to_pb(entry: Entry) -> rpb.LogEntry:
    return rpb.LogEntry(
        index=entry.index,
        term=entry.term,
        kind=int(entry.kind),
        payload=entry.payload,
        crc=entry.checksum,
    )


def entry_from_pb(wire: rpb.LogEntry) -> Entry:
    """Decode an entry; ValueError if its kind is unknown or it fails its checksum.

    A peer of a release before checksums sends none; its entries are taken as they are.
    """
    entry = Entry(wire.index, wire.term, EntryKind(wire.kind), wire.payload)
    if wire.HasField("crc") and wire.crc != entry.checksum:
        raise ValueError(f"entry {wire.index} fails its checksum")
    return entry


def to_pb(msg: messages.Message) -> rpb.PeerMessage:
    name = _ONEOF[type(msg)]
    values: dict[str, Any] = {}
    for field in fields(msg):
        value = getattr(msg, field.name)
        if field.name == "entries":
            value = [entry_to_pb(e) for e in value]
        values[field.name] = value
    return rpb.PeerMessage(**{name: getattr(rpb, type(msg).__name__)(**values)})


def from_pb(wire: rpb.PeerMessage) -> messages.Message:
    """Decode one message; raises ValueError on an empty or unknown one."""
    name = wire.WhichOneof("kind")
    if name is None:
        raise ValueError("empty peer message")
    cls = _TYPES[name]
    body = getattr(wire, name)
    values: dict[str, Any] = {}
    for field in fields(cls):
        value = getattr(body, field.name)
        if field.name == "entries":
            value = tuple(entry_from_pb(e) for e in value)
        elif not isinstance(value, int | bool | bytes | str):
            value = tuple(value)
        values[field.name] = value
    return cls(**values)
