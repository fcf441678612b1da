"""Text matching shared by the content and rubric scorers.

Answers and patterns are compared after folding: lower case, accents removed (é -> e), curly
quotes and dashes made plain, whitespace collapsed. A pattern is either a literal phrase,
matched as whole words (``"au"`` does not match "because"), or a regular expression written
``re:<regex>`` (searched in the folded text).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

_QUOTES = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-", "−": "-"})


def fold(text: str) -> str:
    """Lower-case, accent-free, plain-punctuation text with single spaces."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_QUOTES))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return re.sub(r"\s+", " ", stripped.lower()).strip()


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a suite pattern; raises ``re.error`` for a bad ``re:`` expression."""
    if pattern.startswith("re:"):
        return re.compile(pattern[3:], re.IGNORECASE)
    literal = fold(pattern)
    if not literal:
        raise re.error(f"empty pattern {pattern!r}")
    head = r"(?<!\w)" if literal[0].isalnum() or literal[0] == "_" else ""
    tail = r"(?!\w)" if literal[-1].isalnum() or literal[-1] == "_" else ""
    return re.compile(head + re.escape(literal) + tail)


def find(pattern: str, folded_text: str) -> str | None:
    """The matched snippet of ``pattern`` in already-folded text, or None."""
    match = compile_pattern(pattern).search(folded_text)
    return match.group(0) if match else None


@dataclass(frozen=True)
class Group:
    """Alternatives of which at least ``minimum`` must appear."""

    alternatives: tuple[str, ...]
    minimum: int = 1

    def label(self) -> str:
        shown = " | ".join(self.alternatives[:4]) + (" | ..." if len(self.alternatives) > 4 else "")
        return f"{self.minimum} of [{shown}]" if self.minimum > 1 else f"[{shown}]"

    def matches(self, folded_text: str) -> list[str]:
        return [hit for alt in self.alternatives if (hit := find(alt, folded_text)) is not None]


def parse_group(raw: object) -> Group:
    """A required group from a suite file: a string, a list of alternatives, or {any: [...], min: n}."""
    if isinstance(raw, str):
        return Group((raw,))
    if isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        return Group(tuple(raw))
    if isinstance(raw, dict) and isinstance(raw.get("any"), list) and raw["any"]:
        alternatives = tuple(str(x) for x in raw["any"])
        minimum = int(raw.get("min", 1))
        if not 1 <= minimum <= len(alternatives):
            raise ValueError(f"min must be between 1 and {len(alternatives)}")
        return Group(alternatives, minimum)
    raise ValueError(f"a required group must be a string, a list of strings or {{any: [...], min: n}}, got {raw!r}")


def word_count(text: str) -> int:
    return len(re.findall(r"\w+", text))
