"""Password hashing: current KDF parameters, upgrade of old hashes, the bounded hash pool."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time

import grpc
import pytest

from chatnode import passwords
from chatnode.passwords import HashPool
from chatnode.server import ChatNode
from proto import chat_pb2 as pb
from proto import chat_pb2_grpc
from proto.errors import ResourceExhausted
from tests.support.nodes import PASSWORD

Stub = chat_pb2_grpc.ChatServiceStub
CODE = grpc.StatusCode


def old_hash(password: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A hash as the previous release made it (N = 2^14)."""
    with monkeypatch.context() as patched:
        patched.setattr(passwords, "SCRYPT_N", 2**14)
        return passwords.hash_password(password).encoded


def test_new_hashes_use_current_guidance() -> None:
    hashed = passwords.hash_password(PASSWORD)
    scheme, n, r, p, salt, verifier = hashed.encoded.split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", 2**15, 8, 1)
    assert len(bytes.fromhex(salt)) == 16 and len(bytes.fromhex(verifier)) == 32
    assert not passwords.needs_rehash(hashed.encoded)
    verified = passwords.verify_password(PASSWORD, hashed.encoded)
    assert verified is not None and verified.seal_key == hashed.seal_key
    assert passwords.verify_password("wrong password", hashed.encoded) is None


def test_an_old_hash_still_verifies_and_asks_for_a_rehash(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded = old_hash(PASSWORD, monkeypatch)
    assert encoded.startswith("scrypt$16384$8$1$")
    assert passwords.verify_password(PASSWORD, encoded) is not None
    assert passwords.verify_password("wrong password", encoded) is None
    assert passwords.needs_rehash(encoded)


# -- the pool -------------------------------------------------------------------------


async def test_beyond_the_bound_callers_are_refused_at_once() -> None:
    pool = HashPool(workers=1, admitted=3)
    gate = threading.Event()
    try:
        held = [asyncio.ensure_future(pool.run(gate.wait, 10)) for _ in range(3)]
        await asyncio.sleep(0)  # one loop pass: each task is admitted before its first await
        assert pool.admitted == 3
        start = time.monotonic()
        with pytest.raises(ResourceExhausted) as refused:
            await pool.run(gate.wait, 10)
        assert time.monotonic() - start < 0.05
        assert refused.value.code == CODE.RESOURCE_EXHAUSTED
        assert str(refused.value) and "\n" not in str(refused.value)
        gate.set()
        async with asyncio.timeout(5):
            assert await asyncio.gather(*held) == [True, True, True]
        assert pool.admitted == 0
        assert await pool.run(sum, (1, 2)) == 3  # room again
    finally:
        gate.set()
        pool.close()


async def test_hashing_leaves_the_event_loop_free() -> None:
    """scrypt runs in worker threads and releases the GIL: a 5 ms ticker on the loop
    keeps ticking while hashes run back to back (each holds a core for ~100 ms)."""
    pool = HashPool()
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - start - 0.005)

    try:
        ticking = asyncio.ensure_future(ticker())
        async with asyncio.timeout(30):
            await asyncio.gather(*(pool.run(passwords.hash_password, PASSWORD) for _ in range(8)))
        done.set()
        await ticking
    finally:
        pool.close()
    lags.sort()
    p99 = lags[int(len(lags) * 0.99)]
    print(
        f"\nloop lag while hashing: median {statistics.median(lags) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, max {lags[-1] * 1000:.1f} ms over {len(lags)} ticks"
    )
    # A hash holding the GIL would delay nearly every tick by tens of milliseconds.
    assert statistics.median(lags) < 0.02


# -- through the API ----------------------------------------------------------------------


async def test_a_login_flood_is_shed_with_resource_exhausted(stub: Stub) -> None:
    await stub.CreateAccount(pb.CreateAccountRequest(username="target", password=PASSWORD))
    names = ["target", "nobody"] * 60  # wrong passwords, for a real name and an unknown one
    calls = [
        stub.Login(pb.LoginRequest(username=name, password="wrong password"), timeout=60)
        for name in names
    ]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(o, grpc.aio.AioRpcError) for o in outcomes), outcomes
    codes = [o.code() for o in outcomes]
    assert set(codes) <= {CODE.UNAUTHENTICATED, CODE.RESOURCE_EXHAUSTED}
    shed = [o for o in outcomes if o.code() == CODE.RESOURCE_EXHAUSTED]
    assert 0 < len(shed) < len(names)
    assert all(o.details() and "\n" not in o.details() for o in outcomes)
    print(f"\n{len(shed)} of {len(names)} logins shed")
    # Once the flood is over, logins are served again.
    reply = await stub.Login(pb.LoginRequest(username="target", password=PASSWORD))
    assert reply.session_token


