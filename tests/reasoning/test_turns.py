"""Stored turns over real gRPC, MongoDB and the real router: the controller's decision and the
search's chain are stored per turn, returned by GetTurnReasoning, feed the next decision of the
session, and expire."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from pymongo import AsyncMongoClient

from masterx.common.v1 import common_pb2
from masterx.reasoning.v1 import reasoning_pb2 as pb
from masterx.reasoning.v1 import reasoning_pb2_grpc
from masterx_runtime.config import load
from masterx_runtime.settings import PeerSettings
from masterx_runtime.stores.mongo_store import MongoSettings
from masterx_runtime.testing.fake_llm import FakeLLMServer, ProviderBehavior, ReplyRule
from masterx_runtime.testing.grpc_server import serving
from services.reasoning.app import ReasoningApp
from services.reasoning.config import ReasoningSettings
from services.reasoning.mcts.engine import ResultEvent, Search, SearchConfig
from services.reasoning.mcts.rewards import RewardMode, RewardModel, RewardSettings
from services.reasoning.turns import COLLECTION, chain_document
from services.router.app import RouterApp
from tests.reasoning.scripted import ScriptedGenerator

ISSUE = "What is 12 + 7 * 3?"
# The first samples are all wrong; a retry (its prompt names the rejected answers) is right.
RULES = [
    ReplyRule(match=r"already checked here and are wrong", reply="7 * 3 = 21 and 12 + 21 = 33.\nFinal answer: 33"),
    ReplyRule(match=r"Question:", reply="Left to right: 12 + 7 = 19, 19 * 3 = 57.\nFinal answer: 57"),
]
TTL = 60.0


@dataclass
class Stack:
    reasoning: reasoning_pb2_grpc.ReasoningServiceStub
    clock: list[float]
    fake: FakeLLMServer


@pytest.fixture
async def stack(router_base_env: dict[str, str], mongo_url: str, mongo_db_name: str) -> AsyncIterator[Stack]:
    async with FakeLLMServer() as fake:
        fake.configure("stepper", ProviderBehavior(rules=RULES))
        env = {
            **router_base_env,
            "ROUTER_PROVIDERS_JSON": json.dumps([fake.provider_entry("stepper")]),
        }
        async with serving(RouterApp(env)) as (router_server, _):
            clock = [1_800_000_000.0]
            app = ReasoningApp(
                dataclasses.replace(load(ReasoningSettings, {}), judge_enabled=False, chain_ttl_seconds=int(TTL)),
                mongo=dataclasses.replace(load(MongoSettings, {}), url=mongo_url, database=mongo_db_name),
                peers=dataclasses.replace(
                    load(PeerSettings, {}), router_addr=f"127.0.0.1:{router_server.port}", rpc_timeout_seconds=10.0
                ),
                clock=lambda: clock[0],
            )
            async with serving(app) as (_, chan):
                yield Stack(reasoning_pb2_grpc.ReasoningServiceStub(chan), clock, fake)


def emotion(state: int) -> common_pb2.EmotionResult:
    return common_pb2.EmotionResult(learning_state=state)  # type: ignore[arg-type]


async def reason(stack: Stack, request: pb.ReasonRequest) -> pb.ReasonResult:
    async for event in stack.reasoning.Reason(request, timeout=30):
        if event.HasField("result"):
            return event.result
    raise AssertionError("no result")


async def test_a_stored_chain_is_returned_for_its_turn_and_expires(
    stack: Stack, mongo_url: str, mongo_db_name: str
) -> None:
    decision = await stack.reasoning.DecideThinking(
        pb.DecideThinkingRequest(
            query=ISSUE, session_id="sess-a", user_id="stu-1", turn_id="turn-1", deep_thinking=True
        )
    )
    assert decision.deep_thinking and decision.source == "user"
    result = await reason(
        stack,
        pb.ReasonRequest(
            query=ISSUE, session_id="sess-a", user_id="stu-1", turn_id="turn-1", seed=1, limits=decision.limits
        ),
    )
    # widening through the router: the first three samples (57) were proved wrong, the retry was right
    assert result.answer == "33" and result.stop_reason == "early_stop" and result.stored
    assert result.search.widenings == 1 and result.search.generations == 6

    stack.clock[0] += TTL - 1
    turn = await stack.reasoning.GetTurnReasoning(pb.GetTurnReasoningRequest(turn_id="turn-1"))
    assert turn.session_id == "sess-a" and turn.user_id == "stu-1"
    assert turn.expires_at == pytest.approx(turn.created_at + TTL)
    assert turn.decision.deep_thinking and turn.decision.source == "user"
    assert turn.has_result and not turn.truncated
    stored = turn.result
    assert stored.answer == "33" and stored.stop_reason == "early_stop" and stored.search.widenings == 1
    assert [s.content for s in stored.path] == [s.content for s in result.path]
    assert len(stored.tree.nodes) == 4 and stored.answer_votes["57"] == 3

    stack.clock[0] += 2  # past the TTL: gone at once, before the TTL monitor deletes it
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.reasoning.GetTurnReasoning(pb.GetTurnReasoningRequest(turn_id="turn-1"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    client: AsyncMongoClient[dict] = AsyncMongoClient(mongo_url)  # type: ignore[type-arg]
    try:
        indexes = await client[mongo_db_name][COLLECTION].index_information()
    finally:
        await client.close()
    assert indexes["ttl"]["expireAfterSeconds"] == 0  # MongoDB deletes expired turns itself


async def test_a_stored_chain_is_bounded_and_keeps_the_best_path() -> None:
    gen = ScriptedGenerator(lambda r: f"A long thought number {len(gen.requests)} about rivers and valleys.")
    search = Search(
        "Tell me about rivers",
        gen,
        RewardModel(RewardMode.HEURISTIC, RewardSettings()),
        SearchConfig(max_iterations=30, max_depth=8, early_stop=False),
    )
    res = None
    async for event in search.run():
        if isinstance(event, ResultEvent):
            res = event.result
    assert res is not None and len(res.nodes) > 50
    doc = chain_document(res, max_nodes=10, max_chars=20)
    ids = {n["id"] for n in doc["nodes"]}
    assert len(ids) == 10 and set(doc["path"]) <= ids and doc["path"]
    assert doc["truncated"] and all(len(n["content"]) <= 20 for n in doc["nodes"])
    assert doc["node_count"] == len(res.nodes) - 1


async def test_the_next_decision_of_the_session_learns_from_the_stored_turn(stack: Stack) -> None:
    budget = common_pb2.TokenBudget(complexity=0.45)
    first = await stack.reasoning.DecideThinking(
        pb.DecideThinkingRequest(
            query="How do I add fractions?",
            session_id="sess-b",
            turn_id="b-1",
            emotion=emotion(common_pb2.LEARNING_STATE_NEUTRAL),
            budget=budget,
        )
    )
    assert not first.deep_thinking and first.recent_turns == 0
    stack.clock[0] += 5
    second = await stack.reasoning.DecideThinking(
        pb.DecideThinkingRequest(
            query="I don't get it, why do the bottoms have to match?",
            session_id="sess-b",
            turn_id="b-2",
            emotion=emotion(common_pb2.LEARNING_STATE_CONFUSED),
            budget=budget,
        )
    )
    assert second.deep_thinking and second.source == "controller" and second.recent_turns == 1
    assert [r.code for r in second.reasons] == ["complexity", "emotion:confused", "after_struggle", "decision"]
    assert second.limits.max_iterations == 24
    # another session knows nothing about it; a client-side hint stands in for a stored turn
    other = await stack.reasoning.DecideThinking(
        pb.DecideThinkingRequest(
            query="why?", session_id="sess-c", emotion=emotion(common_pb2.LEARNING_STATE_CONFUSED), budget=budget
        )
    )
    assert not other.deep_thinking
    hinted = await stack.reasoning.DecideThinking(
        pb.DecideThinkingRequest(
            query="why?", emotion=emotion(common_pb2.LEARNING_STATE_CONFUSED), budget=budget, follows_answer=True
        )
    )
    assert hinted.deep_thinking


async def test_bad_requests_name_the_field_and_an_unknown_turn_is_not_found(stack: Stack) -> None:
    for request, field in [
        (pb.DecideThinkingRequest(query=" "), "query"),
        (pb.DecideThinkingRequest(query="q", turn_id="bad id!"), "turn_id"),
        (pb.DecideThinkingRequest(query="q", provider_cost_per_1k_tokens_usd=-1), "provider_cost_per_1k_tokens_usd"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stack.reasoning.DecideThinking(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.reasoning.GetTurnReasoning(pb.GetTurnReasoningRequest(turn_id="never-stored"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.reasoning.GetTurnReasoning(pb.GetTurnReasoningRequest(turn_id=""))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reason(stack, pb.ReasonRequest(query=ISSUE, turn_id="a b"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
