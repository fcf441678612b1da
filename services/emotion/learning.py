"""Learning state, readiness and intervention: small linear models over the model's outputs.

The three models share one feature vector per message: the 28 emotion probabilities, PAD
(centred to [-1, 1]) and the caller's optional context (engagement, cognitive load, time on
task; unset context contributes 0). Their parameters — a multinomial logistic model for the
learning state, a logistic score for readiness and one for intervention, each score cut into
levels — live in a versioned JSON file (``services/emotion/params/learning_v1.json``), never in
code, so ``python -m services.emotion.refit`` can re-estimate them from recorded outcomes.
Intervention reasons are the features that pushed the score up the most.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

LEARNING_STATES = ("confused", "frustrated", "anxious", "bored", "engaged", "confident", "neutral")
READINESS_LEVELS = ("not_ready", "low", "moderate", "high", "optimal")
INTERVENTION_LEVELS = ("none", "low", "medium", "high", "critical")
PAD_NAMES = ("pleasure", "arousal", "dominance")
CONTEXT_NAMES = ("engagement", "cognitive_load", "time_on_task")


class ParamsError(ValueError):
    """The parameter file is malformed or does not match the model's labels."""


@dataclass(frozen=True)
class StudentContext:
    """What the caller knows about the student; ``None`` = unknown (contributes nothing)."""

    engagement: float | None = None
    cognitive_load: float | None = None
    time_on_task_seconds: float | None = None


def feature_names(labels: Sequence[str]) -> list[str]:
    """Feature order: emotion probabilities, centred PAD, centred context."""
    return [f"p:{lab}" for lab in labels] + [f"pad:{n}" for n in PAD_NAMES] + [f"ctx:{n}" for n in CONTEXT_NAMES]


@dataclass
class LinearScore:
    """score = sigmoid(bias + weights . x), cut into ``levels`` at ``cut_points``."""

    weights: np.ndarray
    bias: float
    cut_points: list[float]
    levels: tuple[str, ...]

    def score(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(x @ self.weights + self.bias)))

    def level(self, score: float) -> str:
        return self.levels[int(np.searchsorted(np.asarray(self.cut_points), score, side="right"))]


@dataclass
class StateModel:
    """Multinomial logistic regression: P(state) = softmax(W x + b)."""

    weights: np.ndarray  # [states, features]
    bias: np.ndarray  # [states]
    states: tuple[str, ...] = LEARNING_STATES

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        z = x @ self.weights.T + self.bias
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return np.asarray(e / e.sum(axis=-1, keepdims=True))


@dataclass(frozen=True)
class LearningOutputs:
    """Everything the linear models say about one message."""

    state: str
    state_scores: dict[str, float]
    readiness_score: float
    readiness_level: str
    intervention_score: float
    intervention_level: str
    reasons: list[str] = field(default_factory=list)


