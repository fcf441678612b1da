"""EmotionService's gRPC surface: proto -> domain types in, domain -> proto out.

Field checks that name a request field live here (INVALID_ARGUMENT with the field); what an RPC
does is :mod:`services.emotion.analysis`'s business, how an EmotionResult is built
:mod:`services.emotion.result`'s. Calls only arrive once the app has started: before that the
runtime's readiness interceptor answers UNAVAILABLE.

Requests are parsed by :func:`~services.emotion.validation.lenient` deserializers, which is why
:func:`register` builds generic handlers instead of calling the generated
``add_EmotionServiceServicer_to_server``: the generated registration hard-wires
``Message.FromString``, and a string field holding invalid UTF-8 would then fail inside gRPC as
INTERNAL "Exception deserializing request!" before any handler runs. With the lenient parsers
such a request reaches the handler as a ``BadRequest``; :func:`unwrap` turns it into
INVALID_ARGUMENT naming the field (StreamAnalyze answers that message with ``error`` and goes on).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from masterx.common.v1 import common_pb2
from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
from masterx_runtime.deadline import Deadline
from masterx_runtime.errors import InvalidArgument, ServiceError, Unavailable
from services.emotion import analysis
from services.emotion.analysis import Evidence, Job, OutcomeReport
from services.emotion.result import (
    INTERVENTION_NAME,
    OUTCOME_NAME,
    STATE_ENUM,
    STATE_NAME,
    pad_message,
    predicted,
    trajectory_enum,
    urgency_doc,
)
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

if TYPE_CHECKING:
    from services.emotion.app import EmotionApp

SERVICE = "masterx.emotion.v1.EmotionService"
DEFAULT_TRAJECTORY_LIMIT = 20


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline as a ``loop.time()`` instant (asyncio's loop clock is ``time.monotonic``)."""
    return Deadline.from_context(context).at()


def register(server: grpc.aio.Server, servicer: EmotionServicer) -> None:
    """Add the servicer with lenient request parsers (see the module docstring for why)."""
    s = servicer
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


