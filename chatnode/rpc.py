"""Registers ChatService with grpc.aio, turning domain errors into status codes.

The handlers are built from the service descriptor rather than the generated
``add_ChatServiceServicer_to_server`` so that two things hold for every method
in one place: a request that does not parse (invalid UTF-8 in a string, say)
gets ``INVALID_ARGUMENT`` instead of grpc's generic ``INTERNAL``, and a
:class:`ChatError` becomes its status with a one-line message (plus
``leader-address`` on ``UNAVAILABLE``), never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from proto import chat_pb2 as pb
from proto.addresses import client_address
from proto.errors import LEADER_ADDRESS, ChatError, Internal, InvalidArgument, Unavailable

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["ChatService"]


@dataclass(frozen=True, slots=True)
class Malformed:
    """What a request that does not parse becomes, so its handler can refuse it clearly."""

    reason: str


def chat_handler(servicer: object) -> grpc.GenericRpcHandler:
    """A generic handler serving every ChatService method of servicer."""
    handlers = {}
    for method in SERVICE.methods:
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        impl = getattr(servicer, method.name)
        if method.client_streaming:  # Session: frames that do not parse reach the handler
            make, wrapped = grpc.stream_stream_rpc_method_handler, _guard_stream(impl, _as_is)
        elif method.server_streaming:
            make, wrapped = grpc.unary_stream_rpc_method_handler, _guard_stream(impl, _parsed)
        else:
            make, wrapped = grpc.unary_unary_rpc_method_handler, _guard_unary(impl)
        handlers[method.name] = make(
            wrapped,
            request_deserializer=_lenient(request_type),
            response_serializer=response_type.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)


def _lenient(request_type: Any) -> Callable[[bytes], object]:
    def parse(data: bytes) -> object:
        try:
            return request_type.FromString(data)
        except DecodeError as exc:
            return Malformed(str(exc) or "undecodable request")

    return parse


def _guard_unary(impl: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handle(request: object, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await impl(_parsed(request), context)
        except Exception as exc:  # every failure must become a status
            await _abort(context, exc)

    return handle


def _guard_stream(
    impl: Callable[..., AsyncIterator[Any]], parse: Callable[[object], object]
) -> Callable[..., AsyncIterator[Any]]:
    async def handle(request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in impl(parse(request), context):
                yield item
        except Exception as exc:  # every failure must become a status
            await _abort(context, exc)

    return handle


def _as_is(requests: object) -> object:
    return requests


def _parsed(request: object) -> object:
    if isinstance(request, Malformed):
        raise InvalidArgument(f"malformed request: {request.reason}")
    return request


async def _abort(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    if not isinstance(exc, ChatError):
        if isinstance(exc, grpc.aio.AbortError):
            raise exc
        log.exception("internal error in %s", type(exc).__name__, extra={"event": "internal_error"})
        exc = Internal("internal error; the node's log has the details")
    trailing: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, Unavailable) and exc.leader_address:
        trailing = ((LEADER_ADDRESS, client_address(exc.leader_address)),)
    await context.abort(exc.code, str(exc), trailing_metadata=trailing)
