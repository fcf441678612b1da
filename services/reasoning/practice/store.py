"""Student skill mastery in MongoDB: one document per (student, skill)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from pymongo import IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from masterx_runtime.errors import Unavailable
from services.reasoning.practice.mastery import SkillRecord

COLLECTION = "skill_mastery"
INDEXES = {COLLECTION: [IndexModel([("student_id", 1), ("skill", 1)], unique=True, name="student_skill")]}


class MasteryStore:
    def __init__(self, db: AsyncDatabase[dict]) -> None:  # type: ignore[type-arg]
        self.coll = db[COLLECTION]

    async def get(self, student_id: str) -> list[SkillRecord]:
        try:
            docs = await self.coll.find({"student_id": student_id}).sort("skill", 1).to_list(None)
        except PyMongoError as exc:
            raise Unavailable(f"mongodb unavailable: {exc}", dependency="mongodb") from exc
        return [
            SkillRecord(
                d["skill"], d["level"], float(d.get("last_practiced_at", 0.0)), float(d.get("mastered_at", 0.0))
            )
            for d in docs
        ]

    async def upsert(self, student_id: str, records: Sequence[SkillRecord]) -> None:
        now = time.time()
        ops = [
            UpdateOne(
                {"student_id": student_id, "skill": r.skill},
                {
                    "$set": {
                        "level": r.level,
                        "last_practiced_at": r.last_practiced_at,
                        "mastered_at": r.mastered_at,
                        "updated_at": now,
                    }
                },
                upsert=True,
            )
            for r in records
        ]
        if not ops:
            return
        try:
            await self.coll.bulk_write(ops, ordered=True)
        except PyMongoError as exc:
            raise Unavailable(f"mongodb unavailable: {exc}", dependency="mongodb") from exc
