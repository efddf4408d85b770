"""One chat node: coordinator, chat state, applier and gRPC server wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from chatnode.admission import DEFAULT_RATE, ProposalBudget
from chatnode.applier import Applier
from chatnode.cluster_clock import ClusterClock
from chatnode.live import LiveHub
from chatnode.logs import NodeFields
from chatnode.node_metrics import MetricsServer, NodeCollector, Sources
from chatnode.rpc import SERVICE, chat_handler
from chatnode.rpc_metrics import RpcMetricsInterceptor
from chatnode.service import (
    DEFAULT_SESSION_TTL_MS,
    ChatService,
    ReadPool,
    monotonic_ms,
    system_clock_ms,
)
from chatnode.state import ChatReader, ChatState
from coord.core.settings import Settings
from coord.shell.auth import Authenticator, PeerAuthInterceptor
from coord.shell.driver import CompactionSettings, PeerSettings, ReplicatedCoordinator
from coord.shell.metrics import PEER_REFUSED
from proto import release
from proto.addresses import MemberAddress
from proto.credentials import ClusterSecret, node_role

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 4 << 20  # a 5 MB request is refused with RESOURCE_EXHAUSTED
DRAIN_SECONDS = 5.0
HANDOVER_DRAIN_S = 0.5


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path | None = None  # when set, clients must present a certificate it signed


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: int
    cluster: dict[int, str]
    data_dir: Path
    listen: str = ""  # where the one listener binds, if not at its address
    listen_peer: str = ""  # with two listeners: where each binds, if not at its address
    listen_client: str = ""
    lease_ms: int = 1000
    heartbeat_ms: int = 100
    min_insync: int = 1
    log_keep_entries: int = 10_000
    join: bool = False
    tls: TlsFiles | None = None  # the peer listener's (the only listener's, if one)
    client_tls: TlsFiles | None = None  # the client listener's: server-only TLS
    metrics_listen: str = ""
    cluster_secret: ClusterSecret | None = None
    session_ttl_ms: int = DEFAULT_SESSION_TTL_MS
    ops_per_s: float = DEFAULT_RATE  # proposals a second admitted, split between accounts
    # This machine's clocks, as the cluster clock reads them (chatnode.cluster_clock).
    wall_clock_ms: Callable[[], int] = system_clock_ms
    monotonic_clock_ms: Callable[[], int] = monotonic_ms
    log_fields: NodeFields | None = None  # told the term and role the node's log stamps

    @property
    def address(self) -> str:
        return self.cluster[self.node_id]

    @property
    def listeners(self) -> MemberAddress:
        """Where this node's listeners bind: the client listener is the peer one, unless
        its address names two."""
        member = MemberAddress.parse(self.address)
        if not member.split:
            return MemberAddress(self.listen or member.peer, self.listen or member.peer)
        return MemberAddress(self.listen_peer or member.peer, self.listen_client or member.client)

    @property
    def peer_mtls(self) -> bool:
        """Peers prove who they are with certificates: TLS with a CA that signs them."""
        return self.tls is not None and self.tls.ca is not None


class ConfigError(ValueError):
    """The node cannot start here as configured, e.g. its address is taken (exit status 1:
    a stale process may let go of it, so systemd tries again)."""


def make_coordinator(config: NodeConfig) -> ReplicatedCoordinator:
    settings = Settings(
        lease_ms=config.lease_ms,
        heartbeat_ms=config.heartbeat_ms,
        election_wait_ms=config.lease_ms // 4,
        stall_ms=max(2 * config.heartbeat_ms + 1, config.lease_ms // 2),
    )
    return ReplicatedCoordinator(
        config.node_id,
        config.cluster,
        config.data_dir,
        settings,
        min_insync=config.min_insync,
        peers=PeerSettings(
            _peer_credentials(config.tls),
            call_timeout_s=config.lease_ms / 2000,
            metadata=(
                config.cluster_secret.metadata(node_role(config.node_id))
                if config.cluster_secret
                else ()
            ),
        ),
        compaction=CompactionSettings(log_keep_entries=config.log_keep_entries),
        join=config.join,
    )


class ChatNode:
    """Starts and stops everything a node runs, in dependency order."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._tasks: list[asyncio.Task[None]] = []
        self._servers: list[grpc.aio.Server] = []
        self._health = health.aio.HealthServicer()
        self._metrics: MetricsServer | None = None

    async def start(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._coord = make_coordinator(config)
        state = await asyncio.to_thread(ChatState, config.data_dir / "state.db")
        self._hub = LiveHub()
        self._reads = ReadPool(config.data_dir / "state.db")
        clock = ClusterClock()
        self._applier = Applier(
            self._coord,
            state,
            self._hub,
            self._coord.disk,
            self._reads.sessions,
            clock,
            config.monotonic_clock_ms,
        )
        self._service = ChatService(
            self._coord,
            self._applier,
            self._reads,
            self._hub,
            clock,
            config.session_ttl_ms,
            config.wall_clock_ms,
            config.monotonic_clock_ms,
            ProposalBudget(config.ops_per_s),
        )
        self._servers = self._make_servers(self._service)
        # The coordinator first: peers and clients reach us only once it can answer.
        await self._coord.start(state.applied_index, self._applier)
        for server in self._servers:
            await server.start()
        self._tasks = [
            asyncio.create_task(self._applier.run(), name="applier"),
            asyncio.create_task(self._follow_leadership(), name="leadership"),
        ]
        for task in self._tasks:
            self._coord.supervise(task)
        self._stamp_leadership()
        if config.metrics_listen:
            self._metrics = self._serve_metrics(config.metrics_listen)
        listeners = config.listeners
        log.info(
            "node %d serving %s, version %s",
            config.node_id,
            f"peers on {listeners.peer} and clients on {listeners.client}"
            if listeners.split
            else f"on {listeners.peer}",
            release.version(),
            extra={"event": "serving"},
        )

    @property
    def coordinator(self) -> ReplicatedCoordinator:
        return self._coord

    @property
    def applier(self) -> Applier:
        return self._applier

    @property
    def service(self) -> ChatService:
        return self._service

    @property
    def lookup(self) -> ChatReader:
        """Read-only point queries (an account, a session, a stored reply) on the state
        this node has applied, which may trail its log; the connection handlers use."""
        return self._reads.lookup

    async def failure(self) -> str:
        """Wait until a background task of this node dies; why, in one line."""
        return await asyncio.shield(self._coord.failed)

    async def stop(self) -> None:
        """Drain: hand leadership over, end streams, let calls finish, release storage."""
        await self._health.enter_graceful_shutdown()
        if await self._coord.hand_over():
            # Keep answering for a moment: calls now get UNAVAILABLE with the new
            # leader's address and clients move there. Stopping the server at once
            # would cancel calls it had accepted but not dispatched (CANCELLED).
            await asyncio.sleep(HANDOVER_DRAIN_S)
        self._hub.close_all("this node is shutting down; reconnect to the leader")
        await asyncio.gather(*(server.stop(DRAIN_SECONDS) for server in self._servers))
        if self._metrics is not None:
            self._metrics.close()
        await self._coord.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._service.close()
        self._reads.close()
        self._applier.close()

    async def _follow_leadership(self) -> None:
        """Tell subscribers about leader changes; fail proposals a lost leadership orphaned."""
        async for view in self._coord.leader_changes():
            self._stamp_leadership()
            self._hub.announce_leader(view)
            leading = view is not None and view.leader_id == self.config.node_id
            if not leading:
                self._applier.abandon_pending("this node stopped leading; retry on the leader")
                # Streams opened while this node led would otherwise idle on a node
                # that cannot answer their next call: they end now and follow.
                self._hub.close_all(
                    "this node no longer leads; reconnect to the leader",
                    view.leader_address if view is not None else "",
                )
            await self._health.set(
                SERVICE.full_name,
                health_pb2.HealthCheckResponse.SERVING
                if leading
                else health_pb2.HealthCheckResponse.NOT_SERVING,
            )

    def _serve_metrics(self, listen: str) -> MetricsServer:
        """Prometheus metrics at listen: the counters the code updates, and this node's
        state as a scrape finds it."""
        sources = Sources(self._coord, self._applier, self._hub, self._service.hash_pool)
        return MetricsServer(listen, NodeCollector(asyncio.get_running_loop(), sources.sample))

    def _stamp_leadership(self) -> None:
        """Keep the term and role the log stamps current, from the coordinator's status: a
        leader view alone does not tell a follower from a candidate."""
        if self.config.log_fields is not None:
            status = self._coord.status()
            self.config.log_fields.follow(status.term, status.role)

    def _make_servers(self, service: ChatService) -> list[grpc.aio.Server]:
        """One listener for everyone, or a peer listener (replication and admin, behind peer
        authentication) and a client listener (the chat API, health and reflection)."""
        config = self.config
        authenticator = Authenticator(config.cluster_secret, config.peer_mtls)
        refused = PeerAuthInterceptor(authenticator, lambda why: PEER_REFUSED.labels(why).inc())
        counted = RpcMetricsInterceptor()  # outermost: the calls refused are counted too
        listeners = config.listeners
        if not listeners.split:
            server = _server([counted, refused])
            self._serve_clients(server, service)
            self._coord.add_to_server(server)
            _bind(server, listeners.peer, config.tls)
            return [server]
        peers, clients = _server([counted, refused]), _server([counted])
        self._coord.add_to_server(peers)
        self._serve_clients(clients, service)
        _bind(peers, listeners.peer, config.tls)
        _bind(clients, listeners.client, config.client_tls)
        return [peers, clients]

    def _serve_clients(self, server: grpc.aio.Server, service: ChatService) -> None:
        server.add_generic_rpc_handlers((chat_handler(service),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )


def _server(interceptors: list[grpc.aio.ServerInterceptor]) -> grpc.aio.Server:
    return grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            ("grpc.max_send_message_length", 64 << 20),
            # grpc sets SO_REUSEPORT by default: a second node on the same address
            # (a stale process, a mistyped --id) would bind too and silently take
            # half of the connections. Refuse instead, and exit.
            ("grpc.so_reuseport", 0),
        ],
    )


def _bind(server: grpc.aio.Server, listen: str, tls: TlsFiles | None) -> None:
    try:
        if tls is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, _server_credentials(tls))
    except RuntimeError:  # grpc's "Failed to bind", e.g. the address is in use
        port = 0
    if port == 0:
        raise ConfigError(f"cannot listen on {listen} (in use, or not an address here)")


def _peer_credentials(tls: TlsFiles | None) -> grpc.ChannelCredentials | None:
    """How this node dials its peers: trusting the CA, or without one the node's own
    certificate (one self-signed certificate shared by the cluster); presenting its
    certificate when the peers require client certificates (a CA is set)."""
    if tls is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=(tls.ca or tls.cert).read_bytes(),
        private_key=tls.key.read_bytes() if tls.ca else None,
        certificate_chain=tls.cert.read_bytes() if tls.ca else None,
    )


def _server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())],
        root_certificates=tls.ca.read_bytes() if tls.ca else None,
        require_client_auth=tls.ca is not None,
    )
