"""Fixtures: the fake LLM server and a RouterApp (in-process gRPC) pointed at it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from masterx.common.v1 import common_pb2
from masterx.router.v1 import router_pb2, router_pb2_grpc
from masterx_runtime.testing.fake_llm import FakeLLMServer
from masterx_runtime.testing.grpc_server import serving
from services.router.app import RouterApp

#: The six categories as proto enums, in the router's CATEGORIES order.
CATS = [
    common_pb2.CATEGORY_CODING,
    common_pb2.CATEGORY_MATH,
    common_pb2.CATEGORY_RESEARCH,
    common_pb2.CATEGORY_LANGUAGE,
    common_pb2.CATEGORY_EMPATHY,
    common_pb2.CATEGORY_GENERAL,
]

RouterFactory = Callable[
    ..., contextlib.AbstractAsyncContextManager[tuple[RouterApp, router_pb2_grpc.RouterServiceStub]]
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        yield server


@pytest.fixture
def router_env(fake: FakeLLMServer, router_base_env: dict[str, str]) -> dict[str, str]:
    """Environment for a RouterApp with no providers yet (tests add ROUTER_PROVIDERS_JSON)."""
    return {
        **router_base_env,
        "ROUTER_RETRY_BACKOFF_BASE_MS": "5",
        "ROUTER_CATEGORY_EMOTION_ADDR": "",
    }


@pytest.fixture
def make_router(router_env: dict[str, str]) -> RouterFactory:
    """``async with make_router(providers, **env) as (app, stub)`` runs a router on a free port."""

    @contextlib.asynccontextmanager
    async def factory(
        providers: list[dict[str, Any]], clock: Callable[[], float] | None = None, **env: str
    ) -> AsyncIterator[tuple[RouterApp, router_pb2_grpc.RouterServiceStub]]:
        environ = {**router_env, "ROUTER_PROVIDERS_JSON": json.dumps(providers), **env}
        app = RouterApp(environ, clock=clock) if clock else RouterApp(environ)
        async with serving(app) as (_server, chan):
            yield app, router_pb2_grpc.RouterServiceStub(chan)

    return factory


def ask(
    text: str,
    *,
    session_id: str = "",
    user_id: str = "u1",
    history: list[tuple[str, str]] | None = None,
    **fields: Any,
) -> router_pb2.GenerateRequest:
    messages = [common_pb2.ChatMessage(role=r, content=c) for r, c in history or []]
    messages.append(common_pb2.ChatMessage(role="user", content=text))
    return router_pb2.GenerateRequest(messages=messages, session_id=session_id, user_id=user_id, **fields)


async def expect_error(call: Any, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return info.value
