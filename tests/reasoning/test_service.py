"""The reasoning service over real gRPC with a real MongoDB (router down: see test_reason_e2e)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from masterx.common.v1 import common_pb2
from masterx.reasoning.v1 import reasoning_pb2 as pb
from masterx.reasoning.v1 import reasoning_pb2_grpc
from masterx_runtime.clients import channel
from masterx_runtime.errors import error_detail_from
from masterx_runtime.server import GrpcServer
from masterx_runtime.settings import ServerSettings
from masterx_runtime.testing.servers import free_port
from services.reasoning.practice.soroban import ALL_SKILLS
from tests.reasoning.conftest import make_app

Stub = reasoning_pb2_grpc.ReasoningServiceStub
DAY = 86400.0


async def expect_code(call: object, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    return info.value


async def test_health_is_serving_once_mongodb_is_connected(
    mongo_url: str, mongo_db_name: str, dead_router_addr: str
) -> None:
    from masterx_runtime.testing.grpc_server import serving

    async with serving(make_app(mongo_url, mongo_db_name, dead_router_addr)) as (server, chan):
        health = health_pb2_grpc.HealthStub(chan)
        resp = await health.Check(health_pb2.HealthCheckRequest(service="masterx.reasoning.v1.ReasoningService"))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        assert server.app.health_details()["mongodb"] == "connected"


async def test_health_stays_not_serving_while_mongodb_is_down(dead_router_addr: str) -> None:
    app = make_app(f"mongodb://127.0.0.1:{free_port()}", "x", dead_router_addr, mongo_retry_seconds=0.05)
    settings = ServerSettings(grpc_port=0, metrics_port=-1, shutdown_grace_seconds=0.5)
    server = GrpcServer(app, settings)
    starting = asyncio.ensure_future(server.start())
    try:
        for _ in range(250):  # the port is bound before app.start() begins waiting for MongoDB
            if server.port:
                break
            await asyncio.sleep(0.02)
        async with channel(f"127.0.0.1:{server.port}") as chan:
            health = health_pb2_grpc.HealthStub(chan)
            await asyncio.sleep(0.3)
            resp = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert app.health_details()["mongodb"] == "waiting"
            assert not starting.done()
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await server.stop(0.1)


async def test_mastery_round_trip_with_recency_states(reasoning: Stub) -> None:
    now = time.time()
    req = pb.UpdateMasteryRequest(
        student_id="stu-1",
        skills=[
            pb.SkillMastery(
                skill="fiveComplements.4=5-1", level="mastered", last_practiced_at=now - DAY, mastered_at=now - 60 * DAY
            ),
            pb.SkillMastery(
                skill="tenComplements.9=10-1",
                level="mastered",
                last_practiced_at=now - 20 * DAY,
                mastered_at=now - 90 * DAY,
            ),
            pb.SkillMastery(skill="tenComplements.8=10-2", level="mastered", last_practiced_at=now - DAY),
            pb.SkillMastery(skill="fiveComplements.3=5-2", level="practicing"),
        ],
    )
    stored = await reasoning.UpdateMastery(req)
    states = {s.skill: s.state for s in stored.skills}
    assert states == {
        "fiveComplements.4=5-1": pb.MASTERY_STATE_EFFORTLESS,
        "tenComplements.9=10-1": pb.MASTERY_STATE_RUSTY,
        "tenComplements.8=10-2": pb.MASTERY_STATE_FLUENT,  # mastered_at filled in as "now"
        "fiveComplements.3=5-2": pb.MASTERY_STATE_PRACTICING,
    }
    fetched = await reasoning.GetMastery(pb.GetMasteryRequest(student_id="stu-1", must_exist=True))
    assert {s.skill: s.state for s in fetched.skills} == states
    mastered_now = next(s for s in fetched.skills if s.skill == "tenComplements.8=10-2")
    assert abs(mastered_now.mastered_at - now) < 60
    # a later update of one skill keeps the others and the stored timestamps
    again = await reasoning.UpdateMastery(
        pb.UpdateMasteryRequest(
            student_id="stu-1", skills=[pb.SkillMastery(skill="fiveComplements.3=5-2", level="mastered")]
        )
    )
    assert len(again.skills) == 4
    assert next(s for s in again.skills if s.skill == "fiveComplements.3=5-2").state == pb.MASTERY_STATE_FLUENT


async def test_mastery_errors(reasoning: Stub) -> None:
    err = await expect_code(
        reasoning.GetMastery(pb.GetMasteryRequest(student_id="nobody", must_exist=True)), grpc.StatusCode.NOT_FOUND
    )
    assert "nobody" in (err.details() or "")
    empty = await reasoning.GetMastery(pb.GetMasteryRequest(student_id="nobody"))
    assert list(empty.skills) == []
    bad = [
        pb.UpdateMasteryRequest(
            student_id="s", skills=[pb.SkillMastery(skill="tenComplements.11=10+1", level="mastered")]
        ),
        pb.UpdateMasteryRequest(
            student_id="s", skills=[pb.SkillMastery(skill="tenComplements.9=10-1", level="expert")]
        ),
        pb.UpdateMasteryRequest(
            student_id="bad id!", skills=[pb.SkillMastery(skill="tenComplements.9=10-1", level="learning")]
        ),
        pb.UpdateMasteryRequest(student_id="s"),
        pb.UpdateMasteryRequest(
            student_id="s",
            skills=[
                pb.SkillMastery(
                    skill="tenComplements.9=10-1", level="learning", last_practiced_at=time.time() + 30 * DAY
                )
            ],
        ),
        pb.UpdateMasteryRequest(
            student_id="s", skills=[pb.SkillMastery(skill="tenComplements.9=10-1", level="learning")] * 2
        ),
    ]
    for req in bad:
        err = await expect_code(reasoning.UpdateMastery(req), grpc.StatusCode.INVALID_ARGUMENT)
        detail = error_detail_from(err)
        assert detail is not None and detail.service == "reasoning" and detail.reason


async def test_generate_problem_costs_more_for_a_learner_than_an_expert(reasoning: Stub) -> None:
    now = time.time()
    await reasoning.UpdateMastery(
        pb.UpdateMasteryRequest(
            student_id="expert",
            skills=[
                pb.SkillMastery(skill=s, level="mastered", last_practiced_at=now - DAY, mastered_at=now - 90 * DAY)
                for s in ALL_SKILLS
            ],
        )
    )
    # unbounded: the same seed picks the same terms whoever asks, so only the costs differ
    req = dict(terms=6, seed=5, allow_subtraction=True, bounds=pb.ComplexityBounds())
    learner = await reasoning.GenerateProblem(pb.GenerateProblemRequest(student_id="newbie", **req))  # type: ignore[arg-type]
    expert = await reasoning.GenerateProblem(pb.GenerateProblemRequest(student_id="expert", **req))  # type: ignore[arg-type]
    assert list(learner.terms) == list(expert.terms) and learner.answer == sum(learner.terms)
    assert learner.trace.total_complexity_cost > expert.trace.total_complexity_cost
    assert {c.mastery for c in expert.trace.skill_mastery} == {pb.MASTERY_STATE_EFFORTLESS}
    assert {c.mastery for c in learner.trace.skill_mastery} == {pb.MASTERY_STATE_LEARNING}


async def test_generate_problem_uses_the_configured_bounds(reasoning: Stub) -> None:
    for seed in range(15):
        p = await reasoning.GenerateProblem(
            pb.GenerateProblemRequest(
                student_id="newbie",
                purpose=pb.PURPOSE_CHALLENGE,
                part_type=pb.PART_TYPE_LINEAR,
                seed=seed,
                allow_subtraction=True,
            )
        )
        assert p.trace.bounds.HasField("min") and p.trace.bounds.min == 1 and not p.trace.bounds.HasField("max")
        assert all(step.complexity_cost >= 1 for step in p.trace.steps[1:])
        assert p.trace.purpose == pb.PURPOSE_CHALLENGE and p.trace.part_type == pb.PART_TYPE_LINEAR
        v = await reasoning.GenerateProblem(
            pb.GenerateProblemRequest(purpose=pb.PURPOSE_FOCUS, part_type=pb.PART_TYPE_VISUALIZATION, seed=seed)
        )
        assert all(step.complexity_cost <= 3 for step in v.trace.steps)


async def test_impossible_bounds_fail_fast_over_rpc(reasoning: Stub) -> None:
    for bounds in (pb.ComplexityBounds(min=5, max=2), pb.ComplexityBounds(min=500)):
        started = time.perf_counter()
        err = await expect_code(
            reasoning.GenerateProblem(pb.GenerateProblemRequest(bounds=bounds)), grpc.StatusCode.FAILED_PRECONDITION
        )
        assert time.perf_counter() - started < 1.0
        assert "impossible bounds" in (err.details() or "")
    for req in (
        pb.GenerateProblemRequest(terms=13),
        pb.GenerateProblemRequest(digits=4),
        pb.GenerateProblemRequest(purpose=9),  # type: ignore[arg-type]
        pb.GenerateProblemRequest(allowed_skills=["nope"]),
    ):
        await expect_code(reasoning.GenerateProblem(req), grpc.StatusCode.INVALID_ARGUMENT)


async def test_plan_and_explain(reasoning: Stub) -> None:
    plan = await reasoning.PlanPracticeSession(
        pb.PlanPracticeSessionRequest(
            student_id="newbie", slots=6, part_types=[pb.PART_TYPE_VISUALIZATION, pb.PART_TYPE_ABACUS], seed=3
        )
    )
    assert [s.part_type for s in plan.slots] == [pb.PART_TYPE_ABACUS] * 3 + [pb.PART_TYPE_VISUALIZATION] * 3
    assert all(len(s.problem.terms) == 4 for s in plan.slots)
    for s in plan.slots:
        if s.bounds.HasField("max"):
            assert all(step.complexity_cost <= s.bounds.max for step in s.problem.trace.steps)
    explained = await reasoning.ExplainTrace(pb.ExplainTraceRequest(trace=plan.slots[0].problem.trace))
    assert len(explained.lines) == 5 and explained.lines[0].startswith("Start with")
    assert explained.lines[-1].startswith("Total complexity")
    await expect_code(reasoning.ExplainTrace(pb.ExplainTraceRequest()), grpc.StatusCode.INVALID_ARGUMENT)
    await expect_code(reasoning.PlanPracticeSession(pb.PlanPracticeSessionRequest()), grpc.StatusCode.INVALID_ARGUMENT)
    await expect_code(
        reasoning.PlanPracticeSession(pb.PlanPracticeSessionRequest(student_id="s", slots=100)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_allocate_budget_over_rpc(reasoning: Stub) -> None:
    frustrated = common_pb2.EmotionResult(learning_state=common_pb2.LEARNING_STATE_FRUSTRATED)
    q = "A rectangle has a perimeter of 36 cm and its length is twice its width. Find its area."
    calm = await reasoning.AllocateBudget(pb.AllocateBudgetRequest(query=q))
    upset = await reasoning.AllocateBudget(
        pb.AllocateBudgetRequest(
            query=q, emotion=frustrated, context=common_pb2.StudentContext(cognitive_load=0.9), max_output_tokens=2000
        )
    )
    assert upset.answer_tokens < calm.answer_tokens
    names = [f.name for f in upset.factors]
    assert names[0] == "complexity" and "emotion:frustrated" in names and "cognitive_load" in names
    assert 0 <= calm.complexity <= 1
    await expect_code(reasoning.AllocateBudget(pb.AllocateBudgetRequest(query="  ")), grpc.StatusCode.INVALID_ARGUMENT)
    await expect_code(
        reasoning.AllocateBudget(pb.AllocateBudgetRequest(query="hi", prompt_tokens=9000)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_reason_reports_unavailable_when_the_router_is_down(reasoning: Stub) -> None:
    started = time.perf_counter()
    err = await expect_code(
        _drain(reasoning.Reason(pb.ReasonRequest(query="Solve 2x + 3 = 11"), timeout=20)), grpc.StatusCode.UNAVAILABLE
    )
    assert time.perf_counter() - started < 10
    detail = error_detail_from(err)
    assert detail is not None and detail.dependency == "router"


@pytest.mark.parametrize(
    "req",
    [
        pb.ReasonRequest(query=""),
        pb.ReasonRequest(query="q", limits=pb.SearchLimits(max_depth=33)),
        pb.ReasonRequest(query="q", limits=pb.SearchLimits(max_width=9)),
        pb.ReasonRequest(query="q", limits=pb.SearchLimits(max_iterations=1001)),
        pb.ReasonRequest(query="q", limits=pb.SearchLimits(max_iterations=-1)),
        pb.ReasonRequest(query="q", limits=pb.SearchLimits(early_stop_share=1.5)),
        pb.ReasonRequest(query="q", limits=pb.SearchLimits(parallelism=100)),
        pb.ReasonRequest(query="Why is the sky blue?", reward_model=pb.REWARD_MODEL_VERIFIER),
        pb.ReasonRequest(query="q", reward_model=7),  # type: ignore[arg-type]
    ],
)
async def test_reason_rejects_bad_requests(reasoning: Stub, req: pb.ReasonRequest) -> None:
    await expect_code(_drain(reasoning.Reason(req, timeout=10)), grpc.StatusCode.INVALID_ARGUMENT)


async def _drain(call: grpc.aio.UnaryStreamCall) -> list[pb.ReasonEvent]:  # type: ignore[type-arg]
    return [event async for event in call]


async def test_a_slow_generation_respects_the_callers_deadline(reasoning: Stub) -> None:
    # a learner's costs are multiples of 4, so cost 9 is impossible; 3-digit terms have no
    # catalogue, so only the bounded search finds out, which takes longer than this deadline
    hopeless = pb.GenerateProblemRequest(terms=12, digits=3, bounds=pb.ComplexityBounds(min=9, max=9))
    started = time.perf_counter()
    await expect_code(reasoning.GenerateProblem(hopeless, timeout=0.05), grpc.StatusCode.DEADLINE_EXCEEDED)
    assert time.perf_counter() - started < 0.5
    err = await expect_code(reasoning.GenerateProblem(hopeless, timeout=10), grpc.StatusCode.FAILED_PRECONDITION)
    assert "gave up after" in (err.details() or "")
