"""A Session stream that ends while a call is being written leaves no error unread.

The reader, seeing the stream end, sets the error on every waiting reply; a
call whose own write failed raises and never awaits its reply. asyncio then
reports "exception was never retrieved" to the loop's handler, which in
``chat`` stops the screen to ask for Enter. The stub here is a stand-in whose
stream ends exactly so.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import grpc
import pytest

from client.session_link import SessionLink
from proto import chat_pb2 as pb


def _ended(details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details
    )


class _EndingStream:
    """Its first write lets the read end the stream, then fails as a write on it does."""

    def __init__(self) -> None:
        self._written = asyncio.Event()

    async def read(self) -> Any:
        await self._written.wait()
        raise _ended("connection lost")

    async def write(self, frame: pb.ClientFrame) -> None:
        self._written.set()
        for _ in range(3):  # let the reader run to its end first
            await asyncio.sleep(0)
        raise _ended("write on a closed stream")

    def cancel(self) -> bool:
        return True


class _Stub:
    def Session(self, metadata: Any) -> _EndingStream:
        return _EndingStream()


async def test_a_call_whose_write_fails_leaves_no_unread_error() -> None:
    unread: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: unread.append(context))
    try:
        link = SessionLink(_Stub(), "127.0.0.1:1", (), lambda _info: None)  # type: ignore[arg-type]
        with pytest.raises(grpc.aio.AioRpcError):
            await link.call("list_accounts", pb.ListAccountsRequest(), timeout_s=5)
        assert link.done()
        del link
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert unread == []
