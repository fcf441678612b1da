"""Learning state, readiness and intervention: small linear models over the model's outputs.

The three models share one feature vector per message: the 28 emotion probabilities, PAD
(centred to [-1, 1]), the caller's optional context (engagement, cognitive load, time on task;
unset context contributes 0) and the logit of the urgency head's P(urgent) (``u:urgency``; 0
when the model has no urgency head). Their parameters — a multinomial logistic model for the
learning state, a logistic score for readiness and one for intervention, each score cut into
levels — live in a versioned JSON file (``services/emotion/params/learning_v2.json``), never in
code, so ``python -m services.emotion.refit`` can re-estimate them from recorded outcomes.

From ``learning_v2`` on the intervention score is ``sigmoid(logit(P(urgent)) + shifts)``: with
weight 1 on ``u:urgency``, zero bias and nothing else moving it, the score *is* the urgency
head's calibrated probability, and emotions, PAD and context shift it on the logit scale. A
parameter file may cap the level reachable from the text alone (``max_level_without_context``).
Intervention reasons are the features that pushed the score up the most.
"""

from __future__ import annotations

import bisect
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
URGENCY_FEATURE = "u:urgency"
# Keys of a readiness/intervention section that to_dict writes from the fitted model.
_SECTION_KEYS = {"bias", "cut_points", "levels", "weights", "reason_min_contribution", "max_reasons"}
# P(urgent) is clipped to [URGENCY_EPS, 1 - URGENCY_EPS] before its logit is taken.
URGENCY_EPS = 1e-4


class ParamsError(ValueError):
    """The parameter file is malformed or does not match the model's labels."""


@dataclass(frozen=True)
class StudentContext:
    """What the caller knows about the student; ``None`` = unknown (contributes nothing)."""

    engagement: float | None = None
    cognitive_load: float | None = None
    time_on_task_seconds: float | None = None


def feature_names(labels: Sequence[str]) -> list[str]:
    """Feature order: emotion probabilities, centred PAD, centred context, urgency logit."""
    return (
        [f"p:{lab}" for lab in labels]
        + [f"pad:{n}" for n in PAD_NAMES]
        + [f"ctx:{n}" for n in CONTEXT_NAMES]
        + [URGENCY_FEATURE]
    )


def urgency_logit(p: float | np.ndarray) -> float | np.ndarray:
    """logit(P(urgent)) with the probability clipped to [1e-4, 1 - 1e-4]."""
    q = np.clip(p, URGENCY_EPS, 1.0 - URGENCY_EPS)
    return np.log(q) - np.log1p(-q)


def has_context(ctx: StudentContext | None) -> bool:
    """True when the caller sent at least one context value."""
    return ctx is not None and any(
        v is not None for v in (ctx.engagement, ctx.cognitive_load, ctx.time_on_task_seconds)
    )


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
        # bisect_right is searchsorted(side="right") on the sorted cut points (NaN: past the end)
        return self.levels[bisect.bisect_right(self.cut_points, score)]


