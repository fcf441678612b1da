"""Calibration (temperature, per-label and Ekman-group thresholds) and metrics.

numpy only, except the fitted 'logistic' Ekman rule, which uses scikit-learn (train extra).
"""

from __future__ import annotations

from typing import TypedDict

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


# Candidate rules for an Ekman group's probability from its member labels (compared on dev A).
EKMAN_RULES = ("max", "noisy_or", "sum_clip", "logistic")
EKMAN_RULE_TEXT = {
    "max": "group probability = max of member label probabilities",
    "noisy_or": "group probability = noisy-or 1 - prod(1 - p) over member labels",
    "sum_clip": "group probability = sum of member label probabilities, clipped to 1",
    "logistic": "group probability = sigmoid(w . z + b), a per-group logistic regression over "
    "the member labels' tempered logits z = logits / T (weights in ekman_rule_params, L2 C by CV)",
}
LOGISTIC_CS = (0.01, 0.1, 1.0, 10.0, 100.0)
RULE_CV_FOLDS, RULE_CV_REPEATS, RULE_CV_SEED = 5, 3, 0


def group_scores(z: np.ndarray, gm: np.ndarray, rule: str, params: dict | None = None) -> np.ndarray:
    """[N, 7] Ekman group probabilities from tempered logits z = logits / T by one rule.

    params (logistic only): ``weights`` [7, 28] (zero outside a group's members), ``bias`` [7].
    """
    probs = sigmoid(z)
    if rule == "max":
        return group_probs(probs, gm)
    if rule == "noisy_or":
        return np.stack([1.0 - np.prod(1.0 - probs[:, gm[:, k]], axis=1) for k in range(gm.shape[1])], axis=1)
    if rule == "sum_clip":
        return np.minimum(probs @ gm.astype(probs.dtype), 1.0)
    if rule == "logistic":
        if params is None:
            raise ValueError("the logistic Ekman rule needs weights and bias")
        w = np.asarray(params["weights"], dtype=np.float64)
        b = np.asarray(params["bias"], dtype=np.float64)
        return sigmoid(z.astype(np.float64) @ w.T + b[None, :])
    raise ValueError(f"unknown Ekman rule {rule!r}")


