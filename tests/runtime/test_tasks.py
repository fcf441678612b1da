"""stop_tasks: shutdown finishes even when a task loses or ignores a cancellation."""

from __future__ import annotations

import asyncio

from masterx_runtime.tasks import stop_tasks


async def _loop_that_loses_one_cancel() -> None:
    """Behaves like a ``while True`` loop whose first cancel was swallowed by ``wait_for`` on 3.11."""
    swallowed = False
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True


async def test_a_swallowed_cancel_is_repeated_until_the_task_ends() -> None:
    task = asyncio.create_task(_loop_that_loses_one_cancel())
    await asyncio.sleep(0.03)
    assert await stop_tasks([task], timeout=5.0) is True
    assert task.cancelled()


async def test_a_task_that_ignores_every_cancel_is_given_up_on_at_the_deadline() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0.02)  # inside its loop, not cancelled before it starts
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await stop_tasks([task], timeout=0.3) is False
    assert 0.3 <= loop.time() - started < 2.0
    assert not task.done()
    release.set()
    await task


async def test_finished_failed_and_missing_tasks_are_fine() -> None:
    async def boom() -> None:
        raise RuntimeError("failed before shutdown")

    failed = asyncio.create_task(boom())
    await asyncio.sleep(0)
    assert await stop_tasks([failed, None], timeout=1.0) is True
    assert isinstance(failed.exception(), RuntimeError)
