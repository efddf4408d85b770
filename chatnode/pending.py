"""What starting a session call returns: an awaitable of its reply.

Session calls run in two steps (:mod:`chatnode.service`): starting one validates,
authenticates and proposes its op; awaiting what the start returned waits for
the op to apply and gives the reply, or raises the call's error. A unary
handler does both at once; a Session stream (:mod:`chatnode.session_stream`)
starts its calls in the order they came and awaits them in that order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

__all__ = ["Pending", "answered", "failed"]

T = TypeVar("T")

Pending = Awaitable[Any]
"""What finishes a started call: awaiting it gives the reply (or raises the call's error)."""


def answered(value: T) -> Awaitable[T]:
    """A reply known at once (a stored reply, no renewal due, a subscription registered)."""
    future = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


async def failed(error: Exception) -> Any:
    """A call that failed to start, failing in its place in line when awaited."""
    raise error
