"""MongoDB via pymongo's native async client, with index creation on start."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import AsyncMongoClient, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from masterx_runtime.config import env, settings
from masterx_runtime.errors import Unavailable
from masterx_runtime.readiness import Dependency

log = logging.getLogger("masterx.mongo")

Document = dict[str, Any]


@settings("stores")
class MongoSettings:
    url: str = env("MONGO_URL", "mongodb://127.0.0.1:27017", "MongoDB URL (any MongoDB wire-protocol server).")
    database: str = env("MONGO_DB", "masterx", "Database name.")
    timeout_ms: int = env("MONGO_TIMEOUT_MS", 3000, "Server selection / connect / socket timeout.", minimum=10)
    max_pool_size: int = env("MONGO_MAX_POOL_SIZE", 50, "Connection pool size.", minimum=1)


def target(db: AsyncDatabase[Any]) -> str:
    """The servers and database ``db`` writes to, e.g. ``127.0.0.1:27017/masterx`` (keys outbox files)."""
    servers = sorted(f"{h}:{p}" for h, p in db.client.topology_description.server_descriptions())
    return f"{','.join(servers)}/{db.name}"


class MongoStore:
    """One client and database; services declare their indexes per collection."""

    def __init__(self, cfg: MongoSettings) -> None:
        self.cfg = cfg
        self.client: AsyncMongoClient[Document] = AsyncMongoClient(
            cfg.url,
            serverSelectionTimeoutMS=cfg.timeout_ms,
            connectTimeoutMS=cfg.timeout_ms,
            socketTimeoutMS=max(cfg.timeout_ms, 10_000),
            maxPoolSize=cfg.max_pool_size,
            tz_aware=True,
        )
        self.db: AsyncDatabase[Document] = self.client[cfg.database]

    async def connect(self, indexes: Mapping[str, Sequence[IndexModel]] = {}) -> None:
        """Ping the server and create the given indexes (idempotent)."""
        try:
            await self.client.admin.command("ping")
            for collection, models in indexes.items():
                if models:
                    await self.db[collection].create_indexes(list(models))
        except PyMongoError as exc:
            raise Unavailable(f"mongodb not reachable: {exc}", dependency="mongodb") from exc
        log.info("mongodb connected", extra={"database": self.cfg.database})

    async def ping(self) -> None:
        await self.client.admin.command("ping")

    def dependency(self, *, required: bool) -> Dependency:
        """This store for the service's readiness (see :mod:`masterx_runtime.readiness`)."""
        return Dependency("mongodb", self.ping, required)

    async def close(self) -> None:
        await self.client.close()
