"""Fixtures: the reasoning app served in-process over real gRPC, wired to the real MongoDB."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from masterx.reasoning.v1 import reasoning_pb2_grpc
from masterx_runtime.config import load
from masterx_runtime.settings import PeerSettings
from masterx_runtime.stores.mongo_store import MongoSettings
from masterx_runtime.testing.grpc_server import serving
from masterx_runtime.testing.servers import free_port
from services.reasoning.app import ReasoningApp
from services.reasoning.config import ReasoningSettings


def make_app(mongo_url: str, db: str, router_addr: str, **overrides: object) -> ReasoningApp:
    settings = dataclasses.replace(load(ReasoningSettings, {}), **overrides)  # type: ignore[arg-type]
    mongo = dataclasses.replace(load(MongoSettings, {}), url=mongo_url, database=db, timeout_ms=2000)
    peers = dataclasses.replace(load(PeerSettings, {}), router_addr=router_addr, rpc_timeout_seconds=10.0)
    return ReasoningApp(settings, mongo=mongo, peers=peers)


@pytest.fixture
def dead_router_addr() -> str:
    """An address where nothing listens: the router is down."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
async def reasoning(
    mongo_url: str, mongo_db_name: str, dead_router_addr: str
) -> AsyncIterator[reasoning_pb2_grpc.ReasoningServiceStub]:
    """A stub to a served ReasoningApp whose router is unreachable."""
    async with serving(make_app(mongo_url, mongo_db_name, dead_router_addr)) as (_, chan):
        yield reasoning_pb2_grpc.ReasoningServiceStub(chan)
