"""How the micro-batcher hands finished batches to the event loop: batches that finish while the
loop is busy share one wake-up, none is lost, and a failing batch callback neither strands its callers nor holds up the other batches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from services.emotion.batcher import MicroBatcher


def _count_wakeups(loop: asyncio.AbstractEventLoop) -> list[int]:
    """Count call_soon_threadsafe calls on ``loop`` (the workers' only way to wake it)."""
    calls = [0]
    original = loop.call_soon_threadsafe

    def counting(callback: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Handle:
        calls[0] += 1
        return original(callback, *args, **kwargs)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
    return calls


def _block_until_finished(b: MicroBatcher[str], n: int) -> None:
    """Keep the event loop busy (blocked) until ``n`` finished batches wait for delivery."""
    deadline = time.monotonic() + 10
    while len(b._done) < n:
        assert time.monotonic() < deadline, f"only {len(b._done)} of {n} batches finished in 10 s"
        time.sleep(0.005)  # blocking the loop is the point


async def test_batches_finished_while_the_loop_is_busy_share_one_wakeup() -> None:
    loop = asyncio.get_running_loop()
    wakeups = _count_wakeups(loop)
    b: MicroBatcher[str] = MicroBatcher(lambda texts: [t.upper() for t in texts], max_size=1, max_wait_s=0.0, workers=2)
    b.start()
    try:
        texts = [f"t{i}" for i in range(20)]
        futures = b.submit_many(texts)
        _block_until_finished(b, 20)  # the loop is busy: both workers finish every text meanwhile
        assert await asyncio.gather(*futures) == [t.upper() for t in texts]
        assert b.stats.batches == 20 and b.stats.texts == 20
        assert wakeups[0] <= 2, f"{wakeups[0]} wake-ups for batches that finished while the loop was busy"
        # an idle loop is still woken for each lone request
        for t in ("a", "b", "c"):
            assert await b.predict(t) == t.upper()
        assert b.stats.batches == 23
    finally:
        await b.close()


async def test_a_failing_delivery_does_not_hold_up_the_others() -> None:
    seen: list[int] = []

    def on_batch(size: int, seconds: float) -> None:
        seen.append(size)
        if len(seen) == 1:
            raise RuntimeError("metrics broke")

    b: MicroBatcher[str] = MicroBatcher(
        lambda texts: list(texts), max_size=1, max_wait_s=0.0, workers=2, on_batch=on_batch
    )
    b.start()
    try:
        futures = b.submit_many(["a", "b", "c", "d"])
        _block_until_finished(b, 4)  # all four finish before the loop delivers any
        done, pending = await asyncio.wait(futures, timeout=5)
        assert not pending, "every caller got its answer, the one whose count failed too"
        assert len(seen) == 4, "the batches after the failing one were delivered and counted"
        assert sorted(f.result() for f in done) == ["a", "b", "c", "d"]
        assert await b.predict("e") == "e", "and the batcher keeps serving"
    finally:
        await b.close()
