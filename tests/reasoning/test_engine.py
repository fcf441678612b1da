"""MCTS engine properties with scripted step generators (pure algorithm; no network)."""

from __future__ import annotations

import asyncio
import time

import pytest

from masterx_runtime.errors import Unavailable
from services.reasoning.mcts.engine import (
    PathBy,
    ResultEvent,
    Search,
    SearchConfig,
    SearchResult,
    Selection,
    StepEvent,
    StrategyTables,
)
from services.reasoning.mcts.generator import GenerationError, StepRequest
from services.reasoning.mcts.prompts import StudentState
from services.reasoning.mcts.rewards import JudgeScorer, RewardMode, RewardModel, RewardSettings
from services.reasoning.mcts.strategies import Strategy
from tests.reasoning.scripted import ScriptedCompleter, ScriptedGenerator, run

EQUATION = "Solve 2x + 3 = 11 for x."
TABLES = StrategyTables(
    preferred={"equation": ("algorithmic", "deductive"), "general": ("deductive",)},
    priors={
        "equation": {
            "algorithmic": 0.3,
            "deductive": 0.3,
            "abductive": 0.1,
            "inductive": 0.1,
            "analogical": 0.1,
            "causal": 0.1,
        }
    },
)


def wrong_majority(req: StepRequest) -> str:
    """Two of three branches agree on a wrong answer; only the algorithmic branch is right."""
    if req.step_number == 1:
        return f"{req.strategy.label}: subtract 3 from both sides, 11 - 3 = 8, so 2x = 8."
    if req.strategy == Strategy.ALGORITHMIC:
        return "Divide by 2: 8 / 2 = 4.\nFinal answer: x = 4"
    return "So x must be 5.\nFinal answer: 5"


def model(mode: RewardMode = RewardMode.AUTO, judge: JudgeScorer | None = None) -> RewardModel:
    return RewardModel(mode, RewardSettings(), judge)


def wrong_majority_deep(req: StepRequest) -> str:
    """Like :func:`wrong_majority`, but the wrong branches take one more step: the tree is not
    exhausted quickly, so the search keeps revisiting its final answers."""
    if req.step_number == 1 or (req.step_number == 2 and req.strategy != Strategy.ALGORITHMIC):
        return f"{req.strategy.label}: subtract 3 from both sides, 11 - 3 = 8, so 2x = 8 ({req.step_number})."
    return wrong_majority(req)


async def test_verified_correct_answer_beats_a_wrong_majority() -> None:
    gen = ScriptedGenerator(wrong_majority_deep)
    cfg = SearchConfig(max_iterations=40, early_stop=False)
    _, res = await run(Search(EQUATION, gen, model(), cfg, seed=1, tables=TABLES))
    assert res.answer == "x = 4"
    assert res.path[-1].source == "verifier" and res.path[-1].reward == 1.0
    wrong = [n for n in res.nodes if n.canonical == "5"]
    assert wrong and all(n.reward == 0.0 for n in wrong)
    # more wrong final-answer nodes than right ones, yet the visits went to the verified answer
    assert len(wrong) > len([n for n in res.nodes if n.canonical == "4"])
    assert res.votes["4"] > res.votes["5"]
    assert res.confidence > 0.5
    assert res.stop_reason == "iterations"


async def test_wrong_answers_never_win_even_when_they_have_more_votes() -> None:
    gen = ScriptedGenerator(wrong_majority)  # shallow: the tree is exhausted after 4 iterations
    _, res = await run(
        Search(EQUATION, gen, model(), SearchConfig(max_iterations=40, early_stop=False), seed=1, tables=TABLES)
    )
    assert res.stop_reason == "exhausted"
    assert res.votes["5"] > res.votes["4"]
    assert res.answer == "x = 4"


async def test_verified_answer_stops_the_search_early() -> None:
    gen = ScriptedGenerator(wrong_majority)
    _, res = await run(Search(EQUATION, gen, model(), SearchConfig(max_iterations=50), seed=1, tables=TABLES))
    assert res.stop_reason == "early_stop"
    assert res.iterations < 10
    assert res.answer == "x = 4"


async def test_vote_share_early_stop_with_heuristic_rewards() -> None:
    gen = ScriptedGenerator(lambda r: "Light scatters. Final answer: Rayleigh scattering")
    cfg = SearchConfig(max_iterations=100, early_stop_share=0.8, min_votes=3)
    _, res = await run(Search("Why is the sky blue?", gen, model(RewardMode.HEURISTIC), cfg, seed=0))
    assert res.stop_reason == "early_stop"
    assert sum(res.votes.values()) >= 3
    assert res.answer == "Rayleigh scattering"


