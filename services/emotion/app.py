"""Emotion service: the fine-tuned emotion model behind gRPC, with learning states and trajectories.

This module is the app's lifecycle and wiring only: it loads and warms up the ONNX model, starts
the micro-batcher (one model call at a time per worker thread), connects the MongoDB stores
(student history, stored turns, outcomes), reloads promoted parameter versions, and reports
health. The gRPC surface is :mod:`services.emotion.servicer` (proto <-> domain), what the RPCs
do is :mod:`services.emotion.analysis`, EmotionResult construction :mod:`services.emotion.result`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import Histogram
from pymongo.errors import PyMongoError

from masterx_runtime.config import ConfigError, load
from masterx_runtime.errors import Unavailable
from masterx_runtime.readiness import Dependency
from masterx_runtime.server import ServiceApp
from masterx_runtime.stores.mongo_store import MongoSettings, MongoStore
from masterx_runtime.tasks import stop_tasks
from services.emotion.batcher import MicroBatcher, worker_count
from services.emotion.config import EmotionSettings
from services.emotion.engine import EmotionModel, Prediction
from services.emotion.heads import HeadsMismatch
from services.emotion.history import HistoryStore
from services.emotion.learning import LearningParams, ParamsError, load_params
from services.emotion.outcomes import INDEXES as OUTCOME_INDEXES
from services.emotion.outcomes import OUTCOMES
from services.emotion.promotion import PARAMS as PARAMS_COLLECTION
from services.emotion.result import ResultBuilder
from services.emotion.servicer import EmotionServicer, register
from services.emotion.trajectory import TrajectoryParams
from services.emotion.turns import TURNS, TurnStore
from services.emotion.turns import indexes as turn_indexes

log = logging.getLogger("masterx.emotion")

BATCH_SIZE = Histogram("masterx_emotion_batch_size", "Texts per model call", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
INFERENCE_SECONDS = Histogram(
    "masterx_emotion_inference_seconds",
    "Time of one model call (tokenize + ONNX Runtime)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)


def check_params_fit_model(params: LearningParams, model: EmotionModel) -> None:
    """ConfigError when the parameters weigh the urgency head and the model has none."""
    if params.needs_urgency and not model.heads_version:
        raise ConfigError(
            [
                f"parameters {params.version} weigh u:urgency but model {model.model_version} has no urgency "
                "head (use a model with heads_version in model.json, or EMOTION_PARAMS_PATH=.../learning_v1.json)"
            ]
        )


def _model_labels(model_dir: Path) -> list[str]:
    """Labels from model.json, or a ConfigError that says how to get a model."""
    meta_path = model_dir / "model.json"
    try:
        return list(json.loads(meta_path.read_text(encoding="utf-8"))["labels"])
    except FileNotFoundError:
        raise ConfigError(
            [f"EMOTION_MODEL_DIR={str(model_dir)!r}: no model.json (train one: make train-emotion)"]
        ) from None
    except (ValueError, KeyError) as exc:
        raise ConfigError([f"EMOTION_MODEL_DIR={str(model_dir)!r}: unreadable model.json ({exc})"]) from None


class EmotionApp(ServiceApp):
    """Owns the model, the batcher, the parameter file and the MongoDB stores."""

    name = "emotion"  # gRPC name and default ports: masterx_runtime/topology.py

    def __init__(
        self,
        settings: EmotionSettings | None = None,
        mongo: MongoSettings | None = None,
        *,
        model: EmotionModel | None = None,
    ) -> None:
        """Settings default to the environment; ``model`` reuses an already loaded model (tests, benchmarks)."""
        self.cfg = settings if settings is not None else load(EmotionSettings)
        self.mongo_cfg = mongo if mongo is not None else load(MongoSettings)
        c = self.cfg
        problems = []
        if c.trajectory_negative_pleasure >= c.trajectory_positive_pleasure:
            problems.append("EMOTION_TRAJECTORY_NEGATIVE_PLEASURE must be below EMOTION_TRAJECTORY_POSITIVE_PLEASURE")
        if c.trajectory_min_messages > c.trajectory_window:
            problems.append("EMOTION_TRAJECTORY_MIN_MESSAGES must not exceed EMOTION_TRAJECTORY_WINDOW")
        if problems:
            raise ConfigError(problems)
        self.labels = _model_labels(c.model_path)
        try:
            self.params: LearningParams = load_params(c.params_file, self.labels)
        except ParamsError as exc:
            raise ConfigError([f"EMOTION_PARAMS_PATH={str(c.params_file)!r}: {exc}"]) from None
        self.trajectory = TrajectoryParams(
            ema_alpha=c.ema_alpha,
            window=c.trajectory_window,
            min_messages=c.trajectory_min_messages,
            slope_threshold=c.trajectory_slope_threshold,
            positive_pleasure=c.trajectory_positive_pleasure,
            negative_pleasure=c.trajectory_negative_pleasure,
        )
        self.lookback = min(c.history_limit, self.trajectory.lookback())
        self._preloaded = model
        self.model: EmotionModel | None = None
        self.batcher: MicroBatcher[Prediction] | None = None
        self.store: MongoStore | None = None
        self.history: HistoryStore | None = None
        self.turns: TurnStore | None = None
        self.mongo_ok = False
        self.params_source = f"file:{c.params_file}"
        self._rejected_versions: set[str] = set()
        self._reload_task: asyncio.Task[None] | None = None
        self.results: ResultBuilder | None = None  # set with the model in start()

    # ---- lifecycle --------------------------------------------------------------------------
    def register(self, server: grpc.aio.Server) -> None:
        register(server, EmotionServicer(self))

    async def start(self) -> None:
        """Load and warm up the model, start the batcher, connect MongoDB (optional for Analyze)."""
        c = self.cfg
        started = time.perf_counter()
        model = self._preloaded
        if model is None:
            try:
                model = await asyncio.to_thread(
                    EmotionModel,
                    c.model_path,
                    intra_op_threads=c.intra_op_threads,
                    prefer_gpu=c.execution_provider == "auto",
                    batch_invariant={"auto": None, "per_text": True, "padded": False}[c.batch_mode],
                    intra_op_spinning=c.intra_op_spinning,
                )
            except HeadsMismatch as exc:  # a model that does not fit this code: refuse to start
                raise ConfigError([f"EMOTION_MODEL_DIR={str(c.model_path)!r}: {exc}"]) from None
        load_ms = (time.perf_counter() - started) * 1000
        check_params_fit_model(self.params, model)
        results = ResultBuilder(model, self.labels)
        # A per-text model runs each text on its own anyway: workers take one text at a time, so
        # each answer leaves as soon as it is ready and no worker idles behind another's batch.
        batcher: MicroBatcher[Prediction] = MicroBatcher(
            model.predict,
            max_size=1 if model.batch_invariant else c.batch_max_size,
            max_wait_s=c.batch_max_wait_ms / 1000.0,
            workers=worker_count(c.workers, c.intra_op_threads),
            on_batch=self._observe,
        )
        started = time.perf_counter()
        await asyncio.to_thread(self._warm_up, model)
        warm_ms = (time.perf_counter() - started) * 1000
        self.model, self.batcher, self.results = model, batcher, results
        batcher.start()
        log.info(
            "emotion model ready",
            extra={
                "model_version": model.model_version,
                "parameters_version": self.params.version,
                "execution_providers": model.providers,
                "intra_op_threads": c.intra_op_threads,
                "workers": batcher.workers,
                "batch_mode": model.batch_mode,
                "load_ms": round(load_ms, 1),
                "warmup_ms": round(warm_ms, 1),
            },
        )
        self.store = MongoStore(self.mongo_cfg)
        self.history = HistoryStore(
            self.store.db, limit=c.history_limit, max_pending_writes=c.history_max_pending_writes
        )
        self.turns = TurnStore(
            self.store.db, ttl_seconds=c.turn_ttl_seconds, max_pending_writes=c.history_max_pending_writes
        )
        try:
            await self.store.connect(indexes={OUTCOMES: OUTCOME_INDEXES, TURNS: turn_indexes(c.turn_ttl_seconds)})
            self.mongo_ok = True
        except Unavailable as exc:
            log.warning("mongodb unreachable at start; Analyze answers without trajectories until it is back: %s", exc)
        if c.params_reload_seconds > 0:
            if self.mongo_ok:
                await self.reload_params()
            self._reload_task = asyncio.get_running_loop().create_task(self._reload_loop(), name="params-reload")

    # ---- promoted parameter versions ----------------------------------------------------------
    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.params_reload_seconds)
            await self.reload_params()

    async def reload_params(self) -> bool:
        """Swap to the newest promoted version in MongoDB if it differs from the served one.

        A promoted document that does not load (or needs a head the model lacks) is logged once
        and skipped; the served version stays. Returns True when the version changed.
        """
        if self.store is None or self.model is None:
            return False
        try:
            async with asyncio.timeout(self.mongo_cfg.timeout_ms / 1000.0 + 1.0):
                doc = await self.store.db[PARAMS_COLLECTION].find_one({}, sort=[("promoted_at", -1)])
        except (PyMongoError, TimeoutError) as exc:
            log.warning("could not look for promoted parameters: %s", type(exc).__name__)
            return False
        if doc is None:
            return False
        version = str(doc.get("version", ""))
        if version == self.params.version or version in self._rejected_versions:
            return False
        try:
            new = LearningParams.from_dict(doc.get("params") or {}, self.labels)
            check_params_fit_model(new, self.model)
        except (ParamsError, ConfigError) as exc:
            self._rejected_versions.add(version)
            log.warning("promoted parameters %s not served: %s", version, exc)
            return False
        old, self.params = self.params.version, new
        self.params_source = f"mongodb:{PARAMS_COLLECTION}"
        log.info("serving promoted parameters", extra={"parameters_version": new.version, "previous": old})
        return True

    def _warm_up(self, model: EmotionModel) -> None:
        """Short, window-filling and full-batch inputs, so no first request pays for allocation."""
        if self.cfg.warmup_batches == 0:
            return
        long_text = " ".join(
            ["this sentence keeps going to fill the whole token window"] * (model.max_seq_length // 8 + 2)
        )
        shapes = [
            ["ok"],
            [long_text],
            ["warming up the emotion model with a short chat message"] * self.cfg.batch_max_size,
        ]
        for i in range(self.cfg.warmup_batches):
            model.predict(shapes[i % len(shapes)])

    async def stop(self) -> None:
        await stop_tasks([self._reload_task])
        if self.batcher is not None:
            await self.batcher.close()
        if self.history is not None:
            await self.history.drain(timeout=2.0)
        if self.turns is not None:
            await self.turns.drain(timeout=2.0)
        if self.store is not None:
            await self.store.close()

    def dependencies(self) -> list[Dependency]:
        """MongoDB is optional: Analyze answers without trajectories, history waits in the outbox."""
        return [self.store.dependency(required=False)] if self.store is not None else []

    def health_details(self) -> dict[str, Any]:
        m = self.model
        details: dict[str, Any] = {
            "model_version": m.model_version if m else None,
            "parameters_version": self.params.version,
            "parameters_source": self.params_source,
            "heads_version": m.heads_version if m else "",
            "execution_providers": m.providers if m else [],
            "quantized": self.quantized,
            "intra_op_threads": self.cfg.intra_op_threads,
        }
        if self.batcher is not None:
            details["batching"] = {
                "mode": m.batch_mode if m is not None else "padded",
                "max_size": self.batcher.max_size,
                "max_wait_ms": self.cfg.batch_max_wait_ms,
                "workers": self.batcher.workers,
                **self.batcher.stats.snapshot(),
            }
        if self.history is not None:
            details["history"] = {
                "failed_reads": self.history.failed_reads,
                "failed_writes": self.history.failed_writes,
                "dropped_writes": self.history.dropped_writes,
            }
        if self.turns is not None:
            details["turns"] = {
                "failed_writes": self.turns.failed_writes,
                "dropped_writes": self.turns.dropped_writes,
            }
        return details

    @property
    def quantized(self) -> bool:
        if self.model is None:
            return False
        meta = self.model.meta
        return bool(meta.get("quantized", "int8" in str(meta.get("onnx_file", ""))))

    @staticmethod
    def _observe(size: int, seconds: float) -> None:
        BATCH_SIZE.observe(size)
        INFERENCE_SECONDS.observe(seconds)