@dataclass
class StateModel:
    """Multinomial logistic regression: P(state) = softmax(W x + b)."""

    weights: np.ndarray  # [states, features]
    bias: np.ndarray  # [states]
    states: tuple[str, ...] = LEARNING_STATES

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        # the ufunc reductions behind ndarray.max/sum, called without the method wrappers
        z = x @ self.weights.T + self.bias
        z = z - np.maximum.reduce(z, axis=-1, keepdims=True)
        e = np.exp(z)
        return np.asarray(e / np.add.reduce(e, axis=-1, keepdims=True))


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
    # Highest intervention level reachable when the caller sent no context (None = no cap).
    max_level_without_context: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # The readiness/intervention sections as read, so documentation keys they carry (e.g. the
    # rule that chose the cut points) survive a refit's rewrite.
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def needs_urgency(self) -> bool:
        """True when any model weighs ``u:urgency`` (the served model must have the urgency head)."""
        j = self.features.index(URGENCY_FEATURE)
        return bool(
            self.intervention.weights[j] != 0 or self.readiness.weights[j] != 0 or np.any(self.state.weights[:, j] != 0)
        )

    # ---- features -------------------------------------------------------------------------
    def feature_vector(
        self,
        probs: np.ndarray | Sequence[float],
        pad: Sequence[float],
        ctx: StudentContext | None,
        urgency: float | None = None,
    ) -> np.ndarray:
        """One message's features (probabilities as given, PAD and context centred, urgency logit).

        ``urgency`` is the urgency head's P(urgent); None (no head) contributes 0.
        """
        x = np.zeros(len(self.features), dtype=np.float64)
        n = probs.shape[-1] if isinstance(probs, np.ndarray) else len(probs)
        x[:n] = probs
        p0, p1, p2 = pad
        x[n : n + 3] = (2.0 * (float(p0) - 0.5), 2.0 * (float(p1) - 0.5), 2.0 * (float(p2) - 0.5))
        if urgency is not None:
            # urgency_logit of one value: Python min/max is np.clip for a float (NaN included)
            q = min(max(float(urgency), URGENCY_EPS), 1.0 - URGENCY_EPS)
            x[-1] = float(np.log(q) - np.log1p(-q))
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

    def feature_matrix(self, probs: np.ndarray, pad: np.ndarray, urgency: np.ndarray | None = None) -> np.ndarray:
        """[N, features] for N messages without caller context (fitting and evaluation)."""
        n, k = probs.shape
        x = np.zeros((n, len(self.features)), dtype=np.float64)
        x[:, :k] = probs
        x[:, k : k + 3] = 2.0 * (np.asarray(pad, dtype=np.float64) - 0.5)
        if urgency is not None:
            x[:, -1] = urgency_logit(np.asarray(urgency, dtype=np.float64))
        return x

    # ---- inference ------------------------------------------------------------------------
    def intervention_level(self, score: float, context_given: bool) -> str:
        """Level of an intervention score: the cut points, then the no-context cap if any."""
        level = self.intervention.level(score)
        cap = self.max_level_without_context
        if cap is not None and not context_given:
            levels = self.intervention.levels
            level = levels[min(levels.index(level), levels.index(cap))]
        return level

    def evaluate(self, x: np.ndarray, context_given: bool = True) -> LearningOutputs:
        """Learning state, readiness and intervention (with reasons) for one feature vector.

        ``context_given``: the caller sent some context (see ``max_level_without_context``).
        """
        sp = self.state.probabilities(x)
        best = int(sp.argmax())
        r = float(self.readiness.score(x))
        i = float(self.intervention.score(x))
        level = self.intervention_level(i, context_given)
        return LearningOutputs(
            state=self.state.states[best],
            state_scores=dict(zip(self.state.states, sp.tolist(), strict=True)),
            readiness_score=r,
            readiness_level=self.readiness.level(r),
            intervention_score=i,
            intervention_level=level,
            reasons=self.reasons(x) if level != self.intervention.levels[0] else [],
        )

    def reasons(self, x: np.ndarray) -> list[str]:
        """Features that raised the intervention score most, strongest first, in words."""
        contrib = self.intervention.weights * x
        order = (-contrib).argsort()[: self.max_reasons].tolist()
        c, values = contrib.tolist(), x.tolist()
        out: list[str] = []
        for j in order:
            if c[j] < self.reason_min_contribution:
                break
            out.append(self._describe(self.features[j], values[j], c[j]))
        return out

    def _describe(self, name: str, value: float, contribution: float) -> str:
        kind, _, what = name.partition(":")
        tag = f"(+{contribution:.2f})"
        if kind == "u":
            return f"the text reads as needing help, P(urgent)={1.0 / (1.0 + math.exp(-value)):.2f} {tag}"
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
                        raise ParamsError(
                            f"{where}: unknown feature {key!r} (known: p:<label>, pad:*, ctx:*, {URGENCY_FEATURE})"
                        )
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
            cap = doc["intervention"].get("max_level_without_context")
            if cap is not None and cap not in INTERVENTION_LEVELS:
                raise ParamsError(f"intervention.max_level_without_context must be one of {INTERVENTION_LEVELS}")
            return cls(
                version=version,
                features=names,
                state=state,
                readiness=linear("readiness", READINESS_LEVELS),
                intervention=linear("intervention", INTERVENTION_LEVELS),
                time_reference_seconds=float(feats.get("time_on_task_reference_seconds", 300.0)),
                reason_min_contribution=float(doc["intervention"].get("reason_min_contribution", 0.25)),
                max_reasons=int(doc["intervention"].get("max_reasons", 4)),
                max_level_without_context=cap,
                meta={k: v for k, v in doc.items() if k not in {"learning_state", "readiness", "intervention"}},
                sections={k: dict(doc[k]) for k in ("readiness", "intervention")},
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
            extra = {k: v for k, v in (self.sections.get(key) or {}).items() if k not in _SECTION_KEYS}
            doc[key] = {
                **extra,
                "bias": round(float(m.bias), 5),
                "cut_points": m.cut_points,
                "levels": list(m.levels),
                "weights": sparse(m.weights),
            }
        doc["intervention"]["reason_min_contribution"] = self.reason_min_contribution
        doc["intervention"]["max_reasons"] = self.max_reasons
        if self.max_level_without_context is not None:
            doc["intervention"]["max_level_without_context"] = self.max_level_without_context
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
