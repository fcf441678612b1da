"""The real stack for end-to-end benchmark tests and the benchmark's benchmark.

Shared test LLM server (several fake providers, scripted per suite item) -> the REAL router
service (providers file pointing at the fake server, Redis, MongoDB) -> the REAL benchmark
service (MongoDB). Both services run in-process on their own gRPC ports, each talking to the
other over gRPC exactly as in production.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from masterx.benchmark.v1 import benchmark_pb2, benchmark_pb2_grpc
from masterx.router.v1 import router_pb2_grpc
from masterx_runtime.clients import channel, wait_until_serving
from masterx_runtime.server import GrpcServer, ServiceApp
from masterx_runtime.settings import PeerSettings, ServerSettings
from masterx_runtime.stores.mongo_store import MongoSettings
from masterx_runtime.testing.fake_llm import FakeLLMServer, ProviderBehavior, ReplyRule
from masterx_runtime.testing.servers import free_port
from services.benchmark.app import BenchmarkApp
from services.benchmark.config import BenchmarkSettings
from services.benchmark.scoring.specs import KeywordSpec, NumericSpec, RubricSpec, UnitTestSpec
from services.benchmark.suite import Suite, SuiteItem, load_suites

#: Replies of a provider that is wrong on every item (but well-formed).
WRONG_EMPATHY = "You should have studied harder. This is easy, obviously, so stop complaining."


def prompt_pattern(item: SuiteItem) -> str:
    """A regex matching this item's prompt (its first line, anchored at the start)."""
    return "^" + re.escape(item.prompt.splitlines()[0].strip())


def wrong_answer(item: SuiteItem) -> str:
    spec = item.spec
    if isinstance(spec, NumericSpec):
        return "Let me think step by step.\nFinal answer: " + ", ".join(f"{v + 1:g}" for v in spec.expected)
    if isinstance(spec, UnitTestSpec):
        return f"Try this:\n```python\ndef {spec.entry_point}(*args, **kwargs):\n    return None\n```\n"
    if isinstance(spec, RubricSpec):
        return WRONG_EMPATHY
    assert isinstance(spec, KeywordSpec)
    return "I am not sure about that one, sorry."


def item_rules(suites: Mapping[int, Suite], answer: Callable[[SuiteItem], str]) -> list[ReplyRule]:
    """One reply rule per suite item (every suite), answering with ``answer(item)``."""
    rules: list[ReplyRule] = []
    seen: set[str] = set()
    for suite in suites.values():
        for item in suite.items:
            pattern = prompt_pattern(item)
            assert pattern not in seen, f"two items start with the same line: {item.id}"
            seen.add(pattern)
            rules.append(ReplyRule(match=pattern, reply=answer(item)))
    return rules


def correct_rules(suites: Mapping[int, Suite]) -> list[ReplyRule]:
    return item_rules(suites, lambda item: item.reference)


def wrong_rules(suites: Mapping[int, Suite]) -> list[ReplyRule]:
    return item_rules(suites, wrong_answer)


@dataclass
class FakeProvider:
    """A provider of the test server as the router's providers file lists it."""

    name: str
    behavior: ProviderBehavior
    input_price_per_mtok: float = 0.5
    output_price_per_mtok: float = 1.5
    kind: str = "openai"


@dataclass
class Stack:
    llm: FakeLLMServer
    router_addr: str
    bench_addr: str
    bench: BenchmarkApp
    stub: benchmark_pb2_grpc.BenchmarkServiceStub
    router: router_pb2_grpc.RouterServiceStub
    channels: list[grpc.aio.Channel]

    async def run_to_end(
        self, request: benchmark_pb2.StartRunRequest, timeout: float = 60.0
    ) -> list[benchmark_pb2.RunProgress]:
        """Start a run and watch it to the end; returns every progress message."""
        status = await self.stub.StartRun(request, timeout=10)
        return [
            msg
            async for msg in self.stub.WatchRun(benchmark_pb2.WatchRunRequest(run_id=status.run_id), timeout=timeout)
        ]


