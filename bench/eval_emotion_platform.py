"""The served emotion model's GoEmotions dev macro-F1 on this machine's CPU kernels.

    .venv/bin/python bench/eval_emotion_platform.py --data ../shared/data [--limit N]

onnxruntime's int8 kernels differ by instruction set (AVX2 without VNNI sums int8 products in
saturating 16-bit pairs; AVX-512 VNNI does not), so the shipped model's outputs, and with them
its accuracy, can differ from the model card's, which was measured on another VM. This runs the
serving engine (``EmotionModel``, one text at a time, as served) over GoEmotions' dev split
(``DATA/goemotions/dev.tsv``; the data stays outside the project) and prints macro-F1 over the 28
labels with the model's thresholds (a label is active when its probability reaches it), the
share of texts whose primary label is the gold one (among texts with one gold label), and which
instruction sets the CPU has. The model card's figure for the same split and rule is
``serving_fusions.macro_f1_dev_full_without`` in ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from masterx_runtime.testing.benchstats import machine  # noqa: E402
from services.emotion.engine import DEFAULT_MODEL_DIR, EmotionModel  # noqa: E402


def read_dev(path: Path, limit: int | None) -> tuple[list[str], list[list[int]]]:
    """GoEmotions tsv: text, comma-separated label ids, comment id (no header)."""
    texts, gold = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line:
            continue
        text, labels, _cid = line.split("\t")
        texts.append(text)
        gold.append([int(x) for x in labels.split(",") if x])
        if limit is not None and len(texts) >= limit:
            break
    return texts, gold


def macro_f1(pred: np.ndarray, gold: np.ndarray) -> float:
    """Mean over labels of 2TP / (2TP + FP + FN) (0 for a label never predicted nor gold)."""
    tp = (pred & gold).sum(axis=0)
    fp = (pred & ~gold).sum(axis=0)
    fn = (~pred & gold).sum(axis=0)
    denom = 2 * tp + fp + fn
    return float(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="data folder with goemotions/dev.tsv")
    ap.add_argument("--limit", type=int, default=None, help="first N dev texts only")
    args = ap.parse_args()
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    texts, gold_ids = read_dev(args.data / "goemotions" / "dev.tsv", args.limit)
    model = EmotionModel(intra_op_threads=1, prefer_gpu=False)
    n_labels = len(model.labels)
    gold = np.zeros((len(texts), n_labels), dtype=bool)
    for i, ids in enumerate(gold_ids):
        gold[i, ids] = True
    started = time.perf_counter()
    preds = model.predict(texts)
    seconds = time.perf_counter() - started
    index = {label: j for j, label in enumerate(model.labels)}
    active = np.zeros_like(gold)
    for i, p in enumerate(preds):
        active[i, [index[label] for label in p.active_labels]] = True
    single = [i for i, ids in enumerate(gold_ids) if len(ids) == 1]
    primary_ok = sum(model.labels[gold_ids[i][0]] == preds[i].primary_label for i in single) / max(1, len(single))
    card = json.loads((Path(DEFAULT_MODEL_DIR) / "metrics.json").read_text(encoding="utf-8"))
    print(f"machine: {machine()}")
    print(
        "CPU: " + ", ".join(f"{name} {'yes' if name in flags else 'no'}" for name in ("avx2", "avx512f", "avx512_vnni"))
    )
    print(f"model {model.model_version}: {len(texts)} GoEmotions dev texts in {seconds:.1f} s, one at a time")
    print(f"macro-F1 (model thresholds): {macro_f1(active, gold):.4f}")
    print(
        f"model card, same split and rule (macro_f1_dev_full_without): {card.get('serving_fusions', {}).get('macro_f1_dev_full_without')}"
    )
    print(f"primary label = gold label, texts with one gold label ({len(single)}): {primary_ok:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
