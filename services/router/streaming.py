"""Relaying a provider's stream: the first event under a time-to-first-token bound, then every
next event under an idle bound (not a bound on the stream's total length), merged when the
client falls behind.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from services.router.providers.base import (
    ProviderError,
    ProviderTimeout,
    ServerError,
    StreamBroken,
    StreamDelta,
    StreamEnd,
    StreamEvent,
)

log = logging.getLogger("masterx.router")


@dataclass
class OpenStream:
    """A provider stream whose first event has arrived."""

    events: AsyncGenerator[StreamEvent, None]
    first: StreamEvent
    started: float  # perf_counter at the attempt's start
    ttft_ms: float


async def first_event(events: AsyncGenerator[StreamEvent, None], name: str, deadline: float) -> StreamEvent:
    """The stream's first event before ``deadline`` (loop time), as a ProviderError otherwise."""
    try:
        async with asyncio.timeout_at(deadline):
            return await anext(events)
    except TimeoutError:
        raise ProviderTimeout(name, "no first token before the timeout") from None
    except StopAsyncIteration:
        raise StreamBroken(name, "stream ended before any event") from None
    except ProviderError:
        raise
    except Exception as exc:
        log.exception("provider stream raised an unexpected error", extra={"provider": name})
        raise ServerError(name, f"unexpected {type(exc).__name__}") from None


async def pump(
    events: AsyncGenerator[StreamEvent, None], name: str, box: Mailbox, *, idle_seconds: float, deadline: float
) -> None:
    """Read the stream into ``box`` until its end; a gap over ``idle_seconds`` between events or
    the request ``deadline`` (loop time; ``inf`` when the caller set none) ends it with a timeout.
    A failure is posted too."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            idle_limit = loop.time() + idle_seconds
            try:
                async with asyncio.timeout_at(min(idle_limit, deadline)):
                    event = await anext(events)
            except TimeoutError:
                if deadline <= idle_limit and math.isfinite(deadline):
                    box.post(ProviderTimeout(name, "the request deadline passed while streaming"))
                else:
                    box.post(ProviderTimeout(name, f"stream stalled: no token for {idle_seconds:g}s"))
                return
            box.post(event)
            if isinstance(event, StreamEnd):
                return
    except StopAsyncIteration:
        box.post(StreamBroken(name, "stream ended without its end event"))
    except ProviderError as err:
        box.post(err)
    except Exception as exc:
        log.exception("provider stream raised an unexpected error", extra={"provider": name})
        box.post(StreamBroken(name, f"unexpected {type(exc).__name__}"))


class Mailbox:
    """Provider events waiting to be sent; ``take`` merges every delta waiting into one.

    When the client side keeps up, each take returns one event as soon as it arrives; when
    sending falls behind, the deltas that queued up meanwhile go out as one message, so a busy
    router sends fewer, larger messages instead of falling further behind. Nothing ever waits
    to be merged.
    """

    def __init__(self) -> None:
        self._items: deque[StreamEvent | ProviderError] = deque()
        self._ready = asyncio.Event()

    def post(self, item: StreamEvent | ProviderError) -> None:
        self._items.append(item)
        self._ready.set()

    async def take(self, parts: list[str]) -> StreamEvent:
        """The next delta (merged; also appended to ``parts``) or the end; raises a posted failure."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        texts: list[str] = []
        while self._items and isinstance(self._items[0], StreamDelta):
            texts.append(self._items.popleft().text)  # type: ignore[union-attr]
        if texts:
            text = "".join(texts)
            parts.append(text)
            return StreamDelta(text)
        item = self._items.popleft()
        if isinstance(item, ProviderError):
            raise item
        return item
