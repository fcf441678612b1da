"""Round trips against the real Redis and MongoDB-wire servers."""

from __future__ import annotations

import dataclasses

import pytest
from pymongo import ASCENDING, IndexModel

from masterx_runtime.errors import Unavailable
from masterx_runtime.stores.mongo_store import MongoSettings, MongoStore
from masterx_runtime.stores.redis_store import RedisSettings, connect_redis
from masterx_runtime.testing.servers import free_port


async def test_redis_round_trip_with_ttl(redis_url: str, redis_prefix: str) -> None:
    client = await connect_redis(dataclasses.replace(RedisSettings(), url=redis_url))
    try:
        key = f"{redis_prefix}session"
        await client.set(key, b"router-a", ex=30)
        assert await client.get(key) == b"router-a"
        assert 0 < await client.ttl(key) <= 30
    finally:
        await client.aclose()


async def test_redis_unreachable_is_unavailable() -> None:
    cfg = dataclasses.replace(RedisSettings(), url=f"redis://127.0.0.1:{free_port()}/0", connect_timeout_seconds=0.3)
    with pytest.raises(Unavailable) as err:
        await connect_redis(cfg)
    assert err.value.dependency == "redis"


async def test_mongo_round_trip_and_indexes(mongo_url: str, mongo_db_name: str) -> None:
    store = MongoStore(dataclasses.replace(MongoSettings(), url=mongo_url, database=mongo_db_name))
    try:
        await store.connect({"items": [IndexModel([("user", ASCENDING), ("ts", ASCENDING)], name="user_ts")]})
        await store.db.items.insert_many([{"user": "u1", "ts": i} for i in range(3)])
        docs = await store.db.items.find({"user": "u1"}, {"_id": 0}).sort("ts", -1).to_list()
        assert docs == [{"user": "u1", "ts": 2}, {"user": "u1", "ts": 1}, {"user": "u1", "ts": 0}]
        names = {ix["name"] async for ix in await store.db.items.list_indexes()}
        assert "user_ts" in names
    finally:
        await store.close()


async def test_mongo_unreachable_is_unavailable() -> None:
    cfg = dataclasses.replace(MongoSettings(), url=f"mongodb://127.0.0.1:{free_port()}", timeout_ms=300)
    store = MongoStore(cfg)
    try:
        with pytest.raises(Unavailable) as err:
            await store.connect()
        assert err.value.dependency == "mongodb"
    finally:
        await store.close()
