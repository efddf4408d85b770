"""The log entry, the unit the core orders and the state machine applies."""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass


class EntryKind(enum.IntEnum):
    """Log entry kinds as stored on disk (coord/PROTOCOL.md §4)."""

    OP = 1
    NOOP = 2
    CONFIG = 3


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. Only ``OP`` entries carry a payload for the state machine."""

    index: int
    term: int
    kind: EntryKind
    payload: bytes

    @property
    def checksum(self) -> int:
        """CRC-32 of everything the entry says. Stored and sent with it, checked when it is
        read back or received, so a flipped bit on a disk or a link is found, not applied."""
        header = struct.pack(">QQB", self.index, self.term, int(self.kind))
        return zlib.crc32(self.payload, zlib.crc32(header))