@pytest.mark.parametrize("iterations", [1, 5, 17])
async def test_iteration_limit_is_exact(iterations: int) -> None:
    gen = ScriptedGenerator(lambda r: f"thought {r.step_number} via {r.strategy.label} #{len(gen.requests)}")
    cfg = SearchConfig(max_iterations=iterations, max_depth=10, early_stop=False)
    _, res = await run(Search("Tell me about rivers", gen, model(RewardMode.HEURISTIC), cfg))
    assert res.iterations == iterations
    assert res.stop_reason == "iterations"
    assert len(gen.requests) == iterations * cfg.max_width  # every iteration expanded one leaf


async def test_depth_and_width_limits() -> None:
    gen = ScriptedGenerator(lambda r: f"step {r.step_number} ({r.strategy.label}) {len(gen.requests)}")
    cfg = SearchConfig(max_iterations=60, max_depth=3, max_width=2, early_stop=False)
    _, res = await run(Search("Tell me about rivers", gen, model(RewardMode.HEURISTIC), cfg))
    assert max(n.depth for n in res.nodes) == 3
    assert all(len(n.children) <= 2 for n in res.nodes)
    assert all(len(n.children) == 2 for n in res.nodes if n.expanded)
    assert max(r.step_number for r in gen.requests) == 3
    last = [r for r in gen.requests if r.step_number == 3]
    assert last and all(r.max_depth == 3 for r in last)
    # a tree of depth 3 and width 2 has 14 steps; then nothing is left to expand
    assert len(res.nodes) - 1 == 14 and res.stop_reason == "exhausted"


async def test_token_limit_is_never_exceeded() -> None:
    gen = ScriptedGenerator(lambda r: f"an idea {len(gen.requests)}", output_tokens=40)
    cfg = SearchConfig(max_iterations=100, max_depth=8, early_stop=False, max_tokens=500, step_max_tokens=40)
    _, res = await run(Search("Tell me about rivers", gen, model(RewardMode.HEURISTIC), cfg))
    assert res.stop_reason == "tokens"
    assert res.usage.output_tokens <= 500
    assert res.usage.output_tokens >= 500 - 40 * 3  # it used the budget, not stopped at once
    assert all(r.max_tokens <= 40 for r in gen.requests)


async def test_cost_limit_is_never_exceeded() -> None:
    gen = ScriptedGenerator(lambda r: f"an idea {len(gen.requests)}", cost=0.01)
    cfg = SearchConfig(max_iterations=100, max_depth=8, early_stop=False, max_cost_usd=0.05)
    _, res = await run(Search("Tell me about rivers", gen, model(RewardMode.HEURISTIC), cfg))
    assert res.stop_reason == "cost"
    assert res.usage.cost_usd <= 0.05 + 1e-9
    assert res.usage.calls == 5


async def test_wall_time_limit_cancels_in_flight_calls() -> None:
    gen = ScriptedGenerator(lambda r: "slow thought", latency=0.25)
    cfg = SearchConfig(max_iterations=100, early_stop=False, max_wall_ms=400)
    started = time.monotonic()
    _, res = await run(Search("Tell me about rivers", gen, model(RewardMode.HEURISTIC), cfg))
    elapsed = time.monotonic() - started
    assert res.stop_reason == "wall_time"
    assert elapsed < 0.4 + 0.2
    assert gen.cancelled >= 1 and gen.in_flight == 0
    assert res.path  # the first round finished in time and is reported


async def test_external_deadline_is_reported_as_deadline() -> None:
    gen = ScriptedGenerator(lambda r: "slow thought", latency=0.2)
    cfg = SearchConfig(max_iterations=100, early_stop=False, max_wall_ms=10_000)
    search = Search("Tell me about rivers", gen, model(RewardMode.HEURISTIC), cfg, deadline=time.monotonic() + 0.3)
    _, res = await run(search)
    assert res.stop_reason == "deadline"


async def test_same_seed_same_tree_despite_random_latencies() -> None:
    def tree(res: SearchResult) -> list[tuple[object, ...]]:
        return [
            (n.index, n.parent.index if n.parent else None, n.strategy, n.text, n.visits, round(n.value, 9))
            for n in res.nodes
        ]

    def script(r: StepRequest) -> str:
        return f"{r.strategy.label} after {len(r.previous)}: " + (
            "Final answer: 4" if len(r.previous) == 2 else "2x = 8"
        )

    cfg = SearchConfig(max_iterations=30, parallelism=9, early_stop=False)
    runs = []
    for jitter_seed in (1, 2, 3):
        gen = ScriptedGenerator(script, latency=0.001, jitter=0.01, jitter_seed=jitter_seed)
        _, res = await run(Search(EQUATION, gen, model(), cfg, seed=42, tables=TABLES))
        runs.append(tree(res))
    assert runs[0] == runs[1] == runs[2]
    gen = ScriptedGenerator(script)
    _, other = await run(Search(EQUATION, gen, model(), cfg, seed=43, tables=TABLES))
    assert tree(other) != runs[0]


