"""Calls to the router: the benchmark never talks to a provider directly.

Each suite item is generated with ``GenerateStream`` (provider pinned, purpose BENCHMARK, the
category as a hint, temperature 0) so the time to first token is observed; judge calls use
``Generate`` with purpose JUDGE. Provider failures come back as an :class:`Answer` with an
error (they are results), while a router that cannot be reached at all raises Unavailable.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from masterx.common.v1 import common_pb2
from masterx.router.v1 import router_pb2, router_pb2_grpc
from masterx_runtime.clients import channel
from masterx_runtime.errors import Unavailable, from_rpc_error


@dataclass(frozen=True)
class Answer:
    """One provider answer with what it cost; ``error`` is set (and text empty) when it failed."""

    text: str = ""
    model: str = ""
    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    tokens_estimated: bool = False
    cost_usd: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    model: str


class RouterClient:
    """A channel to the router plus the two calls the benchmark needs."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel = channel(address)
        self._stub = router_pb2_grpc.RouterServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def list_providers(self, timeout: float) -> list[ProviderInfo]:
        try:
            resp = await self._stub.ListProviders(router_pb2.ListProvidersRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as err:
            exc = from_rpc_error(err, "router")
            raise Unavailable(f"router at {self.address}: {exc.code.name} {exc.message}", dependency="router") from err
        return [ProviderInfo(p.name, p.model) for p in resp.providers]

    @staticmethod
    def _request(
        provider: str,
        category: int,
        messages: Sequence[tuple[str, str]],
        max_tokens: int,
        purpose: int,
    ) -> router_pb2.GenerateRequest:
        return router_pb2.GenerateRequest(
            messages=[common_pb2.ChatMessage(role=role, content=content) for role, content in messages],
            category=category,  # type: ignore[arg-type]
            pinned_provider=provider,
            max_tokens=max_tokens,
            temperature=0.0,
            purpose=purpose,  # type: ignore[arg-type]
            user_id="benchmark",
        )

    async def generate_stream(
        self,
        provider: str,
        category: int,
        messages: Sequence[tuple[str, str]],
        *,
        max_tokens: int,
        timeout: float,
    ) -> Answer:
        """Generate one benchmark answer; latency/ttft are the router's figures, else measured here."""
        request = self._request(provider, category, messages, max_tokens, router_pb2.PURPOSE_BENCHMARK)
        started = time.perf_counter()
        first_delta: float | None = None
        parts: list[str] = []
        done: router_pb2.GenerateResponse | None = None
        try:
            call = self._stub.GenerateStream(request, timeout=timeout)
            async for chunk in call:
                kind = chunk.WhichOneof("kind")
                if kind == "delta":
                    if first_delta is None:
                        first_delta = time.perf_counter()
                    parts.append(chunk.delta)
                elif kind == "done":
                    done = chunk.done
        except grpc.aio.AioRpcError as err:
            exc = from_rpc_error(err, "router")
            if exc.code == grpc.StatusCode.UNAVAILABLE and not exc.answered:  # the channel failed, not a provider
                raise Unavailable(f"router at {self.address} unreachable: {exc.message}", dependency="router") from err
            return Answer(
                latency_ms=(time.perf_counter() - started) * 1000,
                error=f"{exc.code.name}: {exc.message}"[:500],
            )
        elapsed_ms = (time.perf_counter() - started) * 1000
        ttft_ms = ((first_delta - started) * 1000) if first_delta is not None else elapsed_ms
        if done is None:
            return Answer(latency_ms=elapsed_ms, error="stream ended without a done chunk")
        tokens = done.usage.tokens
        return Answer(
            text=done.text or "".join(parts),
            model=done.model or done.usage.model,
            latency_ms=done.latency_ms if done.latency_ms > 0 else elapsed_ms,
            ttft_ms=done.ttft_ms if done.ttft_ms > 0 else ttft_ms,
            input_tokens=int(tokens.input_tokens),
            output_tokens=int(tokens.output_tokens),
            total_tokens=int(tokens.total_tokens),
            tokens_estimated=bool(tokens.estimated),
            cost_usd=float(done.usage.cost_usd),
        )

    async def generate(
        self,
        provider: str,
        messages: Sequence[tuple[str, str]],
        *,
        max_tokens: int,
        timeout: float,
        purpose: int = router_pb2.PURPOSE_JUDGE,
    ) -> str:
        """A plain completion (judge calls); raises RuntimeError with the router's error on failure."""
        request = self._request(provider, common_pb2.CATEGORY_GENERAL, messages, max_tokens, purpose)
        try:
            resp = await self._stub.Generate(request, timeout=timeout)
        except grpc.aio.AioRpcError as err:
            exc = from_rpc_error(err, "router")
            raise RuntimeError(f"judge {provider}: {exc.code.name} {exc.message}") from err
        return str(resp.text)