@dataclass
class LearningParams:
    """The three models plus how features are built, as loaded from (and saved to) JSON."""

    version: str
    features: list[str]
    state: StateModel
    readiness: LinearScore
    intervention: LinearScore
    time_reference_seconds: float = 300.0
    reason_min_contribution: float = 0.25
    max_reasons: int = 4
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- features -------------------------------------------------------------------------
    def feature_vector(self, probs: np.ndarray, pad: Sequence[float], ctx: StudentContext | None) -> np.ndarray:
        """One message's features (probabilities as given, PAD and context centred)."""
        x = np.zeros(len(self.features), dtype=np.float64)
        n = probs.shape[-1]
        x[:n] = probs
        x[n : n + 3] = [2.0 * (float(v) - 0.5) for v in pad]
        if ctx is not None:
            if ctx.engagement is not None:
                x[n + 3] = 2.0 * (ctx.engagement - 0.5)
            if ctx.cognitive_load is not None:
                x[n + 4] = 2.0 * (ctx.cognitive_load - 0.5)
            if ctx.time_on_task_seconds is not None:
                x[n + 5] = self.time_feature(ctx.time_on_task_seconds)
        return x

    def time_feature(self, seconds: float) -> float:
        """log2(t / reference) / 2, clipped to [-1, 1.5]: 0 at the reference time, +1 at 4x."""
        t = max(seconds, 1.0)
        return float(min(1.5, max(-1.0, math.log2(t / self.time_reference_seconds) / 2.0)))

    # ---- inference ------------------------------------------------------------------------
    def evaluate(self, x: np.ndarray) -> LearningOutputs:
        """Learning state, readiness and intervention (with reasons) for one feature vector."""
        sp = self.state.probabilities(x)
        best = int(np.argmax(sp))
        r = float(self.readiness.score(x))
        i = float(self.intervention.score(x))
        level = self.intervention.level(i)
        return LearningOutputs(
            state=self.state.states[best],
            state_scores={s: float(p) for s, p in zip(self.state.states, sp, strict=True)},
            readiness_score=r,
            readiness_level=self.readiness.level(r),
            intervention_score=i,
            intervention_level=level,
            reasons=self.reasons(x) if level != self.intervention.levels[0] else [],
        )

    def reasons(self, x: np.ndarray) -> list[str]:
        """Features that raised the intervention score most, strongest first, in words."""
        contrib = self.intervention.weights * x
        order = np.argsort(-contrib)
        out: list[str] = []
        for j in order[: self.max_reasons]:
            if contrib[j] < self.reason_min_contribution:
                break
            out.append(self._describe(self.features[j], float(x[j]), float(contrib[j])))
        return out

    def _describe(self, name: str, value: float, contribution: float) -> str:
        kind, _, what = name.partition(":")
        tag = f"(+{contribution:.2f})"
        if kind == "p":
            return f"{what} detected, p={value:.2f} {tag}"
        if kind == "pad":
            raw = value / 2.0 + 0.5
            return f"{'low' if value < 0 else 'high'} {what} {raw:.2f} {tag}"
        if what == "time_on_task":
            minutes = self.time_reference_seconds * 2.0 ** (2.0 * value) / 60.0
            return f"{'long' if value > 0 else 'short'} time on task, about {minutes:.0f} min {tag}"
        raw = value / 2.0 + 0.5
        return f"{'low' if value < 0 else 'high'} {what.replace('_', ' ')} {raw:.2f} {tag}"

    # ---- (de)serialisation ----------------------------------------------------------------
    @classmethod
    def from_dict(cls, doc: dict[str, Any], labels: Sequence[str]) -> LearningParams:
        """Build from the JSON document; every weight must name a known feature."""
        try:
            version = str(doc["version"])
            names = feature_names(labels)
            index = {n: i for i, n in enumerate(names)}

            def vec(weights: dict[str, float], where: str) -> np.ndarray:
                v = np.zeros(len(names))
                for key, w in weights.items():
                    if key not in index:
                        raise ParamsError(f"{where}: unknown feature {key!r} (known: p:<label>, pad:*, ctx:*)")
                    v[index[key]] = float(w)
                return v

            st = doc["learning_state"]
            states = tuple(st["states"])
            if set(states) != set(LEARNING_STATES):
                raise ParamsError(f"learning_state.states must be {LEARNING_STATES}, got {states}")
            state = StateModel(
                weights=np.stack([vec(st["weights"].get(s, {}), f"learning_state.{s}") for s in states]),
                bias=np.array([float(st["bias"].get(s, 0.0)) for s in states]),
                states=states,
            )

            def linear(key: str, levels: tuple[str, ...]) -> LinearScore:
                d = doc[key]
                cuts = [float(c) for c in d["cut_points"]]
                if len(cuts) != len(levels) - 1 or cuts != sorted(cuts) or not all(0 < c < 1 for c in cuts):
                    raise ParamsError(f"{key}.cut_points must be {len(levels) - 1} increasing values in (0, 1)")
                return LinearScore(vec(d["weights"], key), float(d["bias"]), cuts, levels)

            feats = doc.get("features", {})
            return cls(
                version=version,
                features=names,
                state=state,
                readiness=linear("readiness", READINESS_LEVELS),
                intervention=linear("intervention", INTERVENTION_LEVELS),
                time_reference_seconds=float(feats.get("time_on_task_reference_seconds", 300.0)),
                reason_min_contribution=float(doc["intervention"].get("reason_min_contribution", 0.25)),
                max_reasons=int(doc["intervention"].get("max_reasons", 4)),
                meta={k: v for k, v in doc.items() if k not in {"learning_state", "readiness", "intervention"}},
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ParamsError):
                raise
            raise ParamsError(f"malformed parameter file: {type(exc).__name__}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """JSON document with sparse weights (zeros left out), rounded for readable diffs."""

        def sparse(v: np.ndarray) -> dict[str, float]:
            return {n: round(float(w), 5) for n, w in zip(self.features, v, strict=True) if abs(w) >= 5e-6}

        doc = dict(self.meta)
        doc["version"] = self.version
        doc.setdefault("features", {})["time_on_task_reference_seconds"] = self.time_reference_seconds
        doc["learning_state"] = {
            "states": list(self.state.states),
            "bias": {s: round(float(b), 5) for s, b in zip(self.state.states, self.state.bias, strict=True)},
            "weights": {s: sparse(w) for s, w in zip(self.state.states, self.state.weights, strict=True)},
        }
        for key, m in (("readiness", self.readiness), ("intervention", self.intervention)):
            doc[key] = {
                "bias": round(float(m.bias), 5),
                "cut_points": m.cut_points,
                "levels": list(m.levels),
                "weights": sparse(m.weights),
            }
        doc["intervention"]["reason_min_contribution"] = self.reason_min_contribution
        doc["intervention"]["max_reasons"] = self.max_reasons
        return doc


def load_params(path: str | Path, labels: Sequence[str]) -> LearningParams:
    """Read and validate a parameter file against the model's labels."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ParamsError(f"cannot read parameter file {p}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ParamsError(f"parameter file {p} is not JSON: {exc}") from exc
    return LearningParams.from_dict(doc, labels)


def save_params(params: LearningParams, path: str | Path) -> None:
    Path(path).write_text(json.dumps(params.to_dict(), indent=2) + "\n", encoding="utf-8")