async def test_parallel_expansion_is_bounded_and_used() -> None:
    gen = ScriptedGenerator(lambda r: f"thought {len(gen.requests)}", latency=0.02)
    cfg = SearchConfig(max_iterations=12, max_depth=6, parallelism=6, early_stop=False)
    started = time.monotonic()
    _, res = await run(Search("Tell me about rivers", gen, model(RewardMode.HEURISTIC), cfg))
    elapsed = time.monotonic() - started
    assert gen.max_in_flight == 6
    assert res.iterations == 12
    # 36 calls of 20 ms at 6 at a time take ~6 rounds, far less than 36 x 20 ms in sequence
    assert elapsed < 36 * 0.02 / 2


async def test_cancelling_the_consumer_cancels_in_flight_generation() -> None:
    gen = ScriptedGenerator(lambda r: "thought", latency=5.0)
    search = Search("Tell me about rivers", gen, model(RewardMode.HEURISTIC), SearchConfig(max_iterations=10))

    async def consume() -> None:
        async for _ in search.run():
            pass

    task = asyncio.ensure_future(consume())
    for _ in range(3):
        await gen.started.acquire()
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 0.5
    assert gen.in_flight == 0 and gen.cancelled == 3 and gen.completed == 0


async def test_steps_stream_before_the_result_and_cover_the_final_path() -> None:
    gen = ScriptedGenerator(wrong_majority)
    events = [
        e async for e in Search(EQUATION, gen, model(), SearchConfig(max_iterations=20), seed=5, tables=TABLES).run()
    ]
    assert isinstance(events[-1], ResultEvent)
    steps = [e for e in events[:-1] if isinstance(e, StepEvent)]
    assert len(steps) == len(events) - 1 and steps
    ids = [s.node.index for s in steps]
    assert len(ids) == len(set(ids))  # each node is streamed once
    final = events[-1].result
    assert {n.index for n in final.path} <= set(ids)
    for s in steps:  # a step is streamed after its parent
        parent = s.node.parent
        assert parent is not None and (parent.parent is None or ids.index(parent.index) < ids.index(s.node.index))


async def test_strategies_prompts_and_student_state_reach_the_generator() -> None:
    gen = ScriptedGenerator(wrong_majority)
    student = StudentState(learning_state="frustrated", readiness="low")
    cfg = SearchConfig(max_iterations=3, max_width=3, early_stop=False)
    await run(Search(EQUATION, gen, model(), cfg, seed=7, student=student, tables=TABLES))
    first = gen.requests[:3]
    assert [r.strategy for r in first][:2] == [Strategy.ALGORITHMIC, Strategy.DEDUCTIVE]
    assert len({r.strategy for r in first}) == 3
    assert all(r.student == student for r in gen.requests)
    deeper = [r for r in gen.requests if r.step_number == 2]
    assert deeper and all(len(r.previous) == 1 and r.previous[0].endswith("2x = 8.") for r in deeper)


async def test_width_above_six_repeats_strategies_as_variants() -> None:
    gen = ScriptedGenerator(lambda r: f"{r.strategy.label}-{r.variant}")
    await run(
        Search("Tell me about rivers", gen, model(RewardMode.HEURISTIC), SearchConfig(max_iterations=1, max_width=8))
    )
    pairs = {(r.strategy, r.variant) for r in gen.requests}
    assert len(pairs) == 8 and {v for _, v in pairs} == {0, 1}


async def test_priors_make_auto_selection_puct() -> None:
    gen = ScriptedGenerator(wrong_majority)
    _, res = await run(Search(EQUATION, gen, model(), SearchConfig(max_iterations=1), tables=TABLES))
    kids = res.nodes[0].children
    assert abs(sum(k.prior for k in kids) - 1.0) < 1e-9
    assert kids[0].prior > kids[2].prior  # algorithmic (0.3) over abductive (0.1)
    _, plain = await run(
        Search(
            "Tell me about rivers",
            ScriptedGenerator(lambda r: "x y z"),
            model(RewardMode.HEURISTIC),
            SearchConfig(max_iterations=1),
            tables=TABLES,
        )
    )
    assert all(k.prior == 0.0 for k in plain.nodes[0].children)  # no priors for "general": UCB1


