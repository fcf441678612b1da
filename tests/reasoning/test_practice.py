"""Soroban skill analysis, mastery recency, costs, the bounded generator, planner and explanations."""

from __future__ import annotations

import itertools
import random
import time

import pytest
import yaml

from masterx_runtime.errors import FailedPrecondition, InvalidArgument
from services.reasoning.config import HERE
from services.reasoning.practice.explain import StepView, describe_skill, explain
from services.reasoning.practice.generator import Bounds, ProblemSpec, generate
from services.reasoning.practice.mastery import DAY, MasteryState, PracticeConfig, RecencyRules, SkillRecord, state_of
from services.reasoning.practice.planner import plan_session, purpose_sequence
from services.reasoning.practice.soroban import ALL_SKILLS, SKILL_SET, analyse, simulate

NOW = 1_750_000_000.0


@pytest.fixture(scope="module")
def cfg() -> PracticeConfig:
    return PracticeConfig.from_mapping(yaml.safe_load((HERE / "practice.yaml").read_text()))


def expert_records() -> list[SkillRecord]:
    """Mastered two months ago and practised yesterday: effortless."""
    return [SkillRecord(s, "mastered", NOW - DAY, NOW - 60 * DAY) for s in ALL_SKILLS]


@pytest.mark.parametrize(
    ("total", "term", "skills"),
    [
        (1, 3, ("basic.directAddition",)),
        (2, 5, ("basic.heavenBead",)),
        (3, 6, ("basic.simpleCombinations",)),
        (3, 4, ("fiveComplements.4=5-1",)),  # +4 = +5 - 1
        (4, 1, ("fiveComplements.1=5-4",)),
        (7, 9, ("tenComplements.9=10-1",)),  # +9 = +10 - 1
        (5, 9, ("tenComplements.9=10-1", "fiveComplementsSub.-1=-5+4")),  # the -1 on a 5 is a five complement
        (99, 1, ("tenComplements.1=10-9", "advanced.cascadingCarry")),
        (94, 6, ("tenComplements.6=10-4", "advanced.cascadingCarry")),
        (8, -2, ("basic.directSubtraction",)),
        (5, -2, ("fiveComplementsSub.-2=-5+3",)),  # -2 = -5 + 3
        (13, -4, ("tenComplementsSub.-4=+6-10",)),  # -4 = +6 - 10
        (100, -1, ("tenComplementsSub.-1=+9-10", "advanced.cascadingBorrow")),
        (50, -1, ("tenComplementsSub.-1=+9-10", "fiveComplementsSub.-1=-5+4")),
        (45, 55, ("basic.heavenBead", "tenComplements.5=10-5", "advanced.cascadingCarry")),
    ],
)
def test_soroban_moves(total: int, term: int, skills: tuple[str, ...]) -> None:
    assert analyse(total, term) == skills


def test_soroban_model_always_lands_on_the_sum() -> None:
    rng = random.Random(3)
    for _ in range(4000):
        total = rng.randrange(0, 10_000)
        term = rng.randrange(1, 1000) * (1 if rng.random() < 0.5 or total == 0 else -1)
        term = max(term, -total)
        if term == 0:
            continue
        assert simulate(total, term) == total + term
        assert set(analyse(total, term)) <= SKILL_SET
    with pytest.raises(ValueError):
        analyse(3, -4)


def test_mastery_recency_rules() -> None:
    rules = RecencyRules(rusty_after_days=14, effortless_after_days=30)
    assert state_of(None, NOW, rules) == MasteryState.LEARNING
    assert state_of(SkillRecord("s", "learning"), NOW, rules) == MasteryState.LEARNING
    assert state_of(SkillRecord("s", "practicing", NOW - 100 * DAY), NOW, rules) == MasteryState.PRACTICING
    # recently mastered -> fluent
    assert state_of(SkillRecord("s", "mastered", NOW - DAY, NOW - 5 * DAY), NOW, rules) == MasteryState.FLUENT
    # mastered long ago and practised recently -> effortless
    assert state_of(SkillRecord("s", "mastered", NOW - 2 * DAY, NOW - 40 * DAY), NOW, rules) == MasteryState.EFFORTLESS
    # not practised for over 14 days -> rusty (wins over long mastery)
    assert state_of(SkillRecord("s", "mastered", NOW - 15 * DAY, NOW - 400 * DAY), NOW, rules) == MasteryState.RUSTY
    assert state_of(SkillRecord("s", "mastered", NOW - 13 * DAY, NOW - 20 * DAY), NOW, rules) == MasteryState.FLUENT
    # unknown timestamps trigger neither rule
    assert state_of(SkillRecord("s", "mastered"), NOW, rules) == MasteryState.FLUENT


