"""Run the gateway app on a real uvicorn server in-process, on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from masterx_runtime.settings import PeerSettings
from masterx_runtime.stores.mongo_store import MongoSettings
from masterx_runtime.stores.redis_store import RedisSettings
from masterx_runtime.testing.grpc_server import serving
from masterx_runtime.testing.servers import free_port
from services.gateway.__main__ import uvicorn_config
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from tests.gateway.system import emotion_model_dir


def gateway_settings(**overrides: Any) -> GatewaySettings:
    """Defaults for tests: no rate limit unless asked for."""
    return dataclasses.replace(GatewaySettings(), **{"rate_limit_per_minute": 0, **overrides})


def peers_at(**addrs: str) -> PeerSettings:
    """Peer addresses; services not given point at a closed port (they are down)."""
    closed = f"127.0.0.1:{free_port()}"
    fields = {f"{n}_addr": addrs.get(n, closed) for n in ("emotion", "reasoning", "router", "benchmark")}
    return PeerSettings(**fields, rpc_timeout_seconds=5.0)


@contextlib.asynccontextmanager
async def running_gateway(
    settings: GatewaySettings, peers: PeerSettings, redis: RedisSettings | None = None
) -> AsyncIterator[tuple[str, FastAPI]]:
    """Serve ``create_app(...)`` with uvicorn on a free port; yield its base URL and the app."""
    app = create_app(settings, peers, redis or RedisSettings())
    port = free_port()
    # The gateway's own uvicorn settings (proxy headers off), as `python -m services.gateway` runs it.
    config = uvicorn_config(app, settings, host="127.0.0.1", port=port, timeout_graceful_shutdown=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def gateway_with_emotion(mongo_url: str, mongo_db_name: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a gateway in front of the real emotion service (its MongoDB at ``mongo_url``);
    skips the test when there is no emotion model yet."""
    model = emotion_model_dir()
    if model is None:
        pytest.skip("no emotion model yet (make train-emotion or EMOTION_TEST_MODEL_DIR)")
    from services.emotion.app import EmotionApp
    from services.emotion.config import EmotionSettings

    settings = dataclasses.replace(EmotionSettings(), model_dir=str(model), intra_op_threads=2, warmup_batches=1)
    app = EmotionApp(settings, MongoSettings(url=mongo_url, database=mongo_db_name))
    async with serving(app) as (server, _):
        peers = peers_at(emotion=f"127.0.0.1:{server.port}")
        async with running_gateway(gateway_settings(), peers) as (url, _), httpx.AsyncClient(base_url=url) as c:
            yield c