class EmotionServicer(emotion_pb2_grpc.EmotionServiceServicer):
    """gRPC surface; requests arrive through :func:`lenient` parsers (undecodable -> BadRequest)."""

    def __init__(self, app: EmotionApp) -> None:
        self.app = app

    # ---- proto -> domain ----------------------------------------------------------------------
    def _job(self, req: emotion_pb2.AnalyzeRequest, prefix: str = "") -> Job:
        check_text(req.text, self.app.cfg.max_text_bytes, f"{prefix}text")
        check_user_id(req.user_id, f"{prefix}user_id")
        check_session_id(req.session_id, f"{prefix}session_id")
        ctx = context_from_proto(req.context, f"{prefix}context") if req.HasField("context") else None
        # A request_id that cannot name a turn is still echoed; the turn is just not stored.
        turn_id = req.request_id if req.user_id and is_turn_id(req.request_id) else ""
        return Job(req.text, req.user_id, req.session_id, ctx, turn_id)

    def _report(self, req: emotion_pb2.RecordOutcomeRequest) -> OutcomeReport:
        check_user_id(req.user_id, required=True)
        check_session_id(req.session_id)
        if req.turn_id:
            check_turn_id(req.turn_id, "turn_id")
        if req.outcome not in OUTCOME_NAME:
            raise InvalidArgument(
                "outcome is required (OUTCOME_KIND_RESOLVED .. OUTCOME_KIND_ABANDONED)",
                reason="MISSING_OUTCOME",
                field="outcome",
            )
        if (
            req.applied_level not in INTERVENTION_NAME
            and req.applied_level != common_pb2.INTERVENTION_LEVEL_UNSPECIFIED
        ):
            raise InvalidArgument(
                "applied_level is not a known intervention level", reason="OUT_OF_RANGE", field="applied_level"
            )
        if req.observed_state not in STATE_NAME and req.observed_state != common_pb2.LEARNING_STATE_UNSPECIFIED:
            raise InvalidArgument(
                "observed_state is not a known learning state", reason="OUT_OF_RANGE", field="observed_state"
            )
        ctx = context_from_proto(req.context) if req.HasField("context") else None
        if req.text:
            check_text(req.text, self.app.cfg.max_text_bytes)
        return OutcomeReport(
            user_id=req.user_id,
            session_id=req.session_id,
            turn_id=req.turn_id,
            text=req.text,
            context=ctx,
            applied_level=INTERVENTION_NAME.get(req.applied_level),
            outcome=OUTCOME_NAME[req.outcome],
            observed_state=STATE_NAME.get(req.observed_state),
        )

    def _probabilities_from(
        self, result: common_pb2.EmotionResult
    ) -> tuple[dict[str, float], tuple[float, float, float]]:
        labels = self.app.labels
        probs = {s.label: s.probability for s in result.scores}
        missing = [lab for lab in labels if lab not in probs]
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
        return {lab: probs[lab] for lab in labels}, pad

    # ---- RPCs ---------------------------------------------------------------------------------
    async def Analyze(self, request: Any, context: grpc.aio.ServicerContext) -> emotion_pb2.AnalyzeResponse:
        req = unwrap(request)
        job = self._job(req)
        (result,) = await analysis.analyze(self.app, [job], _deadline(context))
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
        jobs = [self._job(item, f"items[{i}].") for i, item in enumerate(req.items)]
        return emotion_pb2.AnalyzeBatchResponse(results=await analysis.analyze(self.app, jobs, _deadline(context)))

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
                job = self._job(unwrap(request))
                (result,) = await analysis.analyze(app, [job], deadline)
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
        req = unwrap(request)
        check_user_id(req.user_id, required=True)
        history_limit = self.app.cfg.history_limit
        if req.limit < 0 or req.limit > history_limit:
            raise InvalidArgument(f"limit must be in [0, {history_limit}]", reason="OUT_OF_RANGE", field="limit")
        limit = req.limit or DEFAULT_TRAJECTORY_LIMIT
        window, traj = await analysis.trajectory(self.app, req.user_id, limit, context.time_remaining())
        resp = emotion_pb2.GetTrajectoryResponse(user_id=req.user_id, total_messages=window.total)
        if traj is not None:
            resp.trajectory = trajectory_enum(traj.trend.value)
            resp.pad_ema.CopyFrom(pad_message(traj.pad_ema))
            resp.pleasure_slope = traj.slope
        for e in reversed(window.entries[-limit:]):
            resp.history.add(
                timestamp=e.timestamp,
                primary_emotion=e.primary_emotion,
                pad=pad_message(e.pad),
                learning_state=STATE_ENUM.get(e.learning_state, common_pb2.LEARNING_STATE_UNSPECIFIED),
                session_id=e.session_id,
            )
        return resp

    async def RecordOutcome(self, request: Any, context: grpc.aio.ServicerContext) -> emotion_pb2.RecordOutcomeResponse:
        req = unwrap(request)
        report = self._report(req)
        deadline = _deadline(context)
        if report.turn_id:
            outcome_id = await analysis.record_turn_outcome(self.app, report, deadline)
            return emotion_pb2.RecordOutcomeResponse(outcome_id=outcome_id)
        result = req.result if req.HasField("result") and len(req.result.scores) else None
        if result is not None:
            probs, pad = self._probabilities_from(result)
        elif req.text:
            job = Job(req.text, "", req.session_id, report.context)
            (result,) = await analysis.analyze(self.app, [job], deadline)
            probs = {s.label: s.probability for s in result.scores}
            pad = (result.pad.pleasure, result.pad.arousal, result.pad.dominance)
        else:
            raise InvalidArgument(
                "send the analysed text or the EmotionResult (with scores) the intervention was based on",
                reason="MISSING_EVIDENCE",
                field="result",
            )
        evidence = Evidence(probs, pad, predicted(result), urgency_doc(result), result.model_version)
        outcome_id = await analysis.record_outcome(self.app, report, evidence, deadline)
        return emotion_pb2.RecordOutcomeResponse(outcome_id=outcome_id)

    async def GetModelInfo(self, request: Any, context: grpc.aio.ServicerContext) -> emotion_pb2.ModelInfo:
        unwrap(request)
        app, m = self.app, self.app.model
        if m is None:
            raise Unavailable("emotion model is not loaded yet", dependency="model")
        return emotion_pb2.ModelInfo(
            model_version=m.model_version,
            parameters_version=app.params.version,
            execution_providers=m.providers,
            labels=m.labels,
            thresholds=[float(t) for t in m.thresholds],
            max_sequence_length=m.max_seq_length,
            max_batch_size=app.cfg.max_request_batch,
            quantized=app.quantized,
            heads_version=m.heads_version,
            categories=list(m.categories),
            ekman_groups=list(m.ekman_groups),
            parameters_source=app.params_source,
        )
