"""The reasoning service's only way to a model: ``RouterService.Generate`` (never a provider)."""

from __future__ import annotations

import math
import time

import grpc

from masterx.common.v1 import common_pb2
from masterx.router.v1 import router_pb2, router_pb2_grpc
from masterx_runtime.errors import DeadlineExceeded, ServiceError, from_rpc_error
from services.reasoning.mcts.generator import CallUsage, Completion, GenerationError

_PURPOSES = {"reasoning": router_pb2.PURPOSE_REASONING, "judge": router_pb2.PURPOSE_JUDGE}


def router_error(err: grpc.aio.AioRpcError) -> ServiceError:
    """The service error a failed router call turns into (UNAVAILABLE when in doubt)."""
    return from_rpc_error(err, "router").relayed()


class RouterCompleter:
    """A :class:`~services.reasoning.mcts.generator.Completer` over the router's Generate RPC."""

    def __init__(
        self,
        stub: router_pb2_grpc.RouterServiceStub,
        *,
        user_id: str = "",
        category: int = 0,
        pinned_provider: str = "",
        judge_provider: str = "",
        call_timeout: float = 30.0,
    ) -> None:
        self.stub = stub
        self.user_id = user_id
        self.category = category
        self.pinned_provider = pinned_provider
        self.judge_provider = judge_provider
        self.call_timeout = call_timeout

    async def complete(
        self,
        messages: list[tuple[str, str]],
        *,
        purpose: str,
        max_tokens: int,
        deadline: float,
        temperature: float | None = None,
    ) -> Completion:
        timeout = self.call_timeout
        if deadline != math.inf:
            timeout = min(timeout, deadline - time.monotonic())
        if timeout <= 0:
            raise GenerationError("no time left for a router call", DeadlineExceeded("deadline exceeded"))
        request = router_pb2.GenerateRequest(
            messages=[common_pb2.ChatMessage(role=role, content=content) for role, content in messages],
            user_id=self.user_id,
            category=self.category,  # type: ignore[arg-type]
            pinned_provider=self.judge_provider if purpose == "judge" else self.pinned_provider,
            max_tokens=max_tokens,
            purpose=_PURPOSES[purpose],
        )
        if temperature is not None:
            request.temperature = temperature
        try:
            response = await self.stub.Generate(request, timeout=timeout)
        except grpc.aio.AioRpcError as err:
            raise GenerationError(f"router call failed: {err.code().name}", router_error(err)) from err
        tokens = response.usage.tokens
        usage = CallUsage(
            input_tokens=int(tokens.input_tokens),
            output_tokens=int(tokens.output_tokens),
            cost_usd=float(response.usage.cost_usd),
            provider=response.provider or response.usage.provider,
            model=response.model or response.usage.model,
            estimated=bool(tokens.estimated),
        )
        return Completion(response.text, usage)
