"""The outcome loop on the real MongoDB: urgency and Ekman groups in every result, turns stored
by request id, outcomes recorded against a turn (unknown or malformed -> nothing stored), a
refit that promotes or refuses by the documented rule, and a service that swaps to a promoted
version without a restart and reports it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from pymongo import AsyncMongoClient

from masterx.common.v1 import common_pb2
from masterx.emotion.v1 import emotion_pb2, emotion_pb2_grpc
from masterx_runtime.stores.mongo_store import MongoSettings
from masterx_runtime.testing.grpc_server import serving
from services.emotion.app import EmotionApp
from services.emotion.config import EmotionSettings
from services.emotion.engine import EmotionModel
from services.emotion.promotion import PARAMS
from tests.emotion.test_refit import TEXTS, Emotion, run_refit

EKMAN = ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]


async def _docs(mongo: MongoSettings, collection: str) -> list[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo.url)
    try:
        return await client[mongo.database][collection].find({}).sort("created_at", 1).to_list()
    finally:
        await client.close()


def _check_full(r: common_pb2.EmotionResult, app: EmotionApp) -> None:
    """Urgency, calibrated Ekman groups and categories as the contract promises."""
    model = app.model
    assert model is not None
    assert r.HasField("urgency")
    assert 0.0 <= r.urgency.probability <= 1.0 and 1.0 <= r.urgency.score <= 7.0
    assert r.urgency.model_version == model.heads_version != ""
    assert [e.group for e in r.ekman_scores] == model.ekman_groups and sorted(model.ekman_groups) == sorted(EKMAN)
    assert all(0.0 <= e.probability <= 1.0 for e in r.ekman_scores)
    assert set(r.ekman_active) <= set(model.ekman_groups)
    assert len(r.category_scores) == 6
    assert sum(c.probability for c in r.category_scores) == pytest.approx(1.0, abs=1e-4)
    assert 0.0 <= r.followup_probability <= 1.0


async def test_every_analyze_path_returns_urgency_and_ekman(emotion: Emotion) -> None:
    app, stub, _ = emotion
    texts = ["I'm so frustrated", "What is a derivative?", "thanks, that helped a lot"]
    single = (await stub.Analyze(emotion_pb2.AnalyzeRequest(text=texts[0]))).result
    _check_full(single, app)
    batch = await stub.AnalyzeBatch(
        emotion_pb2.AnalyzeBatchRequest(items=[emotion_pb2.AnalyzeRequest(text=t) for t in texts])
    )
    for r in batch.results:
        _check_full(r, app)

    async def requests() -> AsyncIterator[emotion_pb2.AnalyzeRequest]:
        for i, t in enumerate(texts):
            yield emotion_pb2.AnalyzeRequest(text=t, request_id=f"s{i}")

    streamed = [resp.result async for resp in stub.StreamAnalyze(requests())]
    assert len(streamed) == 3
    for r in streamed:
        _check_full(r, app)
    # The intervention score is P(urgent) shifted on the logit scale: the two move together.
    assert single.intervention.score == pytest.approx(
        app.params.evaluate(
            app.params.feature_vector(
                np.array([s.probability for s in single.scores]),
                (single.pad.pleasure, single.pad.arousal, single.pad.dominance),
                None,
                single.urgency.probability,
            ),
            False,
        ).intervention_score,
        abs=1e-6,
    )
    info = await stub.GetModelInfo(emotion_pb2.GetModelInfoRequest())
    assert info.heads_version == single.urgency.model_version
    assert list(info.ekman_groups) == [e.group for e in single.ekman_scores]
    assert len(info.categories) == 6
    assert info.parameters_source.startswith("file:")


async def test_rationale_examples_with_the_real_model(emotion: Emotion) -> None:
    """learning_v2's rationale on real text: a bare "I'm so frustrated" is at least low and at most
    high (never critical); the caller's strain raises it; a grateful message needs nothing."""
    _, stub, _ = emotion
    strained = common_pb2.StudentContext(engagement=0.2, cognitive_load=0.9, time_on_task_seconds=1200)
    bare = (await stub.Analyze(emotion_pb2.AnalyzeRequest(text="I'm so frustrated"))).result
    ctx = (await stub.Analyze(emotion_pb2.AnalyzeRequest(text="I'm so frustrated", context=strained))).result
    thanks = (await stub.Analyze(emotion_pb2.AnalyzeRequest(text="thanks, that makes sense now"))).result
    assert common_pb2.INTERVENTION_LEVEL_LOW <= bare.intervention.level <= common_pb2.INTERVENTION_LEVEL_HIGH
    assert ctx.intervention.score > bare.intervention.score and ctx.intervention.level > bare.intervention.level
    assert thanks.intervention.level == common_pb2.INTERVENTION_LEVEL_NONE
    # Even the most urgent-sounding message alone stays at high at most.
    plea = "Please help, I'm going to fail this course, the exam is tomorrow and my code still crashes"
    alone = (await stub.Analyze(emotion_pb2.AnalyzeRequest(text=plea))).result
    assert alone.intervention.level <= common_pb2.INTERVENTION_LEVEL_HIGH


