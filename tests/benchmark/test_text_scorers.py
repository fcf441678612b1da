"""Keyword, rubric and judge-reply scoring, and code extraction from answers."""

from __future__ import annotations

import pytest

from services.benchmark.scoring.code import extract_code
from services.benchmark.scoring.scorers import parse_judge_reply, score_keywords, score_rubric_patterns
from services.benchmark.scoring.specs import KeywordSpec, SpecError, parse_spec
from services.benchmark.scoring.text import Group, fold
from services.benchmark.suite import CATEGORY_BY_NAME, load_suites


def test_fold_is_accent_and_quote_insensitive() -> None:
    assert fold("Où est la  Bibliothèque ?") == "ou est la bibliotheque ?"
    assert fold("They’re") == "they're"


def test_keywords_required_forbidden_and_length() -> None:
    spec = KeywordSpec(
        required=(Group(("carbon dioxide", "co2")), Group(("oxygen",))),
        forbidden=("re:food from the soil",),
        min_words=5,
        max_words=40,
    )
    full = score_keywords(spec, "Plants take in CO₂ and water and release oxygen using light.")
    assert full.quality == 100.0 and full.scorer == "keywords"
    half = score_keywords(spec, "Plants take in CO2 and water and make sugar from light.")
    assert half.quality == 50.0 and any("missing [oxygen]" in e for e in half.evidence)
    wrong = score_keywords(spec, "Plants get food from the soil, take in CO2 and release oxygen.")
    assert wrong.quality == 50.0 and any("forbidden" in e for e in wrong.evidence)
    short = score_keywords(spec, "CO2 oxygen")
    assert short.quality == 75.0 and any("too short" in e for e in short.evidence)


def test_literal_patterns_match_whole_words_only() -> None:
    spec = KeywordSpec(required=(Group(("au",)),))
    assert score_keywords(spec, "Gold is Au.").quality == 100.0
    assert score_keywords(spec, "I don't know, because it is hard.").quality == 0.0


def test_group_minimum_counts_distinct_alternatives() -> None:
    spec = KeywordSpec(required=(Group(("content", "joyful", "elated", "pleased"), minimum=3),))
    assert score_keywords(spec, "content, joyful and elated").quality == 100.0
    assert score_keywords(spec, "content and joyful").quality == 0.0


@pytest.fixture(scope="module")
def empathy_item_spec():  # type: ignore[no-untyped-def]
    suite = load_suites()[CATEGORY_BY_NAME["empathy"]]
    return suite.item("emp-algebra-silly-mistakes").spec


def test_rubric_prefers_supportive_answers(empathy_item_spec) -> None:  # type: ignore[no-untyped-def]
    supportive = (
        "That sounds frustrating, and small slips in algebra happen to everyone. Let's go through one "
        "equation together: can you show me the last problem where a sign went wrong?"
    )
    blaming = (
        "You should have checked your work. Algebra is easy if you pay attention, so obviously these "
        "mistakes are careless. Do the exercises again until you stop making them and you will be fine."
    )
    good = score_rubric_patterns(empathy_item_spec, supportive)
    bad = score_rubric_patterns(empathy_item_spec, blaming)
    assert good.quality == 100.0, good.evidence
    assert bad.quality < 40.0, bad.evidence
    assert any(e.startswith("no_blame: not met") for e in bad.evidence)
    assert any(e.startswith("acknowledges_feeling: not met") for e in bad.evidence)


def test_judge_reply_parsing(empathy_item_spec) -> None:  # type: ignore[no-untyped-def]
    names = [c.name for c in empathy_item_spec.criteria]
    reply = "Sure! " + '{"criteria": {' + ", ".join(f'"{n}": true' for n in names) + '}, "reason": "kind"}'
    assert parse_judge_reply(empathy_item_spec, reply) == dict.fromkeys(names, True)
    mixed = '{"criteria": {' + ", ".join(f'"{n}": {{"met": "no"}}' for n in names) + "}}"
    assert parse_judge_reply(empathy_item_spec, mixed) == dict.fromkeys(names, False)
    assert parse_judge_reply(empathy_item_spec, "I think it is a good answer.") is None
    partial = '{"criteria": {"' + names[0] + '": true}}'
    assert parse_judge_reply(empathy_item_spec, partial) is None


def test_code_extraction_prefers_the_last_block_defining_the_function() -> None:
    answer = (
        "Your version:\n```python\ndef average(nums):\n    return sum(nums) / len(nums)\n```\n"
        "Output:\n```text\nZeroDivisionError\n```\nFixed:\n```py\ndef average(nums):\n    return 0.0 if not nums else sum(nums) / len(nums)\n```\n"
    )
    code, how = extract_code(answer, "average")
    assert "0.0 if not nums" in code and "block 2 of 2" in how
    bare = "def add(a, b):\n    return a + b\n"
    assert extract_code(bare, "add") == (bare, "whole answer is Python")
    assert extract_code("Use a loop and add the numbers.", "add") == ("", "no code block found")


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"type": "numeric"}, "needs answer or answers"),
        ({"type": "numeric", "answer": "lots"}, "not a single number"),
        ({"type": "unit_tests", "entry_point": "f", "tests": ["assert f( == 1"]}, "does not compile"),
        ({"type": "unit_tests", "entry_point": "not an id", "tests": ["assert 1"]}, "entry_point"),
        ({"type": "keywords"}, "required or forbidden"),
        ({"type": "keywords", "required": [["re:("]]}, "bad pattern"),
        ({"type": "keywords", "required": ["x"], "min_words": 10, "max_words": 5}, "min_words"),
        ({"type": "rubric"}, "needs a rubric block"),
        ({"type": "essay"}, "unknown scoring type"),
    ],
)
def test_invalid_scoring_blocks_are_rejected_with_the_item_named(block: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        parse_spec(block, "math.yaml: item-7")
    assert "item-7" in str(info.value)
