"""RecordOutcome stores outcomes in the real MongoDB; the refit command learns from them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from pymongo import AsyncMongoClient

from masterx.common.v1 import common_pb2
from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
from masterx_runtime.stores.mongo_store import MongoSettings
from masterx_runtime.testing.grpc_server import serving
from services.emotion import refit
from services.emotion.app import EmotionApp
from services.emotion.config import DEFAULT_PARAMS_PATH, EmotionSettings
from services.emotion.engine import EmotionModel
from services.emotion.learning import load_params
from tests.emotion.test_learning import LABELS

Emotion = tuple[EmotionApp, emotion_pb2_grpc.EmotionServiceStub, grpc.aio.Channel]

TEXTS = [
    "I keep getting the wrong answer and I don't know why.",
    "Could you explain that step again? I'm not sure I follow.",
    "This makes sense now, thanks!",
    "I've tried five times, this is so frustrating.",
    "What happens if the denominator is zero?",
    "I'm worried I'm going to fail this course.",
    "Cool, let's do a harder one.",
    "Whatever, I just want to be done with this.",
]


def run_refit(mongo: MongoSettings, settings: EmotionSettings, out: Path, *extra: str) -> int:
    """``python -m services.emotion.refit`` on ``mongo``'s outcomes, the model of ``settings``,
    writing ``out``; its exit code."""
    return refit.main(
        [
            "--mongo-url",
            mongo.url,
            "--mongo-db",
            mongo.database,
            "--out",
            str(out),
            "--model-dir",
            str(settings.model_path),
            *extra,
        ]
    )


async def test_record_outcome_stores_what_refit_needs(emotion: Emotion, mongo_settings: MongoSettings) -> None:
    app, stub, _ = emotion
    analysed = await stub.Analyze(emotion_pb2.AnalyzeRequest(text=TEXTS[3], user_id="s-9"))
    ctx = common_pb2.StudentContext(cognitive_load=0.8, time_on_task_seconds=900)
    resp = await stub.RecordOutcome(
        emotion_pb2.RecordOutcomeRequest(
            user_id="s-9",
            session_id="sess",
            text=TEXTS[3],
            result=analysed.result,
            context=ctx,
            applied_level=common_pb2.INTERVENTION_LEVEL_HIGH,
            outcome=emotion_pb2.OUTCOME_KIND_IMPROVED,
            observed_state=common_pb2.LEARNING_STATE_FRUSTRATED,
        )
    )
    assert resp.outcome_id
    # Without a result the service analyses the text itself.
    resp2 = await stub.RecordOutcome(
        emotion_pb2.RecordOutcomeRequest(user_id="s-9", text=TEXTS[0], outcome=emotion_pb2.OUTCOME_KIND_NO_CHANGE)
    )
    client: AsyncMongoClient[dict] = AsyncMongoClient(mongo_settings.url)
    try:
        docs = await client[mongo_settings.database]["emotion_outcomes"].find({}).sort("created_at", 1).to_list()
    finally:
        await client.close()
    assert [str(d["_id"]) for d in docs] == [resp.outcome_id, resp2.outcome_id]
    first, second = docs
    assert first["outcome"] == "improved" and first["applied_level"] == "high"
    assert first["observed_state"] == "frustrated"
    assert first["context"] == {"cognitive_load": 0.8, "time_on_task_seconds": 900.0}
    assert set(first["probabilities"]) == set(app.labels)
    assert first["probabilities"]["annoyance"] == pytest.approx(
        next(s.probability for s in analysed.result.scores if s.label == "annoyance")
    )
    assert first["predicted"]["intervention_level"] in ("none", "low", "medium", "high", "critical")
    assert first["parameters_version"] == app.params.version
    assert second["observed_state"] is None and second["applied_level"] is None
    assert len(second["probabilities"]) == 28 and second["text"] == TEXTS[0]


async def test_refit_from_recorded_outcomes_improves_fit_and_is_served(
    emotion: Emotion,
    mongo_settings: MongoSettings,
    emotion_settings: Callable[..., EmotionSettings],
    shared_model: EmotionModel,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app, stub, _ = emotion
    served = app.params.version
    # Tutors' labels in this cohort: under high cognitive load a struggling student is "confused",
    # otherwise "neutral"; support helped the loaded ones and was not needed by the others.
    batch = await stub.AnalyzeBatch(
        emotion_pb2.AnalyzeBatchRequest(items=[emotion_pb2.AnalyzeRequest(text=t) for t in TEXTS])
    )
    n = 0
    for rep in range(6):
        for text, result in zip(TEXTS, batch.results, strict=True):
            loaded = (rep + n) % 2 == 0
            n += 1
            await stub.RecordOutcome(
                emotion_pb2.RecordOutcomeRequest(
                    user_id=f"student-{rep}",
                    text=text,
                    result=result,
                    context=common_pb2.StudentContext(cognitive_load=0.9 if loaded else 0.1, engagement=0.5),
                    applied_level=common_pb2.INTERVENTION_LEVEL_HIGH if loaded else common_pb2.INTERVENTION_LEVEL_NONE,
                    outcome=emotion_pb2.OUTCOME_KIND_RESOLVED,
                    observed_state=common_pb2.LEARNING_STATE_CONFUSED if loaded else common_pb2.LEARNING_STATE_NEUTRAL,
                )
            )
    out = tmp_path / "learning_v9.json"
    code = run_refit(mongo_settings, emotion_settings(), out)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"{served} -> learning_v9: 48 outcomes" in printed and "state_log_loss" in printed

    doc = json.loads(out.read_text())
    assert doc["version"] == "learning_v9"
    report = doc["refit"]
    assert report["outcomes"] == 48 and report["held_out"] > 0
    train = report["train"]
    assert train["after"]["state_log_loss"] < train["before"]["state_log_loss"]
    assert train["after"]["intervention_log_loss"] < train["before"]["intervention_log_loss"]
    assert train["after"]["state_accuracy"] >= train["before"]["state_accuracy"]
    held = report["held_out_split"]
    assert held["after"]["state_log_loss"] < held["before"]["state_log_loss"], "it generalises to unseen outcomes"

    # The service runs with the refitted file, and the learnt context effect shows.
    app2 = EmotionApp(emotion_settings(params_path=str(out)), mongo_settings, model=shared_model)
    async with serving(app2) as (_, chan):
        stub2 = emotion_pb2_grpc.EmotionServiceStub(chan)
        assert (await stub2.GetModelInfo(emotion_pb2.GetModelInfoRequest())).parameters_version == "learning_v9"
        loaded = await stub2.Analyze(
            emotion_pb2.AnalyzeRequest(text=TEXTS[6], context=common_pb2.StudentContext(cognitive_load=0.9))
        )
        assert loaded.result.model_version.endswith("+learning_v9")
        assert loaded.result.learning_state_scores["confused"] > 0.5


async def test_refit_refuses_too_few_outcomes(
    mongo_settings: MongoSettings,
    emotion_settings: Callable[..., EmotionSettings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "v2.json"
    code = run_refit(mongo_settings, emotion_settings(), out)
    assert code == 1 and not out.exists()
    assert "only 0 usable outcomes" in capsys.readouterr().err


def test_strong_regularisation_keeps_the_previous_parameters() -> None:
    params = load_params(DEFAULT_PARAMS_PATH, LABELS)
    rng = np.random.default_rng(0)
    docs = [
        {
            "_id": f"o{i}",
            "probabilities": {lab: float(rng.random() * 0.3) for lab in LABELS},
            "pad": [0.5, 0.5, 0.5],
            "urgency": {"probability": float(rng.random()), "score": 3.0},
            "outcome": "abandoned",
            "observed_state": "bored",
            "applied_level": "none",
        }
        for i in range(30)
    ] + [{"_id": "broken", "probabilities": {"joy": 1.0}, "outcome": "resolved"}]
    ds, skipped = refit.build_dataset(docs, params, LABELS)
    assert skipped == 1 and len(ds) == 30
    assert set(ds.intervention) == {1.0} and set(ds.readiness) == {0.0}
    frozen = refit.fit(params, ds, l2=1e6, steps=50, lr=1e-7)
    free = refit.fit(params, ds, l2=0.0, steps=300, lr=0.5)
    assert np.allclose(frozen.state.weights, params.state.weights, atol=1e-6)
    assert np.abs(free.state.weights - params.state.weights).max() > 0.05
    assert refit.evaluate(free, ds)["state_log_loss"] < refit.evaluate(params, ds)["state_log_loss"]
    assert refit.evaluate(free, ds)["state_accuracy"] == 1.0
