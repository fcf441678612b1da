"""Practice RPCs: mastery (MongoDB), problem generation, session planning, trace explanation."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from masterx.reasoning.v1 import reasoning_pb2
from masterx_runtime.errors import InvalidArgument, NotFound
from masterx_runtime.validation import USER_ID_RE
from services.reasoning import convert
from services.reasoning.practice.explain import explain
from services.reasoning.practice.generator import MAX_TERMS, ProblemSpec, generate
from services.reasoning.practice.mastery import LEVELS, MasteryState, PracticeConfig, SkillRecord, state_of
from services.reasoning.practice.planner import PART_TYPES, bounds_for, plan_session
from services.reasoning.practice.soroban import SKILL_SET
from services.reasoning.practice.store import MasteryStore

_STUDENT_ID_RE = USER_ID_RE  # the one user id rule (masterx_runtime/input_limits.json)
MAX_SLOTS = 64
FUTURE_SLACK_S = 86400.0


def check_student_id(student_id: str, *, required: bool) -> None:
    if not student_id:
        if required:
            raise InvalidArgument("student_id is required", reason="MISSING_STUDENT", field="student_id")
        return
    if not _STUDENT_ID_RE.match(student_id):
        raise InvalidArgument(
            "student_id must be 1-128 characters of letters, digits and _.:@- starting with a letter or digit",
            reason="BAD_STUDENT_ID",
            field="student_id",
        )


def _enum(value: int, names: Mapping[Any, str], default: str, field: str) -> str:
    if value == 0:
        return default
    if value not in names:
        raise InvalidArgument(f"unknown {field} {value}", reason="BAD_ENUM", field=field)
    return names[value]


class PracticeHandler:
    def __init__(
        self, cfg: PracticeConfig, store: Callable[[], MasteryStore], clock: Callable[[], float] = time.time
    ) -> None:
        self.cfg = cfg
        self._store = store
        self.clock = clock

    async def records(self, student_id: str) -> list[SkillRecord]:
        return await self._store().get(student_id) if student_id else []

    def _states(self, records: list[SkillRecord], now: float) -> dict[str, MasteryState]:
        return {r.skill: state_of(r, now, self.cfg.rules) for r in records}

    async def get_mastery(self, req: reasoning_pb2.GetMasteryRequest) -> reasoning_pb2.StudentMastery:
        check_student_id(req.student_id, required=True)
        records = await self.records(req.student_id)
        if not records and req.must_exist:
            raise NotFound(
                f"no mastery stored for student {req.student_id}", reason="UNKNOWN_STUDENT", field="student_id"
            )
        return convert.mastery_msg(req.student_id, records, self._states(records, self.clock()))

    async def update_mastery(self, req: reasoning_pb2.UpdateMasteryRequest) -> reasoning_pb2.StudentMastery:
        check_student_id(req.student_id, required=True)
        if not req.skills:
            raise InvalidArgument("skills is empty", reason="NO_SKILLS", field="skills")
        now = self.clock()
        seen: set[str] = set()
        for i, s in enumerate(req.skills):
            if s.skill not in SKILL_SET:
                raise InvalidArgument(f"unknown skill {s.skill!r}", reason="UNKNOWN_SKILL", field=f"skills[{i}].skill")
            if s.skill in seen:
                raise InvalidArgument(
                    f"skill {s.skill!r} given twice", reason="DUPLICATE_SKILL", field=f"skills[{i}].skill"
                )
            seen.add(s.skill)
            if s.level not in LEVELS:
                raise InvalidArgument(
                    f"level must be one of {', '.join(LEVELS)}", reason="BAD_LEVEL", field=f"skills[{i}].level"
                )
            for name in ("last_practiced_at", "mastered_at"):
                value = getattr(s, name)
                if not math.isfinite(value) or value < 0 or value > now + FUTURE_SLACK_S:
                    raise InvalidArgument(
                        f"{name} must be unix seconds, not in the future",
                        reason="BAD_TIME",
                        field=f"skills[{i}].{name}",
                    )
        stored = {r.skill: r for r in await self.records(req.student_id)}
        records = []
        for s in req.skills:
            old = stored.get(s.skill)
            last = s.last_practiced_at or (old.last_practiced_at if old else 0.0)
            mastered_at = 0.0
            if s.level == "mastered":  # 0 keeps the stored time, else "mastered now"
                mastered_at = s.mastered_at or (
                    old.mastered_at if old and old.level == "mastered" and old.mastered_at else now
                )
            records.append(SkillRecord(s.skill, s.level, last, mastered_at))
        await self._store().upsert(req.student_id, records)
        all_records = await self.records(req.student_id)
        return convert.mastery_msg(req.student_id, all_records, self._states(all_records, now))

    async def generate_problem(self, req: reasoning_pb2.GenerateProblemRequest) -> reasoning_pb2.GeneratedProblem:
        check_student_id(req.student_id, required=False)
        purpose = _enum(req.purpose, convert.PURPOSES, "focus", "purpose")
        part = _enum(req.part_type, convert.PART_TYPES, "abacus", "part_type")
        bounds = convert.bounds_of(req.bounds) if req.HasField("bounds") else bounds_for(self.cfg, purpose, part)
        digits = req.digits or int(self.cfg.session.get("digits", {}).get(part, 1))
        spec = ProblemSpec(
            terms=req.terms or int(self.cfg.session.get("default_terms", 4)),
            digits=digits,
            bounds=bounds,
            allowed_skills=frozenset(req.allowed_skills) if req.allowed_skills else None,
            allow_subtraction=req.allow_subtraction,
            seed=req.seed,
            purpose=purpose,
            part_type=part,
        )
        records = await self.records(req.student_id)
        calc = self.cfg.calculator(records, self.clock())
        # off the event loop: usually well under 5 ms, but a hopeless 3-digit search may take
        # a few hundred ms before its evaluation cap ends it
        problem = await asyncio.to_thread(generate, spec, calc, self.cfg)
        return convert.problem_msg(problem)

    async def plan(self, req: reasoning_pb2.PlanPracticeSessionRequest) -> reasoning_pb2.PracticePlan:
        check_student_id(req.student_id, required=True)
        slots = req.slots or int(self.cfg.session.get("default_slots", 8))
        if not 1 <= slots <= MAX_SLOTS:
            raise InvalidArgument(f"slots must be 1-{MAX_SLOTS}", reason="BAD_SLOTS", field="slots")
        terms = req.terms_per_problem or int(self.cfg.session.get("default_terms", 4))
        if not 2 <= terms <= MAX_TERMS:
            raise InvalidArgument(
                f"terms_per_problem must be 2-{MAX_TERMS}", reason="BAD_TERMS", field="terms_per_problem"
            )
        parts = [_enum(p, convert.PART_TYPES, "", "part_types") for p in req.part_types]
        if any(not p for p in parts):
            raise InvalidArgument(
                "part_types must not contain PART_TYPE_UNSPECIFIED", reason="BAD_ENUM", field="part_types"
            )
        ordered = [p for p in PART_TYPES if p in parts] if parts else list(PART_TYPES)
        records = await self.records(req.student_id)
        calc = self.cfg.calculator(records, self.clock())
        planned = await asyncio.to_thread(
            lambda: plan_session(calc, self.cfg, slots=slots, part_types=ordered, terms=terms, seed=req.seed)
        )
        return reasoning_pb2.PracticePlan(
            student_id=req.student_id,
            slots=[
                reasoning_pb2.PracticeSlot(
                    index=s.index,
                    purpose=convert.PURPOSE_IDS[s.purpose],  # type: ignore[arg-type]
                    part_type=convert.PART_TYPE_IDS[s.part_type],  # type: ignore[arg-type]
                    bounds=convert.bounds_msg(s.bounds),
                    problem=convert.problem_msg(s.problem),
                )
                for s in planned
            ],
        )

    def explain(self, req: reasoning_pb2.ExplainTraceRequest) -> reasoning_pb2.ExplainTraceResponse:
        trace = req.trace
        steps, notes = convert.trace_views(trace)
        purpose = convert.PURPOSES.get(trace.purpose, "practice")
        part = convert.PART_TYPES.get(trace.part_type, "soroban")
        lines = explain(
            steps,
            convert.bounds_of(trace.bounds),
            notes,
            purpose=purpose,
            part_type=part,
            rejected_over_max=trace.rejected_over_max,
            rejected_under_min=trace.rejected_under_min,
        )
        return reasoning_pb2.ExplainTraceResponse(lines=lines)
