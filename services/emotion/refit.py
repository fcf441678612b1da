"""Refit the learning-state, readiness and intervention parameters from recorded outcomes.

    python -m services.emotion.refit --mongo-url mongodb://127.0.0.1:27017 \\
        --out services/emotion/params/learning_v3.json --promote

It starts from the version the service serves (the newest promoted one in MongoDB
``emotion_params``, else ``--params``, default the shipped file), always writes the new file,
and with ``--promote`` stores it in ``emotion_params`` only when it beats the current version on
the held-out outcomes by the rule in :mod:`services.emotion.promotion` (running services pick it
up within ``EMOTION_PARAMS_RELOAD_SECONDS``). The decision and its reasons are printed and kept
in the file's ``refit.promotion`` section.

Reads ``emotion_outcomes``, rebuilds each outcome's feature vector (stored probabilities, or
recomputed from the stored text with ``--recompute``), and runs full-batch gradient descent on

* learning state: multinomial log-loss against ``observed_state`` (outcomes that have one);
* readiness: logistic log-loss against an outcome-success target (``READINESS_TARGET``);
* intervention: logistic log-loss against a need-for-support target (``INTERVENTION_TARGET``),

each plus ``l2 * ||theta - theta_previous||^2`` so sparse data moves the hand-set parameters
only as far as the evidence goes. Cut points are kept. It prints log-loss and accuracy before
and after, on a held-out split (by a hash of the outcome id) when there are enough outcomes,
and writes the new file with a ``refit`` section recording all of that.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.emotion.config import DEFAULT_MODEL_DIR, DEFAULT_PARAMS_PATH
from services.emotion.learning import (
    LearningParams,
    LinearScore,
    ParamsError,
    StateModel,
    load_params,
    save_params,
)
from services.emotion.outcomes import OUTCOMES, context_of
from services.emotion.promotion import PARAMS, PromotionRule, decide, promoted_doc

# How well the student did after the tutor's response: the observable proxy for readiness.
READINESS_TARGET = {"resolved": 1.0, "improved": 0.75, "no_change": 0.4, "worsened": 0.15, "abandoned": 0.0}
# Did the student need support? Keyed by (outcome, whether the tutor applied medium or more).
# Strong support followed by recovery -> it was needed; little support and recovery -> it was
# not; getting worse or leaving -> support was needed whatever was applied.
INTERVENTION_TARGET = {
    ("resolved", True): 1.0,
    ("improved", True): 0.85,
    ("no_change", True): 0.5,
    ("worsened", True): 1.0,
    ("abandoned", True): 1.0,
    ("resolved", False): 0.0,
    ("improved", False): 0.1,
    ("no_change", False): 0.3,
    ("worsened", False): 0.9,
    ("abandoned", False): 1.0,
}
STRONG_LEVELS = {"medium", "high", "critical"}


@dataclass
class Dataset:
    """Feature matrix and targets; ``state`` is -1 where no observed state was recorded."""

    ids: list[str]
    x: np.ndarray
    state: np.ndarray
    readiness: np.ndarray
    intervention: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, mask: np.ndarray) -> Dataset:
        return Dataset(
            [i for i, m in zip(self.ids, mask, strict=True) if m],
            self.x[mask],
            self.state[mask],
            self.readiness[mask],
            self.intervention[mask],
        )


def build_dataset(docs: Iterable[dict[str, Any]], params: LearningParams, labels: Sequence[str]) -> tuple[Dataset, int]:
    """Features and targets of every usable outcome document; also returns how many were skipped.

    Documents without the urgency head's probability are skipped when ``params`` weigh it
    (``--recompute`` fills it in from the stored text).
    """
    ids, rows, states, ready, need = [], [], [], [], []
    skipped = 0
    state_index = {s: i for i, s in enumerate(params.state.states)}
    needs_urgency = params.needs_urgency
    for d in docs:
        probs = d.get("probabilities") or {}
        outcome = d.get("outcome")
        urgency = (d.get("urgency") or {}).get("probability")
        if (
            outcome not in READINESS_TARGET
            or any(lab not in probs for lab in labels)
            or (needs_urgency and urgency is None)
        ):
            skipped += 1
            continue
        p = np.array([float(probs[lab]) for lab in labels])
        pad = d.get("pad") or [0.5, 0.5, 0.5]
        rows.append(params.feature_vector(p, pad, context_of(d), None if urgency is None else float(urgency)))
        ids.append(str(d["_id"]))
        states.append(state_index.get(d.get("observed_state") or "", -1))
        ready.append(READINESS_TARGET[outcome])
        need.append(INTERVENTION_TARGET[(outcome, (d.get("applied_level") or "none") in STRONG_LEVELS)])
    x = np.array(rows) if rows else np.zeros((0, len(params.features)))
    return Dataset(ids, x, np.array(states, dtype=int), np.array(ready), np.array(need)), skipped


# ---- losses -----------------------------------------------------------------------------------
def _bce(score: np.ndarray, target: np.ndarray) -> float:
    s = np.clip(score, 1e-7, 1 - 1e-7)
    return float(np.mean(-(target * np.log(s) + (1 - target) * np.log(1 - s))))


def evaluate(params: LearningParams, ds: Dataset) -> dict[str, Any]:
    """Log-loss and accuracy of each head on ``ds`` (None where it has no labelled rows)."""
    out: dict[str, Any] = {"n": len(ds)}
    labelled = ds.state >= 0
    out["state_n"] = int(labelled.sum())
    if labelled.any():
        p = params.state.probabilities(ds.x[labelled])
        y = ds.state[labelled]
        out["state_log_loss"] = float(np.mean(-np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1))))
        out["state_accuracy"] = float(np.mean(p.argmax(axis=1) == y))
    else:
        out["state_log_loss"] = out["state_accuracy"] = None
    for name, model, target in (
        ("readiness", params.readiness, ds.readiness),
        ("intervention", params.intervention, ds.intervention),
    ):
        if len(ds) == 0:
            out[f"{name}_log_loss"] = out[f"{name}_accuracy"] = None
            continue
        s = model.score(ds.x)
        out[f"{name}_log_loss"] = _bce(s, target)
        decided = target != 0.5
        out[f"{name}_accuracy"] = (
            float(np.mean((s[decided] >= 0.5) == (target[decided] > 0.5))) if decided.any() else None
        )
    return out


# ---- fitting ----------------------------------------------------------------------------------
def _fit_logistic(model: LinearScore, x: np.ndarray, t: np.ndarray, l2: float, steps: int, lr: float) -> LinearScore:
    w0, b0 = model.weights.copy(), model.bias
    w, b = w0.copy(), b0
    n = len(t)
    for _ in range(steps):
        s = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        g = (s - t) / n
        w -= lr * (x.T @ g + 2 * l2 * (w - w0))
        b -= lr * (float(g.sum()) + 2 * l2 * (b - b0))
    return dataclasses.replace(model, weights=w, bias=float(b))


def _fit_softmax(model: StateModel, x: np.ndarray, y: np.ndarray, l2: float, steps: int, lr: float) -> StateModel:
    w0, b0 = model.weights.copy(), model.bias.copy()
    w, b = w0.copy(), b0.copy()
    onehot = np.eye(len(model.states))[y]
    n = len(y)
    for _ in range(steps):
        p = dataclasses.replace(model, weights=w, bias=b).probabilities(x)
        g = (p - onehot) / n
        w -= lr * (g.T @ x + 2 * l2 * (w - w0))
        b -= lr * (g.sum(axis=0) + 2 * l2 * (b - b0))
    return dataclasses.replace(model, weights=w, bias=b)


def fit(params: LearningParams, ds: Dataset, *, l2: float = 0.02, steps: int = 800, lr: float = 0.5) -> LearningParams:
    """New parameters: each head moved by gradient descent on its labelled rows."""
    new = dataclasses.replace(params)
    labelled = ds.state >= 0
    if labelled.any():
        new.state = _fit_softmax(params.state, ds.x[labelled], ds.state[labelled], l2, steps, lr)
    if len(ds):
        new.readiness = _fit_logistic(params.readiness, ds.x, ds.readiness, l2, steps, lr)
        new.intervention = _fit_logistic(params.intervention, ds.x, ds.intervention, l2, steps, lr)
    return new


def holdout_mask(ids: Sequence[str], fraction: float) -> np.ndarray:
    """Deterministic held-out rows: a hash of the outcome id below ``fraction``."""
    return np.array(
        [int(hashlib.sha256(i.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction for i in ids], dtype=bool
    )


def refit(
    params: LearningParams,
    ds: Dataset,
    *,
    version: str,
    holdout: float = 0.25,
    min_holdout_total: int = 40,
    l2: float = 0.02,
    steps: int = 800,
    lr: float = 0.5,
) -> tuple[LearningParams, dict[str, Any]]:
    """Fit on the training split, report before/after on both splits; returns (params, report)."""
    use_holdout = len(ds) >= min_holdout_total
    test_mask = holdout_mask(ds.ids, holdout) if use_holdout else np.zeros(len(ds), dtype=bool)
    train, test = ds.subset(~test_mask), ds.subset(test_mask)
    new = fit(params, train, l2=l2, steps=steps, lr=lr)
    new.version = version
    report: dict[str, Any] = {
        "from_version": params.version,
        "version": version,
        "outcomes": len(ds),
        "held_out": len(test) if use_holdout else 0,
        "settings": {"l2": l2, "steps": steps, "lr": lr, "holdout": holdout if use_holdout else 0.0},
        "train": {"before": evaluate(params, train), "after": evaluate(new, train)},
    }
    if use_holdout:
        report["held_out_split"] = {"before": evaluate(params, test), "after": evaluate(new, test)}
    new.meta = {**params.meta, "refit": {**report, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
    new.meta.pop("rationale", None)
    new.meta["description"] = (
        f"Refitted from {params.version} on {len(ds)} recorded outcomes by services.emotion.refit "
        "(gradient descent on log-loss, L2 toward the previous parameters)."
    )
    return new, report


def format_report(report: dict[str, Any]) -> str:
    """Readable before/after table."""
    lines = [
        f"refit {report['from_version']} -> {report['version']}: {report['outcomes']} outcomes, "
        f"{report['held_out']} held out",
        f"{'split':<10} {'metric':<24} {'before':>8} {'after':>8}",
    ]
    for split in ("train", "held_out_split"):
        if split not in report:
            continue
        before, after = report[split]["before"], report[split]["after"]
        for key in (
            "state_log_loss",
            "state_accuracy",
            "readiness_log_loss",
            "readiness_accuracy",
            "intervention_log_loss",
            "intervention_accuracy",
        ):
            b, a = before.get(key), after.get(key)
            fb = "-" if b is None else f"{b:.4f}"
            fa = "-" if a is None else f"{a:.4f}"
            lines.append(f"{split.replace('_split', ''):<10} {key:<24} {fb:>8} {fa:>8}")
    return "\n".join(lines)


# ---- command line -----------------------------------------------------------------------------
def _labels(model_dir: Path) -> list[str]:
    return list(json.loads((model_dir / "model.json").read_text(encoding="utf-8"))["labels"])


def _recompute(docs: list[dict[str, Any]], model_dir: Path) -> None:
    """Replace stored probabilities/PAD with the current model's outputs on the stored text."""
    from services.emotion.engine import EmotionModel

    model = EmotionModel(model_dir, intra_op_threads=0, prefer_gpu=False)
    texts = [(i, d["text"]) for i, d in enumerate(docs) if d.get("text")]
    for start in range(0, len(texts), 64):
        chunk = texts[start : start + 64]
        for (i, _), pred in zip(chunk, model.predict([t for _, t in chunk]), strict=True):
            docs[i]["probabilities"] = dict(zip(model.labels, pred.probabilities, strict=True))
            docs[i]["pad"] = list(pred.pad)
            urgency = pred.urgency_probability
            if urgency is not None:
                docs[i]["urgency"] = {"probability": urgency, "score": pred.urgency_score}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m services.emotion.refit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--mongo-url", required=True)
    ap.add_argument("--mongo-db", default="masterx")
    ap.add_argument(
        "--params",
        type=Path,
        default=None,
        help=f"parameters to start from (default: the newest promoted version, else {DEFAULT_PARAMS_PATH.name})",
    )
    ap.add_argument("--out", type=Path, required=True, help="new parameter file to write")
    ap.add_argument("--version", default=None, help="version string (default: the output file's stem)")
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="for the label order (and --recompute)")
    ap.add_argument("--recompute", action="store_true", help="recompute probabilities from stored texts")
    ap.add_argument("--min-outcomes", type=int, default=10)
    ap.add_argument("--holdout", type=float, default=0.25)
    ap.add_argument("--l2", type=float, default=0.02)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--promote", action="store_true", help="promote the new version if it passes the rule")
    ap.add_argument("--min-held-out", type=int, default=PromotionRule.min_held_out, help="promotion rule")
    ap.add_argument("--min-gain", type=float, default=PromotionRule.min_gain, help="promotion rule (nats)")
    ap.add_argument("--max-loss", type=float, default=PromotionRule.max_loss, help="promotion rule (nats)")
    args = ap.parse_args(argv)

    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    labels = _labels(args.model_dir)
    try:
        client: MongoClient[dict[str, Any]] = MongoClient(args.mongo_url, serverSelectionTimeoutMS=5000)
        with client:
            db = client[args.mongo_db]
            docs = list(db[OUTCOMES].find({}))
            current = None if args.params is not None else db[PARAMS].find_one({}, sort=[("promoted_at", -1)])
    except PyMongoError as exc:
        print(f"refit: cannot read outcomes from {args.mongo_url}: {exc}", file=sys.stderr)
        return 1
    try:
        if current is not None:
            params = LearningParams.from_dict(current["params"], labels)
            print(f"starting from promoted version {params.version}")
        else:
            params = load_params(args.params or DEFAULT_PARAMS_PATH, labels)
    except ParamsError as exc:
        print(f"refit: cannot load the current parameters: {exc}", file=sys.stderr)
        return 1
    if args.recompute:
        _recompute(docs, args.model_dir)
    ds, skipped = build_dataset(docs, params, labels)
    if len(ds) < args.min_outcomes:
        print(
            f"refit: only {len(ds)} usable outcomes ({skipped} skipped); need --min-outcomes {args.min_outcomes}",
            file=sys.stderr,
        )
        return 1
    new, report = refit(
        params,
        ds,
        version=args.version or args.out.stem,
        holdout=args.holdout,
        l2=args.l2,
        steps=args.steps,
        lr=args.lr,
    )
    if (args.version or args.out.stem) == params.version:
        print(f"refit: the new version must differ from the current one ({params.version})", file=sys.stderr)
        return 1
    rule = PromotionRule(min_held_out=args.min_held_out, min_gain=args.min_gain, max_loss=args.max_loss)
    decision = decide(report, rule)
    new.meta["refit"]["promotion"] = {
        "requested": args.promote,
        "passes_rule": decision.promote,
        "reasons": decision.reasons,
        "rule": dataclasses.asdict(rule),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_params(new, args.out)
    print(format_report(report))
    if skipped:
        print(f"({skipped} outcome documents skipped: missing probabilities, urgency or outcome)")
    print(f"wrote {args.out}")
    verdict = "passes" if decision.promote else "fails"
    print(f"promotion rule: {new.version} {verdict} against {params.version}: " + "; ".join(decision.reasons))
    if args.promote and decision.promote:
        try:
            with MongoClient(args.mongo_url, serverSelectionTimeoutMS=5000) as client:
                doc = promoted_doc(new.to_dict(), report, decision)
                client[args.mongo_db][PARAMS].replace_one({"_id": doc["_id"]}, doc, upsert=True)
        except PyMongoError as exc:
            print(f"refit: could not promote {new.version}: {exc}", file=sys.stderr)
            return 1
        print(f"promoted {new.version} (services swap to it within EMOTION_PARAMS_RELOAD_SECONDS)")
    elif args.promote:
        print(f"not promoted: {params.version} stays")
    return 0


if __name__ == "__main__":
    sys.exit(main())
