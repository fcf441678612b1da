"""Redis via redis-py's asyncio client (hiredis parser when installed)."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from masterx_runtime.config import env, settings
from masterx_runtime.errors import Unavailable
from masterx_runtime.readiness import Dependency

log = logging.getLogger("masterx.redis")


@settings("stores")
class RedisSettings:
    url: str = env("REDIS_URL", "redis://127.0.0.1:6379/0", "Redis URL (sessions, circuit breakers, rate limits).")
    socket_timeout_seconds: float = env("REDIS_TIMEOUT_SECONDS", 2.0, "Timeout for one Redis command.", minimum=0.01)
    connect_timeout_seconds: float = env(
        "REDIS_CONNECT_TIMEOUT_SECONDS", 3.0, "Timeout to connect to Redis.", minimum=0.01
    )
    max_connections: int = env("REDIS_MAX_CONNECTIONS", 64, "Connection pool size.", minimum=1)
    key_prefix: str = env("REDIS_KEY_PREFIX", "masterx:", "Prefix of every key MasterX writes.")


async def connect_redis(cfg: RedisSettings) -> aioredis.Redis:
    """Connect and PING; raise :class:`Unavailable` if Redis does not answer.

    The pool *blocks* (up to the command timeout) for a free connection when more than
    ``max_connections`` commands are in flight, instead of failing them under load.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        cfg.url,
        max_connections=cfg.max_connections,
        timeout=cfg.socket_timeout_seconds,
        socket_timeout=cfg.socket_timeout_seconds,
        socket_connect_timeout=cfg.connect_timeout_seconds,
        health_check_interval=30,
    )
    client = aioredis.Redis(connection_pool=pool)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        raise Unavailable(f"redis not reachable: {exc}", dependency="redis") from exc
    log.info("redis connected")
    return client


def redis_dependency(client: aioredis.Redis, *, required: bool) -> Dependency:
    """Redis for the service's readiness (see :mod:`masterx_runtime.readiness`)."""

    async def ping() -> None:
        await client.ping()

    return Dependency("redis", ping, required)
