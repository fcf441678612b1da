"""Final-answer extraction and numeric comparison for math items."""

from __future__ import annotations

import pytest

from services.benchmark.scoring.numeric import check_numeric, parse_expected, parse_numbers, shows_work
from services.benchmark.scoring.scorers import score_numeric
from services.benchmark.scoring.specs import NumericSpec


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("1/2 + 1/3 = 3/6 + 2/6 = 5/6.\n\nFinal answer: 5/6", [5 / 6]),
        ("**Final answer:** x = 5", [5]),
        ("The answer is $60.", [60]),
        ("Area = π × 9 ≈ 28.274 cm²\nFinal answer: 28.27 cm^2", [28.27]),
        ("Factor: (x-2)(x-3) = 0\nx = 2 or x = 3", [2, 3]),
        ("Final answer: x = 3 or x = 2", [2, 3]),
        ("So the probability is \\boxed{\\frac{1}{6}}", [1 / 6]),
        ("Final answer: 1,210 dollars", [1210]),
        ("Subtracting gives −4.", [-4]),
        ("Final answer: 1 1/2 cups", [1.5]),
        ("As a result, 3x = 15.\nSo x = 5", [5]),
        ("Speed = 180 / 2.5 = 72 km/h", [72]),
        ("Final answer: 1.5 × 10^3", [1500]),
        ("Final answer: 0.8333", [5 / 6]),
        ("Final answer: 20%", [20]),
    ],
)
def test_correct_final_answers_are_recognised(answer: str, expected: list[float]) -> None:
    assert check_numeric(answer, expected).correct


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Final answer: 7", [8]),
        ("I don't know how to do this one.", [3]),
        ("Final answer: 1001", [1000]),  # integers compare exactly
        ("x = 2 or x = 3 or x = 4", [2, 3]),  # hedging with an extra root is wrong
        ("Final answer: x = 2", [2, 3]),  # a missing root is wrong
        ("First I thought 5/6 but then 2/3 + 1/6.\nFinal answer: 1/2", [5 / 6]),  # the final answer counts
        ("Final answer: -5", [5]),
    ],
)
def test_wrong_or_missing_answers_are_rejected(answer: str, expected: list[float]) -> None:
    assert not check_numeric(answer, expected).correct


def test_explicit_tolerance_overrides_defaults() -> None:
    assert check_numeric("Final answer: 28.3", [28.27], abs_tol=0.05).correct
    assert not check_numeric("Final answer: 28.3", [28.27], abs_tol=0.011).correct


def test_number_parsing_details() -> None:
    assert parse_numbers("1,200 and 3.5e2 and .5") == [1200, 350, 0.5]
    assert parse_numbers("\\dfrac{3}{4}") == [0.75]
    assert parse_numbers("2 - 3") == [2, 3]  # subtraction, not a negative number
    assert parse_expected("3/4") == 0.75
    with pytest.raises(ValueError):
        parse_expected("three quarters")
    with pytest.raises(ValueError):
        parse_expected(True)


def test_missing_work_costs_points_only_when_required() -> None:
    spec = NumericSpec((7.0,), require_work=True)
    bare = score_numeric(spec, "Final answer: 7")
    worked = score_numeric(spec, "5x - 10 = 3x + 4\n2x = 14\nx = 14 / 2\nFinal answer: 7")
    assert bare.quality == 70.0 and any("no worked steps" in e for e in bare.evidence)
    assert worked.quality == 100.0
    assert shows_work("3 + 4 = 7\n7 × 2 = 14")
    assert score_numeric(NumericSpec((7.0,)), "Final answer: 7").quality == 100.0
    wrong = score_numeric(spec, "2x = 14\nx = 6\nFinal answer: 6")
    assert wrong.quality == 0.0 and "incorrect" in wrong.evidence
