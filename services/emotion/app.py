"""Emotion service: the fine-tuned emotion model behind gRPC, with learning states and trajectories.

Analyze/AnalyzeBatch/StreamAnalyze all go through one micro-batcher in front of the ONNX
Runtime model (one inference at a time in a worker thread). The learning state, readiness and
intervention come from the linear models in the parameter file; with a ``user_id`` the
student's history is read while the model runs and appended after the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from prometheus_client import Histogram
from pymongo.errors import PyMongoError

from masterx.common.v1 import common_pb2
from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
from masterx_runtime.config import ConfigError, load
from masterx_runtime.deadline import Deadline
from masterx_runtime.errors import InvalidArgument, ServiceError, Unavailable
from masterx_runtime.readiness import Dependency
from masterx_runtime.server import ServiceApp
from masterx_runtime.stores.mongo_store import MongoSettings, MongoStore
from masterx_runtime.tasks import stop_tasks
from services.emotion.batcher import MicroBatcher, worker_count
from services.emotion.config import EmotionSettings
from services.emotion.engine import EmotionModel, Prediction
from services.emotion.history import Entry, HistoryStore, Link, Window
from services.emotion.learning import LearningParams, ParamsError, StudentContext, has_context, load_params
from services.emotion.outcomes import INDEXES as OUTCOME_INDEXES
from services.emotion.outcomes import OUTCOME_NAMES, OUTCOMES, Outcome
from services.emotion.outcomes import insert as insert_outcome
from services.emotion.promotion import PARAMS as PARAMS_COLLECTION
from services.emotion.trajectory import TrajectoryParams, classify
from services.emotion.turns import TURNS, Turn, TurnStore
from services.emotion.turns import indexes as turn_indexes
from services.emotion.validation import (
    check_session_id,
    check_text,
    check_turn_id,
    check_user_id,
    context_from_proto,
    is_turn_id,
    lenient,
    unwrap,
)

log = logging.getLogger("masterx.emotion")

SERVICE = "masterx.emotion.v1.EmotionService"
DEFAULT_TRAJECTORY_LIMIT = 20

BATCH_SIZE = Histogram("masterx_emotion_batch_size", "Texts per model call", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
INFERENCE_SECONDS = Histogram(
    "masterx_emotion_inference_seconds",
    "Time of one model call (tokenize + ONNX Runtime)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)

_STATE_ENUM = {
    s: common_pb2.LearningState.Value(f"LEARNING_STATE_{s.upper()}")
    for s in ("confused", "frustrated", "anxious", "bored", "engaged", "confident", "neutral")
}
_STATE_NAME = {v: k for k, v in _STATE_ENUM.items()}
_READINESS_ENUM = {
    s: common_pb2.ReadinessLevel.Value(f"READINESS_LEVEL_{s.upper()}")
    for s in ("not_ready", "low", "moderate", "high", "optimal")
}
_INTERVENTION_ENUM = {
    s: common_pb2.InterventionLevel.Value(f"INTERVENTION_LEVEL_{s.upper()}")
    for s in ("none", "low", "medium", "high", "critical")
}
_INTERVENTION_NAME = {v: k for k, v in _INTERVENTION_ENUM.items()}
_OUTCOME_NAME = {emotion_pb2.OutcomeKind.Value(f"OUTCOME_KIND_{n.upper()}"): n for n in OUTCOME_NAMES}
_INTERVENTION_BY_NAME = {v: k for k, v in _INTERVENTION_NAME.items()}


def _category_enum(name: str) -> common_pb2.Category.ValueType:
    return common_pb2.Category.Value(f"CATEGORY_{name.upper()}")


def check_params_fit_model(params: LearningParams, model: EmotionModel) -> None:
    """ConfigError when the parameters weigh the urgency head and the model has none."""
    if params.needs_urgency and not model.heads_version:
        raise ConfigError(
            [
                f"parameters {params.version} weigh u:urgency but model {model.model_version} has no urgency "
                "head (use a model with heads_version in model.json, or EMOTION_PARAMS_PATH=.../learning_v1.json)"
            ]
        )


def _predicted(result: common_pb2.EmotionResult) -> dict[str, Any]:
    """What the service predicted for a turn, as stored with turns and outcomes."""
    out: dict[str, Any] = {
        "learning_state": _STATE_NAME.get(result.learning_state),
        "readiness_score": result.readiness.score,
        "intervention_level": _INTERVENTION_NAME.get(result.intervention.level),
        "intervention_score": result.intervention.score,
    }
    if result.HasField("urgency"):
        out["urgency_probability"] = result.urgency.probability
    return out


def _context_doc(ctx: StudentContext | None) -> dict[str, float]:
    if ctx is None:
        return {}
    values = (
        ("engagement", ctx.engagement),
        ("cognitive_load", ctx.cognitive_load),
        ("time_on_task_seconds", ctx.time_on_task_seconds),
    )
    return {k: float(v) for k, v in values if v is not None}


def _trajectory_enum(name: str) -> common_pb2.Trajectory.ValueType:
    return common_pb2.Trajectory.Value(f"TRAJECTORY_{name.upper()}")


def _pad(p: Sequence[float]) -> common_pb2.PAD:
    return common_pb2.PAD(pleasure=p[0], arousal=p[1], dominance=p[2])


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


@dataclass(frozen=True)
class _Job:
    """A validated Analyze request."""

    text: str
    user_id: str
    session_id: str
    context: StudentContext | None
    request_id: str = ""


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
        self._category_enums: list[common_pb2.Category.ValueType] = []

    # ---- lifecycle --------------------------------------------------------------------------
    def register(self, server: grpc.aio.Server) -> None:
        s = EmotionServicer(self)
        ser = {
            "Analyze": (grpc.unary_unary_rpc_method_handler, s.Analyze, lenient(emotion_pb2.AnalyzeRequest), emotion_pb2.AnalyzeResponse),
            "AnalyzeBatch": (grpc.unary_unary_rpc_method_handler, s.AnalyzeBatch, lenient(emotion_pb2.AnalyzeBatchRequest), emotion_pb2.AnalyzeBatchResponse),
            "StreamAnalyze": (grpc.stream_stream_rpc_method_handler, s.StreamAnalyze, lenient(emotion_pb2.AnalyzeRequest, request_id_field=5), emotion_pb2.AnalyzeResponse),
            "GetTrajectory": (grpc.unary_unary_rpc_method_handler, s.GetTrajectory, lenient(emotion_pb2.GetTrajectoryRequest), emotion_pb2.GetTrajectoryResponse),
            "RecordOutcome": (grpc.unary_unary_rpc_method_handler, s.RecordOutcome, lenient(emotion_pb2.RecordOutcomeRequest), emotion_pb2.RecordOutcomeResponse),
            "GetModelInfo": (grpc.unary_unary_rpc_method_handler, s.GetModelInfo, lenient(emotion_pb2.GetModelInfoRequest), emotion_pb2.ModelInfo),
        }  # fmt: skip
        handlers = {
            name: make(behavior, request_deserializer=deser, response_serializer=resp.SerializeToString)  # type: ignore[attr-defined]
            for name, (make, behavior, deser, resp) in ser.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    async def start(self) -> None:
        """Load and warm up the model, start the batcher, connect MongoDB (optional for Analyze)."""
        c = self.cfg
        started = time.perf_counter()
        model = self._preloaded
        if model is None:
            model = await asyncio.to_thread(
                EmotionModel,
                c.model_path,
                intra_op_threads=c.intra_op_threads,
                prefer_gpu=c.execution_provider == "auto",
                batch_invariant={"auto": None, "per_text": True, "padded": False}[c.batch_mode],
                intra_op_spinning=c.intra_op_spinning,
            )
        load_ms = (time.perf_counter() - started) * 1000
        check_params_fit_model(self.params, model)
        self._category_enums = [_category_enum(c) for c in model.categories]
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
        self.model, self.batcher = model, batcher
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

    # ---- analysis ---------------------------------------------------------------------------
    def validate(self, req: emotion_pb2.AnalyzeRequest, prefix: str = "") -> _Job:
        check_text(req.text, self.cfg.max_text_bytes, f"{prefix}text")
        check_user_id(req.user_id, f"{prefix}user_id")
        check_session_id(req.session_id, f"{prefix}session_id")
        ctx = context_from_proto(req.context, f"{prefix}context") if req.HasField("context") else None
        # A request_id that cannot name a turn is still echoed; the turn is just not stored.
        turn_id = req.request_id if req.user_id and is_turn_id(req.request_id) else ""
        return _Job(req.text, req.user_id, req.session_id, ctx, turn_id)

    def _batcher(self) -> MicroBatcher[Prediction]:
        if self.batcher is None:
            raise Unavailable("emotion model is not loaded yet", dependency="model")
        return self.batcher

    async def analyze(self, jobs: Sequence[_Job], deadline: float | None) -> list[common_pb2.EmotionResult]:
        """Results for validated jobs (one micro-batch path for single, batch and stream calls)."""
        batcher = self._batcher()
        started = time.perf_counter()
        history = self.history
        reads: list[tuple[asyncio.Task[Window], Link] | None] = [
            history.begin(j.user_id, self.lookback) if (j.user_id and history is not None) else None for j in jobs
        ]
        committed = [False] * len(jobs)
        try:
            futures = batcher.submit_many([j.text for j in jobs], deadline)
            try:
                preds = await asyncio.gather(*futures)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
            results = []
            turns = self.turns
            for i, (job, pred) in enumerate(zip(jobs, preds, strict=True)):
                result, state = self.build_result(pred, job.context)
                if turns is not None and job.user_id and job.request_id:
                    turns.record(self._turn(job, pred, result))
                read = reads[i]
                if read is not None and history is not None:
                    window = await self._history_window(read[0], deadline)
                    if window is not None:
                        pads = [e.pad for e in window[-(self.lookback - 1) :]] if self.lookback > 1 else []
                        traj = classify([*pads, pred.pad], self.trajectory)
                        result.trajectory = _trajectory_enum(traj.trend.value)
                        result.pad_ema.CopyFrom(_pad(traj.pad_ema))
                    entry = Entry(time.time(), pred.primary_label, pred.pad, state, job.session_id)
                    history.commit(job.user_id, entry, read[1], window)
                    committed[i] = True
                results.append(result)
        finally:
            for i, read in enumerate(reads):
                if read is not None and not committed[i]:
                    read[0].cancel()
                    HistoryStore.abandon(read[1])
        ms = (time.perf_counter() - started) * 1000
        for r in results:
            r.latency_ms = ms
        return results

    async def _history_window(self, read: asyncio.Task[Window], deadline: float | None) -> list[Entry] | None:
        """The student's recent entries, or None (logged) when they did not arrive in time."""
        assert self.history is not None
        loop = asyncio.get_running_loop()
        timeout = self.cfg.history_timeout_ms / 1000.0
        if deadline is not None:
            timeout = max(0.0, min(timeout, deadline - loop.time()))
        try:
            async with asyncio.timeout(timeout):
                return (await asyncio.shield(read)).entries
        except TimeoutError:
            read.cancel()
            self.history.failed_reads += 1
            self.history.warn("student history not read within %.0f ms; answering without trajectory", timeout * 1000)
        except Exception as exc:  # MongoDB trouble must not fail Analyze
            self.history.failed_reads += 1
            self.history.warn("student history unavailable (%s); answering without trajectory", type(exc).__name__)
        return None

    def _turn(self, job: _Job, pred: Prediction, result: common_pb2.EmotionResult) -> Turn:
        """What the outcome loop keeps of an analysed turn."""
        urgency = (
            {"probability": result.urgency.probability, "score": result.urgency.score}
            if result.HasField("urgency")
            else None
        )
        return Turn(
            user_id=job.user_id,
            turn_id=job.request_id,
            session_id=job.session_id,
            probabilities=dict(zip(self.labels, pred.probabilities, strict=True)),
            pad=pred.pad,
            context=_context_doc(job.context),
            urgency=urgency,
            predicted=_predicted(result),
            model_version=result.model_version,
            parameters_version=result.model_version.rpartition("+")[2],
        )

    def build_result(self, pred: Prediction, ctx: StudentContext | None) -> tuple[common_pb2.EmotionResult, str]:
        """EmotionResult without latency/trajectory; also returns the learning-state name."""
        params = self.params  # one version for the whole result, even if a reload swaps it now
        probs = np.asarray(pred.probabilities, dtype=np.float64)
        urgency = pred.urgency_probability
        out = params.evaluate(params.feature_vector(probs, pred.pad, ctx, urgency), has_context(ctx))
        active = set(pred.active_labels)
        model = self.model
        assert model is not None
        result = common_pb2.EmotionResult(
            primary_emotion=pred.primary_label,
            confidence=pred.confidence,
            scores=[
                common_pb2.EmotionScore(label=lab, probability=p, active=lab in active)
                for lab, p in zip(self.labels, pred.probabilities, strict=True)
            ],
            ekman_group=pred.ekman,
            pad=_pad(pred.pad),
            learning_state=_STATE_ENUM[out.state],
            readiness=common_pb2.Readiness(score=out.readiness_score, level=_READINESS_ENUM[out.readiness_level]),
            intervention=common_pb2.Intervention(
                level=_INTERVENTION_ENUM[out.intervention_level], reasons=out.reasons, score=out.intervention_score
            ),
            model_version=f"{model.model_version}+{params.version}",
            truncated=pred.truncated,
            learning_state_scores=out.state_scores,
            ekman_scores=[
                common_pb2.EkmanScore(group=g, probability=p)
                for g, p in zip(model.ekman_groups, pred.ekman_probabilities, strict=False)
            ],
            ekman_active=pred.ekman_active,
        )
        cats = pred.category_probabilities
        if cats and len(cats) == len(self._category_enums):
            result.category_scores.extend(
                common_pb2.CategoryScore(category=c, probability=p)
                for c, p in zip(self._category_enums, cats, strict=True)
            )
            result.followup_probability = pred.followup_probability
        if urgency is not None:
            result.urgency.probability = urgency
            result.urgency.score = pred.urgency_score
            result.urgency.model_version = model.heads_version
        return result, out.state

    # ---- trajectories and outcomes ------------------------------------------------------------
    async def get_trajectory(
        self, req: emotion_pb2.GetTrajectoryRequest, timeout: float | None
    ) -> emotion_pb2.GetTrajectoryResponse:
        check_user_id(req.user_id, required=True)
        if req.limit < 0 or req.limit > self.cfg.history_limit:
            raise InvalidArgument(
                f"limit must be in [0, {self.cfg.history_limit}]", reason="OUT_OF_RANGE", field="limit"
            )
        limit = req.limit or DEFAULT_TRAJECTORY_LIMIT
        if self.history is None:
            raise Unavailable("mongodb is not connected", dependency="mongodb")
        window = await self.history.get(req.user_id, max(limit, self.lookback), timeout)
        resp = emotion_pb2.GetTrajectoryResponse(user_id=req.user_id, total_messages=window.total)
        if window.entries:
            traj = classify([e.pad for e in window.entries], self.trajectory)
            resp.trajectory = _trajectory_enum(traj.trend.value)
            resp.pad_ema.CopyFrom(_pad(traj.pad_ema))
            resp.pleasure_slope = traj.slope
        for e in reversed(window.entries[-limit:]):
            resp.history.add(
                timestamp=e.timestamp,
                primary_emotion=e.primary_emotion,
                pad=_pad(e.pad),
                learning_state=_STATE_ENUM.get(e.learning_state, common_pb2.LEARNING_STATE_UNSPECIFIED),
                session_id=e.session_id,
            )
        return resp

    async def record_outcome(self, req: emotion_pb2.RecordOutcomeRequest, deadline: float | None) -> str:
        check_user_id(req.user_id, required=True)
        check_session_id(req.session_id)
        if req.turn_id:
            check_turn_id(req.turn_id, "turn_id")
        if req.outcome not in _OUTCOME_NAME:
            raise InvalidArgument(
                "outcome is required (OUTCOME_KIND_RESOLVED .. OUTCOME_KIND_ABANDONED)",
                reason="MISSING_OUTCOME",
                field="outcome",
            )
        if (
            req.applied_level not in _INTERVENTION_NAME
            and req.applied_level != common_pb2.INTERVENTION_LEVEL_UNSPECIFIED
        ):
            raise InvalidArgument(
                "applied_level is not a known intervention level", reason="OUT_OF_RANGE", field="applied_level"
            )
        if req.observed_state not in _STATE_NAME and req.observed_state != common_pb2.LEARNING_STATE_UNSPECIFIED:
            raise InvalidArgument(
                "observed_state is not a known learning state", reason="OUT_OF_RANGE", field="observed_state"
            )
        ctx = context_from_proto(req.context) if req.HasField("context") else None
        if req.text:
            check_text(req.text, self.cfg.max_text_bytes)
        loop = asyncio.get_running_loop()
        if req.turn_id:
            return await self._record_turn_outcome(req, ctx, deadline)
        result = req.result if req.HasField("result") and len(req.result.scores) else None
        if result is not None:
            probs, pad = self._probabilities_from(result)
        elif req.text:
            (computed,) = await self.analyze([_Job(req.text, "", req.session_id, ctx)], deadline)
            result = computed
            probs = {s.label: s.probability for s in computed.scores}
            pad = (computed.pad.pleasure, computed.pad.arousal, computed.pad.dominance)
        else:
            raise InvalidArgument(
                "send the analysed text or the EmotionResult (with scores) the intervention was based on",
                reason="MISSING_EVIDENCE",
                field="result",
            )
        if self.store is None:
            raise Unavailable("mongodb is not connected", dependency="mongodb")
        model = self.model
        urgency = (
            {"probability": result.urgency.probability, "score": result.urgency.score}
            if result.HasField("urgency")
            else None
        )
        outcome = Outcome(
            user_id=req.user_id,
            session_id=req.session_id,
            text=req.text,
            probabilities=probs,
            pad=pad,
            context=ctx,
            predicted=_predicted(result),
            applied_level=_INTERVENTION_NAME.get(req.applied_level),
            outcome=_OUTCOME_NAME[req.outcome],
            observed_state=_STATE_NAME.get(req.observed_state),
            model_version=result.model_version or (model.model_version if model else ""),
            parameters_version=self.params.version,
            urgency=urgency,
        )
        timeout = None if deadline is None else max(0.0, deadline - loop.time())
        return await insert_outcome(self.store.db, outcome, timeout)

    async def _record_turn_outcome(
        self, req: emotion_pb2.RecordOutcomeRequest, ctx: StudentContext | None, deadline: float | None
    ) -> str:
        """An outcome of a stored turn: the turn's analysis is the evidence (NOT_FOUND if unknown)."""
        if self.store is None or self.turns is None or not self.mongo_ok:
            raise Unavailable("mongodb is not connected", dependency="mongodb")
        loop = asyncio.get_running_loop()
        timeout = None if deadline is None else max(0.0, deadline - loop.time())
        turn = await self.turns.get(req.user_id, req.turn_id, timeout)
        if ctx is None and turn.context:
            c = turn.context
            ctx = StudentContext(c.get("engagement"), c.get("cognitive_load"), c.get("time_on_task_seconds"))
        predicted_level = turn.predicted.get("intervention_level")
        applied = _INTERVENTION_NAME.get(req.applied_level) or (
            predicted_level if predicted_level in _INTERVENTION_BY_NAME else None
        )
        outcome = Outcome(
            user_id=req.user_id,
            session_id=req.session_id or turn.session_id,
            text=req.text,
            probabilities=turn.probabilities,
            pad=turn.pad,
            context=ctx,
            predicted=turn.predicted,
            applied_level=applied,
            outcome=_OUTCOME_NAME[req.outcome],
            observed_state=_STATE_NAME.get(req.observed_state),
            model_version=turn.model_version,
            parameters_version=turn.parameters_version,
            urgency=turn.urgency,
            turn_id=req.turn_id,
        )
        timeout = None if deadline is None else max(0.0, deadline - loop.time())
        return await insert_outcome(self.store.db, outcome, timeout)

    def _probabilities_from(
        self, result: common_pb2.EmotionResult
    ) -> tuple[dict[str, float], tuple[float, float, float]]:
        probs = {s.label: s.probability for s in result.scores}
        missing = [lab for lab in self.labels if lab not in probs]
        if missing:
            raise InvalidArgument(
                f"result.scores lacks labels {missing[:5]}; send the result as Analyze returned it",
                reason="INCOMPLETE_RESULT",
                field="result.scores",
            )
        bad = [lab for lab, p in probs.items() if not (math.isfinite(p) and 0.0 <= p <= 1.0)]
        if bad:
            raise InvalidArgument(
                f"result.scores probabilities must be in [0, 1] ({bad[:5]})",
                reason="OUT_OF_RANGE",
                field="result.scores",
            )
        if not result.HasField("pad"):
            raise InvalidArgument(
                "result.pad is required with result.scores", reason="INCOMPLETE_RESULT", field="result.pad"
            )
        pad = (result.pad.pleasure, result.pad.arousal, result.pad.dominance)
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in pad):
            raise InvalidArgument("result.pad values must be in [0, 1]", reason="OUT_OF_RANGE", field="result.pad")
        return {lab: probs[lab] for lab in self.labels}, pad

    def model_info(self) -> emotion_pb2.ModelInfo:
        m = self.model
        if m is None:
            raise Unavailable("emotion model is not loaded yet", dependency="model")
        return emotion_pb2.ModelInfo(
            model_version=m.model_version,
            parameters_version=self.params.version,
            execution_providers=m.providers,
            labels=m.labels,
            thresholds=[float(t) for t in m.thresholds],
            max_sequence_length=m.max_seq_length,
            max_batch_size=self.cfg.max_request_batch,
            quantized=self.quantized,
            heads_version=m.heads_version,
            categories=list(m.categories),
            ekman_groups=list(m.ekman_groups),
            parameters_source=self.params_source,
        )


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline as a ``loop.time()`` instant (asyncio's loop clock is ``time.monotonic``)."""
    return Deadline.from_context(context).at()


class EmotionServicer(emotion_pb2_grpc.EmotionServiceServicer):
    """gRPC surface; requests arrive through :func:`lenient` parsers (undecodable -> BadRequest)."""

    def __init__(self, app: EmotionApp) -> None:
        self.app = app

    async def Analyze(self, request: Any, context: grpc.aio.ServicerContext) -> emotion_pb2.AnalyzeResponse:
        req = unwrap(request)
        job = self.app.validate(req)
        (result,) = await self.app.analyze([job], _deadline(context))
        return emotion_pb2.AnalyzeResponse(result=result, request_id=req.request_id)

    async def AnalyzeBatch(self, request: Any, context: grpc.aio.ServicerContext) -> emotion_pb2.AnalyzeBatchResponse:
        req = unwrap(request)
        n, limit = len(req.items), self.app.cfg.max_request_batch
        if n == 0:
            raise InvalidArgument("items is empty", reason="EMPTY_BATCH", field="items")
        if n > limit:
            raise InvalidArgument(
                f"batch has {n} items; the limit is {limit} (EMOTION_MAX_REQUEST_BATCH)",
                reason="BATCH_TOO_LARGE",
                field="items",
            )
        jobs = [self.app.validate(item, f"items[{i}].") for i, item in enumerate(req.items)]
        return emotion_pb2.AnalyzeBatchResponse(results=await self.app.analyze(jobs, _deadline(context)))

    async def StreamAnalyze(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[emotion_pb2.AnalyzeResponse]:
        """Responses in request order; up to EMOTION_STREAM_MAX_IN_FLIGHT messages analysed at once."""
        app = self.app
        deadline = _deadline(context)
        slots = asyncio.Semaphore(app.cfg.stream_max_in_flight)
        pending: asyncio.Queue[asyncio.Task[emotion_pb2.AnalyzeResponse] | None] = asyncio.Queue()

        async def one(request: Any) -> emotion_pb2.AnalyzeResponse:
            rid = request.request_id  # BadRequest carries it too, when it could be read
            try:
                job = app.validate(unwrap(request))
                (result,) = await app.analyze([job], deadline)
                return emotion_pb2.AnalyzeResponse(result=result, request_id=rid)
            except ServiceError as exc:
                return emotion_pb2.AnalyzeResponse(request_id=rid, error=f"{exc.code.name}: {exc.message}")
            except TimeoutError:
                return emotion_pb2.AnalyzeResponse(request_id=rid, error="DEADLINE_EXCEEDED: deadline exceeded")

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await slots.acquire()
                    pending.put_nowait(asyncio.get_running_loop().create_task(one(request)))
            finally:
                pending.put_nowait(None)

        reader = asyncio.get_running_loop().create_task(read())
        try:
            while (task := await pending.get()) is not None:
                try:
                    response = await task
                finally:
                    slots.release()
                yield response
            await reader  # surface a broken request stream
        finally:
            reader.cancel()
            while not pending.empty():
                leftover = pending.get_nowait()
                if leftover is not None:
                    leftover.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def GetTrajectory(self, request: Any, context: grpc.aio.ServicerContext) -> emotion_pb2.GetTrajectoryResponse:
        return await self.app.get_trajectory(unwrap(request), context.time_remaining())

    async def RecordOutcome(self, request: Any, context: grpc.aio.ServicerContext) -> emotion_pb2.RecordOutcomeResponse:
        outcome_id = await self.app.record_outcome(unwrap(request), _deadline(context))
        return emotion_pb2.RecordOutcomeResponse(outcome_id=outcome_id)

    async def GetModelInfo(self, request: Any, context: grpc.aio.ServicerContext) -> emotion_pb2.ModelInfo:
        unwrap(request)
        return self.app.model_info()
