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

from masterx_runtime.testing.benchstats import KERNEL_ISAS, cpu_flags, machine  # noqa: E402
from services.emotion.engine import DEFAULT_MODEL_DIR, EmotionModel  # noqa: E402
from services.emotion.training.calibrate import prf  # noqa: E402  (the model card's metric)
from services.emotion.training.data import read_goemotions  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="data folder with goemotions/dev.tsv")
    ap.add_argument("--limit", type=int, default=None, help="first N dev texts only")
    args = ap.parse_args()
    flags = cpu_flags()
    dev = read_goemotions(args.data / "goemotions" / "dev.tsv", args.limit)
    model = EmotionModel(intra_op_threads=1, prefer_gpu=False)
    started = time.perf_counter()
    preds = model.predict(dev.texts)
    seconds = time.perf_counter() - started
    index = {label: j for j, label in enumerate(model.labels)}
    active = np.zeros(dev.labels.shape, dtype=bool)
    for i, p in enumerate(preds):
        active[i, [index[label] for label in p.active_labels]] = True
    single = np.flatnonzero(dev.labels.sum(axis=1) == 1)
    primary_ok = sum(model.labels[int(dev.labels[i].argmax())] == preds[i].primary_label for i in single) / max(
        1, len(single)
    )
    card = json.loads((Path(DEFAULT_MODEL_DIR) / "metrics.json").read_text(encoding="utf-8"))
    print(f"machine: {machine()}")
    print("CPU: " + ", ".join(f"{name} {'yes' if name in flags else 'no'}" for name in KERNEL_ISAS))
    print(f"model {model.model_version}: {len(dev.texts)} GoEmotions dev texts in {seconds:.1f} s, one at a time")
    print(f"macro-F1 (model thresholds): {prf(active, dev.labels)['macro_f1']:.4f}")
    print(
        f"model card, same split and rule (macro_f1_dev_full_without): {card.get('serving_fusions', {}).get('macro_f1_dev_full_without')}"
    )
    print(f"primary label = gold label, texts with one gold label ({len(single)}): {primary_ok:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