async def test_ucb1_explores_and_puct_follows_priors() -> None:
    """Same scripted answers: UCB1 spreads visits, PUCT with a strong prior concentrates them."""

    def script(r: StepRequest) -> str:
        return f"{r.strategy.label} {r.step_number} {len(gen.requests)}"

    cfg_u = SearchConfig(max_iterations=30, max_depth=6, early_stop=False, selection=Selection.UCB1)
    gen = ScriptedGenerator(script)
    _, ucb = await run(Search("Tell me about rivers", gen, model(RewardMode.HEURISTIC), cfg_u))
    skew = StrategyTables(
        preferred={"general": ("deductive", "causal", "inductive")},
        priors={"general": {"deductive": 0.9, "causal": 0.05, "inductive": 0.05}},
    )
    gen = ScriptedGenerator(script)
    cfg_p = SearchConfig(max_iterations=30, max_depth=6, early_stop=False, selection=Selection.PUCT)
    _, puct = await run(Search("Tell me about rivers", gen, model(RewardMode.HEURISTIC), cfg_p, tables=skew))
    ucb_visits = sorted(k.visits for k in ucb.nodes[0].children)
    puct_visits = {k.strategy: k.visits for k in puct.nodes[0].children}
    assert puct_visits[Strategy.DEDUCTIVE] > 2 * max(v for s, v in puct_visits.items() if s != Strategy.DEDUCTIVE)
    assert ucb_visits[-1] < 2 * ucb_visits[0] + 3


async def test_best_path_by_value_versus_visits() -> None:
    gen = ScriptedGenerator(wrong_majority)
    cfg = SearchConfig(max_iterations=25, early_stop=False, best_by=PathBy.VALUE)
    _, res = await run(Search(EQUATION, gen, model(), cfg, seed=1, tables=TABLES))
    assert res.answer == "x = 4" and res.path[-1].value == 1.0


async def test_failed_root_generation_raises_the_router_error() -> None:
    def fail(r: StepRequest) -> bool:
        return True

    class Gen(ScriptedGenerator):
        async def generate(self, request: StepRequest):  # type: ignore[no-untyped-def]
            raise GenerationError("router down", Unavailable("router unavailable", dependency="router"))

    with pytest.raises(Unavailable):
        await run(Search("Tell me about rivers", Gen(lambda r: ""), model(RewardMode.HEURISTIC), SearchConfig()))


async def test_partial_failures_are_counted_and_skipped() -> None:
    gen = ScriptedGenerator(lambda r: f"thought {len(gen.requests)}", fail=lambda r: r.strategy == Strategy.CAUSAL)
    cfg = SearchConfig(max_iterations=10, max_depth=6, early_stop=False, max_width=6)
    _, res = await run(Search("Tell me about rivers", gen, model(RewardMode.HEURISTIC), cfg))
    assert res.usage.failed_calls == 10
    assert all(n.strategy != Strategy.CAUSAL for n in res.nodes[1:])
    assert res.iterations == 10


async def test_judge_scores_uncheckable_steps_through_the_completer() -> None:
    completer = ScriptedCompleter(lambda msgs, purpose: "7" if "Final answer" in msgs[-1][1] else "3/10")
    judge = JudgeScorer(completer, RewardSettings())
    gen = ScriptedGenerator(lambda r: "Light scatters." if r.step_number == 1 else "Final answer: scattering")
    cfg = SearchConfig(max_iterations=2, early_stop=False)
    _, res = await run(Search("Why is the sky blue?", gen, model(RewardMode.AUTO, judge), cfg))
    first = res.nodes[1]
    assert first.source == "judge" and first.reward == pytest.approx(0.3)
    finals = [n for n in res.nodes if n.answer]
    assert finals and all(n.source == "judge" and n.reward == pytest.approx(0.7) for n in finals)
    assert {p for p, _, _ in completer.calls} == {"judge"}
    assert res.usage.calls == len(gen.requests) + len(completer.calls)


async def test_verifier_takes_precedence_over_the_judge() -> None:
    completer = ScriptedCompleter(lambda msgs, purpose: "10")
    judge = JudgeScorer(completer, RewardSettings())
    gen = ScriptedGenerator(lambda r: "Final answer: 5")
    _, res = await run(Search(EQUATION, gen, model(RewardMode.AUTO, judge), SearchConfig(max_iterations=1)))
    assert all(n.source == "verifier" and n.reward == 0.0 for n in res.nodes[1:])
    assert completer.calls == []
    assert res.answer == "" or res.confidence == 0.0
