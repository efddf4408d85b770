"""Per-method RPC counts, status codes and latency, named as go-grpc-prometheus names them.

py-grpc-prometheus intercepts the synchronous ``grpc.server`` only, so this is
a ``grpc.aio`` server interceptor doing the same for unary and streaming
calls: ``grpc_server_started_total`` when a call reaches its handler,
``grpc_server_handled_total`` with its status code when it ends, and
``grpc_server_handling_seconds`` from one to the other (a stream's whole life).

The Replication service is left out: its calls are the peers' hot path and
its own ``chat_peer_*`` metrics cover it. A method's wrapped handler and
labelled children are made once, on its first call, so a call costs two
dictionary lookups and its observations.

A Session stream is one ``Session`` call to grpc, yet carries most of a
client's calls: :func:`session_call_done` counts and times each of those by
its method, as ``chat_session_calls_total`` and ``chat_session_call_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from proto import replication_pb2
from proto.session_calls import FRAME_FIELDS

STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server",
    ["grpc_type", "grpc_service", "grpc_method"],
)
HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time from an RPC's start to its end on the server (a stream's whole life)",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600),
)

SESSION_CALLS = Counter(
    "chat_session_calls",
    "Calls carried by Session streams, by method and status code",
    ["method", "code"],
)
SESSION_CALL_SECONDS = Histogram(
    "chat_session_call_seconds",
    "Time from a Session stream call's frame arriving to its reply being ready",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

UNCOUNTED = frozenset((replication_pb2.DESCRIPTOR.services_by_name["Replication"].full_name,))
"""Services whose calls are not counted here: the peers' (Admin calls are counted)."""

_KINDS = (
    ("unary_unary", "unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", "server_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", "client_stream", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", "bidi_stream", grpc.stream_stream_rpc_method_handler),
)
_STREAMING = frozenset(("unary_stream", "stream_stream"))


class _MethodMetrics:
    """The labelled children of one method, made once."""

    def __init__(self, grpc_type: str, service: str, method: str) -> None:
        self._labels = (grpc_type, service, method)
        self.started = STARTED.labels(*self._labels)
        self.handling = HANDLING.labels(*self._labels)
        self._handled: dict[grpc.StatusCode, Any] = {}

    def handled(self, code: grpc.StatusCode, seconds: float) -> None:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = HANDLED.labels(*self._labels, code.name)
        child.inc()
        self.handling.observe(seconds)


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every call outside :data:`UNCOUNTED`, by method and status code.

    grpc asks for each call's handler; the wrapped one is kept per method and
    reused while the inner handler is the same object (the chat service's are).
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        known = self._wrapped.get(details.method)
        if known is not None and known[0] is handler:
            return known[1]
        service, _, method = details.method.lstrip("/").partition("/")
        if service in UNCOUNTED:
            return handler
        wrapped = _measured(handler, service, method)
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped


def _measured(handler: grpc.RpcMethodHandler, service: str, method: str) -> grpc.RpcMethodHandler:
    for attribute, grpc_type, make in _KINDS:
        inner = getattr(handler, attribute)
        if inner is not None:
            metrics = _children(grpc_type, service, method)
            wrap = _streamed if attribute in _STREAMING else _answered
            return make(
                wrap(inner, metrics),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


_CHILDREN: dict[tuple[str, str, str], _MethodMetrics] = {}


def _children(grpc_type: str, service: str, method: str) -> _MethodMetrics:
    key = (grpc_type, service, method)
    metrics = _CHILDREN.get(key)
    if metrics is None:
        metrics = _CHILDREN[key] = _MethodMetrics(*key)
    return metrics


@contextlib.contextmanager
def _observed(metrics: _MethodMetrics, context: grpc.aio.ServicerContext) -> Iterator[None]:
    """Count a call as started, then as handled with its code and duration, however it ends."""
    metrics.started.inc()
    started = time.perf_counter()
    failure: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        failure = exc
        raise
    finally:
        metrics.handled(_code(context, failure), time.perf_counter() - started)


def _answered(inner: Callable[..., Any], metrics: _MethodMetrics) -> Callable[..., Any]:
    async def answered(request: Any, context: grpc.aio.ServicerContext) -> Any:
        with _observed(metrics, context):
            return await inner(request, context)

    return answered


def _streamed(inner: Callable[..., Any], metrics: _MethodMetrics) -> Callable[..., Any]:
    async def streamed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        with _observed(metrics, context):
            async for response in inner(request, context):
                yield response

    return streamed


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _code(context: grpc.aio.ServicerContext, failure: BaseException | None) -> grpc.StatusCode:
    """The status the call ends with: what the handler set or aborted with, CANCELLED if
    the client went away, UNKNOWN for an exception grpc turns into a bare failure."""
    code = context.code()
    if isinstance(code, int):
        code = _CODES.get(code)
    if code is not None and code is not grpc.StatusCode.OK:
        return code
    if isinstance(failure, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    if failure is not None:
        return grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.OK


_METHOD_OF_FIELD = {field: method for method, field in FRAME_FIELDS.items()}
_SESSION_CHILDREN: dict[tuple[str, grpc.StatusCode], tuple[Any, Any]] = {}


def session_call_done(field: str, code: grpc.StatusCode, seconds: float) -> None:
    """A call a Session stream carried (by its frame field) ended with code."""
    children = _SESSION_CHILDREN.get((field, code))
    if children is None:
        method = _METHOD_OF_FIELD.get(field, field or "none")
        children = (SESSION_CALLS.labels(method, code.name), SESSION_CALL_SECONDS.labels(method))
        _SESSION_CHILDREN[field, code] = children
    children[0].inc()
    children[1].observe(seconds)
