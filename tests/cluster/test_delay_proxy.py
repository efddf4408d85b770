"""The delaying TCP proxy of the network fault tests, on loopback with free ports.

Most tests run the proxy in this process (so they can ask it whether every
connection is closed); one runs the command line under the system's
python3, as the fault tests will, which also shows it needs nothing but the
standard library. Times are lower bounds on the delay, never speed figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from chatnode.local_cluster import free_port
from tests.netns import delay_proxy
from tests.netns.delay_proxy import (
    SO_MARK,
    Delay,
    DelayProxy,
    Endpoint,
    Route,
    answer,
    outgoing_socket,
    parse_route,
)

WAIT_S = 10.0
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory whose paths fit a Unix socket's 108 bytes, unlike pytest's tmp_path."""
    with tempfile.TemporaryDirectory(prefix="dp-") as name:
        yield Path(name)


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send back every byte, in order; pass on EOF."""
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def target_server(handler: Handler = echo) -> AsyncIterator[int]:
    """A loopback server running handler per connection; its port."""
    tasks: set[asyncio.Task[None]] = set()

    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.create_task(handler(reader, writer)))

    server = await asyncio.start_server(accepted, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


@contextlib.asynccontextmanager
async def proxy_to(port: int, control: Path) -> AsyncIterator[DelayProxy]:
    """An in-process proxy from a free loopback port to port; stopped afterwards."""
    route = Route(Endpoint("127.0.0.1", 0), Endpoint("127.0.0.1", port))
    proxy = DelayProxy([route], control)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
    assert proxy.connections == 0
    assert not proxy_tasks(), "the proxy left tasks behind"


def proxy_tasks() -> list[asyncio.Task[object]]:
    """Tasks running the proxy's code (its pipes, its control connections)."""
    names = ("_Pipe.", "DelayProxy.")
    return [t for t in asyncio.all_tasks() if any(n in t.get_coro().__qualname__ for n in names)]


