"""Trajectories: the trend math, and per-student history in the real MongoDB."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import grpc
import pytest

from masterx.common.v1 import common_pb2
from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
from masterx_runtime.stores.mongo_store import MongoSettings
from masterx_runtime.testing.grpc_server import serving
from masterx_runtime.testing.servers import free_port
from services.emotion.app import EmotionApp
from services.emotion.config import EmotionSettings
from services.emotion.engine import EmotionModel
from services.emotion.trajectory import TrajectoryParams, Trend, classify, pad_ema, slope

Emotion = tuple[EmotionApp, emotion_pb2_grpc.EmotionServiceStub, grpc.aio.Channel]
P = TrajectoryParams(ema_alpha=0.5, window=5, min_messages=3, slope_threshold=0.02)


def pads(*pleasure: float) -> list[tuple[float, float, float]]:
    return [(p, 0.5, 0.5) for p in pleasure]


def test_trend_classification() -> None:
    assert classify(pads(0.6, 0.5), P).trend is Trend.INSUFFICIENT_DATA
    assert classify(pads(0.7, 0.6, 0.5, 0.4, 0.3), P).trend is Trend.DECLINING
    assert classify(pads(0.3, 0.4, 0.5, 0.6), P).trend is Trend.IMPROVING
    assert classify(pads(0.7, 0.71, 0.69, 0.7), P).trend is Trend.STABLE_POSITIVE
    assert classify(pads(0.3, 0.29, 0.31, 0.3), P).trend is Trend.STABLE_NEGATIVE
    assert classify(pads(0.5, 0.51, 0.49, 0.5), P).trend is Trend.STABLE_NEUTRAL
    # Only the window counts: an old dip does not make a flat recent run "improving".
    assert classify(pads(0.1, 0.1, 0.7, 0.7, 0.7, 0.7, 0.7), P).trend is Trend.STABLE_POSITIVE


def test_slope_and_ema() -> None:
    assert slope([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert slope([0.5, 0.5]) == 0.0
    assert pad_ema(pads(0.0, 1.0), 0.5) == pytest.approx((0.5, 0.5, 0.5))
    assert pad_ema(pads(0.0, 1.0, 1.0), 0.5)[0] == pytest.approx(0.75)
    assert P.ema_lookback() == 10  # 0.5**10 < 1e-3: older messages do not matter


DECLINING = [
    "This is great, I finally understand recursion and it feels amazing!",
    "Okay, I think I get most of it now, thanks for the help.",
    "Hmm, this next part is a bit harder than I expected.",
    "I'm getting confused, the answer keeps coming out wrong.",
    "This is really frustrating, nothing I try works and I'm annoyed.",
    "I hate this. I feel so stupid, I'll never get it and I just want to quit.",
]


async def test_increasingly_negative_messages_give_a_declining_trajectory(emotion: Emotion) -> None:
    _, stub, _ = emotion
    results = []
    for text in DECLINING:
        resp = await stub.Analyze(emotion_pb2.AnalyzeRequest(text=text, user_id="student-7", session_id="s1"))
        results.append(resp.result)
    assert results[0].trajectory == common_pb2.TRAJECTORY_INSUFFICIENT_DATA
    assert results[0].pad_ema.pleasure == pytest.approx(results[0].pad.pleasure)
    assert results[-1].pad.pleasure < results[0].pad.pleasure - 0.2, "the model sees the mood dropping"
    assert results[-1].trajectory == common_pb2.TRAJECTORY_DECLINING
    assert results[-1].pad_ema.pleasure > results[-1].pad.pleasure, "the average lags the latest message"

    traj = await stub.GetTrajectory(emotion_pb2.GetTrajectoryRequest(user_id="student-7"))
    assert traj.trajectory == common_pb2.TRAJECTORY_DECLINING
    assert traj.pleasure_slope < 0
    assert traj.total_messages == len(DECLINING)
    assert [h.primary_emotion for h in traj.history] == [r.primary_emotion for r in reversed(results)]
    assert traj.history[0].timestamp >= traj.history[-1].timestamp
    assert traj.history[0].session_id == "s1"
    assert traj.history[0].learning_state == results[-1].learning_state
    assert traj.pad_ema.pleasure == pytest.approx(results[-1].pad_ema.pleasure, abs=1e-6)


async def test_history_is_bounded_but_counted(
    emotion_settings: Callable[..., EmotionSettings], mongo_settings: MongoSettings, shared_model: EmotionModel
) -> None:
    app = EmotionApp(
        emotion_settings(history_limit=5, trajectory_window=4, trajectory_min_messages=3),
        mongo_settings,
        model=shared_model,
    )
    async with serving(app) as (_, chan):
        stub = emotion_pb2_grpc.EmotionServiceStub(chan)
        for i in range(8):
            await stub.Analyze(
                emotion_pb2.AnalyzeRequest(text=f"Working on exercise number {i} now.", user_id="bounded")
            )
        traj = await stub.GetTrajectory(emotion_pb2.GetTrajectoryRequest(user_id="bounded", limit=5))
        assert traj.total_messages == 8
        assert len(traj.history) == 5
        await stub.GetTrajectory(emotion_pb2.GetTrajectoryRequest(user_id="bounded"))  # default limit is fine too
        assert app.store is not None
        doc = await app.store.db["emotion_students"].find_one({"_id": "bounded"})
        assert doc is not None and len(doc["history"]) == 5 and doc["total"] == 8
        assert "text" not in doc["history"][0], "student messages are not stored in the history"


async def test_analyze_answers_without_trajectory_when_mongodb_is_down(
    emotion_settings: Callable[..., EmotionSettings], mongo_settings: MongoSettings, shared_model: EmotionModel
) -> None:
    dead = dataclasses.replace(mongo_settings, url=f"mongodb://127.0.0.1:{free_port()}", timeout_ms=200)
    app = EmotionApp(emotion_settings(history_timeout_ms=100), dead, model=shared_model)
    async with serving(app) as (_, chan):
        stub = emotion_pb2_grpc.EmotionServiceStub(chan)
        resp = await stub.Analyze(emotion_pb2.AnalyzeRequest(text="Is anyone storing this?", user_id="ghost"))
        assert len(resp.result.scores) == 28
        assert resp.result.trajectory == common_pb2.TRAJECTORY_UNSPECIFIED
        assert not resp.result.HasField("pad_ema")
        assert app.history is not None and app.history.failed_reads >= 1
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetTrajectory(emotion_pb2.GetTrajectoryRequest(user_id="ghost"))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_concurrent_messages_of_one_student_are_chained(emotion: Emotion) -> None:
    _, stub, _ = emotion
    texts = [f"Question {i}: how do I simplify this fraction?" for i in range(6)]
    results = await asyncio.gather(
        *(
            stub.Analyze(emotion_pb2.AnalyzeRequest(text=t, user_id="busy", session_id=f"s{i}"))
            for i, t in enumerate(texts)
        )
    )
    # Each message saw the ones before it: exactly one answer per history length.
    insufficient = [r.result.trajectory == common_pb2.TRAJECTORY_INSUFFICIENT_DATA for r in results]
    assert sum(insufficient) == 2  # the first two of the chain (min_messages is 3)
    traj = await stub.GetTrajectory(emotion_pb2.GetTrajectoryRequest(user_id="busy"))
    assert traj.total_messages == 6 and len(traj.history) == 6
    assert sorted(h.session_id for h in traj.history) == [f"s{i}" for i in range(6)]
