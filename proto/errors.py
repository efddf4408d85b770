"""How a chat call fails: one table of statuses by gRPC code, for server and client alike.

The server raises these classes from its handlers and turns each into its
call's status (a unary call's, or a Session stream's ``CallError`` frame); the
client library raises the same classes from a status it received. So a failure
has one name on both sides, docs/api.md, "Validation and errors", has one home in
code, and a status number on the wire maps back to its class in one place.
``str(error)`` is the one-line message a person reads.
"""

from __future__ import annotations

import grpc

from proto import chat_pb2 as pb

__all__ = [
    "ERRORS",
    "LEADER_ADDRESS",
    "AlreadyExists",
    "AuthError",
    "ChatError",
    "DeadlineExceeded",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "ResourceExhausted",
    "Unavailable",
    "call_error",
    "error_for",
    "from_call_error",
]

LEADER_ADDRESS = "leader-address"
"""The trailing metadata key of an UNAVAILABLE status naming the leader to try instead."""


class ChatError(Exception):
    """A call failed for a reason the caller can understand and act on; ``code`` is its
    status (a code the table below does not list stays on this base class)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidArgument(ChatError):
    """The request breaks a rule of docs/api.md, "Validation and errors" (a name, a length, a
    field): fix it."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class AuthError(ChatError):
    """Wrong name or password, or no valid session: log in (again)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class NotFound(ChatError):
    """What the call names does not exist (a recipient)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ChatError):
    """What the call would create exists already (a username)."""

    code = grpc.StatusCode.ALREADY_EXISTS


class ResourceExhausted(ChatError):
    """A bounded resource is full (password hashing, open streams, calls in flight) or the
    request is larger than the server accepts: retry later, or send less."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ChatError):
    """No leader can serve the call now: the node does not lead, none does yet, too few
    replicas are in sync, or (raised by the client) none answered before the deadline.
    ``leader_address`` is the server's hint where to go, '' when it knows none."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, leader_address: str = "") -> None:
        super().__init__(message)
        self.leader_address = leader_address


class DeadlineExceeded(ChatError):
    """A node took the call but did not answer before the deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Internal(ChatError):
    """A bug on the server; the node's log has the details, the caller only this line."""

    code = grpc.StatusCode.INTERNAL


ERRORS: dict[grpc.StatusCode, type[ChatError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        AuthError,
        NotFound,
        AlreadyExists,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Internal,
    )
}
"""Every status a chat call ends with on purpose, and the class that carries it."""


def error_for(code: grpc.StatusCode, message: str) -> ChatError:
    """The error a status stands for: its class from :data:`ERRORS`, or the base class
    keeping a code the table does not list. An empty message becomes the code's name."""
    message = message or code.name.lower()
    cls = ERRORS.get(code)
    return cls(message) if cls is not None else ChatError(message, code)


def call_error(error: ChatError) -> pb.CallError:
    """error as a Session stream writes it in a frame: the status number and the line."""
    return pb.CallError(code=error.code.value[0], message=str(error))


def from_call_error(frame: pb.CallError) -> ChatError:
    """The error a CallError frame carries (an unknown status number reads as UNKNOWN)."""
    code = next((c for c in grpc.StatusCode if c.value[0] == frame.code), grpc.StatusCode.UNKNOWN)
    return error_for(code, frame.message)
