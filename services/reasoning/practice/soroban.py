"""A soroban (Japanese abacus) model: which bead techniques adding or subtracting a term needs.

Each rod shows a digit 0-9 as one heaven bead (5) and four earth beads (1 each). A term is
worked left to right, one digit per rod, as on a real soroban:

* **direct moves** (``basic.*``): the beads needed are free, e.g. 1 + 3, 2 + 5, 3 + 6.
* **five complements**: not enough earth beads, so use the heaven bead:
  +4 = +5 - 1 (``fiveComplements.4=5-1``), and -4 = -5 + 1 (``fiveComplementsSub.-4=-5+1``).
* **ten complements**: the rod overflows (or underflows), so carry into the next rod:
  +9 = +10 - 1 (``tenComplements.9=10-1``), -9 = +1 - 10 (``tenComplementsSub.-9=+1-10``).
  The "-1" (or "+1") on the rod itself can need a five complement too (5 + 9: the 5 becomes
  4 by -5 + 4), and is then listed as well.
* **cascading** (``advanced.cascadingCarry`` / ``advanced.cascadingBorrow``): the carry lands
  on a 9 (the borrow on a 0) and ripples across further rods (99 + 1, 100 - 1). The final +1
  (or -1) of the ripple can itself need a five complement (4 -> 5), listed too.
"""

from __future__ import annotations

from functools import lru_cache

DIRECT_ADD = "basic.directAddition"
HEAVEN_ADD = "basic.heavenBead"
COMBO_ADD = "basic.simpleCombinations"
DIRECT_SUB = "basic.directSubtraction"
HEAVEN_SUB = "basic.heavenBeadSubtraction"
COMBO_SUB = "basic.simpleCombinationsSub"
CASCADE_CARRY = "advanced.cascadingCarry"
CASCADE_BORROW = "advanced.cascadingBorrow"

FIVE_ADD = {a: f"fiveComplements.{a}=5-{5 - a}" for a in range(1, 5)}
FIVE_SUB = {a: f"fiveComplementsSub.-{a}=-5+{5 - a}" for a in range(1, 5)}
TEN_ADD = {a: f"tenComplements.{a}=10-{10 - a}" for a in range(1, 10)}
TEN_SUB = {a: f"tenComplementsSub.-{a}=+{10 - a}-10" for a in range(1, 10)}

ALL_SKILLS: tuple[str, ...] = (
    DIRECT_ADD,
    HEAVEN_ADD,
    COMBO_ADD,
    DIRECT_SUB,
    HEAVEN_SUB,
    COMBO_SUB,
    *FIVE_ADD.values(),
    *FIVE_SUB.values(),
    *TEN_ADD.values(),
    *TEN_SUB.values(),
    CASCADE_CARRY,
    CASCADE_BORROW,
)
SKILL_SET = frozenset(ALL_SKILLS)
_FIVE_MOVES = frozenset((*FIVE_ADD.values(), *FIVE_SUB.values()))


def category(skill: str) -> str:
    """``fiveComplements.4=5-1`` -> ``fiveComplements``."""
    return skill.split(".", 1)[0]


def _add_on_rod(v: int, a: int) -> str:
    """Technique for +a on a rod showing v, when v + a <= 9 (no carry)."""
    if a < 5:
        return DIRECT_ADD if v % 5 + a <= 4 else FIVE_ADD[a]
    return HEAVEN_ADD if a == 5 else COMBO_ADD


def _sub_on_rod(v: int, a: int) -> str:
    """Technique for -a on a rod showing v, when v >= a (no borrow)."""
    if a < 5:
        return DIRECT_SUB if v % 5 >= a else FIVE_SUB[a]
    return HEAVEN_SUB if a == 5 else COMBO_SUB


def _carry(rods: list[int], q: int, skills: list[str]) -> None:
    """+1 into rod q from a ten complement below it, rippling over 9s."""
    cascaded = False
    while rods[q] == 9:
        if not cascaded:
            skills.append(CASCADE_CARRY)
            cascaded = True
        rods[q] = 0
        q += 1
    move = _add_on_rod(rods[q], 1)
    if move in _FIVE_MOVES:
        skills.append(move)
    rods[q] += 1


def _borrow(rods: list[int], q: int, skills: list[str]) -> None:
    """-1 from rod q for a ten complement below it, rippling over 0s."""
    cascaded = False
    while rods[q] == 0:
        if not cascaded:
            skills.append(CASCADE_BORROW)
            cascaded = True
        rods[q] = 9
        q += 1
    move = _sub_on_rod(rods[q], 1)
    if move in _FIVE_MOVES:
        skills.append(move)
    rods[q] -= 1


def _rods(n: int, width: int) -> list[int]:
    out = []
    for _ in range(width):
        n, d = divmod(n, 10)
        out.append(d)
    return out


@lru_cache(maxsize=1 << 17)
def analyse(total: int, term: int) -> tuple[str, ...]:
    """Skills needed to add ``term`` (subtract when negative) to ``total`` on a soroban.

    Raises ValueError when the result would be negative.
    """
    if total < 0:
        raise ValueError("total must not be negative")
    if total + term < 0:
        raise ValueError(f"{total} {term:+d} would be negative")
    magnitude = abs(term)
    width = max(len(str(total)), len(str(magnitude))) + 2
    rods = _rods(total, width)
    digits = _rods(magnitude, len(str(magnitude)))
    skills: list[str] = []
    for place in range(len(digits) - 1, -1, -1):  # left to right, as on a soroban
        a = digits[place]
        if a == 0:
            continue
        v = rods[place]
        if term > 0:
            if v + a <= 9:
                skills.append(_add_on_rod(v, a))
                rods[place] = v + a
            else:
                skills.append(TEN_ADD[a])
                inner = _sub_on_rod(v, 10 - a)
                if inner in _FIVE_MOVES:  # 5 + 9: the -1 on a 5 is itself a five complement
                    skills.append(inner)
                rods[place] = v - (10 - a)
                _carry(rods, place + 1, skills)
        elif v >= a:
            skills.append(_sub_on_rod(v, a))
            rods[place] = v - a
        else:
            skills.append(TEN_SUB[a])
            inner = _add_on_rod(v, 10 - a)
            if inner in _FIVE_MOVES:  # 13 - 4: the +6 on a 3 is direct; 12 - 9: the +1 on a 2 too
                skills.append(inner)
            rods[place] = v + (10 - a)
            _borrow(rods, place + 1, skills)
    return tuple(skills)


def rods_value(rods: list[int]) -> int:
    return sum(d * 10**i for i, d in enumerate(rods))


def simulate(total: int, term: int) -> int:
    """The value the rods show after the moves :func:`analyse` describes (for self-checks)."""
    magnitude = abs(term)
    width = max(len(str(total)), len(str(magnitude))) + 2
    rods = _rods(total, width)
    digits = _rods(magnitude, len(str(magnitude)))
    sink: list[str] = []
    for place in range(len(digits) - 1, -1, -1):
        a = digits[place]
        if a == 0:
            continue
        v = rods[place]
        if term > 0:
            if v + a <= 9:
                rods[place] = v + a
            else:
                rods[place] = v - (10 - a)
                _carry(rods, place + 1, sink)
        elif v >= a:
            rods[place] = v - a
        else:
            rods[place] = v + (10 - a)
            _borrow(rods, place + 1, sink)
    return rods_value(rods)
