"""Benchmark suites: one versioned YAML/JSON file per category, validated on load.

A file holds ``category``, ``version``, ``weights`` (quality/speed/cost, summing to 1), an
optional ``system`` prompt and ``max_tokens``, an optional ``rubric`` (criteria for ``rubric``
items) and ``items``; each item has an ``id``, an optional ``difficulty`` (``easy``, ``medium`` -- the default
-- or ``hard``: a hand-assigned label for routing evaluations, not used in scoring), a ``prompt``, a ``scoring`` block (see
:mod:`services.benchmark.scoring.specs`) and a ``reference`` answer that must score 100 (the
suite tests check every reference, so a broken item cannot ship). The version reported is the
file's ``version`` plus a short hash of its content, so an edited file never passes for the old one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from masterx.common.v1 import common_pb2
from services.benchmark.scoring.specs import Spec, SpecError, parse_criteria, parse_spec

DEFAULT_SUITES_DIR = Path(__file__).with_name("suites")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Category enum value <-> file/category name ("coding", "math", ...).
CATEGORY_NAMES: dict[int, str] = {
    common_pb2.CATEGORY_CODING: "coding",
    common_pb2.CATEGORY_MATH: "math",
    common_pb2.CATEGORY_RESEARCH: "research",
    common_pb2.CATEGORY_LANGUAGE: "language",
    common_pb2.CATEGORY_EMPATHY: "empathy",
    common_pb2.CATEGORY_GENERAL: "general",
}
CATEGORY_BY_NAME: dict[str, int] = {name: value for value, name in CATEGORY_NAMES.items()}
#: Item difficulty labels, easiest first.
DIFFICULTIES = ("easy", "medium", "hard")


class SuiteError(ValueError):
    """A suite file is missing or invalid; the message names the file and the problem."""


@dataclass(frozen=True)
class Weights:
    quality: float
    speed: float
    cost: float


@dataclass(frozen=True)
class SuiteItem:
    id: str
    prompt: str
    spec: Spec
    reference: str
    max_tokens: int
    difficulty: str = "medium"


@dataclass(frozen=True)
class Suite:
    category: int
    name: str
    version: str
    weights: Weights
    system: str
    items: tuple[SuiteItem, ...]

    def item(self, item_id: str) -> SuiteItem:
        for it in self.items:
            if it.id == item_id:
                return it
        raise KeyError(item_id)


def _weights(raw: Any, where: str) -> Weights:
    if not isinstance(raw, dict) or set(raw) != {"quality", "speed", "cost"}:
        raise SuiteError(f"{where}: weights must have exactly quality, speed and cost")
    values = {k: float(v) for k, v in raw.items()}
    if any(v < 0 for v in values.values()) or abs(sum(values.values()) - 1.0) > 1e-6:
        raise SuiteError(f"{where}: weights must be >= 0 and sum to 1 (got {values})")
    return Weights(values["quality"], values["speed"], values["cost"])


def parse_suite(data: Mapping[str, Any], source: str, content: bytes, min_items: int) -> Suite:
    """Validate one suite document; raise SuiteError naming the file and item on any problem."""
    name = data.get("category")
    if name not in CATEGORY_BY_NAME:
        raise SuiteError(f"{source}: category must be one of {sorted(CATEGORY_BY_NAME)}, got {name!r}")
    version = str(data.get("version", "")).strip()
    if not version:
        raise SuiteError(f"{source}: version is required")
    weights = _weights(data.get("weights"), source)
    default_max_tokens = int(data.get("max_tokens", 512))
    rubric = parse_criteria(data["rubric"], f"{source}: rubric") if "rubric" in data else ()
    raw_items = data.get("items")
    if not isinstance(raw_items, list):
        raise SuiteError(f"{source}: items must be a list")
    items: list[SuiteItem] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_items):
        where = f"{source}: item {index}"
        if not isinstance(raw, dict):
            raise SuiteError(f"{where}: must be a mapping")
        item_id = str(raw.get("id", "")).strip()
        if not item_id or item_id in seen:
            raise SuiteError(f"{where}: id missing or duplicated ({item_id!r})")
        seen.add(item_id)
        prompt = str(raw.get("prompt", "")).strip()
        if not prompt:
            raise SuiteError(f"{where} ({item_id}): prompt is empty")
        try:
            spec = parse_spec(raw.get("scoring"), f"{source}: {item_id}", rubric=rubric)
        except SpecError as exc:
            raise SuiteError(str(exc)) from None
        reference = str(raw.get("reference", "")).strip()
        if not reference:
            raise SuiteError(f"{where} ({item_id}): a reference answer is required")
        difficulty = str(raw.get("difficulty", "medium"))
        if difficulty not in DIFFICULTIES:
            raise SuiteError(f"{where} ({item_id}): difficulty must be one of {', '.join(DIFFICULTIES)}")
        items.append(
            SuiteItem(item_id, prompt, spec, reference, int(raw.get("max_tokens", default_max_tokens)), difficulty)
        )
    if len(items) < min_items:
        raise SuiteError(f"{source}: {len(items)} items, at least {min_items} required")
    digest = hashlib.sha256(content).hexdigest()[:8]
    return Suite(
        category=CATEGORY_BY_NAME[name],
        name=name,
        version=f"{version}+{digest}",
        weights=weights,
        system=str(data.get("system", "")).strip(),
        items=tuple(items),
    )


def load_suite_file(path: Path, min_items: int = 20) -> Suite:
    content = path.read_bytes()
    try:
        data = json.loads(content) if path.suffix == ".json" else yaml.load(content, Loader=_YAML_LOADER)
    except (ValueError, yaml.YAMLError) as exc:
        raise SuiteError(f"{path.name}: not valid {path.suffix[1:]}: {exc}") from None
    if not isinstance(data, dict):
        raise SuiteError(f"{path.name}: top level must be a mapping")
    return parse_suite(data, path.name, content, min_items)


def load_suites(directory: Path = DEFAULT_SUITES_DIR, min_items: int = 20) -> dict[int, Suite]:
    """Every category's suite from ``directory``; all six categories must be present exactly once."""
    if not directory.is_dir():
        raise SuiteError(f"suites directory {directory} does not exist")
    suites: dict[int, Suite] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix not in (".yaml", ".yml", ".json"):
            continue
        suite = load_suite_file(path, min_items)
        if suite.category in suites:
            raise SuiteError(f"{path.name}: a second suite for category {suite.name}")
        suites[suite.category] = suite
    missing = sorted(set(CATEGORY_NAMES.values()) - {s.name for s in suites.values()})
    if missing:
        raise SuiteError(f"{directory}: no suite for {', '.join(missing)}")
    return suites
