"""Errors a request can end with, each carrying its gRPC status and one human line.

Handlers raise these; one wrapper in :mod:`chatnode.rpc` turns them into status
codes, so no handler repeats try/except boilerplate and no traceback reaches a
client.
"""

from __future__ import annotations

import grpc


class ChatError(Exception):
    """A request failed for a reason the caller can understand and act on."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @classmethod
    def from_code_name(cls, name: str, message: str) -> ChatError:
        """Rebuild an error recorded in a state-machine Result (code stored by name)."""
        return cls(message, grpc.StatusCode[name])


class InvalidArgument(ChatError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class Unauthenticated(ChatError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(ChatError):
    """A bounded resource (password hashing, open streams) is full: retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ChatError):
    """Not the leader, no leader, or too few in-sync replicas; leader_address is a hint."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, leader_address: str = "") -> None:
        super().__init__(message)
        self.leader_address = leader_address
