"""The gRPC surface without a router: readiness, suites, validation and error codes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from masterx.benchmark.v1 import benchmark_pb2, benchmark_pb2_grpc
from masterx.common.v1 import common_pb2
from masterx_runtime.config import ConfigError
from masterx_runtime.settings import PeerSettings
from masterx_runtime.stores.mongo_store import MongoSettings
from masterx_runtime.testing.grpc_server import serving
from masterx_runtime.testing.servers import free_port
from services.benchmark.app import BenchmarkApp
from services.benchmark.config import BenchmarkSettings


@pytest.fixture
async def stub(mongo_url: str, mongo_db_name: str) -> AsyncIterator[benchmark_pb2_grpc.BenchmarkServiceStub]:
    app = BenchmarkApp(
        BenchmarkSettings(),
        mongo=MongoSettings(url=mongo_url, database=mongo_db_name),
        peers=PeerSettings(router_addr=f"127.0.0.1:{free_port()}", rpc_timeout_seconds=2.0),
    )
    async with serving(app) as (_, chan):
        health = await health_pb2_grpc.HealthStub(chan).Check(
            health_pb2.HealthCheckRequest(service="masterx.benchmark.v1.BenchmarkService")
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # no router needed to be ready
        yield benchmark_pb2_grpc.BenchmarkServiceStub(chan)


async def test_list_suites_reports_versions_counts_and_weights(stub: benchmark_pb2_grpc.BenchmarkServiceStub) -> None:
    suites = (await stub.ListSuites(benchmark_pb2.ListSuitesRequest())).suites
    assert len(suites) == 6
    coding = next(s for s in suites if s.category == common_pb2.CATEGORY_CODING)
    assert coding.items >= 20 and coding.version.startswith("1.0+")
    assert (coding.quality_weight, coding.speed_weight, coding.cost_weight) == (0.5, 0.3, 0.2)


async def test_error_codes(stub: benchmark_pb2_grpc.BenchmarkServiceStub) -> None:
    async def code_of(call: object) -> grpc.StatusCode:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call  # type: ignore[misc]
        return info.value.code()

    assert await code_of(stub.GetRun(benchmark_pb2.GetRunRequest(run_id="nope"))) == grpc.StatusCode.NOT_FOUND
    assert await code_of(stub.CancelRun(benchmark_pb2.CancelRunRequest(run_id="nope"))) == grpc.StatusCode.NOT_FOUND
    assert (
        await code_of(stub.ListItemResults(benchmark_pb2.ListItemResultsRequest(run_id="nope")))
        == grpc.StatusCode.NOT_FOUND
    )
    assert await code_of(stub.GetLeaderboard(benchmark_pb2.GetLeaderboardRequest())) == grpc.StatusCode.INVALID_ARGUMENT
    bad_age = benchmark_pb2.GetLeaderboardRequest(category=common_pb2.CATEGORY_MATH, max_age_seconds=-1)
    assert await code_of(stub.GetLeaderboard(bad_age)) == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        await code_of(stub.GetScores(benchmark_pb2.GetScoresRequest(max_age_seconds=-5)))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        await code_of(stub.GetProviderHistory(benchmark_pb2.GetProviderHistoryRequest()))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    bad_category = benchmark_pb2.StartRunRequest(categories=[42])  # type: ignore[list-item]
    assert await code_of(stub.StartRun(bad_category)) == grpc.StatusCode.INVALID_ARGUMENT
    negative = benchmark_pb2.StartRunRequest(max_items_per_suite=-1)
    assert await code_of(stub.StartRun(negative)) == grpc.StatusCode.INVALID_ARGUMENT


async def test_start_run_without_a_router_is_unavailable(stub: benchmark_pb2_grpc.BenchmarkServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.StartRun(benchmark_pb2.StartRunRequest(providers=["x"]), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "router" in (info.value.details() or "")
    empty = await stub.GetScores(benchmark_pb2.GetScoresRequest())
    assert list(empty.leaderboards) == []


def test_inconsistent_settings_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="BENCHMARK_SPEED_FAST_MS"):
        BenchmarkApp(BenchmarkSettings(speed_fast_ms=5000, speed_slow_ms=100))
