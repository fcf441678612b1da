"""Accuracy of the router's TF-IDF fallback classifier on prompts it was not trained on.

Run: ``.venv/bin/python bench/eval_router_fallback.py --data ../shared/data/router`` (a few
seconds). The data folder holds ``prompts.tsv`` (columns text, category, source, source_id);
it is read only here, never by the service or its tests. Prints accuracy, macro-F1, mean
confidence and the per-source accuracy, so the docs can say what the fallback is worth.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.router.classifier.model import CATEGORIES, CategoryClassifier


def macro_f1(pairs: list[tuple[str, str]]) -> float:
    scores = []
    for c in CATEGORIES:
        tp = sum(1 for y, p in pairs if y == c and p == c)
        fp = sum(1 for y, p in pairs if y != c and p == c)
        fn = sum(1 for y, p in pairs if y == c and p != c)
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="folder with prompts.tsv")
    args = parser.parse_args()
    model = CategoryClassifier()
    pairs: list[tuple[str, str]] = []
    confidence = 0.0
    by_source: dict[str, list[bool]] = defaultdict(list)
    with (Path(args.data) / "prompts.tsv").open(newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["category"] not in CATEGORIES:
                continue
            p = model.predict(row["text"])
            pairs.append((row["category"], p.category))
            confidence += p.confidence
            by_source[row["source"]].append(p.category == row["category"])
    n = len(pairs)
    accuracy = sum(1 for y, p in pairs if y == p) / n
    print(
        f"TF-IDF fallback ({model.version}) on {n} prompts: accuracy {accuracy:.3f}, "
        f"macro-F1 {macro_f1(pairs):.3f}, mean confidence {confidence / n:.3f}"
    )
    print("per category (true):", dict(Counter(y for y, _ in pairs)))
    for source, hits in sorted(by_source.items(), key=lambda kv: -len(kv[1])):
        print(f"  {source:<32} {len(hits):>5}  accuracy {sum(hits) / len(hits):.3f}")


if __name__ == "__main__":
    main()
