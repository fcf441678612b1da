"""Calibration (temperature, per-label and Ekman-group thresholds) and metrics, numpy only."""

from __future__ import annotations

import numpy as np

from .data import EKMAN_GROUPS

GRID = np.round(np.arange(0.01, 0.96, 0.01), 2)
SMOOTH = 5  # thresholds maximise F1 averaged over +-5 grid steps (robust for rare labels)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Single temperature T minimising mean BCE of sigmoid(logits / T) (grid search)."""
    best_t, best = 1.0, np.inf
    for t in np.round(np.arange(0.5, 4.01, 0.05), 2):
        p = np.clip(sigmoid(logits / t), 1e-7, 1 - 1e-7)
        nll = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
        if nll < best:
            best, best_t = nll, float(t)
    return best_t


def _f1_curve(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """F1 of one column at every threshold of GRID."""
    pred = p[None, :] >= GRID[:, None]
    tp = (pred & (y[None, :] > 0.5)).sum(1)
    fp = (pred & (y[None, :] <= 0.5)).sum(1)
    fn = ((~pred) & (y[None, :] > 0.5)).sum(1)
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def tune_thresholds(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-column threshold maximising the (smoothed) F1 on the tuning rows."""
    k = np.ones(2 * SMOOTH + 1) / (2 * SMOOTH + 1)
    out = np.empty(probs.shape[1], dtype=np.float64)
    for j in range(probs.shape[1]):
        f1 = _f1_curve(probs[:, j], y[:, j])
        sm = np.convolve(np.pad(f1, SMOOTH, mode="edge"), k, mode="valid")
        out[j] = GRID[int(np.argmax(sm))] if y[:, j].sum() > 0 else 0.5
    return out


def group_matrix(ekman_of_label: list[str]) -> np.ndarray:
    """[28, 7] membership matrix of labels in EKMAN_GROUPS."""
    g = np.zeros((len(ekman_of_label), len(EKMAN_GROUPS)), dtype=bool)
    for i, e in enumerate(ekman_of_label):
        g[i, EKMAN_GROUPS.index(e)] = True
    return g


def group_probs(probs: np.ndarray, gm: np.ndarray) -> np.ndarray:
    """Ekman group probability = max of its member label probabilities."""
    return np.stack([probs[:, gm[:, k]].max(1, initial=0.0) for k in range(gm.shape[1])], axis=1)


def group_gold(y: np.ndarray, gm: np.ndarray) -> np.ndarray:
    """A group is gold-active when any member label is gold-active."""
    return np.stack([y[:, gm[:, k]].max(1, initial=0.0) for k in range(gm.shape[1])], axis=1)


def prf(pred: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-column P/R/F1/support and macro/micro F1 (zero when undefined)."""
    yb = y > 0.5
    tp = (pred & yb).sum(0).astype(float)
    fp = (pred & ~yb).sum(0).astype(float)
    fn = (~pred & yb).sum(0).astype(float)
    p = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    r = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    f = np.divide(2 * p * r, p + r, out=np.zeros_like(tp), where=(p + r) > 0)
    micro = 2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1.0)
    return {"p": p, "r": r, "f1": f, "support": yb.sum(0), "macro_f1": float(f.mean()), "micro_f1": float(micro)}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def calibrate(logits: np.ndarray, y: np.ndarray, ekman_of_label: list[str]) -> dict:
    """Fit temperature, label thresholds and Ekman-group thresholds on the tuning rows."""
    t = fit_temperature(logits, y)
    probs = sigmoid(logits / t)
    thr = tune_thresholds(probs, y)
    gm = group_matrix(ekman_of_label)
    gthr = tune_thresholds(group_probs(probs, gm), group_gold(y, gm))
    return {"temperature": t, "thresholds": thr.tolist(), "ekman_thresholds": gthr.tolist()}


def evaluate_emotions(logits: np.ndarray, y: np.ndarray, calib: dict, ekman_of_label: list[str]) -> dict:
    """Label and Ekman metrics of calibrated predictions."""
    probs = sigmoid(logits / calib["temperature"])
    thr = np.asarray(calib["thresholds"])
    pred = probs >= thr[None, :]
    lab = prf(pred, y)
    gm = group_matrix(ekman_of_label)
    gy = group_gold(y, gm)
    gp = group_probs(probs, gm) >= np.asarray(calib["ekman_thresholds"])[None, :]
    grp = prf(gp, gy)
    # alternative: a group is active if any member label is active (label thresholds)
    grp_any = prf(group_gold(pred.astype(np.float32), gm) > 0.5, gy)
    # un-calibrated reference: every threshold 0.5, T = 1
    raw = prf(sigmoid(logits) >= 0.5, y)
    return {
        "n": len(y),
        "macro_f1": lab["macro_f1"],
        "micro_f1": lab["micro_f1"],
        "ekman_macro_f1": grp["macro_f1"],
        "ekman_micro_f1": grp["micro_f1"],
        "ekman_macro_f1_any_member": grp_any["macro_f1"],
        "macro_f1_uncalibrated_t1_thr05": raw["macro_f1"],
        "per_label": {
            "p": lab["p"].tolist(),
            "r": lab["r"].tolist(),
            "f1": lab["f1"].tolist(),
            "support": lab["support"].tolist(),
        },
        "per_ekman": {
            "p": grp["p"].tolist(),
            "r": grp["r"].tolist(),
            "f1": grp["f1"].tolist(),
            "support": grp["support"].tolist(),
        },
    }


def evaluate_pad(pred: np.ndarray, vad: np.ndarray) -> dict:
    """Pearson r and MAE (0-1 scale) per V/A/D dimension."""
    out: dict[str, float] = {}
    for i, k in enumerate(("valence", "arousal", "dominance")):
        out[f"r_{k}"] = pearson(pred[:, i], vad[:, i])
        out[f"mae_{k}"] = float(np.abs(pred[:, i] - vad[:, i]).mean())
    out["n"] = len(vad)
    return out
