"""The one error table (proto/errors.py) both sides use: a status reads back as its class."""

import grpc
import pytest

from chatnode.service import ChatService
from proto import chat_pb2 as pb
from proto.errors import ERRORS, ChatError, Unavailable, call_error, error_for, from_call_error
from proto.session_calls import FRAME_FIELDS, SESSION_ENDING


@pytest.mark.parametrize("code", sorted(ERRORS, key=lambda c: c.name), ids=lambda c: c.name)
def test_a_status_reads_back_as_the_class_that_raised_it(code: grpc.StatusCode) -> None:
    raised = ERRORS[code]("one line")
    for received in (error_for(code, "one line"), from_call_error(call_error(raised))):
        assert type(received) is type(raised) and received.code == code
        assert str(received) == "one line"


def test_a_status_outside_the_table_keeps_its_code_on_the_base_class() -> None:
    received = error_for(grpc.StatusCode.PERMISSION_DENIED, "")
    assert type(received) is ChatError and received.code == grpc.StatusCode.PERMISSION_DENIED
    assert str(received) == "permission_denied"
    assert from_call_error(pb.CallError(code=999, message="x")).code == grpc.StatusCode.UNKNOWN


def test_unavailable_carries_the_leader_hint() -> None:
    assert Unavailable("not the leader", "127.0.0.1:7002").leader_address == "127.0.0.1:7002"
    assert error_for(grpc.StatusCode.UNAVAILABLE, "no leader").leader_address == ""


def test_every_call_a_frame_carries_is_started_by_the_service() -> None:
    """proto.session_calls is the one table of stream calls, read from chat.proto."""
    assert FRAME_FIELDS["SendMessage"] == "send_message" and FRAME_FIELDS.keys() >= SESSION_ENDING
    for method, field in FRAME_FIELDS.items():
        if method != "Subscribe":
            assert callable(getattr(ChatService, f"start_{field}", None)), method
