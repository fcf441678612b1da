"""The metacognitive controller's decisions for scripted students (pure function, packaged config)."""

from __future__ import annotations

import pytest

from services.reasoning.config import load_yaml
from services.reasoning.controller import (
    ControllerConfig,
    ControllerInput,
    Decision,
    Limits,
    Outcome,
    Source,
    decide,
    outcomes_from_turns,
)

CFG = ControllerConfig.from_mapping(load_yaml("", "controller.yaml"))


def codes(d: Decision) -> list[str]:
    return [r.code for r in d.reasons]


def test_calm_student_easy_question_answers_directly() -> None:
    d = decide(ControllerInput(complexity=0.15, learning_state="engaged", readiness="high"), CFG)
    assert not d.deep_thinking and d.source == Source.CONTROLLER
    assert d.score == pytest.approx(0.15) and d.threshold == pytest.approx(0.6)
    assert codes(d) == ["complexity", "decision"]
    assert "answer directly" in d.reasons[-1].detail


def test_frustrated_student_hard_question_searches_with_a_shorter_search() -> None:
    d = decide(ControllerInput(complexity=0.8, learning_state="frustrated", readiness="moderate"), CFG)
    assert d.deep_thinking and d.source == Source.CONTROLLER
    assert d.score == pytest.approx(0.85)
    assert d.limits == Limits(max_iterations=8, max_width=3, max_widenings=2, max_wall_ms=15000)
    assert codes(d) == ["complexity", "emotion:frustrated", "decision"]


def test_confused_after_an_answer_searches_a_moderate_question_harder() -> None:
    alone = decide(ControllerInput(complexity=0.45, learning_state="confused"), CFG)
    assert not alone.deep_thinking  # 0.45 + 0.1 = 0.55 < 0.6
    after = decide(
        ControllerInput(
            complexity=0.45,
            learning_state="confused",
            recent=[Outcome(deep_thinking=False, confidence=None, followed_by="confused")],
        ),
        CFG,
    )
    assert after.deep_thinking and after.score == pytest.approx(0.8)
    assert after.limits == Limits(max_iterations=24, max_width=3, max_widenings=6, max_wall_ms=45000)
    assert codes(after) == ["complexity", "emotion:confused", "after_struggle", "decision"]
    assert "followed by confused" in after.reasons[2].detail


def test_struggling_after_a_weak_search_and_in_a_row_grows_the_search() -> None:
    recent = [
        Outcome(True, 0.3, "confused"),
        Outcome(False, None, "frustrated"),
        Outcome(False, None, "engaged"),
        Outcome(False, None, "confused"),  # not in the streak: an engaged turn came between
    ]
    d = decide(ControllerInput(complexity=0.3, learning_state="confused", recent=recent), CFG)
    assert d.score == pytest.approx(0.3 + 0.1 + 0.25 + 0.1)
    assert "weak_search" in codes(d) and "2 struggling turns in a row" in d.reasons[2].detail
    assert d.limits.max_iterations == round(16 * 1.5 * 1.25)


def test_an_expensive_provider_raises_the_threshold_and_shrinks_the_search() -> None:
    cheap = decide(ControllerInput(complexity=0.65), CFG)
    dear = decide(ControllerInput(complexity=0.65, provider_cost_per_1k=0.03), CFG)
    assert cheap.deep_thinking and not dear.deep_thinking
    assert dear.threshold == pytest.approx(0.7)
    assert dear.limits.max_iterations == 8 and "provider_cost" in codes(dear)


def test_low_readiness_shrinks_the_search_but_not_the_decision() -> None:
    d = decide(ControllerInput(complexity=0.9, readiness="low"), CFG)
    assert d.deep_thinking and d.limits.max_iterations == 12 and "readiness:low" in codes(d)


def test_the_users_explicit_choice_wins_both_ways() -> None:
    off = decide(ControllerInput(complexity=0.95, learning_state="confused", user_choice=False), CFG)
    assert not off.deep_thinking and off.source == Source.USER and codes(off)[-1] == "user_choice"
    on = decide(ControllerInput(complexity=0.05, user_choice=True), CFG)
    assert on.deep_thinking and on.source == Source.USER
    assert on.limits.max_iterations == 16  # a forced search still gets the controller's sizing


def test_limits_are_clamped() -> None:
    tiny = decide(ControllerInput(complexity=0.9, learning_state="frustrated", readiness="not_ready"), CFG)
    assert tiny.limits.max_iterations == 4 and tiny.limits.max_wall_ms == 7500
    assert tiny.limits.max_widenings >= 1


def test_outcomes_from_stored_turns_pair_each_answer_with_the_next_message() -> None:
    turns = [  # newest first
        {"learning_state": "engaged", "deep_thinking": True, "result": {"confidence": 0.9}},
        {"learning_state": "neutral", "deep_thinking": False},
    ]
    out = outcomes_from_turns(turns, current_state="confused")
    assert out == [Outcome(True, 0.9, "confused"), Outcome(False, None, "engaged")]
