"""The calls a ``Session`` stream carries: each one's unary method and its frame field.

Read from chat.proto itself (a ``ClientFrame`` ``call`` field whose type is a
method's request stands for that method; its reply comes in the
``ServerFrame`` field of the same name), so a call added to the frame needs no
second table kept in step. The server starts a frame's call through
``ChatService.stream_calls``, by field (chatnode.session_stream); the client library
sends every call here on its stream except :data:`SESSION_ENDING` and
``Subscribe``, which it opens with :meth:`client.session_link.SessionLink.messages`.
"""

from __future__ import annotations

from proto import chat_pb2 as pb

__all__ = ["FRAME_FIELDS", "IN_FLIGHT_MAX", "SESSION_ENDING"]

IN_FLIGHT_MAX = 64
"""Calls one Session stream may have started and not yet answered: the server refuses a
frame beyond it (RESOURCE_EXHAUSTED), so a client keeps at most this many in flight."""


def _frame_fields() -> dict[str, str]:
    service = pb.DESCRIPTOR.services_by_name["ChatService"]
    method_of = {method.input_type.full_name: method.name for method in service.methods}
    calls = pb.ClientFrame.DESCRIPTOR.oneofs_by_name["call"].fields
    return {method_of[field.message_type.full_name]: field.name for field in calls}


FRAME_FIELDS: dict[str, str] = _frame_fields()
"""Every call a frame may carry: the frame field (``send_message``) by method (``SendMessage``)."""

SESSION_ENDING = frozenset({"Logout", "DeleteAccount", "EndSession"})
"""Calls that end (or may end) the session their stream belongs to. A client sends these unary: a
retry after a lost reply must still reach the first result, which a new stream on an
ended session cannot."""
