"""Shared fixtures: real Redis and a real MongoDB-wire server for the whole test session.

Each server comes from, in order: an environment URL (MASTERX_TEST_REDIS_URL /
MASTERX_TEST_MONGO_URL), a local binary started on a free loopback port, testcontainers when a
Docker engine answers, else the test is skipped with the reason. With MASTERX_REQUIRE_SERVERS=1
(as CI sets) a missing server fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from masterx_runtime.testing import servers


def _unavailable(reason: str) -> None:
    if os.environ.get("MASTERX_REQUIRE_SERVERS") == "1":
        pytest.fail(f"required server unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def _docker_ok() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis server for this test session."""
    if url := os.environ.get("MASTERX_TEST_REDIS_URL"):
        yield url
        return
    if servers.redis_binary():
        managed = servers.start_redis()
        try:
            yield managed.url
        finally:
            managed.stop()
        return
    if _docker_ok():
        from testcontainers.redis import RedisContainer

        with RedisContainer() as c:
            yield f"redis://{c.get_container_host_ip()}:{c.get_exposed_port(6379)}/0"
        return
    _unavailable("no Redis: set MASTERX_TEST_REDIS_URL, install redis-server, or run a Docker engine")


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    """URL of a real MongoDB-wire server for this test session."""
    if url := os.environ.get("MASTERX_TEST_MONGO_URL"):
        yield url
        return
    if servers.mongo_binary():
        managed = servers.start_mongo()
        try:
            yield managed.url
        finally:
            managed.stop()
        return
    if _docker_ok():
        from testcontainers.mongodb import MongoDbContainer

        with MongoDbContainer("mongo:7") as c:
            yield c.get_connection_url()
        return
    _unavailable("no MongoDB: set MASTERX_TEST_MONGO_URL, pip install secantusdb, or run a Docker engine")


@pytest.fixture
def mongo_db_name() -> str:
    """A fresh database name per test, so tests never see each other's documents."""
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_prefix() -> str:
    """A fresh key prefix per test, so tests never see each other's keys."""
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def router_base_env(redis_url: str, redis_prefix: str, mongo_url: str, mongo_db_name: str) -> dict[str, str]:
    """Environment for a RouterApp on this test's Redis and MongoDB with no local model, no
    providers from API keys and no benchmark scores (tests add ROUTER_PROVIDERS_JSON)."""
    return servers.offline_router_env(redis_url, mongo_url, mongo_db_name, redis_prefix)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[object]:
    """A connected redis.asyncio client (closed after the test)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()
