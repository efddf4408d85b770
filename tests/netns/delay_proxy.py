"""A TCP proxy that delays every chunk by a one-way delay set at run time: a slow link.

The fault tests' kernel has no netem, so a slow link is this userspace proxy:
nft redirects a node's traffic to a peer into it, and it forwards each chunk
after the current delay. It runs under Debian's /usr/bin/python3 inside a
network namespace, without the project's venv, so it imports the standard
library only.

    python3 tests/netns/delay_proxy.py --route 0.0.0.0:17002=10.77.0.12:7001 \\
        --control /run/chat-netns/n1.delay --mark 7

Every chunk read in either direction is written to the other side once the
delay in force when it arrived has passed, in arrival order, with no bandwidth
limit: a chunk read at t goes out at t + delay, and a later chunk never
overtakes an earlier one (when the delay shrinks, it waits behind it). A
shutdown of writing (EOF) or a reset is passed on the same way, after the
delay and behind the data before it. The delay starts at 0; the control
socket (a Unix stream socket) speaks lines:

    delay MS   ->  ok            (MS: milliseconds, a number >= 0)
    get        ->  delay MS
    anything else -> error <reason>   (the connection stays usable)

``--mark N`` sets SO_MARK on the proxy's outgoing sockets, so an nft rule can
exempt the proxy's own traffic from the redirect that feeds it. ``ready`` on
stdout means every route and the control socket listen; SIGTERM (or SIGINT)
closes everything and exits 0. Bad usage exits 2, a socket that cannot be
bound 1, each with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import math
import signal
import socket
import stat
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

T = TypeVar("T")

SO_MARK = getattr(socket, "SO_MARK", 36)  # Linux's value, for Pythons built without it
CHUNK = 64 * 1024
HIGH_WATER = 16 * 1024 * 1024
"""Bytes queued in one direction before the proxy stops reading that side: a memory
bound, far above what a delayed link in these tests holds, so no rate limit in effect."""
MAX_DELAY_MS = 3_600_000.0
CLOSE_WAIT_S = 5.0  # for a socket's close to complete at shutdown


# -- configuration ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Route:
    """Connections accepted on `listen` are carried to `target`."""

    listen: Endpoint
    target: Endpoint


def parse_endpoint(text: str) -> Endpoint:
    """HOST:PORT, or [V6HOST]:PORT; ValueError with a reason otherwise."""
    host, colon, port = text.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not (host and colon and port.isdigit() and 0 <= int(port) <= 65535):
        raise ValueError(f"bad address {text!r}: expected HOST:PORT")
    return Endpoint(host, int(port))


def parse_route(text: str) -> Route:
    """LISTEN_HOST:PORT=TARGET_HOST:PORT."""
    listen, equals, target = text.partition("=")
    if not equals:
        raise ValueError(f"bad route {text!r}: expected LISTEN_HOST:PORT=TARGET_HOST:PORT")
    return Route(parse_endpoint(listen), parse_endpoint(target))


# -- the delay and its control protocol ---------------------------------------------------


@dataclass(slots=True)
class Delay:
    """The one-way delay now in force, shared by every route and both directions."""

    ms: float = 0.0

    @property
    def seconds(self) -> float:
        return self.ms / 1000.0


def parse_ms(text: str) -> float:
    try:
        ms = float(text)
    except ValueError:
        raise ValueError(f"not a number of milliseconds: {text!r}") from None
    if not math.isfinite(ms) or not 0 <= ms <= MAX_DELAY_MS:
        raise ValueError(f"delay must be between 0 and {MAX_DELAY_MS:.0f} ms, not {text}")
    return ms


def format_ms(ms: float) -> str:
    return str(int(ms)) if ms.is_integer() else repr(ms)


def answer(delay: Delay, line: str) -> str:
    """The reply to one control line (applying it): 'ok', 'delay MS' or 'error <reason>'."""
    match line.split():
        case ["get"]:
            return f"delay {format_ms(delay.ms)}\n"
        case ["delay", value]:
            try:
                delay.ms = parse_ms(value)
            except ValueError as exc:
                return f"error {exc}\n"
            return "ok\n"
        case ["delay", *_]:
            return "error usage: delay MS (one number of milliseconds)\n"
        case ["get", *_]:
            return "error usage: get (no arguments)\n"
        case []:
            return "error empty line: expected 'delay MS' or 'get'\n"
        case [word, *_]:
            return f"error unknown command {word[:40]!r}: expected 'delay MS' or 'get'\n"
    raise AssertionError("unreachable")


# -- sockets ------------------------------------------------------------------------------


def outgoing_socket(family: int, mark: int | None) -> socket.socket:
    """A non-blocking TCP socket for the proxy's own connection to a target, marked
    (SO_MARK, needs CAP_NET_ADMIN) so nft can tell it from the traffic it redirects."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if mark is not None:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    except OSError:
        sock.close()
        raise
    return sock


