"""The shipped suites are valid, big enough, and every item's reference answer scores 100."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from services.benchmark.scoring import ItemScorer, Sandbox, SandboxLimits
from services.benchmark.suite import CATEGORY_NAMES, DEFAULT_SUITES_DIR, SuiteError, load_suites

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def test_every_category_has_a_versioned_suite_with_twenty_items() -> None:
    suites = load_suites()
    assert {s.name for s in suites.values()} == set(CATEGORY_NAMES.values())
    for suite in suites.values():
        assert len(suite.items) >= 20, suite.name
        assert suite.version.startswith("1.0+") and len(suite.version) == len("1.0+") + 8
        w = suite.weights
        assert abs(w.quality + w.speed + w.cost - 1.0) < 1e-9
    coding = next(s for s in suites.values() if s.name == "coding")
    assert (coding.weights.quality, coding.weights.speed, coding.weights.cost) == (0.5, 0.3, 0.2)
    kinds = {s.name: {item.spec.kind for item in s.items} for s in suites.values()}
    assert kinds["math"] == {"numeric"}
    assert "unit_tests" in kinds["coding"]
    assert kinds["empathy"] == {"rubric"}


def test_every_reference_answer_scores_full_marks() -> None:
    async def check() -> list[str]:
        sandbox = Sandbox(SandboxLimits(timeout_s=5.0, per_test_timeout_s=2.0))
        await sandbox.prepare()
        scorer = ItemScorer(sandbox)
        failures = []
        for suite in load_suites().values():
            scores = await asyncio.gather(*(scorer.score(i.spec, i.reference, i.prompt) for i in suite.items))
            failures += [
                f"{i.id}: {s.quality} {s.evidence}"
                for i, s in zip(suite.items, scores, strict=True)
                if s.quality != 100.0
            ]
        return failures

    assert asyncio.run(check()) == []


def _write_suites(tmp_path: Path, edit: dict[str, object] | None = None, drop: str = "") -> Path:
    for path in DEFAULT_SUITES_DIR.glob("*.yaml"):
        if path.stem == drop:
            continue
        data = yaml.load(path.read_text(), Loader=LOADER)
        if edit and path.stem == "math":
            data.update(edit)
        (tmp_path / path.name).write_text(yaml.dump(data, Dumper=DUMPER, allow_unicode=True))
    return tmp_path


@pytest.mark.parametrize(
    ("edit", "drop", "message"),
    [
        ({"weights": {"quality": 0.6, "speed": 0.6, "cost": 0.2}}, "", "sum to 1"),
        ({"weights": {"quality": 1.0}}, "", "exactly quality, speed and cost"),
        ({"version": ""}, "", "version is required"),
        ({"category": "poetry"}, "", "category must be one of"),
        (None, "empathy", "no suite for empathy"),
    ],
)
def test_broken_suite_directories_are_rejected(
    tmp_path: Path, edit: dict[str, object] | None, drop: str, message: str
) -> None:
    with pytest.raises(SuiteError, match=message):
        load_suites(_write_suites(tmp_path, edit, drop))


def test_too_few_items_duplicates_and_missing_references_are_rejected(tmp_path: Path) -> None:
    math = yaml.load((DEFAULT_SUITES_DIR / "math.yaml").read_text(), Loader=LOADER)
    with pytest.raises(SuiteError, match="at least 20 required"):
        load_suites(_write_suites(tmp_path, {"items": math["items"][:5]}))
    with pytest.raises(SuiteError, match="duplicated"):
        load_suites(_write_suites(tmp_path, {"items": [math["items"][0], *math["items"]]}))
    no_ref = [dict(math["items"][0], reference=""), *math["items"][1:]]
    with pytest.raises(SuiteError, match="reference answer is required"):
        load_suites(_write_suites(tmp_path, {"items": no_ref}))


def test_editing_a_suite_changes_its_reported_version(tmp_path: Path) -> None:
    math = yaml.load((DEFAULT_SUITES_DIR / "math.yaml").read_text(), Loader=LOADER)
    before = load_suites(_write_suites(tmp_path))
    math["items"][0]["prompt"] += " Please."
    after = load_suites(_write_suites(tmp_path, {"items": math["items"]}))
    key = next(k for k, s in before.items() if s.name == "math")
    assert before[key].version != after[key].version
    assert before[key].version.split("+")[0] == after[key].version.split("+")[0]
