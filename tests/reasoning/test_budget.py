"""Complexity estimator (features, fit, shipped model) and the token budget allocator."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml

from masterx_runtime.errors import InvalidArgument
from services.reasoning.budget import fit as fit_script
from services.reasoning.budget.allocator import DEFAULT_FACTORS, BudgetAllocator, BudgetRequest
from services.reasoning.budget.estimator import DEFAULT_DATA, DEFAULT_MODEL, ComplexityEstimator, load_labels
from services.reasoning.budget.features import FEATURE_NAMES, extract


@pytest.fixture(scope="module")
def allocator() -> BudgetAllocator:
    return BudgetAllocator.from_files()


def test_features_measure_what_they_name() -> None:
    f = dict(zip(FEATURE_NAMES, extract("Prove that 2x + 3 = 11 has one solution, then explain why."), strict=True))
    assert f["equation"] == 1.0 and f["arithmetic"] == 0.0
    assert f["proof_cue"] >= 1 and f["explain_cue"] >= 1 and f["multi_step_cues"] > 0
    code = dict(
        zip(FEATURE_NAMES, extract("Why does my python function return None?\n```def f(x): return```"), strict=True)
    )
    assert code["code_cues"] > 0 and code["code_syntax"] > 0
    hi = dict(zip(FEATURE_NAMES, extract("hi"), strict=True))
    assert hi["small_talk"] == 1.0 and hi["log_numbers"] == 0.0


def test_fit_learns_a_monotone_signal_and_round_trips(tmp_path: Path) -> None:
    texts = [("word " * n).strip() for n in range(1, 41)]
    labels = [min(1.0, n / 40) for n in range(1, 41)]
    est = ComplexityEstimator(l2=0.1).fit(texts, labels)
    preds = [est.predict(t) for t in texts]
    assert preds == sorted(preds) and preds[0] < 0.2 and preds[-1] > 0.8
    est.save(tmp_path / "m.json")
    again = ComplexityEstimator.load(tmp_path / "m.json")
    assert again.predict("word word word") == pytest.approx(est.predict("word word word"), abs=1e-6)
    with pytest.raises(ValueError):
        ComplexityEstimator().fit(["a", "b"], [0.1, 0.2])
    with pytest.raises(ValueError):
        ComplexityEstimator().fit(texts[:5], [0.1, 0.2, 0.3, 0.4, 1.5])


def test_shipped_model_is_the_fit_of_the_shipped_data() -> None:
    shipped = json.loads(DEFAULT_MODEL.read_text())
    texts, labels = load_labels(DEFAULT_DATA)
    assert len(texts) >= 150 and all(0 <= y <= 1 for y in labels)
    refit = ComplexityEstimator(shipped["l2"]).fit(texts, labels)
    assert np.allclose(refit.weights, shipped["weights"], atol=1e-5)
    assert shipped["metrics"]["cv_spearman"] > 0.8 and shipped["metrics"]["cv_mae"] < 0.15


def test_shipped_model_ranks_unseen_queries_sensibly() -> None:
    est = ComplexityEstimator.load()
    ladder = [
        "hello there",
        "What is 6 + 9?",
        "Solve 4x - 2 = 10",
        "A bus carries 40 people. At the first stop 12 get off and 7 get on, then half of the rest leave. How many are on the bus?",
        "Prove that the product of two odd integers is odd, and explain why the same argument fails for sums.",
    ]
    preds = [est.predict(q) for q in ladder]
    assert preds == sorted(preds), preds


def test_fit_script_writes_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.json"
    assert fit_script.main(["--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["features"] == list(FEATURE_NAMES) and "cv_mae" in data["metrics"]
    assert "CV Spearman" in capsys.readouterr().out


def test_easy_question_gets_no_reasoning_and_a_short_answer(allocator: BudgetAllocator) -> None:
    b = allocator.allocate(BudgetRequest("hi there"))
    assert b.reasoning_tokens == 0 and not b.recommend_deep_thinking
    assert b.answer_tokens < 200
    assert [f.name for f in b.factors][:3] == ["complexity", "reasoning:base", "answer:base"]
    assert all(f.detail for f in b.factors)


def test_hard_question_gets_reasoning_and_deep_thinking(allocator: BudgetAllocator) -> None:
    q = "Prove that every bounded monotone sequence converges, then use it to show that (1 + 1/n)^n converges. Justify each step."
    b = allocator.allocate(BudgetRequest(q))
    assert b.complexity >= 0.65 and b.recommend_deep_thinking
    assert b.reasoning_tokens > 1000 and b.answer_tokens > 500
    assert b.factors[-1].name == "deep_thinking"


def test_frustrated_and_anxious_students_get_shorter_answers(allocator: BudgetAllocator) -> None:
    q = "A shirt costs $40. It is discounted by 25%, then a 10% tax is added. What is the final price?"
    neutral = allocator.allocate(BudgetRequest(q, learning_state="neutral"))
    frustrated = allocator.allocate(BudgetRequest(q, learning_state="frustrated"))
    anxious = allocator.allocate(BudgetRequest(q, primary_emotion="nervousness"))  # mapped to anxious
    assert frustrated.answer_tokens < neutral.answer_tokens * 0.7
    assert anxious.answer_tokens < neutral.answer_tokens
    assert any(f.name == "emotion:frustrated" and "gentler" in f.detail for f in frustrated.factors)
    assert any(f.name == "emotion:anxious" and "nervousness" in f.detail for f in anxious.factors)


def test_cognitive_load_and_readiness_scale_the_budget(allocator: BudgetAllocator) -> None:
    q = "Explain how vaccines train the immune system, step by step."
    low = allocator.allocate(BudgetRequest(q, cognitive_load=0.1))
    high = allocator.allocate(BudgetRequest(q, cognitive_load=0.95))
    assert high.answer_tokens < low.answer_tokens
    ready = allocator.allocate(BudgetRequest(q, readiness="optimal"))
    not_ready = allocator.allocate(BudgetRequest(q, readiness="not_ready"))
    assert not_ready.answer_tokens < ready.answer_tokens
    assert any(f.name == "readiness:not_ready" for f in not_ready.factors)
    assert any(f.name == "cognitive_load" for f in high.factors)


def test_provider_limits_are_respected(allocator: BudgetAllocator) -> None:
    q = "Prove that the eigenvalues of a real symmetric matrix are real. Derive every step."
    b = allocator.allocate(BudgetRequest(q, context_window=2048, max_output_tokens=300, prompt_tokens=1000))
    assert b.answer_tokens <= 300
    assert b.reasoning_tokens + b.answer_tokens <= 2048 - 1000 - 64
    names = [f.name for f in b.factors]
    assert "provider:max_output_tokens" in names and "provider:context_window" in names


@pytest.mark.parametrize(
    "req",
    [
        BudgetRequest(""),
        BudgetRequest("hi", prompt_tokens=8150),
        BudgetRequest("hi", cognitive_load=1.5),
        BudgetRequest("hi", context_window=-1),
        BudgetRequest("hi", readiness="sleepy"),
    ],
)
def test_bad_requests_are_invalid_arguments(allocator: BudgetAllocator, req: BudgetRequest) -> None:
    with pytest.raises(InvalidArgument):
        allocator.allocate(req)


def test_budgets_cut_output_tokens_at_least_in_half_against_the_provider_default(allocator: BudgetAllocator) -> None:
    """TALE/SelfBudgeter anchor: sizing answers to the question, not the provider maximum."""
    texts, _ = load_labels(DEFAULT_DATA)
    answers = [allocator.allocate(BudgetRequest(t)).answer_tokens for t in texts]
    default_max = yaml.safe_load(DEFAULT_FACTORS.read_text())["limits"]["default_max_output_tokens"]
    assert statistics.mean(answers) <= default_max / 2
    assert max(answers) <= default_max / 2
