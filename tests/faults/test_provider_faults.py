"""Provider faults under load, two router replicas: one of three providers failing costs the clients nothing.

The busiest provider is made to answer 500s, then to hang, then to break its streams before the
first token; the router falls back each time. A stream that breaks *after* text was sent (no
fallback possible) still has its tokens charged (``partial: true`` in the ledger).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from pymongo import MongoClient

from masterx.common.v1 import common_pb2
from masterx.router.v1 import router_pb2, router_pb2_grpc
from masterx_runtime.clients import channel
from masterx_runtime.launcher import SERVICES, LocalSystem
from masterx_runtime.testing import servers
from masterx_runtime.testing.fake_llm import FakeLLMServer
from tests.faults.harness import Load, account, providers, report, system_env, wait_outboxes_empty, wait_serving

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

NAMES = ("alpha", "beta", "gamma")


async def test_one_of_three_providers_failing_costs_clients_nothing(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    env = system_env(
        providers(fake_llm, NAMES),
        ROUTER_ATTEMPT_TIMEOUT_SECONDS="1.0",
        ROUTER_FIRST_TOKEN_TIMEOUT_SECONDS="1.0",
        # Short OPEN waits: the failing provider keeps getting trial calls, so every fault mode is hit.
        ROUTER_BREAKER_OPEN_SECONDS="0.5",
        ROUTER_BREAKER_OPEN_MULTIPLIER="1",
    )
    system = LocalSystem(state_dir=tmp_path / "state", fixed_ports=False, env=env, services=("router",))
    await asyncio.to_thread(system.start, 120.0)
    addr = f"127.0.0.1:{system.ports['router']}"
    # A second router replica on the same Redis (breakers, sessions) and MongoDB (ledger).
    port2, metrics2 = servers.free_port(), servers.free_port()
    replica = _spawn_replica(system, tmp_path, port2, metrics2)
    addr2 = f"127.0.0.1:{port2}"
    load = Load(router_addr=addr, more_routers=(addr2,), chat_workers=4, stream_workers=2)
    phases: dict[str, Any] = {}
    try:
        await wait_serving(addr2, "", 90)
        fake_llm.reset_stats()
        await load.start()
        await asyncio.sleep(2)
        busiest = max(NAMES, key=lambda n: fake_llm.stats(n)["requests"])
        for mode, extra in (
            ("http_500", {}),
            ("hang", {"hang_seconds": 30}),
            ("break_stream", {"break_after_chunks": 0}),
        ):
            before = (load.chats.sent, load.chats.failed, fake_llm.stats(busiest)["requests"])
            fake_llm.configure(busiest, fake_llm.behavior(busiest), error=mode, **extra)
            await asyncio.sleep(3)
            breakers = [_breaker(metrics, busiest) for metrics in (system.ports["router-metrics"], metrics2)]
            phases[mode] = {
                "sent": load.chats.sent - before[0],
                "client failures": load.chats.failed - before[1],
                f"calls to {busiest}": fake_llm.stats(busiest)["requests"] - before[2],
                f"{busiest} breaker on replica 1 / 2": breakers,
            }
        fake_llm.configure(busiest, fake_llm.behavior(busiest), error="none")
        await asyncio.sleep(1)
        await load.stop()

        # A stream pinned to a provider that breaks after two chunks: the client sees the break, the ledger the tokens.
        other = next(n for n in NAMES if n != busiest)
        fake_llm.configure(
            other, fake_llm.behavior(other), error="break_stream", break_after_chunks=2, tokens_per_second=200
        )
        async with channel(addr) as chan:
            stub = router_pb2_grpc.RouterServiceStub(chan)
            req = router_pb2.GenerateRequest(
                messages=[common_pb2.ChatMessage(role="user", content="Tell me a long story about numbers")],
                user_id="fault-broken-stream",
                pinned_provider=other,
            )
            with pytest.raises(grpc.aio.AioRpcError) as broken:
                async for _ in stub.GenerateStream(req, timeout=10):
                    pass
        fake_llm.configure(other, fake_llm.behavior(other), error="none")
        await asyncio.to_thread(wait_outboxes_empty, system, ("router",), 20, (metrics2,))
        rows = account(system.base_env["MONGO_URL"], load)
        client: MongoClient[dict[str, Any]]
        with MongoClient(system.base_env["MONGO_URL"]) as client:
            partial: list[dict[str, Any]] = list(
                client["masterx"]["router_ledger"].find({"user_id": "fault-broken-stream"})
            )
        report(
            f"provider {busiest} failing (500 / hang / broken stream) among {len(NAMES)}",
            load,
            rows,
            {
                "phases": phases,
                "broken stream": broken.value.code().name,
                "its charge": [
                    {k: d.get(k) for k in ("provider", "input_tokens", "output_tokens", "partial", "cost_usd")}
                    for d in partial
                ],
            },
        )
        assert all(p["sent"] > 5 and p[f"calls to {busiest}"] > 0 for p in phases.values()), phases
        assert load.chats.failed == 0, load.chats.failures
        assert [r for r in rows if r.lost] == []
        assert broken.value.code() == grpc.StatusCode.UNAVAILABLE
        assert len(partial) == 1 and partial[0]["partial"] is True and partial[0]["output_tokens"] > 0
    finally:
        await load.stop()
        if replica.poll() is None:
            os.killpg(replica.pid, signal.SIGTERM)
            replica.wait(30)
        await asyncio.to_thread(system.stop)


def _spawn_replica(system: LocalSystem, tmp_path: Path, port: int, metrics: int) -> subprocess.Popen[bytes]:
    spec = next(s for s in SERVICES if s.name == "router")
    env = system._service_env(spec) | {"MASTERX_GRPC_PORT": str(port), "MASTERX_METRICS_PORT": str(metrics)}
    with open(tmp_path / "router-2.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "services.router"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _breaker(metrics_port: int, provider: str) -> str:
    try:
        body = httpx.get(f"http://127.0.0.1:{metrics_port}/health", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return "?"
    return str(body.get("breakers", {}).get(provider, "?"))
