"""Quality priors from published benchmark figures (``priors.yaml``), per model and category.

Used for a (provider, category) that the benchmark service has not measured and the providers
file gives no ``quality`` for. The file's header says how figures become categories.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.router.domain import CATEGORIES
from services.router.policy import read_yaml_mapping

PRIORS_PATH = Path(__file__).with_name("priors.yaml")


class PriorsError(ValueError):
    """The priors file is unusable; the message lists every problem."""


@dataclass(frozen=True)
class Prior:
    """One model's prior quality per category, with where it came from."""

    key: str
    quality: Mapping[str, float]
    #: category -> "HumanEval 87.2, ..." (the figures behind the number).
    basis: Mapping[str, str]
    source: str
    date: str


@dataclass(frozen=True)
class Priors:
    version: str
    models: Mapping[str, Prior]
    #: (prefix, model key), longest prefix first.
    matchers: tuple[tuple[str, str], ...]

    def find(self, model: str) -> Prior | None:
        """The prior of the model whose `match` prefix starts ``model`` (org/ dropped, lower case)."""
        name = model.lower().rsplit("/", 1)[-1]
        for prefix, key in self.matchers:
            if name.startswith(prefix):
                return self.models[key]
        return None


def _prior(key: str, entry: Any, categories: Mapping[str, list[str]], problems: list[str]) -> Prior | None:
    if not isinstance(entry, Mapping):
        problems.append(f"models.{key} must be a mapping")
        return None
    figures = entry.get("figures")
    if not isinstance(figures, Mapping) or not figures:
        problems.append(f"models.{key}.figures must be a non-empty mapping benchmark -> percent")
        return None
    for field in ("source", "date"):
        if not isinstance(entry.get(field), str) or not entry.get(field):
            problems.append(f"models.{key}.{field} is required (every figure needs its source and date)")
    known = {b for names in categories.values() for b in names}
    for bench, value in figures.items():
        if bench not in known:
            problems.append(f"models.{key}.figures.{bench}: benchmark not mapped to any category")
        if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value <= 100):
            problems.append(f"models.{key}.figures.{bench} must be a percent in [0, 100]")
            return None
    quality: dict[str, float] = {}
    basis: dict[str, str] = {}
    for category in CATEGORIES:
        found = [(b, float(figures[b])) for b in categories.get(category, []) if b in figures]
        if found:
            quality[category] = sum(v for _, v in found) / len(found)
            basis[category] = ", ".join(f"{b} {v:g}" for b, v in found)
    if not quality:
        problems.append(f"models.{key}: no figure maps to a category")
        return None
    mean = sum(quality.values()) / len(quality)
    for category in CATEGORIES:
        if category not in quality:
            quality[category] = mean
            basis[category] = "mean of the model's other categories"
    return Prior(key, quality, basis, str(entry.get("source", "")), str(entry.get("date", "")))


def load_priors(path: Path | str | None = None) -> Priors:
    where = str(path or PRIORS_PATH)
    doc = read_yaml_mapping(where, "the priors file", PriorsError)
    problems: list[str] = []
    categories = doc.get("categories")
    if not isinstance(categories, Mapping) or set(categories) != set(CATEGORIES):
        problems.append(f"categories must map exactly {list(CATEGORIES)} to benchmark names")
        categories = {}
    models_doc = doc.get("models")
    if not isinstance(models_doc, Mapping):
        problems.append("models must be a mapping")
        models_doc = {}
    models: dict[str, Prior] = {}
    matchers: list[tuple[str, str]] = []
    for key, entry in models_doc.items():
        prior = _prior(str(key), entry, categories, problems)
        if prior is None:
            continue
        models[prior.key] = prior
        match = entry.get("match") or [prior.key]
        if not isinstance(match, list) or not all(isinstance(m, str) and m for m in match):
            problems.append(f"models.{key}.match must be a list of model-name prefixes")
            continue
        matchers += [(m.lower(), prior.key) for m in match]
    if problems:
        raise PriorsError(f"{where}: " + "; ".join(problems))
    matchers.sort(key=lambda m: -len(m[0]))
    if not all(math.isfinite(q) for p in models.values() for q in p.quality.values()):
        raise PriorsError(f"{where}: a quality is not finite")
    return Priors(str(doc.get("version", "")), models, tuple(matchers))