def test_costs_follow_base_cost_times_multiplier(cfg: PracticeConfig) -> None:
    learner = cfg.calculator([], NOW)
    fluent = cfg.calculator([SkillRecord("tenComplements.9=10-1", "mastered", NOW - DAY, NOW - 2 * DAY)], NOW)
    rusty = cfg.calculator([SkillRecord("tenComplements.9=10-1", "mastered", NOW - 20 * DAY, NOW - 90 * DAY)], NOW)
    expert = cfg.calculator(expert_records(), NOW)
    ten = ("tenComplements.9=10-1",)
    assert learner.term_cost(ten) == 8  # 2 x 4, as in seed 003
    assert expert.term_cost(ten) == 2  # 2 x 1
    assert fluent.term_cost(ten) == 4 and rusty.term_cost(ten) == 5
    assert learner.term_cost(("basic.directAddition",)) == 0
    assert learner.term_cost(("advanced.cascadingCarry", "fiveComplements.4=5-1")) == 3 * 4 + 1 * 4


SPECS = [
    ProblemSpec(terms=5, digits=1, bounds=Bounds(None, 3)),
    ProblemSpec(terms=5, digits=1, bounds=Bounds(1, None), allow_subtraction=True),
    ProblemSpec(terms=4, digits=1, bounds=Bounds(2, 6), allow_subtraction=True),
    ProblemSpec(terms=6, digits=2, bounds=Bounds(None, 4), allow_subtraction=True),
    ProblemSpec(terms=3, digits=2, bounds=Bounds(3, None)),
    ProblemSpec(terms=4, digits=3, bounds=Bounds(None, 6), allow_subtraction=True),
    ProblemSpec(
        terms=4,
        digits=1,
        bounds=Bounds(1, 4),
        allowed_skills=frozenset({"fiveComplements.4=5-1", "fiveComplementsSub.-4=-5+1"}),
        allow_subtraction=True,
    ),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"d{s.digits}-{s.bounds.describe()}")
@pytest.mark.parametrize("student", ["learner", "expert"])
def test_generated_terms_never_leave_the_bounds(cfg: PracticeConfig, spec: ProblemSpec, student: str) -> None:
    calc = cfg.calculator([] if student == "learner" else expert_records(), NOW)
    lo, hi = spec.bounds.min, spec.bounds.max
    for seed in range(60):
        s = ProblemSpec(**{**spec.__dict__, "seed": seed})
        problem = generate(s, calc, cfg)
        steps = problem.trace.steps
        assert len(problem.terms) == spec.terms and problem.answer == sum(problem.terms)
        assert steps[0].total_before == 0 and steps[0].cost == 0
        for before, after in itertools.pairwise(steps):
            assert after.total_before == before.total_after
        for step in steps[1:]:
            assert step.cost == calc.term_cost(step.skills)
            assert hi is None or step.cost <= hi
            assert lo is None or step.cost >= lo
            assert 0 < abs(step.term) < 10**spec.digits
            assert 0 <= step.total_after < 10 ** (spec.digits + cfg.extra_rods)
            assert spec.allow_subtraction or step.term > 0
            if spec.allowed_skills is not None:
                assert all(sk in spec.allowed_skills or sk.startswith("basic.") for sk in step.skills)
        assert problem.trace.total_cost == sum(s.cost for s in steps)


def test_the_same_seed_gives_the_same_problem(cfg: PracticeConfig) -> None:
    calc = cfg.calculator([], NOW)
    spec = ProblemSpec(terms=6, digits=2, bounds=Bounds(None, 8), allow_subtraction=True, seed=11)
    assert generate(spec, calc, cfg).terms == generate(spec, calc, cfg).terms
    assert generate(spec, calc, cfg).terms != generate(ProblemSpec(**{**spec.__dict__, "seed": 12}), calc, cfg).terms


def test_the_same_problem_costs_more_for_a_learner(cfg: PracticeConfig) -> None:
    learner = cfg.calculator([], NOW)
    expert = cfg.calculator(expert_records(), NOW)
    for seed in range(30):
        problem = generate(ProblemSpec(terms=5, bounds=Bounds(1, None), seed=seed, allow_subtraction=True), expert, cfg)
        skills = [s.skills for s in problem.trace.steps]
        assert sum(learner.term_cost(s) for s in skills) > sum(expert.term_cost(s) for s in skills) > 0
        # the trace explains each skill for this student
        ctx = {c.skill: c for c in problem.trace.skill_context}
        assert all(c.state == MasteryState.EFFORTLESS and c.effective_cost == c.base_cost for c in ctx.values())


@pytest.mark.parametrize(
    ("spec", "student"),
    [
        (ProblemSpec(bounds=Bounds(5, 2)), "learner"),  # min > max
        (ProblemSpec(bounds=Bounds(100, None)), "learner"),  # nothing costs that much
        (ProblemSpec(bounds=Bounds(13, 13)), "expert"),  # an expert's terms cost 0-6
        (ProblemSpec(bounds=Bounds(1, None), allowed_skills=frozenset()), "learner"),  # only direct moves allowed
        (ProblemSpec(digits=3, bounds=Bounds(500, None)), "learner"),
        (ProblemSpec(digits=2, bounds=Bounds(0.5, 0.9)), "expert"),  # costs are whole numbers for an expert
    ],
)
def test_impossible_bounds_fail_fast_with_a_clear_error(cfg: PracticeConfig, spec: ProblemSpec, student: str) -> None:
    calc = cfg.calculator([] if student == "learner" else expert_records(), NOW)
    started = time.perf_counter()
    with pytest.raises(FailedPrecondition) as info:
        generate(spec, calc, cfg)
    assert time.perf_counter() - started < 0.1
    assert "bounds" in info.value.message


