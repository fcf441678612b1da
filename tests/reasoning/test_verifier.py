"""The safe math parser, the verifier, terminal detection and the other reward scorers."""

from __future__ import annotations

from fractions import Fraction

import pytest

from services.reasoning.mcts.answers import canonical_answer, extract_final_answer
from services.reasoning.mcts.generator import CompleterStepGenerator, StepRequest
from services.reasoning.mcts.mathcheck import MathError, check_claims, evaluate, find_problem, parse, parse_number
from services.reasoning.mcts.prompts import StudentState, step_messages
from services.reasoning.mcts.rewards import (
    HeuristicScorer,
    RewardInput,
    RewardSettings,
    VerifierScorer,
    parse_judge_score,
)
from services.reasoning.mcts.strategies import Strategy
from tests.reasoning.scripted import ScriptedCompleter


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12 * (3 + 4)", Fraction(84)),
        ("2 + 3 * 4", Fraction(14)),
        ("-2^2", Fraction(-4)),
        ("2^3^2", Fraction(512)),
        ("1/3 + 1/6", Fraction(1, 2)),
        ("10 ÷ 4 − 1", Fraction(3, 2)),
        ("3(2 + 1)", Fraction(9)),
        ("0.1 + 0.2", Fraction(3, 10)),
        ("2 ** 10", Fraction(1024)),
    ],
)
def test_expressions_evaluate_exactly(text: str, value: Fraction) -> None:
    assert evaluate(parse(text)) == value


@pytest.mark.parametrize(
    "text",
    ["__import__('os').system('x')", "2 +", "(1 + 2", "1 / 0", "2 ^ 100000", "2 ^ (1/2)", "9^64^64", "", "x + 1"],
)
def test_hostile_or_broken_input_is_a_math_error_never_executed(text: str) -> None:
    with pytest.raises(MathError):
        evaluate(parse(text))


def test_finds_equations_and_expressions_in_questions() -> None:
    eq = find_problem("Solve for x: 3(x - 1) = 2x + 5, please.")
    assert eq is not None and eq.kind == "equation" and eq.value == 8
    expr = find_problem("What is 3 x 4 + 2?")
    assert expr is not None and expr.kind == "arithmetic" and expr.value == 14
    assert find_problem("Why is the sky blue?") is None
    assert find_problem("I have 3 apples and 4 pears") is None  # numbers, but nothing to compute


@pytest.mark.parametrize(
    ("question", "answer", "ok"),
    [
        ("Solve 2x + 3 = 11", "4", True),
        ("Solve 2x + 3 = 11", "x = 4", True),
        ("Solve 2x + 3 = 11", "\\boxed{4}", True),
        ("Solve 2x + 3 = 11", "5", False),
        ("Solve 2x + 3 = 11", "four", False),
        ("What is 1/3?", "0.333", True),  # correctly rounded to the places shown
        ("What is 1/3?", "0.3", True),
        ("What is 1/3?", "0.34", False),
        ("What is 2/3?", "0.66", False),  # truncated, not rounded
        ("If x^2 = 16, what is x?", "-4 or 4", True),  # non-linear: checked by substitution
        ("If x^2 = 16, what is x?", "3", False),
        ("x^2 = 2", "1.414", True),  # a rounded irrational root: sign change in the interval
        ("What is 12 * (3 + 4)?", "84", True),
        ("What is 12 * (3 + 4)?", "84 apples", True),
    ],
)
def test_stated_answers_are_checked_against_the_question(question: str, answer: str, ok: bool) -> None:
    problem = find_problem(question)
    assert problem is not None
    assert problem.check(answer) is ok


def test_claims_inside_steps_are_recomputed() -> None:
    assert check_claims("First 3 * 4 = 12, then 12 + 5 = 17.").wrong == 0
    bad = check_claims("3 * 4 = 12 and 12 + 5 = 18")
    assert bad.claims == 2 and bad.wrong == 1
    assert check_claims("so 10/3 = 3.33").wrong == 0
    assert check_claims("2x = 8 so x is 4").claims == 0  # a variable: not a numeric claim


@pytest.mark.parametrize(
    ("step", "answer"),
    [
        ("So x = 4.\nFinal answer: x = 4", "x = 4"),
        ("**Final Answer:** 42.", "42"),
        ("The final answer is 7", "7"),
        ("Therefore \\boxed{12}", "12"),
        ("Guess. Final answer: blue", "blue"),
        ("We are not at the final answer yet.", None),
        ("Next, subtract 3.", None),
        ("The result is 10/8.\nThe answer is 3/4.", "3/4"),
        ("Answer: x = 5", "x = 5"),
        ("The answer is not obvious yet.", None),
    ],
)
def test_terminal_detection(step: str, answer: str | None) -> None:
    assert extract_final_answer(step) == answer


