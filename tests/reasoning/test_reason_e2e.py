"""Reason end to end: reasoning service -> real router service -> fake LLM providers over HTTP.

The step answers are scripted on the shared test LLM server (regex rules on the step prompt),
the judge is a second fake provider pinned through REASONING_JUDGE_PROVIDER, and the router is
the real RouterApp (Redis, MongoDB, breakers, cost ledger) serving over real gRPC.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from masterx.common.v1 import common_pb2
from masterx.reasoning.v1 import reasoning_pb2 as pb
from masterx.reasoning.v1 import reasoning_pb2_grpc
from masterx_runtime import metrics
from masterx_runtime.testing.fake_llm import FakeLLMServer, ProviderBehavior, ReplyRule
from masterx_runtime.testing.grpc_server import serving
from services.router.app import RouterApp
from tests.reasoning.conftest import make_app

EQUATION = "Solve 2x + 3 = 11 for x."
OPEN = "Tell me about rivers."

# Step answers keyed on the step prompt (the last user message). The first matching rule wins.
EQUATION_RULES = [
    ReplyRule(match=r"Write step 1 of", reply="Subtract 3 from both sides: 11 - 3 = 8, so 2x = 8."),
    ReplyRule(
        match=r"algorithmic[\s\S]*Write step 2 of", reply="Divide both sides by 2: 8 / 2 = 4.\nFinal answer: x = 4"
    ),
    ReplyRule(match=r"Write step 2 of", reply="Maybe it helps to look at the pattern of the numbers here."),
    ReplyRule(match=r"Write step 3 of", reply="The pattern suggests five.\nFinal answer: x = 5"),
]
OPEN_RULES = [
    ReplyRule(
        match=r"Strategy for this step: (\w+)",
        reply="Rivers carry water downhill to the sea and shape valleys as they go.",
    )
]


@dataclass
class Stack:
    fake: FakeLLMServer
    reasoning: reasoning_pb2_grpc.ReasoningServiceStub
    router: RouterApp


@pytest.fixture
async def stack(router_base_env: dict[str, str], mongo_url: str, mongo_db_name: str) -> AsyncIterator[Stack]:
    async with FakeLLMServer() as fake:
        fake.configure("stepper", ProviderBehavior(rules=EQUATION_RULES, default_reply="Let me think."))
        fake.configure("judge", ProviderBehavior(default_reply="7"))
        fake.configure("pricey", ProviderBehavior(rules=OPEN_RULES))
        providers = [
            fake.provider_entry("stepper", input_price_per_mtok=0.15, output_price_per_mtok=0.6),
            fake.provider_entry("judge", input_price_per_mtok=0.1, output_price_per_mtok=0.1),
            fake.provider_entry("pricey", input_price_per_mtok=1000.0, output_price_per_mtok=1000.0),
        ]
        env = {
            **router_base_env,
            "ROUTER_PROVIDERS_JSON": json.dumps(providers),
        }
        router = RouterApp(env)
        async with serving(router) as (router_server, _):
            app = make_app(mongo_url, mongo_db_name, f"127.0.0.1:{router_server.port}", judge_provider="judge")
            async with serving(app) as (_, chan):
                yield Stack(fake, reasoning_pb2_grpc.ReasoningServiceStub(chan), router)


def ask(query: str = EQUATION, *, provider: str = "stepper", **fields: Any) -> pb.ReasonRequest:
    return pb.ReasonRequest(
        query=query, pinned_provider=provider, user_id="student-1", category=common_pb2.CATEGORY_MATH, **fields
    )


async def reason(
    stack: Stack, request: pb.ReasonRequest, timeout: float = 30
) -> tuple[list[pb.ReasoningStep], pb.ReasonResult]:
    steps: list[pb.ReasoningStep] = []
    async for event in stack.reasoning.Reason(request, timeout=timeout):
        if event.HasField("result"):
            return steps, event.result
        steps.append(event.step)
    raise AssertionError("stream ended without a result")


def step_prompts(stack: Stack, provider: str = "stepper") -> list[str]:
    return [r["body"]["messages"][-1]["content"] for r in stack.fake.requests(provider)]


async def test_search_prefers_the_verified_answer_over_a_wrong_majority(stack: Stack) -> None:
    limits = pb.SearchLimits(max_iterations=30, disable_early_stop=True)
    _steps, result = await reason(stack, ask(limits=limits, seed=1, return_tree=True))
    assert result.answer == "x = 4"
    final = result.path[-1]
    assert final.terminal and final.reward_source == "verifier" and final.reward == 1.0
    wrong = [n for n in result.tree.nodes if n.terminal and n.answer == "x = 5"]
    right = [n for n in result.tree.nodes if n.terminal and n.answer == "x = 4"]
    assert len(wrong) > len(right) > 0  # more branches reached the wrong answer...
    assert all(n.reward == 0.0 and n.reward_source == "verifier" for n in wrong)
    # ...but the search kept coming back to the verified one
    assert min(n.visits for n in right) > max(n.visits for n in wrong)
    assert set(result.answer_votes) == {"4", "5"}
    assert result.confidence == pytest.approx(1.0)  # the only answer not proved wrong, and verified
    # uncheckable steps were scored by the judge provider through the router
    assert any(n.reward_source == "judge" and n.reward == pytest.approx(0.7) for n in result.tree.nodes)
    assert stack.fake.stats("judge")["requests"] > 0
    assert result.usage.tokens.output_tokens == result.search.tokens > 0
    assert result.usage.cost_usd > 0 and result.usage.provider == "stepper"


async def test_a_verified_answer_stops_the_search_early(stack: Stack) -> None:
    _, result = await reason(stack, ask(limits=pb.SearchLimits(max_iterations=50), seed=1))
    assert result.stop_reason == "early_stop" and result.answer == "x = 4"
    assert result.search.iterations < 10


async def test_steps_stream_as_they_are_found(stack: Stack) -> None:
    stack.fake.configure("stepper", ProviderBehavior(rules=EQUATION_RULES, latency_ms=80))
    started = time.monotonic()
    arrivals: list[tuple[float, pb.ReasonEvent]] = []
    async for event in stack.reasoning.Reason(
        # parallelism = width: one node expanded per round, so the search takes several rounds
        ask(limits=pb.SearchLimits(max_iterations=8, max_width=3, parallelism=3, disable_early_stop=True)),
        timeout=30,
    ):
        arrivals.append((time.monotonic() - started, event))
    assert arrivals[-1][1].HasField("result") and all(e.HasField("step") for _, e in arrivals[:-1])
    first_step_at, done_at = arrivals[0][0], arrivals[-1][0]
    assert first_step_at < done_at / 2  # the first step arrived long before the search ended
    streamed = {e.step.node_id for _, e in arrivals[:-1]}
    result = arrivals[-1][1].result
    assert {s.node_id for s in result.path} <= streamed
    assert all(e.step.content and e.step.depth >= 1 for _, e in arrivals[:-1])


async def test_iteration_depth_and_width_limits(stack: Stack) -> None:
    stack.fake.configure("pricey", ProviderBehavior(rules=OPEN_RULES))
    limits = pb.SearchLimits(max_iterations=5, max_depth=2, max_width=2, disable_early_stop=True)
    _, result = await reason(stack, ask(OPEN, provider="pricey", limits=limits, return_tree=True))
    nodes = result.tree.nodes
    assert result.search.iterations <= 5 and result.stop_reason in ("iterations", "exhausted")
    assert max(n.depth for n in nodes) <= 2
    children: dict[str, int] = {}
    for n in nodes:
        children[n.parent_id] = children.get(n.parent_id, 0) + 1
    assert max(children.values()) <= 2 and children["0"] == 2
    prompts = step_prompts(stack, "pricey")
    assert len(prompts) == result.search.generations - stack.fake.stats("judge")["requests"]
    assert all("Write step 1 of at most 2" in p or "Write step 2 of at most 2" in p for p in prompts)
    assert all("last step allowed" in p for p in prompts if "Write step 2" in p)


async def test_token_limit(stack: Stack) -> None:
    limits = pb.SearchLimits(max_iterations=200, max_depth=10, disable_early_stop=True, max_tokens=120)
    _, result = await reason(stack, ask(OPEN, limits=limits))
    assert result.stop_reason == "tokens"
    assert result.search.tokens <= 120
    bodies = [r["body"] for r in stack.fake.requests("stepper")]
    assert all(b["max_tokens"] <= 120 for b in bodies)


async def test_cost_limit(stack: Stack) -> None:
    limits = pb.SearchLimits(max_iterations=200, max_depth=10, disable_early_stop=True, max_cost_usd=1.0)
    _, result = await reason(stack, ask(OPEN, provider="pricey", limits=limits))
    assert result.stop_reason == "cost"
    assert 0.5 < result.search.cost_usd <= 1.0
    assert result.usage.cost_usd == pytest.approx(result.search.cost_usd)


async def test_wall_time_limit(stack: Stack) -> None:
    stack.fake.configure("stepper", ProviderBehavior(rules=EQUATION_RULES, latency_ms=300))
    started = time.monotonic()
    _, result = await reason(stack, ask(limits=pb.SearchLimits(max_wall_ms=500, disable_early_stop=True)))
    assert result.stop_reason == "wall_time"
    assert time.monotonic() - started < 1.5
    assert result.search.wall_ms < 800


async def test_caller_deadline_ends_with_the_best_so_far(stack: Stack) -> None:
    stack.fake.configure("stepper", ProviderBehavior(rules=EQUATION_RULES, latency_ms=250))
    limits = pb.SearchLimits(max_wall_ms=60_000, max_iterations=100, disable_early_stop=True)
    started = time.monotonic()
    _, result = await reason(stack, ask(limits=limits), timeout=1.5)
    assert result.stop_reason == "deadline"
    assert time.monotonic() - started < 1.5
    assert result.path


async def test_cancelling_reason_cancels_the_router_calls(stack: Stack) -> None:
    stack.fake.configure("stepper", ProviderBehavior(error="hang"))  # answers only when the client goes away
    call = stack.reasoning.Reason(ask(limits=pb.SearchLimits(max_iterations=10)), timeout=30)
    reader = asyncio.ensure_future(call.read())
    for _ in range(200):
        if stack.fake.stats("stepper")["in_flight"] == 3:
            break
        await asyncio.sleep(0.02)
    assert stack.fake.stats("stepper")["in_flight"] == 3
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    for _ in range(100):
        if stack.fake.stats("stepper")["in_flight"] == 0 and _in_flight("router") == 0 and _in_flight("reasoning") == 0:
            break
        await asyncio.sleep(0.02)
    assert stack.fake.stats("stepper")["in_flight"] == 0  # the HTTP requests to the provider were dropped
    assert _in_flight("router") == 0 and _in_flight("reasoning") == 0
    assert stack.fake.stats("stepper")["requests"] == 3  # and nothing new was started


def _in_flight(service: str) -> float:
    return float(metrics.RPC_IN_FLIGHT.labels(service)._value.get())


async def test_the_same_seed_reproduces_the_tree(stack: Stack) -> None:
    def shape(result: pb.ReasonResult) -> list[tuple[object, ...]]:
        return [(n.node_id, n.parent_id, n.strategy, n.content, n.visits, round(n.value, 9)) for n in result.tree.nodes]

    # width 5: beyond the two preferred strategies the seed orders the rest
    limits = pb.SearchLimits(max_iterations=12, max_width=5, parallelism=10, disable_early_stop=True)
    stack.fake.configure("stepper", ProviderBehavior(rules=EQUATION_RULES, latency_ms=5))
    _, first = await reason(stack, ask(limits=limits, seed=7, return_tree=True))
    stack.fake.configure("stepper", ProviderBehavior(rules=EQUATION_RULES, latency_ms=40))  # different timing
    _, second = await reason(stack, ask(limits=limits, seed=7, return_tree=True))
    assert shape(first) == shape(second) and first.answer == second.answer
    _, other = await reason(stack, ask(limits=limits, seed=8, return_tree=True))
    assert [n.strategy for n in other.tree.nodes] != [n.strategy for n in first.tree.nodes]


async def test_emotion_reaches_the_step_prompt(stack: Stack) -> None:
    emotion = common_pb2.EmotionResult(
        learning_state=common_pb2.LEARNING_STATE_FRUSTRATED,
        readiness=common_pb2.Readiness(level=common_pb2.READINESS_LEVEL_LOW),
    )
    await reason(stack, ask(limits=pb.SearchLimits(max_iterations=1), emotion=emotion))
    prompts = step_prompts(stack)
    assert prompts and all("frustrated" in p and "Readiness to learn is low" in p for p in prompts)


async def test_budget_caps_the_search_tokens(stack: Stack) -> None:
    budget = common_pb2.TokenBudget(reasoning_tokens=60, answer_tokens=200)
    _, result = await reason(
        stack, ask(OPEN, limits=pb.SearchLimits(max_iterations=100, disable_early_stop=True), budget=budget)
    )
    assert result.stop_reason == "tokens" and result.search.tokens <= 60


async def test_provider_failure_at_the_root_is_reported(stack: Stack) -> None:
    stack.fake.configure("stepper", ProviderBehavior(error="http_500"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await reason(stack, ask(limits=pb.SearchLimits(max_iterations=3)))
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION)
    assert "router" in (info.value.details() or "")
