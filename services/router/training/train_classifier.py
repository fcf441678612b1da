"""Train the category classifier and export it for numpy-only serving.

    .venv/bin/python -m services.router.training.train_classifier [--out services/router/classifier/model.npz]

Data: ``data/raw/<category>.txt`` (one prompt per line, written by the team, see
``data/README.md``). The held-out split is fixed by a hash of each prompt's text (about 20%),
so it never changes between runs and never leaks into training. C is chosen by 5-fold
cross-validation on the training split only; the shipped model is fit on the training split,
and the held-out accuracy, macro-F1 and confusion matrix are written to ``metrics.json``
(and copied into MODEL_CARD.md by hand).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from services.router.classifier.model import FOLLOWUP, LABELS, MODEL_PATH, CategoryClassifier

DATA_DIR = Path(__file__).with_name("data") / "raw"
WORD_NGRAM = (1, 2)
CHAR_NGRAM = (2, 5)
C_GRID = (1.0, 3.0, 10.0, 30.0, 100.0)


def is_held_out(text: str) -> bool:
    """About one prompt in five, chosen by a stable hash of its normalised text."""
    return int(hashlib.sha1(text.strip().lower().encode()).hexdigest(), 16) % 5 == 0


def load_dataset(data_dir: Path = DATA_DIR) -> tuple[list[str], list[str], list[str], list[str]]:
    """(train texts, train labels, held-out texts, held-out labels)."""
    xtr: list[str] = []
    ytr: list[str] = []
    xte: list[str] = []
    yte: list[str] = []
    for category in LABELS:
        for line in (data_dir / f"{category}.txt").read_text(encoding="utf-8").splitlines():
            text = line.strip()
            if not text:
                continue
            if is_held_out(text):
                xte.append(text)
                yte.append(category)
            else:
                xtr.append(text)
                ytr.append(category)
    return xtr, ytr, xte, yte


def _vectorizers() -> tuple[object, object]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    word = TfidfVectorizer(analyzer="word", ngram_range=WORD_NGRAM, sublinear_tf=True, min_df=1)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAM, sublinear_tf=True, min_df=2)
    return word, char


def build_pipeline(c: float) -> object:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline

    word, char = _vectorizers()
    return Pipeline(
        [
            ("features", FeatureUnion([("word", word), ("char", char)])),
            ("clf", LogisticRegression(C=c, max_iter=3000)),
        ]
    )


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The softmax temperature minimising the negative log-likelihood of out-of-fold logits."""
    best_t, best_nll = 1.0, float("inf")
    for t in np.exp(np.linspace(np.log(0.25), np.log(20), 200)):
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        nll = -float(logp[np.arange(len(labels)), labels].mean())
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def export(pipeline: object, out: Path, version: str, temperature: float) -> None:
    features = pipeline.named_steps["features"]  # type: ignore[attr-defined]
    clf = pipeline.named_steps["clf"]  # type: ignore[attr-defined]
    word = dict(features.transformer_list)["word"]
    char = dict(features.transformer_list)["char"]
    word_terms = np.array(word.get_feature_names_out(), dtype=str)
    char_terms = np.array(char.get_feature_names_out(), dtype=str)
    np.savez_compressed(
        out,
        classes=np.array(clf.classes_, dtype=str),
        word_vocab=word_terms,
        word_idf=word.idf_.astype(np.float32),
        word_ngram=np.array(WORD_NGRAM),
        char_vocab=char_terms,
        char_idf=char.idf_.astype(np.float32),
        char_ngram=np.array(CHAR_NGRAM),
        coef=clf.coef_.astype(np.float32),
        intercept=clf.intercept_.astype(np.float32),
        version=np.array(version),
        temperature=np.array(temperature),
    )


def main(argv: list[str] | None = None) -> None:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_val_score

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=MODEL_PATH)
    parser.add_argument("--metrics", type=Path, default=MODEL_PATH.with_name("metrics.json"))
    args = parser.parse_args(argv)

    xtr, ytr, xte, yte = load_dataset()
    print(f"train {len(xtr)} prompts, held-out {len(xte)}")
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    cv = {c: float(np.mean(cross_val_score(build_pipeline(c), xtr, ytr, cv=folds, n_jobs=1))) for c in C_GRID}
    for c, score in cv.items():
        print(f"  C={c:<6g} 5-fold CV accuracy {score:.3f}")
    best_c = max(cv, key=lambda c: cv[c])
    oof = cross_val_predict(build_pipeline(best_c), xtr, ytr, cv=folds, method="decision_function")
    classes = sorted(set(ytr))
    temperature = fit_temperature(np.asarray(oof), np.array([classes.index(y) for y in ytr]))
    print(f"  calibration temperature {temperature:.2f}")
    pipeline = build_pipeline(best_c)
    pipeline.fit(xtr, ytr)  # type: ignore[attr-defined]
    version = f"tfidf-lr-{time.strftime('%Y%m%d')}-C{best_c:g}"
    export(pipeline, args.out, version, temperature)

    served = CategoryClassifier(args.out)
    pred = [served.predict_all(t) for t in xte]
    sk_pred = list(pipeline.predict(xte))  # type: ignore[attr-defined]
    matrix = confusion_matrix(yte, pred, labels=list(LABELS))
    six = [(t, y) for t, y in zip(xte, yte, strict=True) if y != FOLLOWUP]
    six_acc = sum(served.predict(t).category == y for t, y in six) / len(six)
    metrics = {
        "version": version,
        "C": best_c,
        "temperature": temperature,
        "cv_accuracy": cv,
        "train_size": len(xtr),
        "held_out_size": len(xte),
        "held_out_accuracy": accuracy_score(yte, pred),
        "held_out_macro_f1": f1_score(yte, pred, average="macro"),
        "held_out_accuracy_six_categories": six_acc,
        "served_matches_sklearn": sum(a == b for a, b in zip(pred, sk_pred, strict=True)) / len(pred),
        "labels": list(LABELS),
        "confusion_matrix": matrix.tolist(),
        "per_class_counts": {c: [ytr.count(c), yte.count(c)] for c in LABELS},
        "model_bytes": args.out.stat().st_size,
    }
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    print(
        f"best C={best_c:g}; held-out accuracy {metrics['held_out_accuracy']:.3f}, macro-F1 {metrics['held_out_macro_f1']:.3f}"
    )
    print(f"six-category accuracy (follow-ups left out, argmax over the six): {six_acc:.3f}")
    print("confusion matrix (rows = truth, columns = prediction):", *LABELS)
    for label, row in zip(LABELS, matrix, strict=True):
        print(f"  {label:<9}", " ".join(f"{v:4d}" for v in row))
    print("errors:")
    for text, truth, guess in zip(xte, yte, pred, strict=True):
        if truth != guess:
            print(f"  [{truth} -> {guess}] {text}")


if __name__ == "__main__":
    main()
