"""The routing decision as a pure function: no Redis, no MongoDB, no gRPC."""

from __future__ import annotations

import pathlib

import pytest

from masterx_runtime.errors import FailedPrecondition, ResourceExhausted, Unavailable
from services.router.breaker import BreakerState
from services.router.complexity import adjusted_knob, estimate_complexity
from services.router.decision import (
    Complexity,
    Exclusion,
    ExclusionReason,
    Inputs,
    Knobs,
    ProviderView,
    continuation_cue,
    decide,
    distress_of,
    judge_escalation,
)
from services.router.domain import (
    CATEGORIES,
    CategoryScores,
    CategorySource,
    ComplexitySource,
    EmotionSignal,
    LearningState,
    Trajectory,
)
from services.router.policy import PolicyError, load_policy
from services.router.priors import PriorsError, load_priors
from services.router.providers.base import ProviderSpec
from services.router.scores import Score, ScoreBook, ScoreSource, Weights
from services.router.sessions import SessionState

POLICY = load_policy()
KNOBS = Knobs()
MIDDLE = Complexity(0.5, ComplexitySource.REQUEST)
WEIGHTS = {c: Weights(0.5, 0.3, 0.2, "test") for c in CATEGORIES}


def scores(quality: float, speed: float, cost: float, source: ScoreSource = ScoreSource.BENCHMARK) -> dict[str, Score]:
    return {c: Score(quality, speed, cost, source, "run1") for c in CATEGORIES}


STRONG = ProviderView("strong", "big", scores(90, 50, 10))
WEAK = ProviderView("weak", "small", scores(55, 60, 100))


def coding(p: float = 0.9, followup: float = 0.0) -> CategoryScores:
    rest = (1 - p) / 5
    return CategoryScores((p, rest, rest, rest, rest, rest), followup, CategorySource.REQUEST)


def inputs(**kw: object) -> Inputs:
    base: dict[str, object] = {
        "category": coding(),
        "text": "How do I fix this loop in my Python program?",
        "complexity": MIDDLE,
        "providers": [STRONG, WEAK],
        "weights": WEIGHTS,
    }
    base.update(kw)
    return Inputs(**base)  # type: ignore[arg-type]


def test_score_at_the_middle_is_the_leaderboards_final_score() -> None:
    d = decide(inputs(cost_quality=0.5), POLICY, KNOBS)
    by = {c.provider: c.score for c in d.candidates}
    assert by["strong"] == pytest.approx(0.5 * 90 + 0.3 * 50 + 0.2 * 10)
    assert by["weak"] == pytest.approx(0.5 * 55 + 0.3 * 60 + 0.2 * 100)
    assert d.provider == "weak" and d.knob_used == 0.5
    assert any("from test" in r for r in d.reasons)


def test_complexity_moves_the_trade_off_hard_to_quality_easy_to_cost() -> None:
    hard = decide(inputs(complexity=Complexity(0.95, ComplexitySource.REQUEST)), POLICY, KNOBS)
    easy = decide(inputs(complexity=Complexity(0.05, ComplexitySource.ESTIMATED)), POLICY, KNOBS)
    assert hard.provider == "strong" and easy.provider == "weak"
    assert hard.knob_used == pytest.approx(
        adjusted_knob(0.5, 0.95, pivot=POLICY.complexity_pivot, gain=POLICY.complexity_gain)
    )
    assert hard.complexity.value == 0.95 and any("complexity 0.95 (request)" in r for r in hard.reasons)
    assert any("(estimated)" in r for r in easy.reasons)


def test_knob_extremes() -> None:
    assert decide(inputs(cost_quality=1.0), POLICY, KNOBS).provider == "strong"
    assert decide(inputs(cost_quality=0.0), POLICY, KNOBS).provider == "weak"


def test_exclusions_are_typed_and_ranked_last() -> None:
    spent = ProviderView("weak", "small", WEAK.scores, exclusion=Exclusion(ExclusionReason.BUDGET_SPENT, "$1 spent"))
    opened = ProviderView("strong", "big", STRONG.scores, breaker=BreakerState.OPEN)
    third = ProviderView("third", "m", scores(60, 50, 50))
    d = decide(inputs(providers=[spent, opened, third], cost_quality=0.0), POLICY, KNOBS)
    assert d.order == ["third"]
    reasons = {c.provider: c.exclusion.reason for c in d.candidates if c.exclusion}
    assert reasons == {"weak": ExclusionReason.BUDGET_SPENT, "strong": ExclusionReason.BREAKER_OPEN}
    with pytest.raises(ResourceExhausted):
        decide(inputs(providers=[spent]), POLICY, KNOBS)
    with pytest.raises(Unavailable):
        decide(inputs(providers=[spent, opened]), POLICY, KNOBS)


