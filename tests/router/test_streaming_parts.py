"""SSE parsing across awkward network reads, and merging of queued deltas."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.router.providers.base import ServerError, StreamDelta, StreamEnd, Usage
from services.router.providers.http import SseEvent, iter_sse_batches
from services.router.streaming import Mailbox as _Mailbox


async def reads(chunks: list[bytes]) -> AsyncIterator[bytes]:
    """The body as the network hands it over, one read at a time."""
    for chunk in chunks:
        yield chunk


async def parse(chunks: list[bytes]) -> list[list[SseEvent]]:
    return [batch async for batch in iter_sse_batches(reads(chunks))]


async def test_events_split_across_reads_and_crlf_boundaries() -> None:
    body = b'event: a\r\ndata: {"x": 1}\r\n\r\n: comment\r\n\r\ndata: line1\r\ndata: line2\r\n\r\ndata: [DONE]\r\n\r\n'
    for size in (1, 2, 3, 7, len(body)):
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        events = [e for batch in await parse(chunks) for e in batch]
        assert events == [SseEvent("a", '{"x": 1}'), SseEvent("message", "line1\nline2"), SseEvent("message", "[DONE]")]


async def test_events_of_one_read_come_as_one_batch() -> None:
    batches = await parse([b"data: 1\n\ndata: 2\n\ndata: 3\n\n", b"data: 4\n\n", b"data: 5"])
    assert [[e.data for e in b] for b in batches] == [["1", "2", "3"], ["4"], ["5"]]  # the unterminated tail too


async def test_mailbox_merges_waiting_deltas_and_keeps_order() -> None:
    box = _Mailbox()
    parts: list[str] = []
    for piece in ("a", "b", "c"):
        box.post(StreamDelta(piece))
    end = StreamEnd(Usage(1, 3), "stop", "m")
    box.post(end)
    assert await box.take(parts) == StreamDelta("abc")
    assert await box.take(parts) is end
    assert parts == ["abc"]
    box.post(StreamDelta("x"))
    box.post(ServerError("p", "boom"))
    assert await box.take(parts) == StreamDelta("x")  # text that arrived before a failure goes out first
    with pytest.raises(ServerError):
        await box.take(parts)
