"""How the admin service words the core's refusals: a retryable one as UNAVAILABLE, so that
chatctl tries again, a lasting one as FAILED_PRECONDITION, so that it stops."""

from __future__ import annotations

import grpc
import pytest

from coord.core.config import ConfigChange
from coord.core.errors import ChangeInFlight, LocalProtocolError
from coord.shell.services import AdminService
from proto import replication_pb2 as rpb


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


class Context:
    async def abort(self, code: grpc.StatusCode, details: str, **_: object) -> None:
        raise Refused(code, details)


class Coordinator:
    id = 1

    def __init__(self, refusal: Exception) -> None:
        self.refusal = refusal

    def change_members(self, change: ConfigChange) -> int:
        raise self.refusal

    def leader_address(self) -> str:
        return "h:1/h:2"


@pytest.mark.parametrize(
    ("refusal", "code"),
    [
        (ChangeInFlight("config of epoch 7 is not committed yet"), grpc.StatusCode.UNAVAILABLE),
        (LocalProtocolError("node 4 is already a member"), grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
async def test_a_refusal_that_passes_by_itself_is_unavailable(
    refusal: Exception, code: grpc.StatusCode
) -> None:
    service = AdminService(Coordinator(refusal))  # type: ignore[arg-type]
    with pytest.raises(Refused) as refused:
        await service.AddMember(rpb.AddMemberRequest(id=4, address="h:3"), Context())  # type: ignore[arg-type]
    assert (refused.value.code, str(refused.value)) == (code, str(refusal))
