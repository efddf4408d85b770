"""Session expiry through the API (--session-ttl), and what replicas agree on."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from chatnode import passwords
from chatnode.local_cluster import free_port
from chatnode.main import config_from_args, parse_duration_ms
from chatnode.server import ChatNode, NodeConfig
from chatnode.service import RENEW_STEPS_PER_TTL
from chatnode.state import NO_SESSION
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from proto.credentials import ClusterSecret
from tests.support.nodes import PASSWORD, elected, in_process_cluster, signup, wait_until_serving

CODE = grpc.StatusCode
TTL_MS = 3_600_000
STEP_MS = TTL_MS // RENEW_STEPS_PER_TTL


# -- the flag -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("90", 90_000),
        ("90s", 90_000),
        ("15m", 900_000),
        ("12h", 43_200_000),
        ("30d", 2_592_000_000),
    ],
)
def test_session_ttl_accepts_seconds_and_suffixes(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms
    config = config_from_args(["--id", "1", "--cluster", "1=127.0.0.1:1", "--session-ttl", text])
    assert config.session_ttl_ms == ms


def test_session_ttl_defaults_to_thirty_days(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAT_SESSION_TTL", raising=False)
    assert config_from_args(["--id", "1", "--cluster", "1=127.0.0.1:1"]).session_ttl_ms == (
        30 * 86_400_000
    )
    monkeypatch.setenv("CHAT_SESSION_TTL", "2h")
    assert config_from_args(["--id", "1", "--cluster", "1=127.0.0.1:1"]).session_ttl_ms == (
        7_200_000
    )


@pytest.mark.parametrize("text", ["", "0", "0d", "-5", "1.5h", "3w", "h", "²", "9999d"])
def test_a_bad_session_ttl_exits_2_with_one_line(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        config_from_args(["--id", "1", "--cluster", "1=127.0.0.1:1", "--session-ttl", text])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--session-ttl" in err and err.count("\n") == 1 and "Traceback" not in err


# -- expiry through the API, on a node with a clock the test moves ---------------------------


class Clock:
    def __init__(self) -> None:
        self.now_ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
async def clocked(tmp_path: Path) -> AsyncIterator[tuple[ChatNode, Clock]]:
    clock = Clock()
    config = NodeConfig(
        node_id=1,
        cluster={1: f"127.0.0.1:{free_port()}"},
        data_dir=tmp_path / "n1",
        session_ttl_ms=TTL_MS,
        wall_clock_ms=clock,
        monotonic_clock_ms=clock,  # real time passes: both clocks move
    )
    node = ChatNode(config)
    await node.start()
    await wait_until_serving(node)
    try:
        yield node, clock
    finally:
        await node.stop()


@pytest.fixture
async def stub(clocked: tuple[ChatNode, Clock]) -> AsyncIterator[chat_pb2_grpc.ChatServiceStub]:
    async with grpc.aio.insecure_channel(clocked[0].config.address) as channel:
        yield chat_pb2_grpc.ChatServiceStub(channel)


async def unauthenticated(call) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == CODE.UNAUTHENTICATED
    return caught.value.details()


async def test_an_unused_session_expires_after_the_ttl_like_an_unknown_token(
    stub: chat_pb2_grpc.ChatServiceStub, clocked: tuple[ChatNode, Clock]
) -> None:
    node, clock = clocked
    auth = await signup(stub, "alice")
    clock.now_ms += TTL_MS  # at least the TTL after the last use: still valid
    await stub.ListAccounts(pb.ListAccountsRequest(), metadata=auth)
    clock.now_ms += TTL_MS + STEP_MS  # at most one renewal step past the TTL: gone
    expired = await unauthenticated(stub.ListAccounts(pb.ListAccountsRequest(), metadata=auth))
    unknown = (("authorization", "Bearer not-a-token"),)
    assert expired == await unauthenticated(
        stub.ListAccounts(pb.ListAccountsRequest(), metadata=unknown)
    )
    assert expired == NO_SESSION
    for call in (
        stub.SendMessage(pb.SendMessageRequest(recipient="alice", body="x"), metadata=auth),
        stub.ReadMessages(pb.ReadMessagesRequest(), metadata=auth),
        stub.Logout(pb.LogoutRequest(), metadata=auth),
        stub.DeleteAccount(pb.DeleteAccountRequest(password=PASSWORD), metadata=auth),
    ):
        await unauthenticated(call)
    stream = stub.Subscribe(pb.SubscribeRequest(), metadata=auth)
    await unauthenticated(stream.read())
    assert node.lookup.account("alice") is not None


async def test_use_slides_the_deadline_and_reads_write_only_when_a_renewal_is_due(
    stub: chat_pb2_grpc.ChatServiceStub, clocked: tuple[ChatNode, Clock]
) -> None:
    node, clock = clocked
    auth = await signup(stub, "bob")
    commit = node.coordinator.status().commit_index
    for _ in range(3):  # a renewal is not due yet: reads touch nothing in the log
        await stub.ListAccounts(pb.ListAccountsRequest(), metadata=auth)
    assert node.coordinator.status().commit_index == commit
    for _ in range(5):  # used every 0.9 TTL, the session outlives several TTLs
        clock.now_ms += TTL_MS * 9 // 10
        await stub.ListAccounts(pb.ListAccountsRequest(), metadata=auth)
    assert node.coordinator.status().commit_index == commit + 5  # one Touch per renewal
    for _ in range(3):  # a mutating call renews on its own op
        clock.now_ms += TTL_MS * 9 // 10
        await stub.SendMessage(pb.SendMessageRequest(recipient="bob", body="x"), metadata=auth)
    assert node.coordinator.status().commit_index == commit + 5 + 3
    stream = stub.Subscribe(pb.SubscribeRequest(), metadata=auth)  # a new stream is a use
    clock.now_ms += TTL_MS * 9 // 10
    await asyncio.wait_for(stream.read(), timeout=5)
    stream.cancel()
    clock.now_ms += TTL_MS * 9 // 10
    await stub.ListAccounts(pb.ListAccountsRequest(), metadata=auth)


async def test_expired_sessions_are_pruned_when_later_sessions_open(
    stub: chat_pb2_grpc.ChatServiceStub, clocked: tuple[ChatNode, Clock]
) -> None:
    node, clock = clocked
    auth = await signup(stub, "carol")
    token_hash = passwords.token_hash(auth[0][1].removeprefix("Bearer "))
    assert node.lookup.session(token_hash) is not None
    clock.now_ms += 2 * TTL_MS
    await stub.Login(pb.LoginRequest(username="carol", password=PASSWORD))
    assert node.lookup.session(token_hash) is None


# -- replicas ---------------------------------------------------------------------------------


async def test_replicas_agree_on_upgraded_hashes_and_deadlines_whatever_their_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three nodes with three different --session-ttl: the leader's deadline and the
    leader's upgrade of an old hash are what every replica stores."""
    secret = ClusterSecret(secrets.token_bytes(32))
    options = {"cluster_secret": secret}
    async with in_process_cluster(
        tmp_path, lambda i: options | {"session_ttl_ms": i * TTL_MS}
    ) as nodes:
        leader = await elected(nodes)
        async with grpc.aio.insecure_channel(leader.config.address) as channel:
            stub = chat_pb2_grpc.ChatServiceStub(channel)
            with monkeypatch.context() as patched:
                patched.setattr(passwords, "SCRYPT_N", 2**14)
                await stub.CreateAccount(pb.CreateAccountRequest(username="dan", password=PASSWORD))
            login = await stub.Login(
                pb.LoginRequest(username="dan", password=PASSWORD, request_id="r")
            )
        token_hash = passwords.token_hash(login.session_token)
        index = leader.coordinator.status().commit_index
        async with asyncio.timeout(10):
            for node in nodes:
                await node.applier.wait_applied(index)
        accounts = {node.lookup.account("dan") for node in nodes}
        sessions = {node.lookup.session(token_hash) for node in nodes}
        assert len(accounts) == 1 and len(sessions) == 1
        (account,), (session,) = accounts, sessions
        assert account is not None and not passwords.needs_rehash(account.password_hash)
        leader_ttl = leader.config.session_ttl_ms
        assert session is not None
        created = session.expires_ms - leader_ttl - leader_ttl // RENEW_STEPS_PER_TTL
        assert abs(created - leader.config.wall_clock_ms()) < 60_000  # the leader's TTL, not theirs
