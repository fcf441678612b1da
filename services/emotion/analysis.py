"""What the RPCs do, on domain types: analysis (batcher + student history + stored turns),
trajectory reads and outcome records.

The servicer hands in validated :class:`Job` values and plain arguments; the app
(:class:`~services.emotion.app.EmotionApp`) owns the model, batcher, parameters and stores these
functions use. Results are ``common_pb2.EmotionResult`` built by
:class:`~services.emotion.result.ResultBuilder` (the service's result type end to end).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from masterx.common.v1 import common_pb2
from masterx_runtime.errors import Unavailable
from services.emotion.history import Entry, HistoryStore, Link, Window
from services.emotion.learning import StudentContext
from services.emotion.outcomes import Outcome
from services.emotion.outcomes import insert as insert_outcome
from services.emotion.result import INTERVENTION_ENUM, pad_message, trajectory_enum
from services.emotion.trajectory import TrajectoryResult, classify

if TYPE_CHECKING:
    from services.emotion.app import EmotionApp


@dataclass(frozen=True)
class Job:
    """A validated Analyze request."""

    text: str
    user_id: str
    session_id: str
    context: StudentContext | None
    request_id: str = ""


@dataclass(frozen=True)
class OutcomeReport:
    """A validated RecordOutcome request, less its evidence."""

    user_id: str
    session_id: str
    turn_id: str
    text: str
    context: StudentContext | None
    applied_level: str | None
    outcome: str
    observed_state: str | None


@dataclass(frozen=True)
class Evidence:
    """What an outcome without a stored turn was based on (sent, or analysed from the text)."""

    probabilities: dict[str, float]
    pad: tuple[float, float, float]
    predicted: dict[str, Any]
    urgency: dict[str, float] | None
    model_version: str


def _timeout(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())


async def analyze(app: EmotionApp, jobs: Sequence[Job], deadline: float | None) -> list[common_pb2.EmotionResult]:
    """Results for validated jobs (one micro-batch path for single, batch and stream calls)."""
    if app.batcher is None or app.results is None:
        raise Unavailable("emotion model is not loaded yet", dependency="model")
    batcher, builder = app.batcher, app.results
    started = time.perf_counter()
    history = app.history
    reads: list[tuple[asyncio.Task[Window], Link] | None] = [
        history.begin(j.user_id, app.lookback) if (j.user_id and history is not None) else None for j in jobs
    ]
    committed = [False] * len(jobs)
    try:
        futures = batcher.submit_many([j.text for j in jobs], deadline)
        try:
            # one text (Analyze): await its future itself, without gather's extra future and
            # callback round through the loop
            preds = [await futures[0]] if len(futures) == 1 else await asyncio.gather(*futures)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        results = []
        turns = app.turns
        for i, (job, pred) in enumerate(zip(jobs, preds, strict=True)):
            result, state = builder.build(pred, job.context, app.params)
            if turns is not None and job.user_id and job.request_id:
                turns.record(
                    builder.turn(
                        pred,
                        result,
                        user_id=job.user_id,
                        turn_id=job.request_id,
                        session_id=job.session_id,
                        ctx=job.context,
                    )
                )
            read = reads[i]
            if read is not None and history is not None:
                window = await _history_window(app, read[0], deadline)
                if window is not None:
                    pads = [e.pad for e in window[-(app.lookback - 1) :]] if app.lookback > 1 else []
                    traj = classify([*pads, pred.pad], app.trajectory)
                    result.trajectory = trajectory_enum(traj.trend.value)
                    result.pad_ema.CopyFrom(pad_message(traj.pad_ema))
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


async def _history_window(app: EmotionApp, read: asyncio.Task[Window], deadline: float | None) -> list[Entry] | None:
    """The student's recent entries, or None (logged) when they did not arrive in time."""
    assert app.history is not None
    timeout = app.cfg.history_timeout_ms / 1000.0
    if deadline is not None:
        timeout = max(0.0, min(timeout, deadline - asyncio.get_running_loop().time()))
    try:
        async with asyncio.timeout(timeout):
            return (await asyncio.shield(read)).entries
    except TimeoutError:
        read.cancel()
        app.history.failed_reads += 1
        app.history.warn("student history not read within %.0f ms; answering without trajectory", timeout * 1000)
    except Exception as exc:  # MongoDB trouble must not fail Analyze
        app.history.failed_reads += 1
        app.history.warn("student history unavailable (%s); answering without trajectory", type(exc).__name__)
    return None


async def trajectory(
    app: EmotionApp, user_id: str, limit: int, timeout: float | None
) -> tuple[Window, TrajectoryResult | None]:
    """The student's last ``max(limit, lookback)`` entries and, if any, their trajectory."""
    if app.history is None:
        raise Unavailable("mongodb is not connected", dependency="mongodb")
    window = await app.history.get(user_id, max(limit, app.lookback), timeout)
    traj = classify([e.pad for e in window.entries], app.trajectory) if window.entries else None
    return window, traj


async def record_outcome(app: EmotionApp, report: OutcomeReport, evidence: Evidence, deadline: float | None) -> str:
    """Store an outcome whose evidence came with the request (or was analysed from its text)."""
    if app.store is None:
        raise Unavailable("mongodb is not connected", dependency="mongodb")
    model = app.model
    outcome = Outcome(
        user_id=report.user_id,
        session_id=report.session_id,
        text=report.text,
        probabilities=evidence.probabilities,
        pad=evidence.pad,
        context=report.context,
        predicted=evidence.predicted,
        applied_level=report.applied_level,
        outcome=report.outcome,
        observed_state=report.observed_state,
        model_version=evidence.model_version or (model.model_version if model else ""),
        parameters_version=app.params.version,
        urgency=evidence.urgency,
    )
    return await insert_outcome(app.store.db, outcome, _timeout(deadline))


async def record_turn_outcome(app: EmotionApp, report: OutcomeReport, deadline: float | None) -> str:
    """An outcome of a stored turn: the turn's analysis is the evidence (NOT_FOUND if unknown)."""
    if app.store is None or app.turns is None or not app.mongo_ok:
        raise Unavailable("mongodb is not connected", dependency="mongodb")
    turn = await app.turns.get(report.user_id, report.turn_id, _timeout(deadline))
    ctx = report.context
    if ctx is None and turn.context:
        c = turn.context
        ctx = StudentContext(c.get("engagement"), c.get("cognitive_load"), c.get("time_on_task_seconds"))
    predicted_level = turn.predicted.get("intervention_level")
    applied = report.applied_level or (predicted_level if predicted_level in INTERVENTION_ENUM else None)
    outcome = Outcome(
        user_id=report.user_id,
        session_id=report.session_id or turn.session_id,
        text=report.text,
        probabilities=turn.probabilities,
        pad=turn.pad,
        context=ctx,
        predicted=turn.predicted,
        applied_level=applied,
        outcome=report.outcome,
        observed_state=report.observed_state,
        model_version=turn.model_version,
        parameters_version=turn.parameters_version,
        urgency=turn.urgency,
        turn_id=report.turn_id,
    )
    return await insert_outcome(app.store.db, outcome, _timeout(deadline))
