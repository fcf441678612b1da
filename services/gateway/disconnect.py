"""Stop upstream work when the HTTP client goes away.

A student closing the tab must cancel the gRPC calls behind the request (the services then
stop generating). Both helpers watch ASGI ``receive`` for ``http.disconnect`` alongside the
work and cancel the work when it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

import anyio
from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from services.gateway.errors import GatewayError

T = TypeVar("T")


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; cancel it (and answer 499, which nobody reads) if the client disconnects."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request.receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise GatewayError(499, "CANCELLED", "client closed the request", service="gateway")
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


class EventStreamResponse(StreamingResponse):
    """SSE response that cancels its event generator as soon as the client disconnects.

    (Starlette's StreamingResponse, under ASGI 2.4 servers, only notices a disconnect on the
    next write, which may be a long MCTS search away.)
    """

    media_type = "text/event-stream"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    with contextlib.suppress(OSError):  # the client went away mid-write
                        await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await _wait_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()
