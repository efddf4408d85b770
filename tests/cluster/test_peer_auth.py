"""Nobody outside the cluster can speak for a node (docs/api.md, "Peers and operators").

Every method of every service other than the chat API, health and
reflection is called without credentials, with a wrong secret, with a
member's credentials on the operator's API and the other way round, and
(under mutual TLS) with a chat user's certificate from the cluster's own CA.
Each call must be refused with ``UNAUTHENTICATED`` or ``PERMISSION_DENIED`` and
leave every member's term, commit index and configuration as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from chatnode.server import ChatNode, TlsFiles
from coord.shell.auth import OPEN_SERVICES
from coord.shell.metrics import PEER_REFUSED
from proto import chat_pb2, replication_pb2
from proto import replication_pb2 as rpb
from proto.credentials import (
    ADMIN_ROLE,
    ROLE_KEY,
    TAG_KEY,
    ClusterSecret,
    node_role,
    write_new_secret,
)
from tests.support.faults import (
    Load,
    Members,
    assert_exactly_once,
    kill,
    running_cluster,
    served_inbox,
    settle,
    sign_up,
    wait_caught_up,
)
from tests.support.nodes import PASSWORD, elected, in_process_cluster
from tests.support.tls import CertificateAuthority

Metadata = tuple[tuple[str, str], ...]
CLOSED = [s for s in replication_pb2.DESCRIPTOR.services_by_name.values()]
CALL_S = 5.0
CLIENT_RACE_RETRIES = 20
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


def forged_ack(term: int, sender: int = 2, match: int = 2**62) -> rpb.PeerBatch:
    """The issue's forged reply: node `sender` claims to hold everything up to `match`."""
    reply = rpb.AppendReply(
        term=term, sender=sender, success=True, match_index=match, echo_sent_at_ms=-1
    )
    return rpb.PeerBatch(from_id=sender, messages=[rpb.PeerMessage(append_reply=reply)])


def snapshot_chunk(term: int, sender: int) -> rpb.SnapshotChunk:
    config = rpb.LogEntry(index=1, term=0, kind=3, payload=b'{"members": {"9": "x:1"}}')
    return rpb.SnapshotChunk(
        term=term, sender=sender, index=10**6, index_term=term, config=config, data=b"x", size=1
    )


def attacks(term: int) -> dict[str, Message]:
    """What an outsider sends to each closed method: the issue's attacks, one per method.

    A method added to a closed service without an entry here fails the test,
    so nothing new is left open by accident.
    """
    return {
        "Stream": forged_ack(term),
        "Deliver": forged_ack(term),
        "InstallSnapshot": snapshot_chunk(term + 1, 2),
        "AddMember": rpb.AddMemberRequest(id=9, address="127.0.0.1:1"),
        "RemoveMember": rpb.RemoveMemberRequest(id=2),
        "TransferLeader": rpb.TransferLeaderRequest(id=2),
        "ForceLeader": rpb.ForceLeaderRequest(accept_data_loss=True),
        "SaveSnapshot": rpb.SaveSnapshotRequest(),  # every password hash and session
    }


def method_paths() -> Iterator[tuple[str, Any]]:
    for service in CLOSED:
        assert service.full_name not in OPEN_SERVICES
        for method in service.methods:
            yield f"/{service.full_name}/{method.name}", method


async def call(
    channel: grpc.aio.Channel, path: str, method: Any, request: Message, metadata: Metadata
) -> grpc.StatusCode:
    """Call one method whatever its shape; the status it ends with."""
    response = rpb.__dict__[method.output_type.name]
    kind = (method.client_streaming, method.server_streaming)
    shapes: dict[tuple[bool, bool], Callable[..., Any]] = {
        (False, False): channel.unary_unary,
        (True, False): channel.stream_unary,
        (False, True): channel.unary_stream,
        (True, True): channel.stream_stream,
    }
    rpc = shapes[kind](path, request_serializer=type(request).SerializeToString,
                       response_deserializer=response.FromString)  # fmt: skip
    argument: Any = iter([request]) if method.client_streaming else request
    for _ in range(CLIENT_RACE_RETRIES):
        outcome = rpc(argument, metadata=metadata, timeout=CALL_S)
        with contextlib.suppress(grpc.aio.AioRpcError):
            if method.server_streaming:
                async for _ in outcome:
                    pass
            else:
                await outcome
        code = await outcome.code()
        # A server that refuses at once may end a client-streaming call before the client's
        # first message has left; the client then reports its own failed send as INTERNAL
        # ("Internal error from Core", "execute_batch") instead of the server's status.
        # Only that is retried.
        if not (method.client_streaming and code == grpc.StatusCode.INTERNAL):
            return code
        argument = iter([request]) if method.client_streaming else request
    return grpc.StatusCode.INTERNAL