async def _start(app: ServiceApp, port: int) -> GrpcServer:
    server = GrpcServer(app, ServerSettings(grpc_port=port, metrics_port=-1, shutdown_grace_seconds=1.0))
    await server.start()
    return server


def router_environ(
    llm: FakeLLMServer, providers: list[FakeProvider], *, redis_url: str, mongo_url: str, mongo_db: str, bench_addr: str
) -> dict[str, str]:
    entries = [
        llm.provider_entry(
            p.name,
            kind=p.kind,
            input_price_per_mtok=p.input_price_per_mtok,
            output_price_per_mtok=p.output_price_per_mtok,
            max_output_tokens=2048,
            timeout_seconds=20,
        )
        for p in providers
    ]
    return {
        "ROUTER_PROVIDERS_JSON": json.dumps({"providers": entries}),
        "ROUTER_LOCAL_PROVIDER": "off",
        "ROUTER_DISCOVER_ENV_KEYS": "0",
        "ROUTER_SCORES_REFRESH_SECONDS": "0.2",
        "REDIS_URL": redis_url,
        "MONGO_URL": mongo_url,
        "MONGO_DB": mongo_db,
        "BENCHMARK_ADDR": bench_addr,
    }


@contextlib.asynccontextmanager
async def benchmark_stack(
    providers: list[FakeProvider],
    *,
    redis_url: str,
    mongo_url: str,
    mongo_db_name: str,
    cfg: BenchmarkSettings | None = None,
    clock: Callable[[], float] | None = None,
    router_env: Mapping[str, str] | None = None,
) -> AsyncIterator[Stack]:
    """Fake providers -> real router -> real benchmark service, all on loopback."""
    from services.router.app import RouterApp  # imported late: the router is another engineer's module

    router_port, bench_port = free_port(), free_port()
    router_addr, bench_addr = f"127.0.0.1:{router_port}", f"127.0.0.1:{bench_port}"
    servers: list[GrpcServer] = []
    channels: list[grpc.aio.Channel] = []
    async with FakeLLMServer() as llm:
        for p in providers:
            llm.configure(p.name, p.behavior)
        extra: dict[str, Any] = {} if clock is None else {"clock": clock}
        bench = BenchmarkApp(
            cfg or BenchmarkSettings(),
            mongo=MongoSettings(url=mongo_url, database=mongo_db_name),
            peers=PeerSettings(router_addr=router_addr, rpc_timeout_seconds=10.0),
            **extra,
        )
        env = router_environ(
            llm,
            providers,
            redis_url=redis_url,
            mongo_url=mongo_url,
            mongo_db=f"{mongo_db_name}_router",
            bench_addr=bench_addr,
        )
        env.update(router_env or {})
        try:
            servers.append(await _start(bench, bench_port))
            router_app = RouterApp({**os.environ, **env})
            servers.append(await _start(router_app, router_port))
            await wait_until_serving(router_addr, "masterx.router.v1.RouterService", timeout=60)
            bench_chan, router_chan = channel(bench_addr), channel(router_addr)
            channels += [bench_chan, router_chan]
            yield Stack(
                llm,
                router_addr,
                bench_addr,
                bench,
                benchmark_pb2_grpc.BenchmarkServiceStub(bench_chan),
                router_pb2_grpc.RouterServiceStub(router_chan),
                channels,
            )
        finally:
            for chan in channels:
                await chan.close()
            for server in reversed(servers):
                await server.stop(1.0)


def suites() -> dict[int, Suite]:
    return load_suites()


def behavior(rules: list[ReplyRule], **fields: Any) -> ProviderBehavior:
    return dataclasses.replace(ProviderBehavior(rules=rules, default_reply="I am not sure."), **fields)


def sandbox_processes(root: Path) -> list[int]:
    """PIDs of sandboxed answer processes whose work directory lies under ``root``.

    A process that escaped its group (``setsid``) keeps its command line, so it is still found.
    """
    marker = str(root).encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes() if proc.name.isdigit() else b""
        except OSError:
            continue
        if b"_sandbox_child.py" in cmdline and marker in cmdline:
            found.append(int(proc.name))
    return found