def test_pinned_refusals_name_the_reason() -> None:
    opened = ProviderView("strong", "big", STRONG.scores, breaker=BreakerState.OPEN)
    with pytest.raises(FailedPrecondition):
        decide(inputs(providers=[opened, WEAK], pinned="strong"), POLICY, KNOBS)
    loading = ProviderView("weak", "small", WEAK.scores, exclusion=Exclusion(ExclusionReason.NOT_READY, "loading"))
    with pytest.raises(Unavailable):
        decide(inputs(providers=[STRONG, loading], pinned="weak"), POLICY, KNOBS)
    d = decide(inputs(pinned="strong", cost_quality=0.0), POLICY, KNOBS)
    assert d.order == ["strong"]


def test_user_budget() -> None:
    knobs = Knobs(user_daily_budget_usd=1.0)
    with pytest.raises(ResourceExhausted):
        decide(inputs(user_id="u", user_spent_usd=1.0), POLICY, knobs)
    assert decide(inputs(user_id="u", user_spent_usd=0.5), POLICY, knobs).provider


def test_below_minimum_quality_ranks_after_acceptable() -> None:
    poor = ProviderView("poor", "p", scores(10, 100, 100))
    d = decide(inputs(providers=[poor, STRONG], cost_quality=0.0), POLICY, KNOBS)
    assert [c.provider for c in d.candidates] == ["strong", "poor"]


def session(**kw: object) -> SessionState:
    base: dict[str, object] = {"session_id": "s", "provider": "strong", "category": "coding", "turns": 2}
    base["topic_vector"] = list(coding().probabilities)
    base.update(kw)
    return SessionState(**base)  # type: ignore[arg-type]


def test_continuity_follow_up_and_topic_change() -> None:
    held = decide(inputs(session=session(), cost_quality=0.3), POLICY, KNOBS)
    assert held.continuity and held.provider == "strong" and not held.topic.changed
    followup = CategoryScores((0.1, 0.1, 0.1, 0.1, 0.1, 0.5), 0.9, CategorySource.REQUEST)
    kept = decide(inputs(session=session(), category=followup), POLICY, KNOBS)
    assert kept.continuity and kept.topic.category == "coding" and kept.topic.followup
    math = CategoryScores((0.02, 0.9, 0.02, 0.02, 0.02, 0.02), 0.0, CategorySource.REQUEST)
    moved = decide(inputs(session=session(), category=math, cost_quality=0.3), POLICY, KNOBS)
    assert moved.topic.changed and not moved.continuity and moved.topic.category == "math"


def test_empathy_from_state_or_strong_negative_emotion() -> None:
    upset = EmotionSignal(learning_state=LearningState.FRUSTRATED)
    d = decide(inputs(emotion=upset), POLICY, KNOBS)
    assert d.ranking_category == "empathy" and "frustrated" in d.empathy
    grief = EmotionSignal(learning_state=LearningState.NEUTRAL, primary="grief", confidence=0.8)
    assert decide(inputs(emotion=grief), POLICY, KNOBS).empathy.startswith("strong negative emotion grief")
    calm = EmotionSignal(learning_state=LearningState.ENGAGED, scores={"sadness": 0.2})
    assert decide(inputs(emotion=calm), POLICY, KNOBS).ranking_category == "coding"


def test_escalation_rises_holds_and_relaxes() -> None:
    confused = EmotionSignal(learning_state=LearningState.CONFUSED, state_scores={"confused": 0.9})
    calm = EmotionSignal(learning_state=LearningState.ENGAGED, state_scores={"engaged": 0.9, "confused": 0.05})
    assert distress_of(confused, POLICY) == pytest.approx(0.72)
    up = judge_escalation(session(distress=[0.1]), confused, POLICY)
    assert up.active and up.changed and "rose" in up.reason
    still = judge_escalation(session(distress=[0.1, 0.72], escalated=True), confused, POLICY)
    assert still.active and not still.changed
    down = judge_escalation(session(distress=[0.72], escalated=True), calm, POLICY)
    assert not down.active and down.changed and "relaxed" in down.reason
    declining = EmotionSignal(
        learning_state=LearningState.NEUTRAL, trajectory=Trajectory.DECLINING, state_scores={"confused": 0.4}
    )
    assert judge_escalation(session(distress=[0.3]), declining, POLICY).active
    # the escalated turn leaves the (cheap) session provider for the strong one, then back
    cheap = session(provider="weak", distress=[0.1])
    d = decide(inputs(session=cheap, emotion=confused, cost_quality=0.3), POLICY, KNOBS)
    assert d.provider == "strong" and not d.continuity and d.knob_used >= POLICY.escalation.knob
    back = decide(
        inputs(session=session(distress=[0.72], escalated=True), emotion=calm, cost_quality=0.3), POLICY, KNOBS
    )
    assert back.provider == "weak" and not back.escalation.active


