"""Quality/speed/cost scores per (provider, category): the benchmark's latest, else defaults.

The book is refreshed from ``BenchmarkService.GetScores`` in the background every N seconds;
a request only ever reads the in-memory copy, so a slow or absent benchmark service never
delays routing. Until a provider has been measured in a category, its scores come from the
providers file (``quality``, ``speed``) and its prices (cost), marked ``score_source=default``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from masterx.benchmark.v1 import benchmark_pb2, benchmark_pb2_grpc
from masterx_runtime.clients import channel
from masterx_runtime.tasks import stop_tasks
from services.router.classifier.model import ENUM_CATEGORY
from services.router.providers.base import ProviderSpec

log = logging.getLogger("masterx.router.scores")

DEFAULT_QUALITY = {"local": 15.0, "openai": 60.0, "anthropic": 60.0, "gemini": 60.0}
DEFAULT_SPEED = 50.0


@dataclass(frozen=True)
class Score:
    quality: float
    speed: float
    cost: float
    source: str  # "benchmark:<run_id>" or "default"


def price_scores(specs: Iterable[ProviderSpec]) -> dict[str, float]:
    """Cost score 0-100 from blended prices (1:3 input:output), log-scaled; 100 = cheapest (free)."""
    blended = {s.name: 0.25 * s.input_price_per_mtok + 0.75 * s.output_price_per_mtok for s in specs}
    top = max(blended.values(), default=0.0)
    if top <= 0:
        return dict.fromkeys(blended, 100.0)
    return {name: 100.0 * (1.0 - math.log1p(p) / math.log1p(top)) for name, p in blended.items()}


class ScoreBook:
    """In-memory scores, replaced wholesale by each successful refresh."""

    def __init__(self, specs: Iterable[ProviderSpec]) -> None:
        self.specs = {s.name: s for s in specs}
        self._prices = price_scores(self.specs.values())
        self._measured: dict[tuple[str, str], Score] = {}
        self.last_refresh = 0.0
        self.last_error = ""

    def default(self, provider: str, category: str) -> Score:
        spec = self.specs[provider]
        quality = spec.quality.get(category, spec.quality.get("default", DEFAULT_QUALITY.get(spec.kind, 50.0)))
        speed = spec.speed if spec.speed is not None else DEFAULT_SPEED
        return Score(float(quality), float(speed), self._prices[provider], "default")

    def get(self, provider: str, category: str) -> Score:
        return self._measured.get((provider, category)) or self.default(provider, category)

    def load(self, response: benchmark_pb2.GetScoresResponse) -> int:
        """Adopt a GetScores answer; returns how many (provider, category) scores it held for us."""
        measured: dict[tuple[str, str], Score] = {}
        for board in response.leaderboards:
            category = ENUM_CATEGORY.get(board.category)
            if category is None:
                continue
            for s in board.scores:
                if s.provider in self.specs:
                    measured[(s.provider, category)] = Score(
                        s.quality, s.speed, s.cost, f"benchmark:{s.run_id}" if s.run_id else "benchmark"
                    )
        self._measured = measured
        self.last_refresh = time.time()
        return len(measured)


class ScoreRefresher:
    """Background task: fetch scores, keep the old ones when the benchmark service is away."""

    def __init__(self, book: ScoreBook, address: str, interval: float, max_age_seconds: int = 0) -> None:
        self.book = book
        self.address = address
        self.interval = interval
        self.max_age_seconds = max_age_seconds
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None

    async def refresh_once(self, timeout: float = 5.0) -> bool:
        if self._channel is None:
            self._channel = channel(self.address)
        stub = benchmark_pb2_grpc.BenchmarkServiceStub(self._channel)
        try:
            response = await stub.GetScores(
                benchmark_pb2.GetScoresRequest(max_age_seconds=self.max_age_seconds), timeout=timeout
            )
        except grpc.aio.AioRpcError as err:
            message = f"{err.code().name}: {err.details()}"
            if message != self.book.last_error:
                log.warning("benchmark scores unavailable, using defaults/last scores", extra={"error": message})
            self.book.last_error = message
            return False
        count = self.book.load(response)
        self.book.last_error = ""
        log.info("benchmark scores refreshed", extra={"scores": count})
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="score-refresh")

    async def _loop(self) -> None:
        while True:
            await self.refresh_once(timeout=min(5.0, self.interval))
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task])
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
