"""Stopping background tasks so that shutdown always finishes.

A single ``task.cancel()`` followed by ``await task`` can wait forever: on Python 3.11 a
cancellation that arrives while the task sits in ``asyncio.wait_for`` (ours or a library's, e.g.
the MongoDB driver's socket I/O) at the moment the inner wait completes is swallowed, and a
``while True`` loop then carries on. :func:`stop_tasks` cancels again until the tasks end, and
gives up (with a warning) after a deadline instead of hanging a service's shutdown. The first
cancel gets a grace second for the task's own cleanup before it is repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("masterx.tasks")

_RECANCEL_EVERY_S = 1.0


async def stop_tasks(tasks: Iterable[asyncio.Future[Any] | None], timeout: float = 5.0) -> bool:
    """Cancel ``tasks`` and wait until they end; True when all ended within ``timeout`` seconds."""
    given = [t for t in tasks if t is not None]
    pending = {t for t in given if not t.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning("background tasks ignored cancellation", extra={"tasks": sorted(map(_name, pending))})
            return False
        _, pending = await asyncio.wait(pending, timeout=min(_RECANCEL_EVERY_S, remaining))
    for task in given:  # mark failures as retrieved: the caller is stopping, not inspecting them
        if not task.cancelled():
            task.exception()
    return True


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True when it was set.

    Uses ``asyncio.timeout`` rather than ``asyncio.wait_for``, which on 3.11 can swallow a cancel
    that arrives as the wait ends (the loops that call this must stay cancellable).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()


def _name(task: asyncio.Future[Any]) -> str:
    return task.get_name() if isinstance(task, asyncio.Task) else repr(task)
