"""Who may speak on the peer and admin APIs, and how a caller proves it (docs/api.md, "Peers
and operators").

Two credentials, either of which a node accepts:

* **the cluster secret** (``--cluster-secret-file``; the wire form is in
  :mod:`proto.credentials`, which callers share): the node recomputes the
  caller's role tag and compares it in constant time;
* **mutual TLS**: a certificate signed by the cluster's CA whose SAN names the
  role as a URI, ``chat://node/2`` or ``chat://admin``. A chat user's
  certificate from the same CA names neither, so it opens nothing here.

Everything that is not the chat API, health or reflection is closed by
default: :class:`PeerAuthInterceptor` refuses any other service unless the
caller holds the role that service needs, before the servicer sees the call.
The authenticated :class:`Caller` is then available to the servicer through
:data:`CALLER` so it can check that each message speaks only for that caller.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from proto.credentials import (
    ADMIN_ROLE,
    ROLE_KEY,
    TAG_KEY,
    URI_PREFIX,
    ClusterSecret,
    node_role,
)

REPLICATION_SERVICE = "chat.replication.v1.Replication"
ADMIN_SERVICE = "chat.replication.v1.Admin"
OPEN_SERVICES = frozenset(
    {
        "chat.v1.ChatService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: a member speaking for ``node_id``, or an operator."""

    node_id: int = 0
    admin: bool = False

    def __str__(self) -> str:
        return ADMIN_ROLE if self.admin else node_role(self.node_id)


CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)


def authenticated_peer() -> int:
    """The member the current call was authenticated as (0: none, or an operator)."""
    caller = CALLER.get()
    return caller.node_id if caller is not None else 0


class Denied(Exception):
    """A refused call: the status code and the one line the caller reads."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def speaks_for_another(peer: int) -> Denied:
    """The refusal of a message from ``peer`` that names another sender."""
    return Denied(grpc.StatusCode.PERMISSION_DENIED, f"node {peer} may speak only for itself")


def parse_role(role: str) -> Caller | None:
    if role == ADMIN_ROLE:
        return Caller(admin=True)
    kind, _, number = role.partition("/")
    if kind == "node" and number.isdigit() and 0 < int(number) < 2**63 and number[0] != "0":
        return Caller(node_id=int(number))
    return None


class Authenticator:
    """Turns a call's metadata and TLS peer into a :class:`Caller`, or refuses it."""

    def __init__(self, secret: ClusterSecret | None, mtls: bool) -> None:
        self._secret = secret
        self._mtls = mtls

    def authenticate(
        self, metadata: Iterable[tuple[str, Any]], auth_context: Mapping[str, Sequence[bytes]]
    ) -> Caller:
        fields = {key: value for key, value in metadata if key in (ROLE_KEY, TAG_KEY)}
        if TAG_KEY in fields or ROLE_KEY in fields:
            return self._by_secret(str(fields.get(ROLE_KEY, "")), str(fields.get(TAG_KEY, "")))
        if self._mtls and auth_context.get("x509_pem_cert"):  # verified by the TLS handshake
            uris = [uri.decode(errors="replace") for uri in auth_context.get("peer_uri", ())]
            return self._by_certificate(uris)
        raise Denied(
            grpc.StatusCode.UNAUTHENTICATED,
            "peer and admin calls need the cluster secret or a member/admin certificate",
        )

    def _by_secret(self, role: str, tag: str) -> Caller:
        caller = parse_role(role)
        if self._secret is None or caller is None or not self._secret.verify(role, tag):
            raise Denied(grpc.StatusCode.UNAUTHENTICATED, "wrong cluster credentials")
        return caller

    @staticmethod
    def _by_certificate(uris: list[str]) -> Caller:
        roles = [
            parse_role(uri.removeprefix(URI_PREFIX)) for uri in uris if uri.startswith(URI_PREFIX)
        ]
        found = [role for role in roles if role is not None]
        if len(found) != 1:
            raise Denied(
                grpc.StatusCode.PERMISSION_DENIED,
                "this certificate names no single chat://node/N or chat://admin role",
            )
        return found[0]


def required_role(service: str) -> Callable[[Caller], bool] | None:
    """What a service asks of its caller; None for the open ones. Unknown ones need admin."""
    if service in OPEN_SERVICES:
        return None
    if service == REPLICATION_SERVICE:
        return lambda caller: caller.node_id > 0
    return lambda caller: caller.admin


class PeerAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuse every call outside the open services unless its caller holds the right role.

    Runs before the servicer, in the task that then serves the call, so the
    :data:`CALLER` it sets is what the servicer reads.
    """

    def __init__(self, authenticator: Authenticator, on_refused: Callable[[str], None]) -> None:
        self._auth = authenticator
        self._on_refused = on_refused

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        service = details.method.lstrip("/").partition("/")[0]
        allowed = required_role(service)
        if handler is None or allowed is None:
            return handler
        return _guarded(handler, self._check(allowed))

    def _check(self, allowed: Callable[[Caller], bool]) -> Callable[[Any], Any]:
        async def check(context: grpc.aio.ServicerContext) -> None:
            try:
                caller = self._auth.authenticate(
                    context.invocation_metadata() or (), context.auth_context()
                )
                if not allowed(caller):
                    raise Denied(
                        grpc.StatusCode.PERMISSION_DENIED, f"role {caller} may not make this call"
                    )
                CALLER.set(caller)
            except Denied as exc:
                self._on_refused(exc.code.name.lower())
                await context.abort(exc.code, str(exc))

        return check


_HANDLER_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
)


def _guarded(handler: grpc.RpcMethodHandler, check: Callable[[Any], Any]) -> grpc.RpcMethodHandler:
    """The same handler with ``check(context)`` awaited before its behaviour."""
    for kind, make_handler, streaming in _HANDLER_KINDS:
        inner = getattr(handler, kind)
        if inner is not None:
            return make_handler(
                _checked(inner, check, streaming),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    raise ValueError("a method handler with no behaviour")


def _checked(inner: Callable[..., Any], check: Callable[[Any], Any], streaming: bool) -> Any:
    if streaming:

        async def streamed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            async for response in inner(request, context):
                yield response

        return streamed

    async def answered(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await check(context)
        return await inner(request, context)

    return answered
