"""The routing policy constants from ``policy.yaml`` (or ROUTER_POLICY_FILE), typed and checked.

A file that is missing a key, has a value out of range or an unknown learning state stops the
service at start with every problem listed (``PolicyError``), like a bad providers file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.router.domain import LearningState

POLICY_PATH = Path(__file__).with_name("policy.yaml")


class PolicyError(ValueError):
    """The policy file is unusable; the message lists every problem."""


@dataclass(frozen=True)
class EstimateRules:
    base: float
    length_weight: float
    long_words: int
    hard_weight: float
    easy_weight: float
    hard_markers: tuple[str, ...]
    easy_markers: tuple[str, ...]


@dataclass(frozen=True)
class EscalationRules:
    enabled: bool
    distress_weights: Mapping[LearningState, float]
    window: int
    rise: float
    level: float
    declining_level: float
    relax_below: float
    knob: float


@dataclass(frozen=True)
class Policy:
    empathy_states: frozenset[LearningState]
    negative_emotions: frozenset[str]
    followup_keep: float
    topic_ema: float
    general_keeps: bool
    short_words: int
    marker_max_words: int
    continuation_markers: tuple[str, ...]
    complexity_pivot: float
    complexity_gain: float
    estimate: EstimateRules
    escalation: EscalationRules
    unknown_quality: float
    default_speed: float
    source: str = ""


class _Reader:
    def __init__(self, doc: Mapping[str, Any], where: str) -> None:
        self.doc = doc
        self.where = where
        self.problems: list[str] = []

    def section(self, name: str) -> Mapping[str, Any]:
        value = self.doc.get(name)
        if not isinstance(value, Mapping):
            self.problems.append(f"{self.where}: `{name}` must be a mapping")
            return {}
        return value

    def number(self, sec: Mapping[str, Any], path: str, lo: float, hi: float) -> float:
        value = sec.get(path.rsplit(".", 1)[-1])
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.problems.append(f"{self.where}: `{path}` must be a number")
            return lo
        if not lo <= value <= hi:
            self.problems.append(f"{self.where}: `{path}` = {value} is outside [{lo}, {hi}]")
        return float(value)

    def words(self, sec: Mapping[str, Any], path: str) -> tuple[str, ...]:
        value = sec.get(path.rsplit(".", 1)[-1])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problems.append(f"{self.where}: `{path}` must be a list of non-empty strings")
            return ()
        return tuple(str(v).lower() for v in value)

    def states(self, names: tuple[str, ...], path: str) -> list[LearningState]:
        known = {s.value for s in LearningState}
        bad = [n for n in names if n not in known]
        if bad:
            self.problems.append(f"{self.where}: `{path}` has unknown learning states {bad} (known: {sorted(known)})")
        return [LearningState(n) for n in names if n in known]


def read_yaml_mapping(where: str, what: str, error: type[ValueError]) -> Mapping[str, Any]:
    """The YAML mapping in the file ``where``; ``error`` naming the file and ``what`` it is when it
    cannot be read or is not a mapping."""
    try:
        doc = yaml.safe_load(Path(where).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise error(f"{where}: cannot read {what}: {exc}") from None
    if not isinstance(doc, Mapping):
        raise error(f"{where}: {what} must be a mapping")
    return doc


def load_policy(path: Path | str | None = None) -> Policy:
    """Read and check the policy file (default: the one next to this module)."""
    where = str(path or POLICY_PATH)
    doc = read_yaml_mapping(where, "the routing policy", PolicyError)
    r = _Reader(doc, where)
    emp, topic, cx, esc, sc = (r.section(n) for n in ("empathy", "topic", "complexity", "escalation", "scores"))
    raw_est = cx.get("estimate")
    est: Mapping[str, Any] = raw_est if isinstance(raw_est, Mapping) else {}
    if not est:
        r.problems.append(f"{where}: `complexity.estimate` must be a mapping")
    weights_doc = esc.get("distress_weights")
    if not isinstance(weights_doc, Mapping):
        r.problems.append(f"{where}: `escalation.distress_weights` must be a mapping state -> weight")
        weights_doc = {}
    weight_states = r.states(tuple(str(k) for k in weights_doc), "escalation.distress_weights")
    distress = {s: r.number(weights_doc, f"escalation.distress_weights.{s.value}", 0, 1) for s in weight_states}
    enabled = esc.get("enabled")
    if not isinstance(enabled, bool):
        r.problems.append(f"{where}: `escalation.enabled` must be true or false")
    policy = Policy(
        empathy_states=frozenset(r.states(r.words(emp, "empathy.learning_states"), "empathy.learning_states")),
        negative_emotions=frozenset(r.words(emp, "empathy.negative_emotions")),
        followup_keep=r.number(topic, "topic.followup_keep", 0, 1),
        topic_ema=r.number(topic, "topic.ema", 0, 1),
        general_keeps=bool(topic.get("general_keeps", False)),
        short_words=int(r.number(topic, "topic.short_words", 0, 100)),
        marker_max_words=int(r.number(topic, "topic.marker_max_words", 0, 1000)),
        continuation_markers=r.words(topic, "topic.continuation_markers"),
        complexity_pivot=r.number(cx, "complexity.pivot", 0, 1),
        complexity_gain=r.number(cx, "complexity.gain", 0, 2),
        estimate=EstimateRules(
            base=r.number(est, "complexity.estimate.base", 0, 1),
            length_weight=r.number(est, "complexity.estimate.length_weight", 0, 1),
            long_words=int(r.number(est, "complexity.estimate.long_words", 1, 100_000)),
            hard_weight=r.number(est, "complexity.estimate.hard_weight", 0, 1),
            easy_weight=r.number(est, "complexity.estimate.easy_weight", 0, 1),
            hard_markers=r.words(est, "complexity.estimate.hard_markers"),
            easy_markers=r.words(est, "complexity.estimate.easy_markers"),
        ),
        escalation=EscalationRules(
            enabled=bool(enabled),
            distress_weights=distress,
            window=int(r.number(esc, "escalation.window", 2, 50)),
            rise=r.number(esc, "escalation.rise", 0, 1),
            level=r.number(esc, "escalation.level", 0, 1),
            declining_level=r.number(esc, "escalation.declining_level", 0, 1),
            relax_below=r.number(esc, "escalation.relax_below", 0, 1),
            knob=r.number(esc, "escalation.knob", 0, 1),
        ),
        unknown_quality=r.number(sc, "scores.unknown_quality", 0, 100),
        default_speed=r.number(sc, "scores.default_speed", 0, 100),
        source=where,
    )
    if r.problems:
        raise PolicyError("; ".join(r.problems))
    return policy
