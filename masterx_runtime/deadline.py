"""One value for "how long may this call still take": the caller's gRPC deadline.

Every servicer builds a :class:`Deadline` from its ``ServicerContext`` and hands it inward;
domain code asks :meth:`Deadline.remaining` (seconds, for a peer call's ``timeout=``) or
:meth:`Deadline.at` (an absolute ``time.monotonic()`` instant, for loops that check the clock).
asyncio's default event loop measures ``loop.time()`` on the same monotonic clock, so ``at()``
also works as an ``asyncio.timeout_at`` instant.

A caller that set no deadline gets the service's default (``MASTERX_RPC_TIMEOUT_SECONDS`` for
most RPCs) when one is given, else no deadline at all (``remaining()`` / ``at()`` are None).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol, TypeVar

T = TypeVar("T")

#: grpc reports "no deadline" as a huge remaining time on some paths; beyond this it is none.
_NO_DEADLINE_S = 1e9


class _HasTimeRemaining(Protocol):
    def time_remaining(self) -> float | None: ...


@dataclass(frozen=True)
class Deadline:
    """An absolute instant on the monotonic clock by which the answer is due (None = none)."""

    expires: float | None

    @classmethod
    def none(cls) -> Deadline:
        return cls(None)

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        """``seconds`` from now (None = no deadline)."""
        return cls(None if seconds is None else time.monotonic() + max(0.0, seconds))

    @classmethod
    def from_context(cls, context: _HasTimeRemaining, default: float | None = None) -> Deadline:
        """The caller's deadline; ``default`` seconds when the caller set none (None = unbounded)."""
        left = context.time_remaining()
        if left is None or left >= _NO_DEADLINE_S:
            left = default
        return cls.after(left)

    def remaining(self, cap: float | None = None) -> float | None:
        """Seconds left (never negative), at most ``cap``; None without a deadline or cap."""
        if self.expires is None:
            return cap
        left = max(0.0, self.expires - time.monotonic())
        return left if cap is None else min(left, cap)

    def at(self) -> float | None:
        """The instant as a ``time.monotonic()`` value (None = no deadline)."""
        return self.expires

    def expired(self) -> bool:
        return self.expires is not None and time.monotonic() >= self.expires

    def earlier(self, seconds: float) -> Deadline:
        """This deadline moved ``seconds`` earlier (room to send the answer before it passes)."""
        return self if self.expires is None else Deadline(self.expires - seconds)

    def timeout(self) -> contextlib.AbstractAsyncContextManager[object]:
        """``async with deadline.timeout():`` raises TimeoutError once the deadline passes."""
        return asyncio.timeout(self.remaining())

    async def run(self, work: Awaitable[T]) -> T:
        """Await ``work`` within the deadline (TimeoutError once it passes; the interceptor
        answers DEADLINE_EXCEEDED)."""
        if self.expires is None:
            return await work
        async with asyncio.timeout(self.remaining()):
            return await work
