"""Cost ledger (MongoDB), daily spend counters for budgets (Redis), provider rate limits (Redis).

Every answered request is one ``router_ledger`` document (tokens, cost, provider, user,
purpose, timings) and an ``$inc`` on its ``router_costs_daily`` row (day, user, provider);
GetCosts reads the daily rows. Budgets need the day's spend on every request, so the same
amounts also go to Redis counters (shared by replicas, expiring after two days); a counter
missing after a Redis restart is rebuilt from the daily rows.

Writes are batched off the request path: ``submit`` queues a charge and a background flusher
writes every ``flush_seconds`` (or at ``batch_size`` charges) with one ``insert_many``, one
``bulk_write`` of the daily increments and one Redis pipeline. Charges still queued count in
this replica's budget checks, GetCosts flushes first, and ``close`` flushes what is left.

MongoDB writes go through an :class:`~masterx_runtime.outbox.Outbox`: while MongoDB is down the
charges wait on local disk and are replayed in order when it is back (also after a restart), so
an outage loses none (a crash can lose at most one flush interval of charges not yet queued).
Replays are harmless: every charge has its own ``_id`` (a duplicate means "already stored"), and
a daily row takes each flush batch's increment once (it remembers the batch ids it counted).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, PyMongoError
from redis.exceptions import RedisError

from masterx_runtime.errors import InvalidArgument, Unavailable
from masterx_runtime.outbox import Outbox
from masterx_runtime.stores.mongo_store import target
from masterx_runtime.tasks import stop_tasks, wait_event

log = logging.getLogger("masterx.router.ledger")

LEDGER = "router_ledger"
DAILY = "router_costs_daily"
INDEXES = {
    LEDGER: [IndexModel([("day", ASCENDING), ("user_id", ASCENDING)]), IndexModel([("ts", ASCENDING)])],
    DAILY: [IndexModel([("day", ASCENDING), ("user_id", ASCENDING), ("provider", ASCENDING)])],
}
_COUNTER_TTL = 2 * 86400
_SUMS = ("requests", "input_tokens", "output_tokens", "cost_usd")
#: Batch ids a daily row remembers (replays come within seconds; ~40 batches/s per row at most).
_BATCH_MEMORY = 1000


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
    #: True for a stream that broke after text was sent: tokens estimated from what was streamed.
    partial: bool = False


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
    def __init__(
        self,
        db: AsyncDatabase[Any],
        redis: aioredis.Redis,
        *,
        key_prefix: str = "masterx:",
        flush_seconds: float = 0.05,
        batch_size: int = 500,
        outbox: Outbox | None = None,
    ) -> None:
        self.db = db
        self.redis = redis
        self.prefix = f"{key_prefix}router:spend:"
        self.flush_seconds = flush_seconds
        self.batch_size = batch_size
        self._pending: list[tuple[Charge, float]] = []
        # batches taken off the queue whose Redis counters are not incremented yet: they still
        # count as queued, so a budget check never misses a charge in flight
        self._writing: list[list[tuple[Charge, float]]] = []
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.outbox = outbox or Outbox("router-ledger", self._store, key=target(db))

    def _user_key(self, day: str, user: str) -> str:
        return f"{self.prefix}{day}:u:{user}"

    def _provider_key(self, day: str, provider: str) -> str:
        return f"{self.prefix}{day}:p:{provider}"

    @property
    def queued(self) -> int:
        """Charges still in this process's memory: queued, or in a batch not yet handed to the outbox."""
        return len(self._pending) + sum(len(b) for b in self._writing)

    def submit(self, charge: Charge, ts: float | None = None) -> None:
        """Queue one answered request for the next flush (never blocks the request)."""
        self._pending.append((charge, time.time() if ts is None else ts))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._run(), name="ledger-flush")
        if len(self._pending) >= self.batch_size:
            self._wakeup.set()

    async def record(self, charge: Charge, ts: float | None = None) -> None:
        """Queue and write at once (tests, tools)."""
        self.submit(charge, ts)
        await self.flush()

    async def _run(self) -> None:
        while self._pending:
            await wait_event(self._wakeup, self.flush_seconds)
            self._wakeup.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write every queued charge now."""
        async with self._lock:
            batch, self._pending = self._pending, []
            if batch:
                self._writing.append(batch)
                try:
                    await self._write(batch)
                finally:
                    self._writing.remove(batch)

    async def close(self) -> None:
        await self.flush()
        await stop_tasks([self._flusher])
        await self.outbox.close()

    async def _write(self, batch: list[tuple[Charge, float]]) -> None:
        docs = []
        counters: dict[str, float] = {}
        for charge, ts in batch:
            day = utc_day(ts)
            docs.append(
                {
                    "_id": uuid.uuid4().hex,
                    **charge.__dict__,
                    "day": day,
                    "ts": dt.datetime.fromtimestamp(ts, dt.UTC),
                }
            )
            for key in (self._provider_key(day, charge.provider), self._user_key(day, charge.user_id)):
                counters[key] = counters.get(key, 0.0) + charge.cost_usd
        try:
            await self.outbox.write([{"_id": uuid.uuid4().hex, "charges": docs}])  # one entry per flush batch
        except PyMongoError as exc:  # rejected by MongoDB (not an outage): nothing to retry
            log.error("ledger write rejected", extra={"charges": len(batch), "error": str(exc)})
        try:
            pipe = self.redis.pipeline(transaction=False)
            for key, amount in counters.items():
                pipe.incrbyfloat(key, amount)
                pipe.expire(key, _COUNTER_TTL)
            await pipe.execute()
        except (RedisError, OSError) as exc:
            log.error("spend counters not updated", extra={"error": str(exc)})

    async def _store(self, batches: list[dict[str, Any]]) -> None:
        """Outbox writer, one flush batch at a time, exactly once even when replayed.

        Ledger documents: a duplicate ``_id`` is a charge stored already. Daily rows: each row
        remembers the last ``_BATCH_MEMORY`` batch ids that incremented it and matches only while
        this batch is not among them (a replayed increment hits a duplicate key instead), so the
        increment and its marker are one atomic document update.
        """
        for batch in batches:
            bid, charges = batch["_id"], batch["charges"]
            try:
                await self.db[LEDGER].insert_many(charges, ordered=False)
            except BulkWriteError as exc:
                if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                    raise
            daily: dict[str, dict[str, Any]] = {}
            for doc in charges:
                row = daily.setdefault(
                    f"{doc['day']}|{doc['user_id']}|{doc['provider']}",
                    {
                        "day": doc["day"],
                        "user_id": doc["user_id"],
                        "provider": doc["provider"],
                        "inc": dict.fromkeys(_SUMS, 0),
                    },
                )
                inc = row["inc"]
                inc["requests"] += 1
                inc["input_tokens"] += doc["input_tokens"]
                inc["output_tokens"] += doc["output_tokens"]
                inc["cost_usd"] += doc["cost_usd"]
            ops = [
                UpdateOne(
                    {"_id": key, "batches": {"$ne": bid}},
                    {
                        "$setOnInsert": {"day": r["day"], "user_id": r["user_id"], "provider": r["provider"]},
                        "$inc": r["inc"],
                        "$push": {"batches": {"$each": [bid], "$slice": -_BATCH_MEMORY}},
                    },
                    upsert=True,
                )
                for key, r in daily.items()
            ]
            try:
                await self.db[DAILY].bulk_write(ops, ordered=False)
            except BulkWriteError as exc:
                if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                    raise

    def _queued(self, day: str, user_id: str, names: list[str]) -> tuple[float, dict[str, float]]:
        user = 0.0
        by_provider: dict[str, float] = {}
        for charge, ts in itertools.chain(self._pending, *self._writing):
            if utc_day(ts) != day:
                continue
            if charge.user_id == user_id:
                user += charge.cost_usd
            by_provider[charge.provider] = by_provider.get(charge.provider, 0.0) + charge.cost_usd
        return user, by_provider

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
        queued_user, queued = self._queued(day, user_id, names)
        return spent[0] + queued_user, {n: s + queued.get(n, 0.0) for n, s in zip(names, spent[1:], strict=True)}

    async def _rebuild(
        self, day: str, user_id: str, names: list[str], values: list[Any], missing: list[int]
    ) -> list[Any]:
        """Counters absent from Redis (first request of the day, or Redis was reset): sum the daily rows."""
        wanted: list[dict[str, Any]] = []
        if 0 in missing:
            wanted.append({"user_id": user_id})
        providers_missing = [names[i - 1] for i in missing if i > 0]
        if providers_missing:
            wanted.append({"provider": {"$in": providers_missing}})
        try:
            rows = [r async for r in self.db[DAILY].find({"day": day, "$or": wanted})]
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
        await self.flush()
        if not await self.outbox.drain(timeout=2.0):
            raise Unavailable(
                f"mongodb is down: {self.outbox.stats.pending} charges wait in the outbox, costs would be incomplete",
                dependency="mongodb",
            )
        query: dict[str, Any] = {"day": {"$gte": since_day, "$lte": until_day}}
        if user_id:
            query["user_id"] = user_id
        if provider:
            query["provider"] = provider
        try:
            docs = [r async for r in self.db[DAILY].find(query)]
        except PyMongoError as exc:
            raise Unavailable(f"mongodb unavailable: {type(exc).__name__}", dependency="mongodb") from exc
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
            for r in docs
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
