"""Progressive widening: a search whose children all failed keeps sampling, within every limit."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.reasoning.mcts.engine import Search, SearchConfig, SearchResult
from services.reasoning.mcts.generator import StepRequest
from services.reasoning.mcts.prompts import StudentState, step_messages
from services.reasoning.mcts.rewards import RewardMode, RewardModel, RewardSettings
from tests.reasoning.scripted import ScriptedGenerator, run

ISSUE = "What is 12 + 7 * 3?"  # = 33; the embedded model's first three answers were 37, 20, 21


def verifier() -> RewardModel:
    return RewardModel(RewardMode.AUTO, RewardSettings())


def answers_in_order(*answers: str) -> ScriptedGenerator:
    """The n-th call answers ``answers[n]`` (the last one repeats)."""
    gen: ScriptedGenerator

    def script(r: StepRequest) -> str:
        n = len(gen.requests) - 1
        return f"Compute it. Final answer: {answers[min(n, len(answers) - 1)]}"

    gen = ScriptedGenerator(script)
    return gen


def always_new_wrong() -> ScriptedGenerator:
    """Every call a different wrong final answer (never merged, never right)."""
    gen: ScriptedGenerator

    def script(r: StepRequest) -> str:
        return f"Final answer: {100 + len(gen.requests)}"

    gen = ScriptedGenerator(script)
    return gen


async def test_the_issue_search_keeps_widening_until_a_later_sample_is_right() -> None:
    gen = answers_in_order("37", "20", "21", "34", "40", "36", "33")
    cfg = SearchConfig(max_iterations=16, max_width=3, parallelism=3, max_widenings=4)
    steps, res = await run(Search(ISSUE, gen, verifier(), cfg, seed=3))
    assert res.answer == "33" and res.confidence == 1.0
    assert res.stop_reason == "early_stop"
    assert res.widenings == 2 and res.iterations == 3
    assert len(gen.requests) == 9  # three rounds of three samples; the 7th sample was right
    assert res.path[-1].source == "verifier" and res.path[-1].depth == 1
    assert res.path[-1].index in {s.node.index for s in steps}  # streamed
    # each retry: the next strategies, a hotter temperature, the rejected answers in the prompt
    first, second, third = gen.requests[:3], gen.requests[3:6], gen.requests[6:]
    assert [r.attempt for r in gen.requests] == [0] * 3 + [1] * 3 + [2] * 3
    assert all(r.temperature is None for r in first)
    assert [r.temperature for r in second] == pytest.approx([0.9] * 3)
    assert [r.temperature for r in third] == pytest.approx([1.1] * 3)
    assert len({r.strategy for r in first + second}) == 6  # six strategies before any repeats
    assert set(second[0].rejected) == {"37", "20", "21"}
    assert set(third[0].rejected) == {"37", "20", "21", "34", "40", "36"}
    prompt = step_messages(ISSUE, (), second[0].strategy, 1, 5, StudentState(), rejected=second[0].rejected)
    assert "already checked here and are wrong: 37; 20; 21" in prompt[-1][1]


async def test_without_widening_the_issue_search_is_exhausted_after_one_iteration() -> None:
    gen = answers_in_order("37", "20", "21", "33")
    cfg = SearchConfig(max_iterations=16, max_width=3, parallelism=3, max_widenings=0)
    _, res = await run(Search(ISSUE, gen, verifier(), cfg, seed=3))
    assert res.stop_reason == "exhausted" and res.iterations == 1 and res.answer == ""


async def test_identical_answers_are_merged_and_the_tree_is_exhausted_when_nothing_can_widen() -> None:
    gen = ScriptedGenerator(lambda r: "I think so. Final answer: 37")
    cfg = SearchConfig(max_iterations=50, max_width=3, parallelism=3, max_widenings=3)
    _, res = await run(Search(ISSUE, gen, verifier(), cfg, seed=1))
    assert res.stop_reason == "exhausted"
    assert res.widenings == 3 and res.iterations == 4
    assert len(res.nodes) - 1 == 3  # the first expansion's three; every retry sample was merged
    assert res.merged == 9
    assert res.votes["37"] == 12  # every sample is a vote
    assert res.answer == "" and res.confidence == 0.0


async def test_a_dead_end_subtree_is_widened_from_its_parent_and_then_from_the_root() -> None:
    """Depth 2: step 1 is intermediate; under it every final answer is wrong until widening
    runs out, then the root is widened and a new line of thought reaches the right answer."""
    calls: list[StepRequest] = []

    def script(r: StepRequest) -> str:
        calls.append(r)
        if r.step_number == 1:
            line = sum(1 for c in calls if c.step_number == 1)
            return f"Line {line}: multiply first, 7 * 3 = 21."
        if r.previous[0].startswith("Line 4"):
            return "Then 12 + 21 = 33. Final answer: 33"
        return f"Final answer: {200 + len(calls)}"

    gen = ScriptedGenerator(script)
    cfg = SearchConfig(max_iterations=40, max_depth=2, max_width=3, parallelism=3, max_widenings=2)
    _, res = await run(Search(ISSUE, gen, verifier(), cfg, seed=0))
    assert res.answer == "33" and res.stop_reason == "early_stop"
    root = res.nodes[0]
    assert root.widenings == 1 and len(root.children) == 6
    exhausted_lines = [k for k in root.children[:3]]
    assert all(k.closed and k.widenings == 2 and len(k.children) == 9 for k in exhausted_lines)


async def test_same_seed_same_tree_with_widening_despite_random_latencies() -> None:
    def tree(res: SearchResult) -> list[tuple[object, ...]]:
        return [(n.index, n.parent.index if n.parent else None, n.strategy, n.text, n.visits) for n in res.nodes]

    def script(r: StepRequest) -> str:
        wrong = 40 + 3 * r.attempt + int(r.strategy)
        return f"{r.strategy.label} try {r.attempt}. Final answer: {33 if r.attempt == 3 else wrong}"

    runs = []
    for jitter_seed in (1, 2):
        gen = ScriptedGenerator(script, latency=0.001, jitter=0.01, jitter_seed=jitter_seed)
        cfg = SearchConfig(max_iterations=20, max_width=3, parallelism=6, max_widenings=4)
        _, res = await run(Search(ISSUE, gen, verifier(), cfg, seed=9))
        runs.append(tree(res))
        assert res.answer == "33"
    assert runs[0] == runs[1]


# --- every limit still holds (and is reported) while widening --------------------------------


async def test_widening_stops_at_the_iteration_limit() -> None:
    gen = always_new_wrong()
    cfg = SearchConfig(max_iterations=5, max_width=2, parallelism=2, max_widenings=100)
    _, res = await run(Search(ISSUE, gen, verifier(), cfg))
    assert res.stop_reason == "iterations" and res.iterations == 5 and res.widenings == 4
    assert len(gen.requests) == 10


async def test_widening_stops_at_the_token_limit() -> None:
    gen = always_new_wrong()
    gen.output_tokens = 16
    cfg = SearchConfig(
        max_iterations=100, max_width=2, parallelism=2, max_widenings=100, max_tokens=100, step_max_tokens=16
    )
    _, res = await run(Search(ISSUE, gen, verifier(), cfg))
    assert res.stop_reason == "tokens"
    assert 100 - 16 < res.usage.output_tokens <= 100


async def test_widening_stops_at_the_cost_limit() -> None:
    gen = always_new_wrong()
    gen.cost = 0.01
    cfg = SearchConfig(max_iterations=100, max_width=2, parallelism=2, max_widenings=100, max_cost_usd=0.05)
    _, res = await run(Search(ISSUE, gen, verifier(), cfg))
    assert res.stop_reason == "cost"
    assert res.usage.cost_usd <= 0.05 + 1e-9 and res.usage.calls >= 4


async def test_widening_stops_at_the_wall_time_limit_and_the_deadline() -> None:
    gen = always_new_wrong()
    gen.latency = 0.05
    cfg = SearchConfig(max_iterations=1000, max_width=2, parallelism=2, max_widenings=1000, max_wall_ms=300)
    started = time.monotonic()
    _, res = await run(Search(ISSUE, gen, verifier(), cfg))
    assert res.stop_reason == "wall_time" and time.monotonic() - started < 0.6
    assert res.widenings >= 2 and gen.in_flight == 0
    gen = always_new_wrong()
    gen.latency = 0.05
    cfg = SearchConfig(max_iterations=1000, max_width=2, parallelism=2, max_widenings=1000, max_wall_ms=10_000)
    _, res = await run(Search(ISSUE, gen, verifier(), cfg, deadline=time.monotonic() + 0.3))
    assert res.stop_reason == "deadline"


async def test_widening_stops_when_every_widening_is_used() -> None:
    gen = always_new_wrong()
    cfg = SearchConfig(max_iterations=100, max_width=2, parallelism=2, max_widenings=3)
    _, res = await run(Search(ISSUE, gen, verifier(), cfg))
    assert res.stop_reason == "exhausted" and res.widenings == 3 and len(gen.requests) == 8


async def test_cancelling_during_a_widening_round_cancels_its_calls() -> None:
    class SlowRetries(ScriptedGenerator):
        async def generate(self, request: StepRequest):  # type: ignore[no-untyped-def]
            if request.attempt > 0:
                self.latency = 5.0
            return await super().generate(request)

    gen = SlowRetries(lambda r: f"Final answer: {40 + 10 * r.attempt + int(r.strategy)}")
    search = Search(ISSUE, gen, verifier(), SearchConfig(max_iterations=10, parallelism=3, max_widenings=3))

    async def consume() -> None:
        async for _ in search.run():
            pass

    task = asyncio.ensure_future(consume())
    for _ in range(6):  # the first round, then the widening round's three calls
        await gen.started.acquire()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gen.in_flight == 0 and gen.cancelled == 3
    assert all(r.attempt == 1 for r in gen.requests[3:])