@contextlib.asynccontextmanager
async def via(proxy: DelayProxy) -> AsyncIterator[Stream]:
    """A client connection through the proxy's first route."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listening[0].port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def control(proxy: DelayProxy, *lines: str) -> list[str]:
    """Send control lines on one connection; the reply to each."""
    reader, writer = await asyncio.open_unix_connection(str(proxy.control))
    try:
        replies = []
        for line in lines:
            writer.write(line.encode() + b"\n")
            replies.append((await reader.readline()).decode().rstrip("\n"))
        return replies
    finally:
        writer.close()
        await writer.wait_closed()


async def round_trip(stream: Stream, payload: bytes = b"ping") -> float:
    """Seconds for payload to come back through an echo target."""
    reader, writer = stream
    started = time.monotonic()
    writer.write(payload)
    await writer.drain()
    async with asyncio.timeout(WAIT_S):
        assert await reader.readexactly(len(payload)) == payload
    return time.monotonic() - started


def open_sockets() -> set[str]:
    """The sockets this process holds open (by inode): whatever else closes meanwhile (a
    collected channel of an earlier test), a socket opened and left open shows here."""
    sockets = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd is gone by now
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:"):
                sockets.add(target)
    return sockets


# -- data ------------------------------------------------------------------------------------


@pytest.mark.parametrize("delay_ms", [0, 5])
async def test_megabytes_come_back_whole_and_in_order(short_dir: Path, delay_ms: int) -> None:
    payload = random.Random(7).randbytes(4 * 1024 * 1024)
    async with target_server() as port, proxy_to(port, short_dir / "c") as proxy:
        assert await control(proxy, f"delay {delay_ms}") == ["ok"]
        async with via(proxy) as (reader, writer):

            async def send() -> None:
                for at in range(0, len(payload), 100_000):  # many chunks, not one
                    writer.write(payload[at : at + 100_000])
                    await writer.drain()
                writer.write_eof()

            async with asyncio.timeout(WAIT_S * 3):
                sending = asyncio.create_task(send())
                received = await reader.read(-1)  # up to the EOF the echo passes back
                await sending
        assert len(received) == len(payload)
        assert received == payload


async def test_a_round_trip_takes_at_least_twice_the_delay(short_dir: Path) -> None:
    async with (
        target_server() as port,
        proxy_to(port, short_dir / "c") as proxy,
        via(proxy) as stream,
    ):
        undelayed = min([await round_trip(stream) for _ in range(3)])
        assert await control(proxy, "delay 100") == ["ok"]
        delayed = await round_trip(stream)
    assert delayed >= 0.200, f"a 100 ms one-way delay gave a {delayed * 1000:.0f} ms round trip"
    assert undelayed < 0.100, f"no delay, yet a {undelayed * 1000:.0f} ms round trip"


async def test_a_new_delay_holds_for_new_chunks_and_none_overtakes(short_dir: Path) -> None:
    """A chunk keeps the delay it arrived under; a faster later one waits behind it."""
    async with (
        target_server() as port,
        proxy_to(port, short_dir / "c") as proxy,
        via(proxy) as (reader, writer),
    ):
        await control(proxy, "delay 300")
        started = time.monotonic()
        writer.write(b"slow,")
        async with asyncio.timeout(WAIT_S):
            await proxy.wait_read(len(b"slow,"))
        await control(proxy, "delay 0")
        writer.write(b"fast")
        await writer.drain()
        async with asyncio.timeout(WAIT_S):
            got = await reader.readexactly(len(b"slow,fast"))
        took = time.monotonic() - started
        assert got == b"slow,fast"
        assert took >= 0.300
        assert await round_trip((reader, writer)) < 0.300  # later chunks: no delay


# -- the control socket --------------------------------------------------------------------


def test_control_lines_and_their_replies() -> None:
    delay = Delay()
    assert answer(delay, "get\n") == "delay 0\n"
    assert answer(delay, "delay 12.5\r\n") == "ok\n"
    assert delay.ms == 12.5 and answer(delay, "get") == "delay 12.5\n"
    assert answer(delay, "delay 40") == "ok\n" and answer(delay, "get") == "delay 40\n"
    for bad in (
        "delay -1",
        "delay nan",
        "delay inf",
        "delay 1e9",
        "delay abc",
        "delay",
        "delay 1 2",
    ):
        assert answer(delay, bad).startswith("error "), bad
    assert answer(delay, "get now").startswith("error usage: get")
    assert answer(delay, "").startswith("error empty line")
    assert answer(delay, "jump 5").startswith("error unknown command 'jump'")
    assert delay.ms == 40, "a refused line changed the delay"


async def test_a_bad_control_line_keeps_the_connection_usable(short_dir: Path) -> None:
    async with target_server() as port, proxy_to(port, short_dir / "c") as proxy:
        replies = await control(proxy, "delay x", "x" * 100_000, "delay 7", "get")
    assert replies[0].startswith("error not a number of milliseconds")
    assert replies[1] == "error line too long"
    assert replies[2:] == ["ok", "delay 7"]


# -- EOF and resets -----------------------------------------------------------------------------


async def test_eof_passes_both_ways_after_the_delay_and_a_half_close_keeps_data_flowing(
    short_dir: Path,
) -> None:
    """The client shuts down writing; the target sees EOF a delay later, still answers
    on its open half, then closes; the client reads the answer and EOF."""
    eof_seen = asyncio.get_running_loop().create_future()

    async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read(-1)
        eof_seen.set_result(time.monotonic())
        writer.write(b"reply to " + request)
        writer.close()

    before = open_sockets()
    async with target_server(answer_after_eof) as port, proxy_to(port, short_dir / "c") as proxy:
        await control(proxy, "delay 50")
        async with via(proxy) as (reader, writer):
            writer.write(b"hello")
            writer.write_eof()
            shut = time.monotonic()
            async with asyncio.timeout(WAIT_S):
                assert await reader.read(-1) == b"reply to hello"
                assert await eof_seen - shut >= 0.050
        async with asyncio.timeout(WAIT_S):
            await proxy.wait_idle()
    assert open_sockets() <= before, "sockets were left open"


def rst(writer: asyncio.StreamWriter) -> None:
    writer.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
    )
    writer.transport.abort()


async def test_a_reset_by_the_target_reaches_the_client(short_dir: Path) -> None:
    async def reset_on_data(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        rst(writer)

    async with target_server(reset_on_data) as port, proxy_to(port, short_dir / "c") as proxy:
        async with via(proxy) as (reader, writer):
            writer.write(b"x")
            async with asyncio.timeout(WAIT_S):
                with pytest.raises(ConnectionResetError):
                    await reader.read(1)
        async with asyncio.timeout(WAIT_S):
            await proxy.wait_idle()


async def test_a_reset_by_the_client_reaches_the_target(short_dir: Path) -> None:
    loop = asyncio.get_running_loop()
    connected, outcome = loop.create_future(), loop.create_future()

    async def watch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            connected.set_result(await reader.readexactly(1))
            await reader.read(-1)
            outcome.set_result("eof")
        except ConnectionResetError:
            outcome.set_result("reset")
        finally:
            writer.close()

    async with target_server(watch) as port, proxy_to(port, short_dir / "c") as proxy:
        _, writer = await asyncio.open_connection("127.0.0.1", proxy.listening[0].port)
        writer.write(b"x")
        async with asyncio.timeout(WAIT_S):
            assert await connected == b"x"  # the proxy carries this connection now
            rst(writer)
            assert await outcome == "reset"
            await proxy.wait_idle()


async def test_a_refused_target_resets_the_client(short_dir: Path) -> None:
    closed_port = free_port()
    async with proxy_to(closed_port, short_dir / "c") as proxy, via(proxy) as (reader, _):
        async with asyncio.timeout(WAIT_S):
            with pytest.raises(ConnectionResetError):
                await reader.read(1)


async def test_stopping_closes_open_connections(short_dir: Path) -> None:
    async with target_server() as port:
        async with proxy_to(port, short_dir / "c") as proxy, via(proxy) as stream:
            await round_trip(stream)
            await proxy.stop()
            async with asyncio.timeout(WAIT_S):
                assert await stream[0].read(1) == b""
        assert not (short_dir / "c").exists(), "the control socket outlived the proxy"


# -- the outgoing socket's mark -----------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="SO_MARK needs CAP_NET_ADMIN (root)")
def test_outgoing_sockets_carry_the_mark_when_asked() -> None:
    with outgoing_socket(socket.AF_INET, 0x77) as marked:
        assert marked.getsockopt(socket.SOL_SOCKET, SO_MARK) == 0x77
        assert not marked.getblocking()
    with outgoing_socket(socket.AF_INET, None) as plain:
        assert plain.getsockopt(socket.SOL_SOCKET, SO_MARK) == 0


# -- the command line ------------------------------------------------------------------------------


def test_routes_parse_and_bad_ones_are_refused() -> None:
    assert parse_route("0.0.0.0:17002=10.77.0.12:7001") == Route(
        Endpoint("0.0.0.0", 17002), Endpoint("10.77.0.12", 7001)
    )
    assert parse_route("[::1]:1=[fe80::1]:2").target == Endpoint("fe80::1", 2)
    for bad in ("1.2.3.4:5", "a:1=b", "a:x=b:2", "a:1=b:70000"):
        with pytest.raises(ValueError, match="bad "):
            parse_route(bad)


def system_python() -> str:
    """Debian's python3 outside the venv, as in the namespaces; this one if absent."""
    return shutil.which("python3", path="/usr/bin") or sys.executable