def test_answers_vote_together_by_value() -> None:
    assert (
        canonical_answer("4") == canonical_answer("x = 4") == canonical_answer("4.0") == canonical_answer("8/2") == "4"
    )
    assert canonical_answer("1/2") == canonical_answer("0.5") == "0.5"
    assert canonical_answer("1/3") == "1/3"
    assert canonical_answer("Rayleigh  Scattering.") == "rayleigh scattering"
    assert parse_number("x = 7/2") == Fraction(7, 2)


def _item(
    step: str,
    *,
    answer: str | None = None,
    previous: tuple[str, ...] = (),
    counts: dict[str, int] | None = None,
    query: str = "Solve 2x + 3 = 11",
) -> RewardInput:
    canon = canonical_answer(answer) if answer else None
    return RewardInput(
        query, find_problem(query), previous, step, answer, canon, False, counts or ({canon: 1} if canon else {}), 0.0
    )


def test_verifier_scores() -> None:
    v = VerifierScorer(RewardSettings())
    assert v.score(_item("Final answer: 4", answer="4")).value == 1.0  # type: ignore[union-attr]
    assert v.score(_item("Final answer: 3", answer="3")).value == 0.0  # type: ignore[union-attr]
    assert v.score(_item("11 - 3 = 8")).value == 0.6  # type: ignore[union-attr]
    assert v.score(_item("11 - 3 = 7")).value == 0.05  # type: ignore[union-attr]
    assert v.score(_item("Let us think.")) is None
    assert v.score(_item("Final answer: blue", answer="blue", query="Why is the sky blue?")) is None


def test_heuristic_rules() -> None:
    h = HeuristicScorer(RewardSettings())
    q = "Why is the sky blue?"
    assert h.score(_item("Light scatters off molecules.", query=q)).value == 0.5
    assert h.score(_item("ok", query=q)).value == pytest.approx(0.3)
    repeat = h.score(_item("Light scatters off molecules.", previous=("Light scatters off molecules.",), query=q))
    assert repeat.value == pytest.approx(0.2)
    alone = h.score(_item("Final answer: blue", answer="blue", query=q, counts={"blue": 1}))
    agreed = h.score(_item("Final answer: blue", answer="blue", query=q, counts={"blue": 3, "red": 1}))
    assert alone.value == pytest.approx(0.6) and agreed.value > alone.value


@pytest.mark.parametrize(
    ("reply", "value"),
    [("8", 0.8), ("Score: 7.5/10", 0.75), ("80/100", 0.8), ("0", 0.0), ("eleven", None), ("42", None)],
)
def test_judge_reply_parsing(reply: str, value: float | None) -> None:
    got = parse_judge_score(reply)
    assert got == (pytest.approx(value) if value is not None else None)


async def test_step_prompt_carries_previous_steps_strategy_and_emotion() -> None:
    completer = ScriptedCompleter(lambda msgs, purpose: "  next step  ")
    gen = CompleterStepGenerator(completer, temperature=0.7)
    req = StepRequest(
        "Solve 2x + 3 = 11",
        ("Subtract 3: 2x = 8.",),
        Strategy.ALGORITHMIC,
        2,
        2,
        StudentState(learning_state="anxious", readiness="low"),
        128,
        0,
        1e18,
    )
    step = await gen.generate(req)
    assert step.text == "next step"
    purpose, messages, max_tokens = completer.calls[0]
    assert purpose == "reasoning" and max_tokens == 128
    user = messages[-1][1]
    assert "Question: Solve 2x + 3 = 11" in user
    assert "1. Subtract 3: 2x = 8." in user
    assert "Strategy for this step: algorithmic" in user
    assert "anxious" in user and "Readiness to learn is low" in user
    assert "last step allowed" in user
    plain = step_messages("q", (), Strategy.CAUSAL, 1, 5, StudentState())[-1][1]
    assert "Steps so far: none yet." in plain and "student is" not in plain and "last step" not in plain


def test_an_answer_must_be_a_plain_number_not_the_question_restated() -> None:
    problem = find_problem("What is 6 + 5 * 4?")
    assert problem is not None
    assert problem.check("26") and problem.check("52/2") and problem.check("x = 26")
    assert not problem.check("6 + 5 * 4") and not problem.check("20 + 6")
    negative = find_problem("What is 4/9 - 7/8?")
    assert negative is not None and negative.check("-31/72") and negative.check("-0.43")


def test_percentages_are_checkable() -> None:
    problem = find_problem("What is 15% of 80?")
    assert problem is not None and problem.value == 12
    both = find_problem("What is 12.5% of 64 + 30% of 50?")
    assert both is not None and both.value == 23 and both.check("23")
