"""Analyze's result carries every field the contract promises, consistent with the model info."""

from __future__ import annotations

import math

import grpc

from masterx.common.v1 import common_pb2
from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
from services.emotion.app import EmotionApp

Emotion = tuple[EmotionApp, emotion_pb2_grpc.EmotionServiceStub, grpc.aio.Channel]
EKMAN = {"anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"}
STATES = {"confused", "frustrated", "anxious", "bored", "engaged", "confident", "neutral"}


async def test_analyze_result_has_every_field(emotion: Emotion) -> None:
    app, stub, _ = emotion
    info = await stub.GetModelInfo(emotion_pb2.GetModelInfoRequest())
    resp = await stub.Analyze(
        emotion_pb2.AnalyzeRequest(text="I don't get why my loop never ends, can you explain?", request_id="req-1")
    )
    r = resp.result
    assert resp.request_id == "req-1" and not resp.error
    assert [s.label for s in r.scores] == list(info.labels) and len(r.scores) == 28
    probs = [s.probability for s in r.scores]
    assert all(0.0 <= p <= 1.0 for p in probs)
    top = max(range(28), key=lambda i: probs[i])
    assert r.primary_emotion == info.labels[top]
    assert math.isclose(r.confidence, probs[top], rel_tol=1e-9)
    for s, thr in zip(r.scores, info.thresholds, strict=True):
        assert s.active == (s.probability >= thr - 1e-7)
    assert r.ekman_group in EKMAN
    assert r.HasField("pad")
    assert all(0.0 <= v <= 1.0 for v in (r.pad.pleasure, r.pad.arousal, r.pad.dominance))
    assert r.learning_state != common_pb2.LEARNING_STATE_UNSPECIFIED
    assert set(r.learning_state_scores) == STATES
    assert math.isclose(sum(r.learning_state_scores.values()), 1.0, rel_tol=1e-6)
    best = max(r.learning_state_scores, key=lambda k: r.learning_state_scores[k])
    assert r.learning_state == common_pb2.LearningState.Value(f"LEARNING_STATE_{best.upper()}")
    assert 0.0 <= r.readiness.score <= 1.0 and r.readiness.level != common_pb2.READINESS_LEVEL_UNSPECIFIED
    assert r.readiness.level == common_pb2.ReadinessLevel.Value(
        f"READINESS_LEVEL_{app.params.readiness.level(r.readiness.score).upper()}"
    )
    assert 0.0 <= r.intervention.score <= 1.0
    assert r.intervention.level == common_pb2.InterventionLevel.Value(
        f"INTERVENTION_LEVEL_{app.params.intervention_level(r.intervention.score, context_given=False).upper()}"
    )
    assert r.model_version == f"{info.model_version}+{info.parameters_version}"
    assert r.latency_ms > 0
    assert r.truncated is False
    # No user_id: no trajectory and no moving average.
    assert r.trajectory == common_pb2.TRAJECTORY_UNSPECIFIED and not r.HasField("pad_ema")


async def test_long_text_is_truncated_and_flagged(emotion: Emotion) -> None:
    app, stub, _ = emotion
    assert app.model is not None
    words = app.model.max_seq_length * 2
    text = " ".join(["the proof keeps going and I keep reading it"] * (words // 9 + 1))
    assert len(text.encode()) < app.cfg.max_text_bytes
    r = (await stub.Analyze(emotion_pb2.AnalyzeRequest(text=text))).result
    assert r.truncated is True
    assert len(r.scores) == 28


async def test_model_info_reports_the_running_model(emotion: Emotion) -> None:
    app, stub, _ = emotion
    info = await stub.GetModelInfo(emotion_pb2.GetModelInfoRequest())
    assert app.model is not None
    assert list(info.execution_providers) == app.model.session.get_providers()
    assert "CPUExecutionProvider" in info.execution_providers
    assert len(info.labels) == 28 and len(info.thresholds) == 28
    assert info.max_sequence_length == app.model.max_seq_length
    assert info.max_batch_size == app.cfg.max_request_batch
    assert info.parameters_version == app.params.version
    assert info.parameters_source == f"file:{app.cfg.params_file}"
    details = app.health_details()
    assert details["execution_providers"] == list(info.execution_providers)
    assert details["model_version"] == info.model_version


async def test_intervention_reasons_explain_the_score(emotion: Emotion) -> None:
    _, stub, _ = emotion
    ctx = common_pb2.StudentContext(engagement=0.1, cognitive_load=0.95, time_on_task_seconds=3600)
    calm = (await stub.Analyze(emotion_pb2.AnalyzeRequest(text="Thanks, that explanation was really clear!"))).result
    struggling = (
        await stub.Analyze(
            emotion_pb2.AnalyzeRequest(text="I've been stuck on this for an hour and I'm sick of it.", context=ctx)
        )
    ).result
    assert struggling.intervention.score > calm.intervention.score
    assert struggling.readiness.score < calm.readiness.score
    assert struggling.intervention.level >= common_pb2.INTERVENTION_LEVEL_MEDIUM
    assert struggling.intervention.reasons, "a raised intervention level explains itself"
    joined = " ".join(struggling.intervention.reasons)
    assert "cognitive load" in joined or "time on task" in joined or "engagement" in joined
    assert calm.intervention.level == common_pb2.INTERVENTION_LEVEL_NONE and not calm.intervention.reasons