async def test_the_command_line_says_ready_serves_and_exits_zero_on_sigterm(
    short_dir: Path,
) -> None:
    listen = free_port()
    script = Path(delay_proxy.__file__)
    async with target_server() as port:
        proc = await asyncio.create_subprocess_exec(
            system_python(),
            "-I",  # isolated: no project on the path, no user site
            str(script),
            "--route",
            f"127.0.0.1:{listen}=127.0.0.1:{port}",
            "--control",
            str(short_dir / "c"),
            "--mark",
            "7",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=short_dir,
        )
        assert proc.stdout is not None and proc.stderr is not None
        try:
            async with asyncio.timeout(WAIT_S):
                assert await proc.stdout.readline() == b"ready\n"
            reader, writer = await asyncio.open_unix_connection(str(short_dir / "c"))
            writer.write(b"delay 60\n")
            assert await reader.readline() == b"ok\n"
            writer.close()
            stream = await asyncio.open_connection("127.0.0.1", listen)
            assert await round_trip(stream) >= 0.120
            stream[1].close()
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(WAIT_S):
                assert await proc.wait() == 0, (await proc.stderr.read()).decode()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert not (short_dir / "c").exists()


@pytest.mark.parametrize(
    "argv",
    [["--control", "c"], ["--route", "nonsense", "--control", "c"], ["--route", "a:1=b:2"]],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        delay_proxy.parse_args(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("delay_proxy: error:")


async def test_a_port_in_use_exits_1_with_one_line(short_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            system_python(),
            "-I",
            str(Path(delay_proxy.__file__)),
            "--route",
            f"127.0.0.1:{port}=127.0.0.1:1",
            "--control",
            str(short_dir / "c"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(WAIT_S):
            out, err = await proc.communicate()
    assert proc.returncode == 1
    assert out == b""
    assert err.decode().count("\n") == 1 and err.startswith(b"delay_proxy: ")