async def test_an_old_hash_is_upgraded_on_login_and_retries_keep_their_token(
    stub: Stub, node: ChatNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first Login replaces the old hash; its token is sealed under the new hash's
    key, and a retry (same request_id) finds it with that key, not the one the
    password was first checked against."""
    with monkeypatch.context() as patched:
        patched.setattr(passwords, "SCRYPT_N", 2**14)
        await stub.CreateAccount(pb.CreateAccountRequest(username="old", password=PASSWORD))
    stored = node.lookup.account("old")
    assert stored is not None and passwords.needs_rehash(stored.password_hash)

    login = pb.LoginRequest(username="old", password=PASSWORD, request_id="l-1")
    first = await stub.Login(login)
    upgraded = node.lookup.account("old")
    assert upgraded is not None and upgraded.id == stored.id
    assert upgraded.password_hash.startswith("scrypt$32768$8$1$")
    assert passwords.verify_password(PASSWORD, upgraded.password_hash) is not None

    retries = await asyncio.gather(*(stub.Login(login) for _ in range(3)))
    assert {r.session_token for r in retries} == {first.session_token}
    auth = (("authorization", f"Bearer {first.session_token}"),)
    assert list((await stub.ListAccounts(pb.ListAccountsRequest(), metadata=auth)).usernames)
    wrong = pb.LoginRequest(username="old", password="wrong password", request_id="l-1")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Login(wrong)
    assert caught.value.code() == CODE.UNAUTHENTICATED
    # Later logins find a current hash and leave it alone.
    await stub.Login(pb.LoginRequest(username="old", password=PASSWORD))
    assert node.lookup.account("old") == upgraded


async def test_concurrent_first_attempts_of_an_upgrading_login_agree_on_one_token(
    stub: Stub, node: ChatNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each attempt makes its own new hash (own salt, own seal key); whichever commits
    first is the answer, and the others unseal it with the key of the hash it names."""
    with monkeypatch.context() as patched:
        patched.setattr(passwords, "SCRYPT_N", 2**14)
        await stub.CreateAccount(pb.CreateAccountRequest(username="racer", password=PASSWORD))
    login = pb.LoginRequest(username="racer", password=PASSWORD, request_id="together")
    replies = await asyncio.gather(*(stub.Login(login) for _ in range(4)))
    assert len({r.session_token for r in replies}) == 1
    auth = (("authorization", f"Bearer {replies[0].session_token}"),)
    await stub.ListAccounts(pb.ListAccountsRequest(), metadata=auth)
    account = node.lookup.account("racer")
    assert account is not None and not passwords.needs_rehash(account.password_hash)


async def test_create_and_delete_account_hash_in_the_pool(stub: Stub, node: ChatNode) -> None:
    """A full pool refuses CreateAccount and DeleteAccount too, with nothing changed."""
    await stub.CreateAccount(pb.CreateAccountRequest(username="keeper", password=PASSWORD))
    reply = await stub.Login(pb.LoginRequest(username="keeper", password=PASSWORD))
    auth = (("authorization", f"Bearer {reply.session_token}"),)
    pool: HashPool = node.service.hash_pool
    gate = threading.Event()
    held = [asyncio.ensure_future(pool.run(gate.wait, 10)) for _ in range(passwords.HASH_ADMITTED)]
    try:
        await asyncio.sleep(0)  # one loop pass: each task is admitted before its first await
        assert pool.admitted == passwords.HASH_ADMITTED
        create = stub.CreateAccount(pb.CreateAccountRequest(username="late", password=PASSWORD))
        delete = stub.DeleteAccount(pb.DeleteAccountRequest(password=PASSWORD), metadata=auth)
        for call in (create, delete):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == CODE.RESOURCE_EXHAUSTED
    finally:
        gate.set()
        await asyncio.gather(*held)
    assert node.lookup.account("late") is None
    assert node.lookup.account("keeper") is not None