def test_dead_ends_are_found_by_search_not_looped_on(cfg: PracticeConfig) -> None:
    """+4 and +3 as five complements fit the bounds once, but no chain of three exists."""
    spec = ProblemSpec(
        terms=4, bounds=Bounds(1, 4), allowed_skills=frozenset({"fiveComplements.4=5-1", "fiveComplements.3=5-2"})
    )
    started = time.perf_counter()
    with pytest.raises(FailedPrecondition, match="no 4-term problem fits"):
        generate(spec, cfg.calculator([], NOW), cfg)
    assert time.perf_counter() - started < 0.1


def test_hopeless_searches_give_up_after_a_bounded_effort(cfg: PracticeConfig) -> None:
    """3-digit terms have no exhaustive catalogue: the evaluation cap ends the search."""
    calc = cfg.calculator(expert_records(), NOW)
    started = time.perf_counter()
    with pytest.raises(FailedPrecondition) as info:
        generate(ProblemSpec(terms=12, digits=3, bounds=Bounds(9, 9)), calc, cfg)
    assert time.perf_counter() - started < 5
    assert "gave up after" in info.value.message


@pytest.mark.parametrize(
    "spec",
    [
        ProblemSpec(terms=1),
        ProblemSpec(terms=13),
        ProblemSpec(digits=4),
        ProblemSpec(bounds=Bounds(-1, None)),
        ProblemSpec(allowed_skills=frozenset({"tenComplements.11=10+1"})),
    ],
)
def test_bad_specs_are_invalid_arguments(cfg: PracticeConfig, spec: ProblemSpec) -> None:
    with pytest.raises(InvalidArgument):
        generate(spec, cfg.calculator([], NOW), cfg)


def test_purposes_are_spread_by_weight() -> None:
    seq = purpose_sequence({"focus": 0.5, "reinforce": 0.2, "review": 0.2, "challenge": 0.1}, 10)
    assert (
        seq.count("focus") == 5
        and seq.count("reinforce") == 2
        and seq.count("review") == 2
        and seq.count("challenge") == 1
    )
    assert "focus, focus, focus" not in ", ".join(seq)


def test_session_plan_follows_the_configured_bounds(cfg: PracticeConfig) -> None:
    calc = cfg.calculator([], NOW)
    slots = plan_session(calc, cfg, slots=9, part_types=["abacus", "visualization", "linear"], terms=4, seed=1)
    assert [s.part_type for s in slots] == ["abacus"] * 3 + ["visualization"] * 3 + ["linear"] * 3
    for s in slots:
        lo, hi = cfg.bounds[s.purpose][s.part_type]
        assert (s.bounds.min, s.bounds.max) == (lo, hi)
        for step in s.problem.trace.steps[1:]:
            assert hi is None or step.cost <= hi
            assert lo is None or step.cost >= lo
    assert {s.purpose for s in slots} >= {"focus", "reinforce", "review", "challenge"}


def test_explanations_read_like_the_trace(cfg: PracticeConfig) -> None:
    assert describe_skill("tenComplements.9=10-1") == "ten complement (+9 = +10 -1)"
    assert describe_skill("fiveComplementsSub.-4=-5+1") == "five complement (-4 = -5 +1)"
    assert describe_skill("tenComplementsSub.-9=+1-10") == "ten complement (-9 = +1 -10)"
    calc = cfg.calculator([], NOW)
    problem = generate(ProblemSpec(terms=4, bounds=Bounds(1, None), seed=3), calc, cfg)
    from services.reasoning.practice.explain import SkillNote

    notes = {
        c.skill: SkillNote(c.state.label, c.base_cost, c.multiplier, c.effective_cost)
        for c in problem.trace.skill_context
    }
    views = [StepView(s.term, s.total_before, s.total_after, s.skills, s.cost) for s in problem.trace.steps]
    lines = explain(
        views,
        Bounds(1, None),
        notes,
        purpose="challenge",
        part_type="abacus",
        rejected_over_max=0,
        rejected_under_min=4,
    )
    assert lines[0].startswith(f"Start with {problem.terms[0]}")
    assert len(lines) == 5 and all("within bounds" in line for line in lines[1:4])
    assert "learning: base" in lines[1]
    assert "every term is within bounds" in lines[-1] and "4 under the min" in lines[-1]
    over = explain(
        views, Bounds(None, 0), notes, purpose="focus", part_type="linear", rejected_over_max=0, rejected_under_min=0
    )
    assert "OVER the max of 0" in over[1] and "outside the bounds" in over[-1]
    with pytest.raises(InvalidArgument):
        explain([], Bounds(), {}, purpose="focus", part_type="abacus", rejected_over_max=0, rejected_under_min=0)
