"""MongoDB persistence of runs, item results, scores and suite leases.

Consistency rules the rest of the service relies on:

* A run document's ``completed_items`` is rewritten from ``count_documents`` when the run ends,
  so it always equals the item results stored for it.
* Scores are only visible through runs whose state is SUCCEEDED (leaderboards and histories
  join on it), so scores written by a run that was cancelled or crashed mid-way are never read.
* A run leaves an active state only through :meth:`BenchmarkStore.finish_run`, a conditional
  update, so a cancel and a normal finish cannot overwrite each other.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from masterx_runtime.errors import Unavailable
from services.benchmark.metrics import MONGO_WRITE_SECONDS

Document = dict[str, Any]

RUNS = "benchmark_runs"
ITEMS = "benchmark_item_results"
SCORES = "benchmark_scores"
LEASES = "benchmark_leases"

ACTIVE_STATES = ("PENDING", "RUNNING")
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELLED")

INDEXES: dict[str, list[IndexModel]] = {
    RUNS: [
        IndexModel([("state", ASCENDING), ("heartbeat_at", ASCENDING)], name="state_heartbeat"),
        IndexModel([("started_at", DESCENDING)], name="started"),
    ],
    ITEMS: [
        IndexModel(
            [("run_id", ASCENDING), ("provider", ASCENDING), ("category", ASCENDING), ("item_id", ASCENDING)],
            unique=True,
            name="one_result_per_item",
        ),
        IndexModel([("run_id", ASCENDING), ("seq", ASCENDING)], name="run_seq"),
        IndexModel(
            [("category", ASCENDING), ("provider", ASCENDING), ("created_at", DESCENDING)], name="cat_provider_time"
        ),
    ],
    SCORES: [
        IndexModel([("category", ASCENDING), ("measured_at", DESCENDING)], name="cat_time"),
        IndexModel(
            [("provider", ASCENDING), ("category", ASCENDING), ("measured_at", DESCENDING)], name="provider_cat_time"
        ),
        IndexModel([("run_id", ASCENDING)], name="run"),
    ],
    LEASES: [IndexModel([("expires_at", ASCENDING)], name="expiry")],
}


def _unavailable(exc: PyMongoError) -> Unavailable:
    return Unavailable(f"mongodb error: {exc}", dependency="mongodb")


class BenchmarkStore:
    """Typed access to the benchmark collections; every method maps driver errors to UNAVAILABLE."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.runs = db[RUNS]
        self.items = db[ITEMS]
        self.scores = db[SCORES]
        self.leases = db[LEASES]
        #: Cumulative time spent in item-result and score writes, for the benchmark's breakdown.
        self.write_seconds = 0.0
        self.write_batches = 0

    # ---- runs -------------------------------------------------------------------------------

    async def create_run(self, doc: Document) -> None:
        try:
            await self.runs.insert_one(doc)
        except PyMongoError as exc:
            raise _unavailable(exc) from exc

    async def get_run(self, run_id: str) -> Document | None:
        try:
            return await self.runs.find_one({"_id": run_id})
        except PyMongoError as exc:
            raise _unavailable(exc) from exc

    async def update_active_run(self, run_id: str, fields: Document) -> Document | None:
        """Set fields on a run that is still active; returns the run after the update, or None."""
        try:
            return await self.runs.find_one_and_update(
                {"_id": run_id, "state": {"$in": list(ACTIVE_STATES)}},
                {"$set": fields},
                return_document=ReturnDocument.AFTER,
            )
        except PyMongoError as exc:
            raise _unavailable(exc) from exc

    async def raise_completed(self, run_id: str, completed: int) -> None:
        """Progress counter during a run (never moves backwards)."""
        try:
            await self.runs.update_one({"_id": run_id}, {"$max": {"completed_items": completed}})
        except PyMongoError as exc:
            raise _unavailable(exc) from exc

    async def finish_run(
        self, run_id: str, state: str, *, finished_at: float, error: str = "", require_no_cancel: bool = False
    ) -> Document | None:
        """Move an active run to a terminal state with its exact item count; None if it was not active."""
        if state not in TERMINAL_STATES:
            raise ValueError(state)
        try:
            completed = await self.items.count_documents({"run_id": run_id})
            query: Document = {"_id": run_id, "state": {"$in": list(ACTIVE_STATES)}}
            if require_no_cancel:
                query["cancel_requested"] = {"$ne": True}
            return await self.runs.find_one_and_update(
                query,
                {"$set": {"state": state, "finished_at": finished_at, "error": error, "completed_items": completed}},
                return_document=ReturnDocument.AFTER,
            )
        except PyMongoError as exc:
            raise _unavailable(exc) from exc

    async def request_cancel(self, run_id: str) -> Document | None:
        """Flag an active run for cancellation (the owning replica acts on it); None if not active."""
        return await self.update_active_run(run_id, {"cancel_requested": True})

    async def stale_runs(self, heartbeat_before: float) -> list[Document]:
        """Active runs whose owner stopped renewing (crashed replica)."""
        try:
            cursor = self.runs.find({"state": {"$in": list(ACTIVE_STATES)}, "heartbeat_at": {"$lt": heartbeat_before}})
            return await cursor.to_list(length=1000)
        except PyMongoError as exc:
            raise _unavailable(exc) from exc

    async def recent_run_providers(self, trigger: str, *, since: float) -> set[str]:
        """Providers of runs with ``trigger`` started at or after ``since`` (cancelled runs left out)."""
        try:
            cursor = self.runs.find(
                {"trigger": trigger, "started_at": {"$gte": since}, "state": {"$ne": "CANCELLED"}}, {"providers": 1}
            )
            return {p for doc in await cursor.to_list(length=None) for p in doc.get("providers", [])}
        except PyMongoError as exc:
            raise _unavailable(exc) from exc

    # ---- item results -----------------------------------------------------------------------

    async def _insert_timed(self, collection: AsyncCollection[Document], docs: Sequence[Document]) -> None:
        """Insert a batch, counting its time in the write metrics (benchmarks report them)."""
        if not docs:
            return
        started = time.perf_counter()
        try:
            await collection.insert_many(list(docs), ordered=True)
        except PyMongoError as exc:
            raise _unavailable(exc) from exc
        finally:
            elapsed = time.perf_counter() - started
            self.write_seconds += elapsed
            self.write_batches += 1
            MONGO_WRITE_SECONDS.observe(elapsed)

    async def insert_items(self, docs: Sequence[Document]) -> None:
        await self._insert_timed(self.items, docs)

    async def insert_items_once(self, docs: Sequence[Document]) -> None:
        """Insert item results, skipping ones already stored (an outbox replay after a lost reply).

        Driver errors are raised as they are, so the outbox can tell an outage (retry later) from
        a rejected write.
        """
        started = time.perf_counter()
        try:
            await self.items.insert_many(list(docs), ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise
        finally:
            elapsed = time.perf_counter() - started
            self.write_seconds += elapsed
            self.write_batches += 1
            MONGO_WRITE_SECONDS.observe(elapsed)

    async def list_items(
        self, run_id: str, *, provider: str = "", category: str = "", after_seq: int = -1, limit: int = 0
    ) -> list[Document]:
        query: Document = {"run_id": run_id}
        if provider:
            query["provider"] = provider
        if category:
            query["category"] = category
        if after_seq >= 0:
            query["seq"] = {"$gt": after_seq}
        try:
            cursor = self.items.find(query).sort("seq", ASCENDING)
            if limit:
                cursor = cursor.limit(limit)
            return await cursor.to_list(length=None)
        except PyMongoError as exc:
            raise _unavailable(exc) from exc

    # ---- scores -----------------------------------------------------------------------------

    async def insert_scores(self, docs: Sequence[Document]) -> None:
        await self._insert_timed(self.scores, docs)

    async def delete_scores(self, run_id: str) -> None:
        try:
            await self.scores.delete_many({"run_id": run_id})
        except PyMongoError as exc:
            raise _unavailable(exc) from exc

    async def _succeeded(self, run_ids: set[str]) -> set[str]:
        if not run_ids:
            return set()
        cursor = self.runs.find({"_id": {"$in": sorted(run_ids)}, "state": "SUCCEEDED"}, {"_id": 1})
        return {doc["_id"] for doc in await cursor.to_list(length=None)}

    async def latest_scores(self, category: str, *, since: float) -> list[Document]:
        """Per provider, the newest score in ``category`` measured at or after ``since`` by a SUCCEEDED run."""
        try:
            cursor = self.scores.find({"category": category, "measured_at": {"$gte": since}}).sort(
                "measured_at", DESCENDING
            )
            docs = await cursor.to_list(length=None)
            good = await self._succeeded({d["run_id"] for d in docs})
        except PyMongoError as exc:
            raise _unavailable(exc) from exc
        latest: dict[str, Document] = {}
        for doc in docs:
            if doc["run_id"] in good and doc["provider"] not in latest:
                latest[doc["provider"]] = doc
        return sorted(latest.values(), key=lambda d: (-d["final_score"], d["provider"]))

    async def provider_history(self, provider: str, *, category: str = "", limit: int = 50) -> list[Document]:
        """Scores of a provider from SUCCEEDED runs, newest first."""
        query: Document = {"provider": provider}
        if category:
            query["category"] = category
        out: list[Document] = []
        skip = 0
        page = max(limit, 50)
        try:
            while len(out) < limit:
                cursor = self.scores.find(query).sort("measured_at", DESCENDING).skip(skip).limit(page)
                docs = await cursor.to_list(length=None)
                if not docs:
                    break
                good = await self._succeeded({d["run_id"] for d in docs})
                out.extend(d for d in docs if d["run_id"] in good)
                skip += len(docs)
        except PyMongoError as exc:
            raise _unavailable(exc) from exc
        return out[:limit]

    # ---- leases -----------------------------------------------------------------------------

    async def acquire_lease(
        self, suite: str, *, owner: str, run_id: str, now: float, ttl: float, due_before: float | None = None
    ) -> bool:
        """Take the suite's lease if it is free (expired or never taken), atomically.

        With ``due_before`` the lease is only taken when the suite's last run started before that
        time, so replicas agree on when a scheduled run is due.
        """
        query: Document = {"_id": suite, "expires_at": {"$lt": now}}
        if due_before is not None:
            query["$or"] = [{"last_started_at": {"$lt": due_before}}, {"last_started_at": {"$exists": False}}]
        try:
            doc = await self.leases.find_one_and_update(
                query,
                {"$set": {"owner": owner, "run_id": run_id, "expires_at": now + ttl, "acquired_at": now}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return False  # the lease document exists and did not match: held by someone, or not due
        except PyMongoError as exc:
            raise _unavailable(exc) from exc
        return doc is not None and doc.get("owner") == owner and doc.get("run_id") == run_id

    async def mark_started(self, suite: str, *, owner: str, run_id: str, now: float) -> None:
        try:
            await self.leases.update_one(
                {"_id": suite, "owner": owner, "run_id": run_id}, {"$set": {"last_started_at": now}}
            )
        except PyMongoError as exc:
            raise _unavailable(exc) from exc

    async def renew_lease(self, suite: str, *, owner: str, run_id: str, now: float, ttl: float) -> bool:
        """Extend a lease this owner still holds; False when it was lost (expired and taken)."""
        try:
            result = await self.leases.update_one(
                {"_id": suite, "owner": owner, "run_id": run_id}, {"$set": {"expires_at": now + ttl}}
            )
        except PyMongoError as exc:
            raise _unavailable(exc) from exc
        return result.matched_count == 1

    async def release_lease(self, suite: str, *, owner: str, run_id: str) -> None:
        try:
            await self.leases.update_one(
                {"_id": suite, "owner": owner, "run_id": run_id}, {"$set": {"expires_at": 0.0}}
            )
        except PyMongoError as exc:
            raise _unavailable(exc) from exc

    async def lease_holder(self, suite: str, *, now: float) -> Document | None:
        try:
            return await self.leases.find_one({"_id": suite, "expires_at": {"$gte": now}})
        except PyMongoError as exc:
            raise _unavailable(exc) from exc