def fit_group_logistic(z: np.ndarray, gy: np.ndarray, gm: np.ndarray, seed: int = RULE_CV_SEED) -> dict:
    """Per group, L2 logistic regression of 'group gold-active' on its members' tempered logits.

    C is chosen from LOGISTIC_CS by 5-fold CV log-loss on the given rows only. A group with one
    gold class only (tiny data) gets a constant probability (its positive rate).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold

    n_groups = gm.shape[1]
    w = np.zeros((n_groups, gm.shape[0]))
    b = np.zeros(n_groups)
    cs: list[float | None] = []
    for k in range(n_groups):
        t = (gy[:, k] > 0.5).astype(int)
        cols = np.flatnonzero(gm[:, k])
        npos = int(t.sum())
        if len(cols) == 0 or npos == 0 or npos == len(t):
            rate = float(np.clip(t.mean() if len(t) else 0.0, 1e-4, 1 - 1e-4))
            b[k] = float(np.log(rate / (1 - rate)))
            cs.append(None)
            continue
        x = z[:, cols].astype(np.float64)
        folds = min(5, npos, len(t) - npos)
        c = 1.0
        if folds >= 2:
            cv = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, t))
            losses = []
            for cand in LOGISTIC_CS:
                ll = [
                    log_loss(
                        t[te],
                        LogisticRegression(C=cand, max_iter=2000).fit(x[tr], t[tr]).predict_proba(x[te]),
                        labels=[0, 1],
                    )
                    for tr, te in cv
                ]
                losses.append(float(np.mean(ll)))
            c = float(LOGISTIC_CS[int(np.argmin(losses))])
        clf = LogisticRegression(C=c, max_iter=2000).fit(x, t)
        w[k, cols] = clf.coef_[0]
        b[k] = float(clf.intercept_[0])
        cs.append(c)
    return {"weights": w.tolist(), "bias": b.tolist(), "C": cs}


def fit_ekman_rule(z: np.ndarray, y: np.ndarray, gm: np.ndarray, rule: str) -> dict:
    """Fit one rule (logistic weights if any, then per-group thresholds) on the given rows."""
    gy = group_gold(y, gm)
    params = fit_group_logistic(z, gy, gm) if rule == "logistic" else None
    thr = tune_thresholds(group_scores(z, gm, rule, params), gy)
    return {"rule": rule, "params": params, "thresholds": thr.tolist()}


def predict_ekman(z: np.ndarray, gm: np.ndarray, fitted: dict) -> np.ndarray:
    """Boolean [N, 7] active Ekman groups of a fitted rule."""
    gs = group_scores(z, gm, fitted["rule"], fitted["params"])
    return gs >= np.asarray(fitted["thresholds"])[None, :]


def cv_ekman_rule(z: np.ndarray, y: np.ndarray, gm: np.ndarray, rule: str) -> float:
    """Cross-validated Ekman macro-F1 of a rule on the tuning rows only.

    Repeated K-fold: each fold's rule (logistic weights with their inner-CV C, and thresholds) is
    fitted on the other folds; the out-of-fold predictions are pooled, scored, averaged over
    repeats. Every rule goes through the same procedure, so the fitted one is not favoured.
    """
    n = len(y)
    gy = group_gold(y, gm)
    folds = min(RULE_CV_FOLDS, n)
    scores = []
    for rep in range(RULE_CV_REPEATS):
        order = np.random.default_rng(RULE_CV_SEED + rep).permutation(n)
        pred = np.zeros(gy.shape, dtype=bool)
        for f in range(folds):
            test = order[f::folds]
            train = np.setdiff1d(order, test)
            fitted = fit_ekman_rule(z[train], y[train], gm, rule)
            pred[test] = predict_ekman(z[test], gm, fitted)
        scores.append(float(prf(pred, gy)["macro_f1"]))
    return float(np.mean(scores))


def select_ekman_rule(z: np.ndarray, y: np.ndarray, gm: np.ndarray) -> dict:
    """Compare EKMAN_RULES on the tuning rows by cv_ekman_rule; refit all on every tuning row.

    Returns the chosen rule's name, each candidate's CV and in-sample scores and each candidate
    refitted on all tuning rows (so other splits can be scored with every rule for disclosure).
    """
    gy = group_gold(y, gm)
    cands: dict[str, dict] = {}
    for rule in EKMAN_RULES:
        fitted = fit_ekman_rule(z, y, gm, rule)
        fitted["cv_macro_f1"] = cv_ekman_rule(z, y, gm, rule)
        fitted["in_sample_macro_f1"] = float(prf(predict_ekman(z, gm, fitted), gy)["macro_f1"])
        cands[rule] = fitted
    chosen = max(EKMAN_RULES, key=lambda r: cands[r]["cv_macro_f1"])  # ties: earlier (simpler) rule
    return {"chosen": chosen, "candidates": cands}


def group_gold(y: np.ndarray, gm: np.ndarray) -> np.ndarray:
    """A group is gold-active when any member label is gold-active."""
    return np.stack([y[:, gm[:, k]].max(1, initial=0.0) for k in range(gm.shape[1])], axis=1)


class PRF(TypedDict):
    p: np.ndarray
    r: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    macro_f1: float
    micro_f1: float


def prf(pred: np.ndarray, y: np.ndarray) -> PRF:
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
    """Fit temperature, label thresholds, the Ekman rule and its group thresholds on the tuning rows.

    The Ekman rule is chosen among EKMAN_RULES by cross-validation within these rows only.
    """
    t = fit_temperature(logits, y)
    probs = sigmoid(logits / t)
    thr = tune_thresholds(probs, y)
    gm = group_matrix(ekman_of_label)
    sel = select_ekman_rule(logits / t, y, gm)
    best = sel["candidates"][sel["chosen"]]
    return {
        "temperature": t,
        "thresholds": thr.tolist(),
        "ekman_rule": sel["chosen"],
        "ekman_rule_params": best["params"],
        "ekman_thresholds": best["thresholds"],
        "ekman_rule_candidates": sel["candidates"],
    }


def _fitted_rule(calib: dict) -> dict:
    """The calibration's Ekman rule (old calibrations without one: max)."""
    return {
        "rule": calib.get("ekman_rule", "max"),
        "params": calib.get("ekman_rule_params"),
        "thresholds": calib["ekman_thresholds"],
    }


def evaluate_emotions(logits: np.ndarray, y: np.ndarray, calib: dict, ekman_of_label: list[str]) -> dict:
    """Label and Ekman metrics of calibrated predictions."""
    probs = sigmoid(logits / calib["temperature"])
    thr = np.asarray(calib["thresholds"])
    pred = probs >= thr[None, :]
    lab = prf(pred, y)
    gm = group_matrix(ekman_of_label)
    gy = group_gold(y, gm)
    z = logits / calib["temperature"]
    grp = prf(predict_ekman(z, gm, _fitted_rule(calib)), gy)
    # every candidate rule (each fitted on the tuning rows), for disclosure
    by_rule = {
        r: prf(predict_ekman(z, gm, c), gy)["macro_f1"] for r, c in calib.get("ekman_rule_candidates", {}).items()
    }
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
        "ekman_macro_f1_by_rule": by_rule,
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
