"""learning_v2: the intervention score rests on the urgency head; levels follow the file's cut
points and its no-context cap; the examples in the file's rationale behave as it says."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.emotion.config import SERVICE_DIR
from services.emotion.learning import (
    INTERVENTION_LEVELS,
    LearningParams,
    ParamsError,
    StudentContext,
    has_context,
    load_params,
    urgency_logit,
)
from services.emotion.promotion import Decision, PromotionRule, decide
from tests.emotion.test_learning import LABELS, probs

V2_PATH = SERVICE_DIR / "params" / "learning_v2.json"
V1_PATH = SERVICE_DIR / "params" / "learning_v1.json"
NO_EMOTION = np.zeros(len(LABELS))
MID_PAD = (0.5, 0.5, 0.5)
STRAINED = StudentContext(engagement=0.2, cognitive_load=0.9, time_on_task_seconds=1200)


@pytest.fixture(scope="module")
def v2() -> LearningParams:
    return load_params(V2_PATH, LABELS)


def run(
    params: LearningParams,
    urgency: float,
    p: np.ndarray = NO_EMOTION,
    pad: tuple[float, float, float] = MID_PAD,
    ctx: StudentContext | None = None,
):  # type: ignore[no-untyped-def]
    return params.evaluate(params.feature_vector(p, pad, ctx, urgency), has_context(ctx))


def test_file_documents_its_rule(v2: LearningParams) -> None:
    doc = json.loads(V2_PATH.read_text())
    assert v2.version == "learning_v2"
    assert doc["intervention"]["cut_points_rule"] and doc["readiness"]["cut_points_rule"]
    assert "u:urgency" in doc["rationale"]["intervention"]
    assert v2.needs_urgency and not load_params(V1_PATH, LABELS).needs_urgency
    assert v2.max_level_without_context == "high"


@pytest.mark.parametrize("p_urgent", [0.01, 0.1, 0.37, 0.5, 0.8, 0.97])
def test_score_is_p_urgent_when_nothing_else_moves_it(v2: LearningParams, p_urgent: float) -> None:
    """Weight 1 on logit(P(urgent)), bias 0: the cut points read as urgency probabilities."""
    assert run(v2, p_urgent).intervention_score == pytest.approx(p_urgent, abs=1e-9)


def test_levels_follow_the_cut_points(v2: LearningParams) -> None:
    """Score c (a cut point) is the next level up, c - 1e-6 the one below; no context caps at high."""
    cuts = v2.intervention.cut_points
    for i, c in enumerate(cuts):
        assert v2.intervention_level(c, context_given=True) == INTERVENTION_LEVELS[i + 1]
        assert v2.intervention_level(c - 1e-6, context_given=True) == INTERVENTION_LEVELS[i]
        expected = INTERVENTION_LEVELS[min(i + 1, INTERVENTION_LEVELS.index("high"))]
        assert run(v2, c + 1e-9).intervention_level == expected


def test_rationale_a_neutral_question_needs_nothing(v2: LearningParams) -> None:
    out = run(v2, 0.05, probs(neutral=0.9), (0.52, 0.45, 0.55))
    assert out.intervention_level == "none" and out.reasons == []


def test_rationale_b_one_message_alone_is_at_most_high(v2: LearningParams) -> None:
    """A bare 'I'm so frustrated': emotions push it up, but without context it cannot be critical."""
    frustrated = probs(annoyance=0.85, anger=0.3, disappointment=0.3)
    pad = (0.2, 0.7, 0.35)
    sure = run(v2, 0.9999, frustrated, pad)
    assert sure.intervention_score > v2.intervention.cut_points[-1]  # past the critical cut ...
    assert sure.intervention_level == "high"  # ... and still high: one message alone
    for p_urgent in np.linspace(0.01, 0.99, 50):
        assert run(v2, float(p_urgent), frustrated, pad).intervention_level != "critical"
    assert run(v2, 0.75, frustrated, pad).intervention_score > run(v2, 0.75).intervention_score
    # At least low: the frustration shift lifts even a low P(urgent) over the `low` cut.
    assert run(v2, 0.1, frustrated, pad).intervention_level != "none"


def test_rationale_c_context_makes_it_critical(v2: LearningParams) -> None:
    out = run(v2, 0.95, probs(annoyance=0.85, anger=0.3), (0.2, 0.7, 0.35), STRAINED)
    assert out.intervention_level == "critical"
    assert any("cognitive load" in r for r in out.reasons)
    assert out.reasons[0].startswith("the text reads as needing help, P(urgent)=0.95")


