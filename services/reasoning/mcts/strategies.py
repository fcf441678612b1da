"""Reasoning strategies a branch can follow, and the order they are tried in per kind of question."""

from __future__ import annotations

import enum
import random
import re
from collections.abc import Mapping, Sequence


class Strategy(enum.IntEnum):
    """Values equal the proto enum ``masterx.reasoning.v1.Strategy``."""

    DEDUCTIVE = 1
    INDUCTIVE = 2
    ABDUCTIVE = 3
    ANALOGICAL = 4
    CAUSAL = 5
    ALGORITHMIC = 6

    @property
    def label(self) -> str:
        return self.name.lower()


#: What each strategy asks of the model; the text goes into the step prompt.
INSTRUCTIONS: Mapping[Strategy, str] = {
    Strategy.DEDUCTIVE: "Apply a general rule or definition to the specifics of the question: one logical inference.",
    Strategy.INDUCTIVE: "Work out a small or concrete case, notice the pattern, and generalise from it.",
    Strategy.ABDUCTIVE: "Propose the most plausible candidate answer or explanation and test it against the facts.",
    Strategy.ANALOGICAL: "Relate the question to a similar, familiar problem and carry its method over.",
    Strategy.CAUSAL: "Trace cause and effect: say what leads to what, and why.",
    Strategy.ALGORITHMIC: "Follow a precise procedure and compute the next intermediate result exactly.",
}

ALL: tuple[Strategy, ...] = tuple(Strategy)

_WHY_RE = re.compile(r"\b(why|cause[sd]?|because|reason)\b", re.IGNORECASE)
_HOW_RE = re.compile(r"\b(how|steps?|procedure|algorithm|compute|calculate|solve)\b", re.IGNORECASE)


def question_kind(query: str, checkable_kind: str | None) -> str:
    """Kind used to order strategies: the verifier's problem kind when checkable, else why/how/general."""
    if checkable_kind:
        return checkable_kind
    if _WHY_RE.search(query):
        return "why"
    if _HOW_RE.search(query):
        return "how"
    return "general"


def order_for(kind: str, preferred: Mapping[str, Sequence[str]], rng: random.Random) -> list[Strategy]:
    """The kind's preferred strategies first (config order), then the rest in seeded random order."""
    head = [Strategy[name.upper()] for name in preferred.get(kind, ())]
    tail = [s for s in ALL if s not in head]
    rng.shuffle(tail)
    return head + tail
