"""The learning_v1 parameters: file format checks and the behaviour their rationale claims."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.emotion.config import SERVICE_DIR
from services.emotion.learning import LearningParams, ParamsError, StudentContext, load_params

LABELS = [
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity", "desire",
    "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear", "gratitude", "grief", "joy",
    "love", "nervousness", "optimism", "pride", "realization", "relief", "remorse", "sadness", "surprise", "neutral",
]  # fmt: skip


V1_PATH = SERVICE_DIR / "params" / "learning_v1.json"
# The v1 file (hand-set intervention) is still valid and keeps its behaviour; learning_v2 is
# tested in test_learning_v2.py.


@pytest.fixture(scope="module")
def params() -> LearningParams:
    return load_params(V1_PATH, LABELS)


def probs(background: float = 0.02, **labels: float) -> np.ndarray:
    p = np.full(len(LABELS), background)
    for k, v in labels.items():
        p[LABELS.index(k)] = v
    return p


def run(
    params: LearningParams,
    p: np.ndarray,
    pad: tuple[float, float, float] = (0.5, 0.5, 0.5),
    ctx: StudentContext | None = None,
):  # type: ignore[no-untyped-def]
    return params.evaluate(params.feature_vector(p, pad, ctx))


def test_version_and_rationale_are_in_the_file(params: LearningParams) -> None:
    assert params.version == "learning_v1"
    doc = json.loads(V1_PATH.read_text())
    for key in ("confused", "frustrated", "anxious", "bored", "engaged", "confident", "readiness", "intervention"):
        assert doc["rationale"][key]


@pytest.mark.parametrize(
    ("signal", "pad", "ctx", "state"),
    [
        ({"neutral": 0.9}, (0.5, 0.45, 0.5), None, "neutral"),
        ({"confusion": 0.85, "curiosity": 0.3}, (0.45, 0.5, 0.4), None, "confused"),
        ({"annoyance": 0.8, "anger": 0.3}, (0.25, 0.65, 0.5), None, "frustrated"),
        ({"nervousness": 0.7, "fear": 0.4}, (0.35, 0.6, 0.3), None, "anxious"),
        ({"neutral": 0.6}, (0.45, 0.2, 0.5), StudentContext(engagement=0.05, time_on_task_seconds=2400), "bored"),
        ({"curiosity": 0.8, "excitement": 0.3}, (0.65, 0.6, 0.55), StudentContext(engagement=0.9), "engaged"),
        ({"pride": 0.7, "joy": 0.5}, (0.8, 0.6, 0.8), None, "confident"),
    ],
)
def test_states_follow_the_documented_signals(
    params: LearningParams,
    signal: dict[str, float],
    pad: tuple[float, float, float],
    ctx: StudentContext | None,
    state: str,
) -> None:
    out = run(params, probs(**signal), pad, ctx)
    assert out.state == state, out.state_scores
    assert sum(out.state_scores.values()) == pytest.approx(1.0)


def test_context_moves_readiness_and_intervention_the_documented_way(params: LearningParams) -> None:
    p = probs(annoyance=0.5, confusion=0.3)
    pad = (0.4, 0.55, 0.45)
    base = run(params, p, pad)
    strained = run(params, p, pad, StudentContext(engagement=0.1, cognitive_load=0.95, time_on_task_seconds=3600))
    relaxed = run(params, p, pad, StudentContext(engagement=0.9, cognitive_load=0.1, time_on_task_seconds=60))
    assert strained.intervention_score > base.intervention_score > relaxed.intervention_score
    assert strained.readiness_score < base.readiness_score < relaxed.readiness_score
    assert strained.reasons and any("cognitive load" in r for r in strained.reasons)
    assert any("time on task" in r for r in strained.reasons)


def test_neutral_message_needs_no_intervention(params: LearningParams) -> None:
    out = run(params, probs(neutral=0.9))
    assert out.intervention_level == "none" and out.reasons == []
    assert out.readiness_level == "moderate"


def test_distress_is_critical_with_reasons_strongest_first(params: LearningParams) -> None:
    out = run(
        params, probs(sadness=0.9, grief=0.6, nervousness=0.5), (0.1, 0.6, 0.2), StudentContext(cognitive_load=0.9)
    )
    assert out.intervention_level == "critical"
    contributions = [float(r.rsplit("(+", 1)[1].rstrip(")")) for r in out.reasons]
    assert contributions == sorted(contributions, reverse=True)
    assert out.reasons[0].startswith(("sadness", "grief"))


def test_round_trip_keeps_behaviour(params: LearningParams, tmp_path: Path) -> None:
    doc = params.to_dict()
    again = LearningParams.from_dict(json.loads(json.dumps(doc)), LABELS)
    p = probs(confusion=0.6, joy=0.2)
    a, b = run(params, p, (0.4, 0.5, 0.5)), run(again, p, (0.4, 0.5, 0.5))
    assert a.state_scores == pytest.approx(b.state_scores, abs=1e-4)
    assert a.intervention_score == pytest.approx(b.intervention_score, abs=1e-4)


def test_bad_files_are_rejected_with_the_reason(tmp_path: Path) -> None:
    doc = json.loads(V1_PATH.read_text())
    doc["readiness"]["weights"]["p:boredom"] = 1.0
    with pytest.raises(ParamsError, match="unknown feature 'p:boredom'"):
        LearningParams.from_dict(doc, LABELS)
    doc = json.loads(V1_PATH.read_text())
    doc["intervention"]["cut_points"] = [0.5, 0.3, 0.7, 0.9]
    with pytest.raises(ParamsError, match="cut_points"):
        LearningParams.from_dict(doc, LABELS)
    doc = json.loads(V1_PATH.read_text())
    del doc["version"]
    with pytest.raises(ParamsError, match="version"):
        LearningParams.from_dict(doc, LABELS)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ParamsError, match="not JSON"):
        load_params(broken, LABELS)