def test_rationale_d_gratitude_lowers_the_score(v2: LearningParams) -> None:
    alone = run(v2, 0.12)
    out = run(v2, 0.12, probs(gratitude=0.9, joy=0.4), (0.85, 0.55, 0.7))
    assert alone.intervention_level == "low"  # 0.12 is above the data-chosen `low` cut ...
    assert out.intervention_score < v2.intervention.cut_points[0]  # ... and gratitude takes it below
    assert out.intervention_level == "none"


def test_context_shifts_are_the_documented_sizes(v2: LearningParams) -> None:
    """Load 0.9: +0.64 logits; engagement 0.1: +0.48; 20 min on task: +0.6 (rationale)."""
    base = float(urgency_logit(0.3))

    def logit_of(ctx: StudentContext) -> float:
        s = run(v2, 0.3, ctx=ctx).intervention_score
        return float(np.log(s / (1 - s)))

    assert logit_of(StudentContext(cognitive_load=0.9)) - base == pytest.approx(0.64, abs=1e-6)
    assert logit_of(StudentContext(engagement=0.1)) - base == pytest.approx(0.48, abs=1e-6)
    assert logit_of(StudentContext(time_on_task_seconds=1200)) - base == pytest.approx(0.6, abs=1e-6)


def test_feature_matrix_matches_feature_vector(v2: LearningParams) -> None:
    rng = np.random.default_rng(3)
    p = rng.random((5, len(LABELS))) * 0.5
    pad = rng.random((5, 3))
    u = rng.random(5)
    x = v2.feature_matrix(p, pad, u)
    for i in range(5):
        assert np.allclose(x[i], v2.feature_vector(p[i], pad[i], None, float(u[i])))


def test_bad_cap_is_rejected() -> None:
    doc = json.loads(V2_PATH.read_text())
    doc["intervention"]["max_level_without_context"] = "severe"
    with pytest.raises(ParamsError, match="max_level_without_context"):
        LearningParams.from_dict(doc, LABELS)


def test_round_trip_keeps_cap_and_documentation(v2: LearningParams) -> None:
    again = LearningParams.from_dict(json.loads(json.dumps(v2.to_dict())), LABELS)
    assert again.max_level_without_context == "high"
    assert (
        again.to_dict()["intervention"]["cut_points_rule"]
        == json.loads(V2_PATH.read_text())["intervention"]["cut_points_rule"]
    )
    assert run(again, 0.7, probs(sadness=0.6)).intervention_score == pytest.approx(
        run(v2, 0.7, probs(sadness=0.6)).intervention_score, abs=1e-4
    )


def _report(n: int, before: dict[str, float], after: dict[str, float]) -> dict[str, object]:
    return {"held_out": n, "held_out_split": {"before": before, "after": after}}


def test_promotion_rule() -> None:
    rule = PromotionRule(min_held_out=20, min_gain=0.005, max_loss=0.005)
    good = {"intervention_log_loss": 0.60, "readiness_log_loss": 0.65, "state_log_loss": 1.2}
    better = {"intervention_log_loss": 0.55, "readiness_log_loss": 0.652, "state_log_loss": 1.1}
    assert decide(_report(25, good, better), rule).promote
    assert not decide(_report(19, good, better), rule).promote  # too few held out
    flat = dict(good, intervention_log_loss=0.598)
    assert not decide(_report(25, good, flat), rule).promote  # gain below min_gain
    worse_readiness = dict(better, readiness_log_loss=0.70)
    d = decide(_report(25, good, worse_readiness), rule)
    assert isinstance(d, Decision) and not d.promote
    assert any("readiness_log_loss" in r for r in d.reasons)
    assert not decide({"held_out": 0}, rule).promote


def test_refit_skips_outcomes_without_urgency_when_the_parameters_weigh_it(v2: LearningParams) -> None:
    from services.emotion import refit

    base = {"probabilities": dict.fromkeys(LABELS, 0.05), "pad": [0.5, 0.5, 0.5], "outcome": "resolved"}
    docs = [
        {**base, "_id": "with", "urgency": {"probability": 0.8, "score": 4.5}},
        {**base, "_id": "without"},
    ]
    ds, skipped = refit.build_dataset(docs, v2, LABELS)
    assert ds.ids == ["with"] and skipped == 1
    assert ds.x[0, -1] == pytest.approx(float(urgency_logit(0.8)))
    ds1, skipped1 = refit.build_dataset(docs, load_params(V1_PATH, LABELS), LABELS)
    assert len(ds1) == 2 and skipped1 == 0
