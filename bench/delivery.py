"""Live delivery latency: how long a committed message takes to reach a subscribed recipient.

Each of N senders writes to its own recipient, whose ``Subscribe`` stream is
open on its own channel. Senders send on the plan's first path: their library
client's Session stream (the product's path) or unary calls. Every message is
timed from the start of its send to its arrival on the stream (the figure a
user sees: press enter, the other screen shows it). The time from the
sender's reply to the arrival is reported too; it can be negative, because
the leader publishes a message to open streams as it applies it, before the
sender's reply is sent back. Everything runs in this one process, so both
ends read one clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

import grpc

from bench.load import BODY, CALL_TIMEOUT_S, Account, Fleet, p50_p99_ms, sender_names
from proto import chat_pb2 as pb

ARRIVAL_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    path: str  # how the senders send: stream or unary
    senders: int
    messages: int
    send_to_stream_p50_ms: float  # from the start of SendMessage to arrival on the stream
    send_to_stream_p99_ms: float
    reply_to_stream_p50_ms: float  # from the sender's reply to arrival (negative: stream first)
    reply_to_stream_p99_ms: float


@dataclass
class _Timings:
    sent: dict[str, float] = field(default_factory=dict)
    replied: dict[str, float] = field(default_factory=dict)
    arrived: dict[str, float] = field(default_factory=dict)
    arrival: asyncio.Event = field(default_factory=asyncio.Event)


async def _listen(
    fleet: Fleet, recipient: Account, timings: _Timings, ready: asyncio.Event
) -> None:
    """Record when each message reaches recipient's stream; ready once the stream is live."""
    request = pb.SubscribeRequest(after_id=recipient.last_message_id)
    call = fleet.stub(recipient.name).Subscribe(request, metadata=recipient.auth)
    try:
        async for event in call:
            if event.HasField("leader"):
                ready.set()  # sent after the stream joined the hub: nothing is missed now
            else:
                timings.arrived.setdefault(event.message.body, time.perf_counter())
                timings.arrival.set()
    finally:
        call.cancel()


async def _send(
    fleet: Fleet, sender: Account, recipient: str, count: int, timings: _Timings, path: str
) -> None:
    if path == "stream":
        (client,) = await fleet.session_clients([sender.name])

        def send(body: str) -> Awaitable[object]:
            return client.send_message(recipient, body)
    else:
        stub = fleet.stub(sender.name)

        def send(body: str) -> Awaitable[object]:
            request = pb.SendMessageRequest(recipient=recipient, body=body)
            return stub.SendMessage(request, metadata=sender.auth, timeout=CALL_TIMEOUT_S)

    for seq in range(count):
        body = f"{sender.name}:{seq}:{BODY}"
        timings.sent[body] = time.perf_counter()
        await send(body)
        timings.replied[body] = time.perf_counter()


async def _all_arrived(timings: _Timings) -> None:
    async with asyncio.timeout(ARRIVAL_TIMEOUT_S):
        while len(timings.arrived) < len(timings.sent):
            timings.arrival.clear()
            await timings.arrival.wait()


async def measure_delivery(
    fleet: Fleet, senders: int, per_sender: int, path: str = "stream"
) -> DeliveryResult:
    """`senders` concurrent senders, `per_sender` sequential messages each, one stream each."""
    sending = await fleet.accounts(sender_names(senders))
    if path == "stream":
        await fleet.session_clients([s.name for s in sending])  # log-ins are not timed
    receiving = await fleet.accounts([f"benchrcv{i}" for i in range(senders)])
    timings = _Timings()
    readies = [asyncio.Event() for _ in receiving]
    streams = [
        asyncio.create_task(_listen(fleet, r, timings, ready))
        for r, ready in zip(receiving, readies, strict=True)
    ]
    try:
        async with asyncio.timeout(ARRIVAL_TIMEOUT_S):
            await asyncio.gather(*(ready.wait() for ready in readies))
        await asyncio.gather(
            *(
                _send(fleet, s, r.name, per_sender, timings, path)
                for s, r in zip(sending, receiving, strict=True)
            )
        )
        await _all_arrived(timings)
    finally:
        fleet.stored += len(timings.replied)
        for stream in streams:
            stream.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await stream
    return _result(path, senders, timings)


def _result(path: str, senders: int, timings: _Timings) -> DeliveryResult:
    from_send = [timings.arrived[b] - t for b, t in timings.sent.items()]
    after_reply = [timings.arrived[b] - t for b, t in timings.replied.items()]
    p50, p99 = p50_p99_ms(from_send)
    after_p50, after_p99 = p50_p99_ms(after_reply)
    return DeliveryResult(path, senders, len(from_send), p50, p99, after_p50, after_p99)
