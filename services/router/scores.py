"""Quality/speed/cost per (provider, category) and the ranking weights per category.

Scores, best evidence first (``Score.source``):

* ``benchmark``: the benchmark service's latest measurement (``GetScores``);
* ``config``: the providers file's ``quality`` for that category (or its ``default``);
* ``prior``: published figures for the provider's model (``priors.yaml``);
* ``default``: a model nobody knows: ``scores.unknown_quality`` of policy.yaml.

Speed is the benchmark's, else the providers file's ``speed``, else ``scores.default_speed``;
cost is the benchmark's, else a score from list prices (log-scaled, cheapest = 100).

Weights (quality, speed, cost) per category are the benchmark suites' own, the same ones the
leaderboard's ``final_score`` uses: read from the benchmark service (``ListSuites``); until it
answers, from the suite files when they are on disk (``services/benchmark/suites``, the files
the benchmark service loads), else equal thirds. There is no second table in the router.

The book is refreshed in the background; a request only reads the in-memory copy.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import grpc
import yaml

from masterx.benchmark.v1 import benchmark_pb2, benchmark_pb2_grpc
from masterx_runtime.clients import channel
from masterx_runtime.tasks import stop_tasks
from services.router.domain import CATEGORIES
from services.router.priors import Priors
from services.router.providers.base import ProviderSpec

log = logging.getLogger("masterx.router.scores")

SUITES_DIR = Path(__file__).resolve().parents[1] / "benchmark" / "suites"


class ScoreSource(StrEnum):
    BENCHMARK = "benchmark"
    CONFIG = "config"
    PRIOR = "prior"
    DEFAULT = "default"


@dataclass(frozen=True)
class Score:
    quality: float
    speed: float
    cost: float
    source: ScoreSource
    detail: str = ""  # run id, prior key and figures, ...

    @property
    def label(self) -> str:
        """``benchmark:<run>``, ``prior:<model>``, ``config`` or ``default`` (Candidate.score_source)."""
        if self.source in (ScoreSource.BENCHMARK, ScoreSource.PRIOR) and self.detail:
            return f"{self.source.value}:{self.detail.split(' ', 1)[0]}"
        return self.source.value


@dataclass(frozen=True)
class Weights:
    quality: float
    speed: float
    cost: float
    source: str


EQUAL = Weights(1 / 3, 1 / 3, 1 / 3, "equal thirds (benchmark weights not available)")


def price_scores(specs: Iterable[ProviderSpec]) -> dict[str, float]:
    """Cost score 0-100 from blended prices (1:3 input:output), log-scaled; 100 = cheapest (free)."""
    blended = {s.name: 0.25 * s.input_price_per_mtok + 0.75 * s.output_price_per_mtok for s in specs}
    top = max(blended.values(), default=0.0)
    if top <= 0:
        return dict.fromkeys(blended, 100.0)
    return {name: 100.0 * (1.0 - math.log1p(p) / math.log1p(top)) for name, p in blended.items()}


def suite_file_weights(directory: Path = SUITES_DIR) -> dict[str, Weights]:
    """Weights from the benchmark suite files on disk (empty when the folder is absent)."""
    out: dict[str, Weights] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.yaml")):
        try:
            doc = yaml.safe_load(path.read_text())
            w = doc["weights"]
            category = str(doc["category"])
            weights = Weights(float(w["quality"]), float(w["speed"]), float(w["cost"]), f"suite file {path.name}")
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
            log.warning("suite file weights unreadable", extra={"path": str(path), "error": str(exc)})
            continue
        if category in CATEGORIES:
            out[category] = weights
    return out


class ScoreBook:
    """The in-memory table every decision reads: ``table[provider][category] -> Score``."""

    def __init__(
        self,
        specs: Iterable[ProviderSpec],
        priors: Priors,
        *,
        unknown_quality: float,
        default_speed: float,
        weights: Mapping[str, Weights] | None = None,
    ) -> None:
        self.specs = {s.name: s for s in specs}
        self.priors = priors
        self.unknown_quality = unknown_quality
        self.default_speed = default_speed
        self._prices = price_scores(self.specs.values())
        self._measured: dict[tuple[str, str], Score] = {}
        self.weights: dict[str, Weights] = {c: EQUAL for c in CATEGORIES}
        self.weights.update(weights if weights is not None else suite_file_weights())
        self.last_refresh = 0.0
        self.last_error = ""
        self.table: dict[str, dict[str, Score]] = {}
        self._rebuild()

    def prior_score(self, provider: str, category: str) -> Score:
        """The score without any benchmark measurement (config > prior > default)."""
        spec = self.specs[provider]
        speed = spec.speed if spec.speed is not None else self.default_speed
        cost = self._prices[provider]
        if category in spec.quality or "default" in spec.quality:
            quality = spec.quality.get(category, spec.quality.get("default", 0.0))
            return Score(float(quality), float(speed), cost, ScoreSource.CONFIG, "providers file")
        prior = self.priors.find(spec.model)
        if prior is not None:
            detail = f"{prior.key} ({prior.basis[category]}; {prior.source}, {prior.date})"
            return Score(round(prior.quality[category], 2), float(speed), cost, ScoreSource.PRIOR, detail)
        return Score(self.unknown_quality, float(speed), cost, ScoreSource.DEFAULT, f"unknown model {spec.model}")

    def get(self, provider: str, category: str) -> Score:
        return self.table[provider][category]

    def _rebuild(self) -> None:
        self.table = {
            name: {c: self._measured.get((name, c)) or self.prior_score(name, c) for c in CATEGORIES}
            for name in self.specs
        }

    def load(self, response: benchmark_pb2.GetScoresResponse) -> int:
        """Adopt a GetScores answer; returns how many (provider, category) scores it held for us."""
        measured: dict[tuple[str, str], Score] = {}
        for board in response.leaderboards:
            if not 1 <= board.category <= len(CATEGORIES):
                continue
            category = CATEGORIES[board.category - 1]
            for s in board.scores:
                if s.provider in self.specs:
                    measured[(s.provider, category)] = Score(
                        s.quality, s.speed, s.cost, ScoreSource.BENCHMARK, s.run_id or "latest"
                    )
        self._measured = measured
        self._rebuild()
        self.last_refresh = time.time()
        return len(measured)

    def load_weights(self, response: benchmark_pb2.ListSuitesResponse) -> int:
        """Adopt the suites' weights (the leaderboard's); returns how many categories had them."""
        count = 0
        for suite in response.suites:
            if not 1 <= suite.category <= len(CATEGORIES):
                continue
            total = suite.quality_weight + suite.speed_weight + suite.cost_weight
            if total <= 0:
                continue
            self.weights[CATEGORIES[suite.category - 1]] = Weights(
                suite.quality_weight / total,
                suite.speed_weight / total,
                suite.cost_weight / total,
                f"benchmark service (suite {suite.version})",
            )
            count += 1
        return count


class ScoreRefresher:
    """Background task: fetch scores and weights; keep the old ones when the benchmark service is away."""

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
                log.warning("benchmark scores unavailable, using priors/last scores", extra={"error": message})
            self.book.last_error = message
            return False
        try:
            self.book.load_weights(await stub.ListSuites(benchmark_pb2.ListSuitesRequest(), timeout=timeout))
        except grpc.aio.AioRpcError as err:
            log.warning("benchmark weights unavailable, keeping the last ones", extra={"error": err.code().name})
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