async def views(members: Members) -> dict[int, tuple[Any, ...]]:
    """What an attack must not change: each member's term, commit, epoch, members and
    chat data, once all of them agree on the commit index (writes are stopped)."""
    await wait_caught_up(members)
    answers = await members.statuses()
    nodes = members.cluster.nodes
    return {
        i: (
            s.term,
            s.commit_index,
            s.config_epoch,
            tuple((m.id, m.address) for m in s.members),
            await asyncio.to_thread(chat_data, nodes[i].data_dir / "state.db"),
        )
        for i, s in answers.items()
    }


def chat_data(path: Path) -> str:
    """A digest of every row of a node's chat state (read-only; the node keeps running)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return hashlib.sha256("\n".join(db.iterdump()).encode()).hexdigest()


def login_request(name: str) -> chat_pb2.LoginRequest:
    return chat_pb2.LoginRequest(username=name, password=PASSWORD)


def staged_snapshots(folder: Path) -> list[Path]:
    return list(folder.glob("node-*/snapshot-*"))


def retagged(secret: ClusterSecret, tagged: int, claimed: int) -> Metadata:
    """A genuine tag for node `tagged`, presented as node `claimed` (one captured off a link)."""
    tag = dict(secret.metadata(node_role(tagged)))[TAG_KEY]
    return ((ROLE_KEY, node_role(claimed)), (TAG_KEY, tag))


def other_secret(tmp_path: Path) -> ClusterSecret:
    path = tmp_path / "wrong.secret"
    write_new_secret(path)
    return ClusterSecret.load(path)


async def test_every_closed_method_refuses_callers_without_the_right_credentials(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path) as (cluster, members):
        leader = await members.find_leader()
        await sign_up(members, "probe")
        await settle(members, "probe")
        secret = ClusterSecret.load(cluster.secret_file)
        wrong = other_secret(tmp_path)
        before = await views(members)
        term = before[leader][0]
        requests = attacks(term)
        wrong_outcomes: list[str] = []
        for node_id, node in cluster.nodes.items():
            async with grpc.aio.insecure_channel(node.address) as channel:
                for path, method in method_paths():
                    admin_api = path.startswith("/chat.replication.v1.Admin/")
                    other_role = secret.metadata(node_role(2) if admin_api else ADMIN_ROLE)
                    cases = {
                        "no credentials": ((), UNAUTHENTICATED),
                        "a wrong secret": (wrong.metadata(node_role(2)), UNAUTHENTICATED),
                        "a wrong admin secret": (wrong.metadata(ADMIN_ROLE), UNAUTHENTICATED),
                        "node 2's tag for node 3": (retagged(secret, 2, 3), UNAUTHENTICATED),
                        "the other API's role": (other_role, grpc.StatusCode.PERMISSION_DENIED),
                    }
                    for case, (metadata, expected) in cases.items():
                        code = await call(channel, path, method, requests[method.name], metadata)
                        if code != expected:
                            wrong_outcomes.append(f"node {node_id} {path} {case}: {code.name}")
        assert not wrong_outcomes, "\n".join(wrong_outcomes)
        assert await views(members) == before
        assert not staged_snapshots(tmp_path)


async def test_a_member_speaking_for_another_or_a_non_member_is_denied(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as (cluster, members):
        leader = await members.find_leader()
        await sign_up(members, "probe")
        await settle(members, "probe")
        secret = ClusterSecret.load(cluster.secret_file)
        before = await views(members)
        term = before[leader][0]
        deliver = "/chat.replication.v1.Replication/Deliver"
        stream = "/chat.replication.v1.Replication/Stream"
        snapshot = "/chat.replication.v1.Replication/InstallSnapshot"
        methods = {m.name: m for _, m in method_paths()}
        as3 = secret.metadata(node_role(3))
        as9 = secret.metadata(node_role(9))
        lying_sender = forged_ack(term, sender=3)
        lying_sender.messages[0].append_reply.sender = 2
        async with grpc.aio.insecure_channel(cluster.nodes[leader].address) as channel:
            outcomes = {
                "batch from node 2 sent as node 3": await call(
                    channel, deliver, methods["Deliver"], forged_ack(term), as3
                ),
                "message sender 2 in node 3's batch": await call(
                    channel, deliver, methods["Deliver"], lying_sender, as3
                ),
                "stream opened for node 2 as node 3": await call(
                    channel, stream, methods["Stream"], forged_ack(term), as3
                ),
                "a non-member": await call(
                    channel, deliver, methods["Deliver"], forged_ack(term, sender=9), as9
                ),
                "snapshot from node 2 sent as node 3": await call(
                    channel, snapshot, methods["InstallSnapshot"], snapshot_chunk(term, 2), as3
                ),
            }
        assert outcomes == {what: grpc.StatusCode.PERMISSION_DENIED for what in outcomes}
        assert await views(members) == before


async def test_a_forged_ack_is_refused_and_two_crashes_lose_nothing(tmp_path: Path) -> None:
    """The issue's attack: node 2 'acks' 2^62; it must still get every entry, so after the
    leader and the third node die it holds all 50 acknowledged messages."""
    async with running_cluster(tmp_path) as (cluster, members):
        await sign_up(members, "probe")
        await settle(members, "probe")
        leader = await members.find_leader()
        victim = next(i for i in cluster.nodes if i != leader)
        third = next(i for i in cluster.nodes if i not in (leader, victim))
        term = (await views(members))[leader][0]
        secret = ClusterSecret.load(cluster.secret_file)
        deliver = "/chat.replication.v1.Replication/Deliver"
        method = {m.name: m for _, m in method_paths()}["Deliver"]
        async with grpc.aio.insecure_channel(cluster.nodes[leader].address) as channel:
            no_credentials = await call(channel, deliver, method, forged_ack(term, victim), ())
            # With the victim's own credentials (a member gone wrong), the core still refuses it.
            as_victim = secret.metadata(node_role(victim))
            await call(channel, deliver, method, forged_ack(term, victim), as_victim)
        assert no_credentials == grpc.StatusCode.UNAUTHENTICATED
        auth = await sign_up(members, "sink")
        load = Load(members, auth, "sink", writers=1).start()
        await load.run_phase("start", 50)
        await load.stop()
        leader_view = (await members.statuses())[leader]
        victim_view = next(m for m in leader_view.members if m.id == victim)
        assert victim_view.in_sync and victim_view.match_index <= leader_view.commit_index + 1
        kill(members, leader)
        kill(members, third)
        assert await members.find_leader(among=[victim]) == victim
        assert_exactly_once(await served_inbox(members, "sink", auth), load)
        assert len(load.acked) >= 50


async def test_out_of_range_fields_from_a_member_change_nothing(tmp_path: Path) -> None:
    """Terms of 2^63 and more once made the hard-state write raise and killed the driver."""
    async with running_cluster(tmp_path) as (cluster, members):
        leader = await members.find_leader()
        await sign_up(members, "probe")
        await settle(members, "probe")
        before = await views(members)
        secret = ClusterSecret.load(cluster.secret_file)
        huge = 2**64 - 1
        vote = rpb.VoteRequest(term=huge, sender=2, campaign=1, last_log_term=huge,
                               last_log_index=huge, epoch=huge, epoch_term=huge)  # fmt: skip
        append = rpb.Append(term=2**63, sender=2, prev_index=huge, prev_term=huge, commit=huge,
                            epoch=huge, isr=[huge], sent_at_ms=2**63 - 1, fence=huge)  # fmt: skip
        method = {m.name: m for _, m in method_paths()}["Deliver"]
        deliver = "/chat.replication.v1.Replication/Deliver"
        for node_id, node in cluster.nodes.items():
            if node_id == 2:
                continue
            async with grpc.aio.insecure_channel(node.address) as channel:
                for message in (rpb.PeerMessage(vote_request=vote), rpb.PeerMessage(append=append)):
                    batch = rpb.PeerBatch(from_id=2, messages=[message])
                    await call(channel, deliver, method, batch, secret.metadata(node_role(2)))
        assert all(node.running for node in cluster.nodes.values())
        assert await views(members) == before
        await members.call("Login", login_request("probe"))  # and the cluster still commits
        assert (await views(members))[leader][0] == before[leader][0]


# -- mutual TLS -------------------------------------------------------------------------------


def tls_cluster(tmp_path: Path, authority: CertificateAuthority) -> Any:
    """Three in-process nodes on mutual TLS with member certificates and no secret."""
    certs = {i: authority.issue(f"node-{i}", (node_role(i),)) for i in (1, 2, 3)}
    files = {
        i: TlsFiles(cert=certs[i].cert, key=certs[i].key, ca=authority.path) for i in (1, 2, 3)
    }
    return in_process_cluster(tmp_path, lambda i: {"tls": files[i]})


def credentials_of(material: Any, authority: CertificateAuthority) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=authority.path.read_bytes(),
        private_key=material.key.read_bytes(),
        certificate_chain=material.cert.read_bytes(),
    )


def epoch_of(node: ChatNode) -> tuple[int, int]:
    status = node.coordinator.status()
    return status.term, status.config_epoch


async def test_under_mtls_a_chat_users_certificate_opens_nothing(tmp_path: Path) -> None:
    authority = CertificateAuthority(tmp_path)
    user = credentials_of(authority.issue("chat-user"), authority)
    member2 = credentials_of(authority.issue("member-2", (node_role(2),)), authority)
    operator = credentials_of(authority.issue("operator", (ADMIN_ROLE,)), authority)
    async with tls_cluster(tmp_path, authority) as nodes:
        leader = await elected(nodes)
        status = leader.coordinator.status()
        requests = attacks(status.term)
        before = [epoch_of(n) for n in nodes]
        wrong: list[str] = []
        for node in nodes:
            async with grpc.aio.secure_channel(node.config.address, user) as channel:
                for path, method in method_paths():
                    code = await call(channel, path, method, requests[method.name], ())
                    if code != grpc.StatusCode.PERMISSION_DENIED:
                        wrong.append(f"{path} with a chat user's certificate: {code.name}")
        address = leader.config.address
        transfer = "/chat.replication.v1.Admin/TransferLeader"
        methods = {m.name: m for _, m in method_paths()}
        async with grpc.aio.secure_channel(address, member2) as channel:
            request = requests["TransferLeader"]
            code = await call(channel, transfer, methods["TransferLeader"], request, ())
            assert code == grpc.StatusCode.PERMISSION_DENIED  # a member is no operator
            refused_before = PEER_REFUSED.labels("sender")._value.get()
            deliver = "/chat.replication.v1.Replication/Deliver"
            code = await call(channel, deliver, methods["Deliver"], forged_ack(status.term, 3), ())
            assert code == grpc.StatusCode.PERMISSION_DENIED  # node 2's certificate, node 3's word
            assert PEER_REFUSED.labels("sender")._value.get() == refused_before + 1
        assert not wrong, "\n".join(wrong)
        assert [epoch_of(n) for n in nodes] == before
        follower = next(n for n in nodes if n is not leader)
        request = rpb.TransferLeaderRequest(id=follower.config.node_id)
        save = "/chat.replication.v1.Admin/SaveSnapshot"
        async with grpc.aio.secure_channel(address, operator) as channel:
            saved = await call(channel, save, methods["SaveSnapshot"], requests["SaveSnapshot"], ())
            code = await call(channel, transfer, methods["TransferLeader"], request, ())
        assert saved == code == grpc.StatusCode.OK  # the operator's certificate may