async def connect(
    target: Endpoint, mark: int | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream to target over an outgoing_socket; the kernel's SYN retries bound it."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    family, _, _, _, address = infos[0]
    sock = outgoing_socket(family, mark)
    try:
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN (SO_LINGER 0), as the far end reset us."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# -- one direction of one connection --------------------------------------------------------

Kind = Literal["data", "eof", "reset"]


@dataclass(slots=True)
class _Line:
    """What one direction still has to deliver: (due time, kind, bytes) in arrival order."""

    delay: Delay
    items: collections.deque[tuple[float, Kind, bytes]] = field(default_factory=collections.deque)
    queued: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    room: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.room.set()

    def push(self, kind: Kind, data: bytes = b"") -> None:
        due = asyncio.get_running_loop().time() + self.delay.seconds
        self.items.append((due, kind, data))
        self.queued += len(data)
        if self.queued > HIGH_WATER:
            self.room.clear()
        self.ready.set()

    async def pop(self) -> tuple[float, Kind, bytes]:
        while not self.items:
            self.ready.clear()
            await self.ready.wait()
        item = self.items.popleft()
        self.queued -= len(item[2])
        if self.queued <= HIGH_WATER // 2:
            self.room.set()
        return item


async def _until(due: float) -> None:
    """Sleep until the loop's clock reaches due: the delay itself, not a synchronisation."""
    wait = due - asyncio.get_running_loop().time()
    if wait > 0:
        await asyncio.sleep(wait)


class _Pipe:
    """One proxied connection: two sides, and for each direction a reader and a writer task.

    A direction's reader pushes what its side sends (data, then EOF or a reset)
    into its line; the writer delivers each item to the other side when due. A
    broken side (a read or write error) cannot receive any more: the direction
    towards it stops, and the other side gets what is queued for it, then a reset.
    The pipe ends once both directions delivered EOF, or a reset was delivered.
    """

    def __init__(
        self,
        delay: Delay,
        a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        on_read: Callable[[int], None],
    ) -> None:
        self._on_read = on_read
        self._readers = {"a": a[0], "b": b[0]}
        self._writers = {"a": a[1], "b": b[1]}
        self._lines = {"a": _Line(delay), "b": _Line(delay)}  # keyed by the side read from
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._eofs = 0
        self._broken_sides: set[str] = set()
        self._finished = asyncio.Event()
        self._was_reset = False

    async def run(self) -> None:
        for side in ("a", "b"):
            self._tasks[f"read-{side}"] = asyncio.create_task(self._read(side))
            self._tasks[f"write-{side}"] = asyncio.create_task(self._write(side))
        for task in self._tasks.values():
            task.add_done_callback(self._task_done)
        try:
            await self._finished.wait()
        finally:
            await self._close()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A task that crashed (a bug) ends the pipe, said on stderr, rather than hanging it."""
        if not task.cancelled() and (exc := task.exception()) is not None:
            print(f"delay_proxy: internal error: {exc!r}", file=sys.stderr, flush=True)
            self._was_reset = True
            self._finished.set()

    async def _close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in self._writers.values():
            if self._was_reset:
                reset(writer)
            else:
                writer.close()
        for writer in self._writers.values():
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(CLOSE_WAIT_S):
                    await writer.wait_closed()

    @staticmethod
    def _other(side: str) -> str:
        return "b" if side == "a" else "a"

    async def _read(self, side: str) -> None:
        line, reader = self._lines[side], self._readers[side]
        try:
            while chunk := await reader.read(CHUNK):
                line.push("data", chunk)
                self._on_read(len(chunk))
                await line.room.wait()
        except OSError:
            self._broken(side)
            return
        line.push("eof")

    async def _write(self, side: str) -> None:
        """Deliver what `side` sent to the other side, each item when due."""
        line, writer = self._lines[side], self._writers[self._other(side)]
        while True:
            due, kind, data = await line.pop()
            await _until(due)
            try:
                if kind == "data":
                    writer.write(data)
                    await writer.drain()
                elif kind == "eof":
                    if writer.can_write_eof():
                        writer.write_eof()
                    self._eofs += 1
                    if self._eofs == 2:
                        self._finished.set()
                else:
                    reset(writer)
                    self._was_reset = True
                    self._finished.set()
                    return
            except OSError:
                self._broken(self._other(side))
                return

    def _broken(self, side: str) -> None:
        """`side` failed: stop everything towards it and from it, and pass a reset on.

        Once both sides failed nothing can be delivered at all: the pipe ends."""
        self._broken_sides.add(side)
        if len(self._broken_sides) == 2:
            self._was_reset = True
            self._finished.set()
        me = asyncio.current_task()
        for name in (f"read-{side}", f"write-{self._other(side)}"):
            task = self._tasks.get(name)
            if task is not None and task is not me:
                task.cancel()
        self._lines[side].push("reset")


# -- the proxy ---------------------------------------------------------------------------------


class DelayProxy:
    """Every route's listener, the control socket, and the open connections."""

    def __init__(self, routes: Sequence[Route], control: Path, mark: int | None = None) -> None:
        self.routes = list(routes)
        self.control = control
        self.mark = mark
        self.delay = Delay()
        self.listening: list[Endpoint] = []  # the bound addresses, one per route, in order
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._control_tasks: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.bytes_read = 0  # from either side of any connection, since start
        self._progress = asyncio.Event()  # set (and replaced) whenever bytes_read grows

    @property
    def connections(self) -> int:
        """Proxied connections still open (or still connecting)."""
        return len(self._tasks)

    async def wait_idle(self) -> None:
        """Until no proxied connection is open: every socket of every pipe was closed."""
        await self._idle.wait()

    async def wait_read(self, total: int) -> None:
        """Until bytes_read reaches total: a chunk is in the proxy, under the delay of now."""
        while self.bytes_read < total:
            await self._progress.wait()

    def _count_read(self, nbytes: int) -> None:
        self.bytes_read += nbytes
        self._progress.set()
        self._progress = asyncio.Event()

    async def start(self) -> None:
        try:
            for route in self.routes:
                server = await asyncio.start_server(
                    lambda r, w, route=route: self._accepted(route, r, w),
                    route.listen.host,
                    route.listen.port,
                    reuse_address=True,
                )
                self._servers.append(server)
                host, port = server.sockets[0].getsockname()[:2]
                self.listening.append(Endpoint(host, port))
            _remove_stale_socket(self.control)
            self._servers.append(
                await asyncio.start_unix_server(self._control_client, str(self.control))
            )
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close the listeners, every proxied connection and every control connection."""
        for server in self._servers:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        controls = list(self._control_tasks)
        for task in controls:
            task.cancel()
        await asyncio.gather(*controls, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        with contextlib.suppress(FileNotFoundError):
            if self.control.is_socket():
                self.control.unlink()

    def _accepted(
        self, route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.create_task(self._carry(route, reader, writer))
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._carried)

    def _carried(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def _carry(
        self, route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Connect to the route's target, then pipe; a target that refuses resets the client."""
        try:
            target = await connect(route.target, self.mark)
        except OSError:
            reset(writer)
            return
        except BaseException:
            reset(writer)
            raise
        await _Pipe(self.delay, (reader, writer), target, self._count_read).run()

    async def _control_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._control_tasks.add(task)
        try:
            while True:
                try:
                    raw = await reader.readline()
                except ValueError:  # over the stream's limit; the rest of it was dropped
                    reply = "error line too long\n"
                else:
                    if not raw:
                        return
                    reply = answer(self.delay, raw.decode("utf-8", errors="replace"))
                writer.write(reply.encode())
                await writer.drain()
        except OSError:
            return
        finally:
            self._control_tasks.discard(task)
            writer.close()


def _remove_stale_socket(path: Path) -> None:
    """A control socket left by a proxy that was killed would make bind fail; anything
    else at that path is not ours to remove."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()


# -- the command line -----------------------------------------------------------------------


def _argument(parse: Callable[[str], T]) -> Callable[[str], T]:
    """parse as an argparse type: its ValueError becomes a usage error (exit 2)."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="delay_proxy", description="A TCP proxy that delays every chunk (a slow link)."
    )
    parser.add_argument(
        "--route",
        action="append",
        required=True,
        type=_argument(parse_route),
        metavar="LISTEN_HOST:PORT=TARGET_HOST:PORT",
        help="listen here, carry to there; repeatable",
    )
    parser.add_argument(
        "--control", required=True, type=Path, metavar="PATH", help="Unix socket for 'delay MS'"
    )
    parser.add_argument(
        "--mark", type=int, default=None, metavar="N", help="SO_MARK for outgoing sockets"
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Run until SIGTERM or SIGINT; 'ready' on stdout once everything listens."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    proxy = DelayProxy(args.route, args.control, args.mark)
    await proxy.start()
    try:
        print("ready", flush=True)
        await stop.wait()
    finally:
        await proxy.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        print(f"delay_proxy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
