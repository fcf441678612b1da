"""Cost ledger (MongoDB), daily spend counters for budgets (Redis), provider rate limits (Redis).

Every answered request is one ``router_ledger`` document (tokens, cost, provider, user,
purpose, timings) and an ``$inc`` on its ``router_costs_daily`` row (day, user, provider);
GetCosts reads the daily rows. Budgets need the day's spend on every request, so the same
amounts also go to Redis counters (shared by replicas, expiring after two days); a counter
missing after a Redis restart is rebuilt from the daily rows.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from masterx_runtime.errors import InvalidArgument

log = logging.getLogger("masterx.router.ledger")

LEDGER = "router_ledger"
DAILY = "router_costs_daily"
INDEXES = {
    LEDGER: [IndexModel([("day", ASCENDING), ("user_id", ASCENDING)]), IndexModel([("ts", ASCENDING)])],
    DAILY: [IndexModel([("day", ASCENDING), ("user_id", ASCENDING), ("provider", ASCENDING)])],
}
_COUNTER_TTL = 2 * 86400


def utc_day(ts: float | None = None) -> str:
    return dt.datetime.fromtimestamp(time.time() if ts is None else ts, dt.UTC).strftime("%Y-%m-%d")


def parse_day(value: str, field: str) -> str:
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise InvalidArgument(f"{field} must be YYYY-MM-DD, got {value!r}", reason="BAD_DAY", field=field) from None


@dataclass(frozen=True)
class Charge:
    """One answered request."""

    user_id: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    estimated: bool
    cost_usd: float
    purpose: str
    session_id: str
    latency_ms: float
    request_id: str


@dataclass(frozen=True)
class CostRow:
    day: str
    user_id: str
    provider: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


class CostLedger:
    def __init__(self, db: AsyncDatabase[Any], redis: aioredis.Redis, *, key_prefix: str = "masterx:") -> None:
        self.db = db
        self.redis = redis
        self.prefix = f"{key_prefix}router:spend:"

    def _user_key(self, day: str, user: str) -> str:
        return f"{self.prefix}{day}:u:{user}"

    def _provider_key(self, day: str, provider: str) -> str:
        return f"{self.prefix}{day}:p:{provider}"

    async def record(self, charge: Charge, ts: float | None = None) -> None:
        """Write the request and its daily aggregate; bump the budget counters."""
        now = time.time() if ts is None else ts
        day = utc_day(now)
        doc = {**charge.__dict__, "day": day, "ts": dt.datetime.fromtimestamp(now, dt.UTC)}
        try:
            await self.db[LEDGER].insert_one(doc)
            await self.db[DAILY].update_one(
                {"_id": f"{day}|{charge.user_id}|{charge.provider}"},
                {
                    "$setOnInsert": {"day": day, "user_id": charge.user_id, "provider": charge.provider},
                    "$inc": {
                        "requests": 1,
                        "input_tokens": charge.input_tokens,
                        "output_tokens": charge.output_tokens,
                        "cost_usd": charge.cost_usd,
                    },
                },
                upsert=True,
            )
        except PyMongoError as exc:
            log.error("ledger write failed", extra={"provider": charge.provider, "error": str(exc)})
        pipe = self.redis.pipeline(transaction=False)
        for key in (self._provider_key(day, charge.provider), self._user_key(day, charge.user_id)):
            pipe.incrbyfloat(key, charge.cost_usd)
            pipe.expire(key, _COUNTER_TTL)
        await pipe.execute()

    async def spend_today(self, user_id: str, providers: Iterable[str]) -> tuple[float, dict[str, float]]:
        """(user's spend, {provider: spend}) for the current UTC day, one Redis round trip."""
        day = utc_day()
        names = list(providers)
        keys = [self._user_key(day, user_id), *(self._provider_key(day, p) for p in names)]
        values = await self.redis.mget(keys)
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            values = await self._rebuild(day, user_id, names, values, missing)
        spent = [float(v) if v is not None else 0.0 for v in values]
        return spent[0], dict(zip(names, spent[1:], strict=True))

    async def _rebuild(
        self, day: str, user_id: str, names: list[str], values: list[Any], missing: list[int]
    ) -> list[Any]:
        """Counters absent from Redis (first request of the day, or Redis was reset): sum the daily rows."""
        try:
            rows = [r async for r in self.db[DAILY].find({"day": day})]
        except PyMongoError as exc:
            log.warning("spend rebuild failed", extra={"error": str(exc)})
            return values
        by_user = sum(float(r.get("cost_usd", 0)) for r in rows if r.get("user_id") == user_id)
        by_provider: dict[str, float] = {}
        for r in rows:
            by_provider[r.get("provider", "")] = by_provider.get(r.get("provider", ""), 0.0) + float(
                r.get("cost_usd", 0)
            )
        pipe = self.redis.pipeline(transaction=False)
        out = list(values)
        for i in missing:
            if i == 0:
                key, amount = self._user_key(day, user_id), by_user
            else:
                key, amount = self._provider_key(day, names[i - 1]), by_provider.get(names[i - 1], 0.0)
            out[i] = amount
            pipe.set(key, repr(amount), ex=_COUNTER_TTL, nx=True)
        await pipe.execute()
        return out

    async def costs(self, user_id: str, provider: str, since_day: str, until_day: str) -> list[CostRow]:
        query: dict[str, Any] = {"day": {"$gte": since_day, "$lte": until_day}}
        if user_id:
            query["user_id"] = user_id
        if provider:
            query["provider"] = provider
        rows = [
            CostRow(
                r["day"],
                r.get("user_id", ""),
                r.get("provider", ""),
                int(r.get("requests", 0)),
                int(r.get("input_tokens", 0)),
                int(r.get("output_tokens", 0)),
                float(r.get("cost_usd", 0.0)),
            )
            async for r in self.db[DAILY].find(query)
        ]
        rows.sort(key=lambda r: (r.day, r.user_id, r.provider))
        return rows


class RateLimiter:
    """Per-provider requests and tokens per minute, counted in Redis across replicas."""

    def __init__(self, redis: aioredis.Redis, limits: Mapping[str, tuple[int, int]], *, key_prefix: str = "masterx:"):
        self.redis = redis
        self.limits = {name: lim for name, lim in limits.items() if lim[0] or lim[1]}
        self.prefix = f"{key_prefix}router:rate:"

    async def admit(self, provider: str, now: float | None = None) -> str:
        """'' when the provider may take one more request this minute, else why not."""
        limit = self.limits.get(provider)
        if limit is None:
            return ""
        rpm, tpm = limit
        minute = int((time.time() if now is None else now) // 60)
        base = f"{self.prefix}{provider}:{minute}"
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(base + ":req")
        pipe.expire(base + ":req", 120)
        pipe.get(base + ":tok")
        requests, _, tokens = await pipe.execute()
        if rpm and int(requests) > rpm:
            return f"local rate limit: {rpm} requests/minute reached"
        if tpm and tokens is not None and int(tokens) >= tpm:
            return f"local rate limit: {tpm} tokens/minute reached"
        return ""

    async def add_tokens(self, provider: str, tokens: int, now: float | None = None) -> None:
        limit = self.limits.get(provider)
        if limit is None or not limit[1]:
            return
        minute = int((time.time() if now is None else now) // 60)
        key = f"{self.prefix}{provider}:{minute}:tok"
        pipe = self.redis.pipeline(transaction=False)
        pipe.incrby(key, tokens)
        pipe.expire(key, 120)
        await pipe.execute()
