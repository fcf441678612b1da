"""Readiness that tells the truth: store watching and the gate in front of every RPC.

A service lists the stores it uses as :class:`Dependency` values (``ServiceApp.dependencies``).
:class:`StoreWatcher` pings them every ``MASTERX_STORE_CHECK_SECONDS``; while a *required* one is
down the service reports NOT_SERVING (gRPC health, ``/health``), and SERVING again once it is
back. Optional ones (the service degrades but still serves, e.g. the router without MongoDB,
whose ledger charges wait in the outbox) are reported, never fatal.

The server interceptor (:class:`masterx_runtime.interceptors.RuntimeInterceptor`, its readiness
gate is ``GrpcServer.not_ready_reason``) answers UNAVAILABLE with a readable reason ("router is
starting: waiting for redis", "benchmark is not serving: mongodb is down") to any call that
arrives while the service is not SERVING, instead of letting it reach half-built state and fail
as INTERNAL. Health and reflection calls always pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from masterx_runtime import metrics

log = logging.getLogger("masterx.readiness")


@dataclass(frozen=True)
class Dependency:
    """A store a service uses: how to ping it and whether the service can serve without it."""

    name: str
    probe: Callable[[], Awaitable[Any]]
    required: bool = True


@dataclass
class StoreState:
    up: bool = True
    required: bool = True
    since: float = field(default_factory=time.time)
    error: str = ""
    outages: int = 0


class StoreWatcher:
    """Pings every dependency periodically; ``on_change`` runs after any store goes down or comes back."""

    def __init__(
        self,
        service: str,
        deps: Sequence[Dependency],
        *,
        interval: float,
        on_change: Callable[[], Awaitable[None]],
    ) -> None:
        self.service = service
        self.deps = list(deps)
        self.interval = interval
        self.on_change = on_change
        self.states = {d.name: StoreState(required=d.required) for d in self.deps}
        self._task: asyncio.Task[None] | None = None

    async def _probe(self, dep: Dependency) -> str:
        try:
            async with asyncio.timeout(max(self.interval, 1.0)):
                await dep.probe()
        except Exception as exc:  # any failure means "cannot use it now"
            return f"{type(exc).__name__}: {exc}"[:200] or type(exc).__name__
        return ""

    async def check(self) -> bool:
        """Probe every dependency once; True when any state changed."""
        errors = await asyncio.gather(*(self._probe(d) for d in self.deps))
        changed = False
        for dep, error in zip(self.deps, errors, strict=True):
            state = self.states[dep.name]
            up = not error
            state.error = error
            if up != state.up:
                changed = True
                state.up, state.since = up, time.time()
                if up:
                    log.info("store is back", extra={"store": dep.name, "required": dep.required})
                else:
                    state.outages += 1
                    log.warning("store is down", extra={"store": dep.name, "required": dep.required, "error": error})
            metrics.STORE_UP.labels(self.service, dep.name).set(1 if up else 0)
        return changed

    def down_required(self) -> list[str]:
        return [name for name, s in self.states.items() if s.required and not s.up]

    def start(self) -> None:
        if self.deps and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"store-watch-{self.service}")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                if await self.check():
                    await self.on_change()
            except Exception:  # the watcher must outlive anything a probe or callback does
                log.exception("store check failed")

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "up": s.up,
                "required": s.required,
                "since": round(s.since, 3),
                "error": s.error,
                "outages": s.outages,
            }
            for name, s in self.states.items()
        }