async def test_outcome_of_a_stored_turn(emotion: Emotion, mongo_settings: MongoSettings) -> None:
    app, stub, _ = emotion
    ctx = common_pb2.StudentContext(cognitive_load=0.7)
    analysed = await stub.Analyze(
        emotion_pb2.AnalyzeRequest(
            text="I've tried this five times and I'm so frustrated", user_id="s-1", request_id="turn-1", context=ctx
        )
    )
    resp = await stub.RecordOutcome(
        emotion_pb2.RecordOutcomeRequest(user_id="s-1", turn_id="turn-1", outcome=emotion_pb2.OUTCOME_KIND_IMPROVED)
    )
    assert resp.outcome_id
    (doc,) = await _docs(mongo_settings, "emotion_outcomes")
    r = analysed.result
    assert doc["turn_id"] == "turn-1" and doc["outcome"] == "improved" and doc["user_id"] == "s-1"
    assert doc["probabilities"]["annoyance"] == pytest.approx(
        next(s.probability for s in r.scores if s.label == "annoyance")
    )
    assert doc["context"] == {"cognitive_load": 0.7}
    level = common_pb2.InterventionLevel.Name(r.intervention.level).removeprefix("INTERVENTION_LEVEL_").lower()
    assert doc["applied_level"] == level == doc["predicted"]["intervention_level"]  # what the tutor acted on
    assert doc["parameters_version"] == app.params.version
    if r.HasField("urgency"):
        assert doc["urgency"]["probability"] == pytest.approx(r.urgency.probability)
    turns = await _docs(mongo_settings, "emotion_turns")
    assert [t["_id"] for t in turns] == ["s-1/turn-1"]


@pytest.mark.parametrize(
    ("request_fields", "code", "field"),
    [
        ({"user_id": "s-1", "turn_id": "no-such-turn"}, grpc.StatusCode.NOT_FOUND, "turn_id"),
        ({"user_id": "someone-else", "turn_id": "turn-2"}, grpc.StatusCode.NOT_FOUND, "turn_id"),
        ({"user_id": "s-1", "turn_id": "bad turn id!"}, grpc.StatusCode.INVALID_ARGUMENT, "turn_id"),
        ({"user_id": "", "turn_id": "turn-2"}, grpc.StatusCode.INVALID_ARGUMENT, "user_id"),
        (
            {"user_id": "s-1", "turn_id": "turn-2", "outcome": emotion_pb2.OUTCOME_KIND_UNSPECIFIED},
            grpc.StatusCode.INVALID_ARGUMENT,
            "outcome",
        ),
        (
            {"user_id": "s-1", "turn_id": "turn-2", "applied_level": 42},
            grpc.StatusCode.INVALID_ARGUMENT,
            "applied_level",
        ),
    ],
)
async def test_bad_outcomes_store_nothing(
    emotion: Emotion,
    mongo_settings: MongoSettings,
    request_fields: dict[str, Any],
    code: grpc.StatusCode,
    field: str,
) -> None:
    _, stub, _ = emotion
    await stub.Analyze(emotion_pb2.AnalyzeRequest(text="why is this wrong?", user_id="s-1", request_id="turn-2"))
    fields = {"outcome": emotion_pb2.OUTCOME_KIND_RESOLVED, **request_fields}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.RecordOutcome(emotion_pb2.RecordOutcomeRequest(**fields))
    assert err.value.code() == code
    assert field in (err.value.details() or "")
    assert await _docs(mongo_settings, "emotion_outcomes") == []


async def test_request_ids_that_cannot_name_a_turn_are_echoed_not_stored(
    emotion: Emotion, mongo_settings: MongoSettings
) -> None:
    _, stub, _ = emotion
    resp = await stub.Analyze(emotion_pb2.AnalyzeRequest(text="hello", user_id="s-2", request_id="has spaces"))
    assert resp.request_id == "has spaces" and resp.result.scores
    await stub.Analyze(emotion_pb2.AnalyzeRequest(text="hello", request_id="no-user"))
    assert await _docs(mongo_settings, "emotion_turns") == []


# ---- refit: promote or refuse, and the service swaps without a restart ------------------------


