"""Plain-language explanation of a generation trace: one line per term plus a summary."""

from __future__ import annotations

import re
from dataclasses import dataclass

from masterx_runtime.errors import InvalidArgument
from services.reasoning.practice.generator import Bounds

_NAMES = {
    "basic.directAddition": "direct addition",
    "basic.heavenBead": "heaven bead (+5)",
    "basic.simpleCombinations": "heaven and earth beads together",
    "basic.directSubtraction": "direct subtraction",
    "basic.heavenBeadSubtraction": "heaven bead (-5)",
    "basic.simpleCombinationsSub": "heaven and earth beads together (subtracting)",
    "advanced.cascadingCarry": "cascading carry across several rods",
    "advanced.cascadingBorrow": "cascading borrow across several rods",
}
_COMPLEMENT_RE = re.compile(r"^(fiveComplements|fiveComplementsSub|tenComplements|tenComplementsSub)\.(.+)$")


def describe_skill(skill: str) -> str:
    """``tenComplements.9=10-1`` -> ``ten complement (+9 = +10 -1)``."""
    if skill in _NAMES:
        return _NAMES[skill]
    m = _COMPLEMENT_RE.match(skill)
    if m is None:
        return skill
    kind = "five" if m.group(1).startswith("five") else "ten"
    lhs, rhs = m.group(2).split("=", 1)
    lhs = lhs if lhs.startswith("-") else "+" + lhs
    rhs = rhs if rhs[0] in "+-" else "+" + rhs
    rhs = re.sub(r"(?<=\d)([+-])", r" \1", rhs)
    return f"{kind} complement ({lhs} = {rhs})"


@dataclass(frozen=True)
class SkillNote:
    state: str
    base_cost: float
    multiplier: float
    effective_cost: float


@dataclass(frozen=True)
class StepView:
    term: int
    total_before: int
    total_after: int
    skills: tuple[str, ...]
    cost: float


def explain(
    steps: list[StepView],
    bounds: Bounds,
    notes: dict[str, SkillNote],
    *,
    purpose: str,
    part_type: str,
    rejected_over_max: int,
    rejected_under_min: int,
) -> list[str]:
    if not steps:
        raise InvalidArgument("trace has no steps", reason="EMPTY_TRACE", field="trace.steps")
    lines = []
    outside = 0
    for i, step in enumerate(steps):
        if i == 0 and step.total_before == 0:
            lines.append(
                f"Start with {step.term}: entered on a cleared soroban with direct moves (cost {step.cost:g})."
            )
            continue
        parts = []
        for skill in step.skills:
            note = notes.get(skill)
            text = describe_skill(skill)
            if note is not None and note.base_cost > 0:
                text += f" [{note.state}: base {note.base_cost:g} x {note.multiplier:g} = {note.effective_cost:g}]"
            parts.append(text)
        verdict = "within bounds"
        if bounds.max is not None and step.cost > bounds.max:
            verdict, outside = f"OVER the max of {bounds.max:g}", outside + 1
        elif bounds.min is not None and step.cost < bounds.min:
            verdict, outside = f"UNDER the min of {bounds.min:g}", outside + 1
        sign = "+" if step.term >= 0 else "-"
        lines.append(
            f"{sign}{abs(step.term)}: {step.total_before} to {step.total_after} with {'; '.join(parts) or 'no moves'}; "
            f"cost {step.cost:g}, {verdict}."
        )
    computed = steps[1:] if steps[0].total_before == 0 else steps
    total = sum(s.cost for s in steps)
    avg = total / len(computed) if computed else 0.0
    summary = (
        f"Total complexity {total:g} over {len(computed)} computed terms (average {avg:.2f} per term); "
        f"bounds {bounds.describe()} for a {purpose} slot on the {part_type}"
    )
    summary += "; every term is within bounds." if outside == 0 else f"; {outside} term(s) outside the bounds."
    if rejected_over_max or rejected_under_min:
        summary += f" The generator rejected {rejected_over_max} candidate term(s) over the max and {rejected_under_min} under the min."
    lines.append(summary)
    return lines
