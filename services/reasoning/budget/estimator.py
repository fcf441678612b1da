"""Query complexity in [0, 1]: logistic regression on the named features of :mod:`.features`.

``fit`` minimises cross-entropy against soft labels in [0, 1] plus an L2 penalty with Newton's
method (a 21x21 system: exact and fast), on standardised features. The fitted model is a small
JSON file shipped next to this module together with the labelled data it was fitted on
(``data/complexity_labels.jsonl``); ``python -m services.reasoning.budget.fit`` refits it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.reasoning.budget.features import FEATURE_NAMES, extract

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = HERE / "complexity_model.json"
DEFAULT_DATA = HERE / "data" / "complexity_labels.jsonl"


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


class ComplexityEstimator:
    """Predicts how much reasoning a query needs (0 = none, 1 = a lot)."""

    def __init__(self, l2: float = 1.0) -> None:
        self.l2 = l2
        self.feature_names: tuple[str, ...] = FEATURE_NAMES
        self.mean = np.zeros(len(FEATURE_NAMES))
        self.scale = np.ones(len(FEATURE_NAMES))
        self.weights = np.zeros(len(FEATURE_NAMES))
        self.bias = 0.0
        self.metrics: dict[str, Any] = {}

    # --- fitting --------------------------------------------------------------------------

    def fit(self, texts: Sequence[str], labels: Sequence[float], *, iterations: int = 50) -> ComplexityEstimator:
        """Fit on ``texts`` with soft labels in [0, 1]; returns ``self``."""
        if len(texts) != len(labels) or len(texts) < 5:
            raise ValueError("need at least 5 labelled texts, one label each")
        y = np.asarray(labels, dtype=float)
        if np.any((y < 0) | (y > 1)):
            raise ValueError("labels must lie in [0, 1]")
        raw = np.array([extract(t) for t in texts])
        self.mean = raw.mean(axis=0)
        self.scale = raw.std(axis=0)
        self.scale[self.scale < 1e-9] = 1.0
        x = np.hstack([(raw - self.mean) / self.scale, np.ones((len(texts), 1))])
        w = np.zeros(x.shape[1])
        penalty = np.full(x.shape[1], self.l2)
        penalty[-1] = 0.0  # the bias is not penalised
        for _ in range(iterations):
            p = _sigmoid(x @ w)
            grad = x.T @ (p - y) + penalty * w
            hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty) + 1e-9 * np.eye(x.shape[1])
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.max(np.abs(step)) < 1e-8:
                break
        self.weights, self.bias = w[:-1], float(w[-1])
        pred = _sigmoid(x @ w)
        self.metrics = {"n": len(texts), "train_mae": float(np.mean(np.abs(pred - y)))}
        return self

    # --- prediction -------------------------------------------------------------------------

    def _z(self, text: str) -> np.ndarray:
        return (np.asarray(extract(text)) - self.mean) / self.scale

    def predict(self, text: str) -> float:
        return float(_sigmoid(np.asarray(self._z(text) @ self.weights + self.bias)))

    def contributions(self, text: str, top: int = 3) -> list[tuple[str, float]]:
        """The features that moved this prediction most (signed logit contributions)."""
        parts = self._z(text) * self.weights
        order = np.argsort(-np.abs(parts))[:top]
        return [(self.feature_names[i], float(parts[i])) for i in order if abs(parts[i]) > 1e-6]

    # --- persistence -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": "logistic-regression",
            "l2": self.l2,
            "features": list(self.feature_names),
            "mean": [round(float(v), 8) for v in self.mean],
            "scale": [round(float(v), 8) for v in self.scale],
            "weights": [round(float(v), 8) for v in self.weights],
            "bias": round(self.bias, 8),
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComplexityEstimator:
        if tuple(data["features"]) != FEATURE_NAMES:
            raise ValueError("complexity model was fitted on different features; refit it")
        est = cls(float(data.get("l2", 1.0)))
        est.mean = np.asarray(data["mean"], dtype=float)
        est.scale = np.asarray(data["scale"], dtype=float)
        est.weights = np.asarray(data["weights"], dtype=float)
        est.bias = float(data["bias"])
        est.metrics = dict(data.get("metrics", {}))
        return est

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path = DEFAULT_MODEL) -> ComplexityEstimator:
        return cls.from_dict(json.loads(path.read_text()))


def load_labels(path: Path = DEFAULT_DATA) -> tuple[list[str], list[float]]:
    """(texts, labels) from a JSONL file of ``{"query": ..., "complexity": ...}`` lines."""
    texts, labels = [], []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            texts.append(str(row["query"]))
            labels.append(float(row["complexity"]))
    return texts, labels


def cross_validate(
    texts: Sequence[str], labels: Sequence[float], *, folds: int = 5, l2: float = 1.0
) -> dict[str, float]:
    """K-fold mean absolute error and Spearman rank correlation of held-out predictions."""
    n = len(texts)
    order = np.random.default_rng(0).permutation(n)
    pred = np.zeros(n)
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        est = ComplexityEstimator(l2).fit([texts[i] for i in train], [labels[i] for i in train])
        for i in test:
            pred[i] = est.predict(texts[i])
    y = np.asarray(labels)
    ranks = lambda a: np.argsort(np.argsort(a)).astype(float)  # noqa: E731
    spearman = float(np.corrcoef(ranks(pred), ranks(y))[0, 1])
    return {"cv_mae": float(np.mean(np.abs(pred - y))), "cv_spearman": spearman, "folds": folds}