async def _record(stub: emotion_pb2_grpc.EmotionServiceStub, n: int, *, signal: bool) -> None:
    """``n`` outcomes through stored turns. With ``signal``, students under high load needed the
    strong support they got (resolved) and the others did not need any; without it, the
    outcome is unrelated to the context (a coin by index)."""
    for i in range(n):
        loaded = i % 2 == 0
        turn = f"t{i}"
        await stub.Analyze(
            emotion_pb2.AnalyzeRequest(
                text=TEXTS[i % len(TEXTS)],
                user_id=f"u{i % 7}",
                request_id=turn,
                context=common_pb2.StudentContext(cognitive_load=0.95 if loaded else 0.05),
            )
        )
        if signal:
            applied = common_pb2.INTERVENTION_LEVEL_HIGH if loaded else common_pb2.INTERVENTION_LEVEL_NONE
            outcome = emotion_pb2.OUTCOME_KIND_RESOLVED
        else:
            applied = common_pb2.INTERVENTION_LEVEL_NONE
            outcome = emotion_pb2.OUTCOME_KIND_RESOLVED if (i // 3) % 2 else emotion_pb2.OUTCOME_KIND_NO_CHANGE
        await stub.RecordOutcome(
            emotion_pb2.RecordOutcomeRequest(user_id=f"u{i % 7}", turn_id=turn, applied_level=applied, outcome=outcome)
        )


def _refit(mongo: MongoSettings, settings: EmotionSettings, out: Path, *extra: str) -> int:
    return run_refit(mongo, settings, out, "--promote", *extra)


async def test_refit_promotes_a_better_version_and_the_service_swaps_to_it(
    emotion_settings: Callable[..., EmotionSettings],
    mongo_settings: MongoSettings,
    shared_model: EmotionModel,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = EmotionApp(emotion_settings(params_reload_seconds=3600), mongo_settings, model=shared_model)
    async with serving(app) as (_, chan):
        stub = emotion_pb2_grpc.EmotionServiceStub(chan)
        served = app.params.version
        await _record(stub, 160, signal=True)  # about 40 held out (a hash of the outcome id)
        out = tmp_path / "learning_v3.json"
        assert _refit(mongo_settings, emotion_settings(), out) == 0
        printed = capsys.readouterr().out
        assert "promoted learning_v3" in printed, printed
        doc = json.loads(out.read_text())
        assert doc["refit"]["promotion"]["passes_rule"] is True
        (promoted,) = await _docs(mongo_settings, PARAMS)
        assert promoted["version"] == "learning_v3" and promoted["from_version"] == served

        assert app.params.version == served  # until the next poll ...
        assert await app.reload_params() is True  # ... which the interval would run
        info = await stub.GetModelInfo(emotion_pb2.GetModelInfoRequest())
        assert info.parameters_version == "learning_v3"
        assert info.parameters_source == "mongodb:emotion_params"
        assert app.health_details()["parameters_version"] == "learning_v3"
        r = (await stub.Analyze(emotion_pb2.AnalyzeRequest(text=TEXTS[0]))).result
        assert r.model_version.endswith("+learning_v3")
        assert await app.reload_params() is False  # nothing newer


async def test_refit_refuses_a_version_that_does_not_beat_the_current_one(
    emotion: Emotion,
    emotion_settings: Callable[..., EmotionSettings],
    mongo_settings: MongoSettings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app, stub, _ = emotion
    await _record(stub, 50, signal=False)
    out = tmp_path / "learning_v3.json"
    # Too few held-out outcomes for the rule: refused, whatever the fit.
    assert _refit(mongo_settings, emotion_settings(), out, "--min-held-out", "1000") == 0
    printed = capsys.readouterr().out
    assert f"not promoted: {app.params.version} stays" in printed, printed
    assert "held-out outcomes" in printed
    assert json.loads(out.read_text())["refit"]["promotion"]["passes_rule"] is False
    assert await _docs(mongo_settings, PARAMS) == []
    # A version whose held-out intervention loss does not fall by min_gain is refused too.
    assert _refit(mongo_settings, emotion_settings(), out, "--min-held-out", "1", "--min-gain", "10") == 0
    printed = capsys.readouterr().out
    assert "not promoted" in printed and "< 10" in printed, printed
    assert await _docs(mongo_settings, PARAMS) == []
    assert await app.reload_params() is False


async def test_the_reload_interval_picks_up_a_promoted_version_and_skips_a_bad_one(
    emotion_settings: Callable[..., EmotionSettings],
    mongo_settings: MongoSettings,
    shared_model: EmotionModel,
) -> None:
    import asyncio

    from services.emotion.promotion import Decision, promoted_doc

    app = EmotionApp(emotion_settings(params_reload_seconds=0.2), mongo_settings, model=shared_model)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_settings.url)
    col = client[mongo_settings.database][PARAMS]
    try:
        async with serving(app) as (_, chan):
            stub = emotion_pb2_grpc.EmotionServiceStub(chan)
            served = app.params.version
            broken = promoted_doc({"version": "learning_broken"}, {}, Decision(True, []))
            await col.insert_one(broken)
            await asyncio.sleep(0.6)
            assert app.params.version == served  # a document that does not load is skipped
            good = app.params.to_dict() | {"version": "learning_v2b"}
            await col.insert_one(promoted_doc(good, {"from_version": served}, Decision(True, ["test"])))
            for _ in range(50):
                info = await stub.GetModelInfo(emotion_pb2.GetModelInfoRequest())
                if info.parameters_version == "learning_v2b":
                    break
                await asyncio.sleep(0.1)
            assert info.parameters_version == "learning_v2b"
            assert app.health_details()["parameters_source"] == "mongodb:emotion_params"
    finally:
        await client.close()