def test_complexity_estimate_orders_easy_and_hard() -> None:
    rules = POLICY.estimate
    easy = estimate_complexity("what is a noun?", rules)
    hard = estimate_complexity(
        "Prove that the algorithm runs in O(n log n) and implement it step by step, with a derivation of "
        "the recurrence and an analysis of the worst case for adversarial inputs.",
        rules,
    )
    assert 0 <= easy < POLICY.complexity_pivot < hard <= 1


def spec(name: str, model: str, **kw: object) -> ProviderSpec:
    return ProviderSpec(name=name, kind="openai", model=model, **kw)  # type: ignore[arg-type]


def test_priors_and_sources() -> None:
    priors = load_priors()
    specs = [
        spec("a", "gpt-4o-mini", input_price_per_mtok=0.15, output_price_per_mtok=0.6),
        spec("b", "brand-new-model"),
        spec("c", "claude-3-5-haiku-latest", quality={"coding": 70.0}),
    ]
    book = ScoreBook(specs, priors, unknown_quality=POLICY.unknown_quality, default_speed=50, weights=WEIGHTS)
    a = book.get("a", "coding")
    assert a.source == ScoreSource.PRIOR and a.quality == pytest.approx(87.2) and a.label == "prior:gpt-4o-mini"
    assert "HumanEval 87.2" in a.detail and "2024-07-18" in a.detail
    assert book.get("a", "empathy").source == ScoreSource.PRIOR  # mean of the model's other categories
    b = book.get("b", "math")
    assert b.source == ScoreSource.DEFAULT and b.quality == POLICY.unknown_quality
    assert book.get("c", "coding").source == ScoreSource.CONFIG
    assert priors.find("meta-llama/Llama-3.1-8B-Instruct") is not None


def views(book: ScoreBook) -> list[ProviderView]:
    return [ProviderView(n, book.specs[n].model, book.table[n]) for n in book.specs]


def test_decide_is_fast_enough_for_ten_providers() -> None:
    # A smoke check that nothing is quadratic; the p99 figure comes from bench/bench_router.py.
    specs = [spec(f"p{i}", "gpt-4o-mini" if i % 2 else "unknown", output_price_per_mtok=float(i)) for i in range(10)]
    book = ScoreBook(specs, load_priors(), unknown_quality=40, default_speed=50, weights=WEIGHTS)
    d = decide(inputs(providers=views(book)), POLICY, KNOBS)
    assert len(d.candidates) == 10


def test_structural_follow_up_cues_keep_the_topic() -> None:
    confident_math = CategoryScores((0.02, 0.9, 0.02, 0.02, 0.02, 0.02), 0.0, CategorySource.CLASSIFIER)
    for text in ("and 3/4 - 1/8?", "why only up to the square root?", "hmm ok", "thanks! can you show it in Java?"):
        d = decide(inputs(session=session(), category=confident_math, text=text), POLICY, KNOBS)
        assert not d.topic.changed and d.topic.followup and d.continuity, text
    moved = decide(
        inputs(session=session(), category=confident_math, text="Solve the equation 3x + 7 = 22 for x please"),
        POLICY,
        KNOBS,
    )
    assert moved.topic.changed
    assert continuation_cue("andromeda galaxy distance from earth in light years?", POLICY) == ""


def test_a_general_message_inside_a_topic_keeps_it() -> None:
    general = CategoryScores((0.01, 0.01, 0.01, 0.01, 0.01, 0.95), 0.0, CategorySource.CLASSIFIER)
    d = decide(
        inputs(session=session(), category=general, text="how do I know which ones are right then?"), POLICY, KNOBS
    )
    assert not d.topic.changed and d.continuity and d.topic.category == "coding"


def test_a_bad_policy_or_priors_file_lists_every_problem(tmp_path: pathlib.Path) -> None:
    policy = tmp_path / "policy.yaml"
    text = (pathlib.Path(POLICY.source)).read_text()
    policy.write_text(text.replace("gain: 0.8", "gain: 7").replace("[frustrated, anxious]", "[frustrated, sulky]"))
    with pytest.raises(PolicyError) as info:
        load_policy(policy)
    assert "complexity.gain" in str(info.value) and "sulky" in str(info.value)
    priors = tmp_path / "priors.yaml"
    priors.write_text(
        "version: x\ncategories: {coding: [HumanEval], math: [], research: [], language: [], empathy: [], general: []}\n"
        "models:\n  m:\n    match: [m]\n    figures: {HumanEval: 140}\n"
    )
    with pytest.raises(PriorsError) as err:
        load_priors(priors)
    assert "source" in str(err.value) and "percent" in str(err.value)
