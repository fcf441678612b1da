"""Refit the complexity estimator: ``python -m services.reasoning.budget.fit [--data F] [--out F]``.

Prints k-fold cross-validated error and rank correlation, then writes the model fitted on all
rows (with those metrics recorded in the file).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from services.reasoning.budget.estimator import (
    DEFAULT_DATA,
    DEFAULT_MODEL,
    ComplexityEstimator,
    cross_validate,
    load_labels,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="JSONL with query and complexity per line")
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL, help="where to write the model JSON")
    parser.add_argument("--l2", type=float, default=1.0, help="L2 penalty on standardised weights")
    args = parser.parse_args(argv)
    texts, labels = load_labels(args.data)
    cv = cross_validate(texts, labels, l2=args.l2)
    est = ComplexityEstimator(args.l2).fit(texts, labels)
    est.metrics.update({k: round(v, 4) if isinstance(v, float) else v for k, v in cv.items()})
    est.metrics["train_mae"] = round(est.metrics["train_mae"], 4)
    est.metrics["data"] = args.data.name
    est.save(args.out)
    print(
        f"fitted on {len(texts)} rows: train MAE {est.metrics['train_mae']:.3f}, "
        f"{cv['folds']}-fold CV MAE {cv['cv_mae']:.3f}, CV Spearman {cv['cv_spearman']:.3f}"
    )
    print("largest weights (standardised features):")
    for name, weight in sorted(zip(est.feature_names, est.weights, strict=True), key=lambda kv: -abs(kv[1]))[:8]:
        print(f"  {name:<18} {weight:+.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
