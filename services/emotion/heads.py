"""Linear heads on the emotion encoder's pooled features: task category and urgency (numpy only).

The ONNX model's ``features`` output is the mean-pooled hidden states of several transformer
layers, concatenated (``services/emotion/training/features.py``). Each 384-wide block is
L2-normalised, then:

- **category**: a multinomial logistic regression over the router's six categories plus
  ``followup`` (a message with no topic of its own), softmax with a fitted temperature. The six
  category probabilities are renormalised without the follow-up class.
- **urgency**: a logistic regression for P(urgency >= 4 on the 1-7 scale of coded forum posts,
  i.e. "an instructor should step in"), with a fitted temperature, and a ridge regression for the
  expected urgency on the 1-7 scale.

Weights come from ``services/emotion/model/heads.npz`` (written by
``python -m services.emotion.training.heads``); ``model.json``'s ``heads`` section names the file
and the layers. Trained on data whose origin and metrics are in ``HEADS_CARD.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The router's task categories, in the order of ``category_probabilities`` (matches the
#: ``Category`` enum of common.proto: CATEGORY_CODING=1 ... CATEGORY_GENERAL=6).
CATEGORIES = ("coding", "math", "research", "language", "empathy", "general")
FOLLOWUP = "followup"
#: Name of the ONNX output the heads read (``training/features.py`` adds it).
FEATURES_OUTPUT = "features"
HEAD_LABELS = (*CATEGORIES, FOLLOWUP)


class HeadsMismatch(ValueError):
    """The heads file does not fit the code (label set) or the ONNX model (feature width)."""


def normalize_blocks(features: np.ndarray, block: int) -> np.ndarray:
    """L2-normalise each ``block``-wide slice of [B, k*block] features (the heads' input)."""
    b, width = features.shape
    if width % block:
        raise HeadsMismatch(f"feature width {width} is not a multiple of the block size {block}")
    x = features.reshape(b, width // block, block)
    norms = np.sqrt(np.einsum("bkd,bkd->bk", x, x))[:, :, None]
    return (x / np.maximum(norms, 1e-12)).reshape(b, width)


@dataclass(frozen=True)
class HeadOutputs:
    """Per-text outputs of the heads for one batch (arrays with the batch as first axis)."""

    category: np.ndarray  # [B, 6] over CATEGORIES, rows sum to 1
    followup: np.ndarray  # [B]
    urgency_probability: np.ndarray  # [B], P(urgency >= 4)
    urgency_score: np.ndarray  # [B], expected urgency in [1, 7]


class Heads:
    """Category and urgency heads loaded from ``heads.npz``."""

    def __init__(self, path: Path, meta: dict) -> None:
        data = np.load(path, allow_pickle=False)
        self.version = str(data["version"])
        labels = tuple(str(x) for x in data["category_labels"])
        if labels != HEAD_LABELS:
            raise HeadsMismatch(
                f"{path}: category head labels {labels} do not match the code's {HEAD_LABELS}; "
                "retrain the heads (python -m services.emotion.training.heads) for this code version"
            )
        self.block = int(meta.get("block", 384))
        self.layers = tuple(int(x) for x in meta["layers"])
        if tuple(int(x) for x in data["layers"]) != self.layers:
            raise HeadsMismatch(f"{path}: trained on layers {tuple(data['layers'])}, model.json says {self.layers}")
        self.width = self.block * len(self.layers)
        self.cat_t = float(data["category_temperature"])
        self.urg_t = float(data["urgency_temperature"])
        rows = {  # [outputs, width] each: 7 category logits, the urgency logit, the urgency score
            "category_coef": data["category_coef"],
            "urgency_coef": data["urgency_coef"][None, :],
            "urgency_score_coef": data["urgency_score_coef"][None, :],
        }
        for name, arr in rows.items():
            if arr.shape[1] != self.width:
                raise HeadsMismatch(f"{path}: {name} expects {arr.shape[1]} features, the model gives {self.width}")
        self._fu = HEAD_LABELS.index(FOLLOWUP)
        # one fused float32 matrix product per batch
        self._w = np.vstack(list(rows.values())).T.astype(np.float32)
        self._b = np.concatenate(
            [data["category_intercept"], [data["urgency_intercept"], data["urgency_score_intercept"]]]
        ).astype(np.float32)
        self._keep = [i for i in range(len(HEAD_LABELS)) if i != self._fu]

    def __call__(self, features: np.ndarray) -> HeadOutputs:
        """Head outputs for raw ``features`` [B, width] from the ONNX model."""
        if features.shape[1] != self.width:
            raise HeadsMismatch(f"ONNX features are {features.shape[1]} wide, the heads expect {self.width}")
        x = normalize_blocks(features.astype(np.float32, copy=False), self.block)
        out = (x @ self._w + self._b).astype(np.float64)
        k = len(HEAD_LABELS)
        z = out[:, :k] / self.cat_t
        # the ufunc reductions behind ndarray.max/sum, without the method wrappers
        p = np.exp(z - np.maximum.reduce(z, axis=1, keepdims=True))
        p /= np.add.reduce(p, axis=1, keepdims=True)
        followup = p[:, self._fu]
        cats = p[:, self._keep]
        cats /= np.add.reduce(cats, axis=1, keepdims=True)
        # np.minimum(np.maximum()) is np.clip (NaN included) without its Python-level wrapper
        u = np.minimum(np.maximum(out[:, k] / self.urg_t, -60.0), 60.0)
        score = np.minimum(np.maximum(out[:, k + 1], 1.0), 7.0)
        return HeadOutputs(cats, followup, 1.0 / (1.0 + np.exp(-u)), score)
