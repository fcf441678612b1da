"""What the category and urgency heads cost per message on top of the emotion encoder.

Runs the shipped model twice in one process, interleaved: with its heads (the ``features``
output + two linear heads) and with the ``heads`` section removed from ``model.json`` (the same
ONNX graph, emotion outputs only). Reports CPU time and wall time per message (one text per
call, one intra-op thread, as the service runs per-text) and the difference. Target (issue 13):
the heads add <= 0.5 ms per message.

    .venv/bin/python bench/bench_heads.py [--rounds 5] [--texts 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from masterx_runtime.testing.benchstats import machine, percentile
from services.emotion.engine import DEFAULT_MODEL_DIR, EmotionModel

TEXTS = [
    "I still don't get how to add fractions with different denominators",
    "write a python function that reverses the words in a sentence",
    "why?",
    "I'm so stressed about the exam tomorrow, I can't sleep",
    "how do you spell necessary",
    "ok thanks, what about 2/3 + 1/6?",
    "Can someone from the staff help, the quiz will not submit and it closes tonight.",
    "what causes the seasons on earth",
]


def run(model: EmotionModel, texts: list[str]) -> tuple[list[float], list[float]]:
    cpu, wall = [], []
    for t in texts:
        c0, w0 = time.process_time(), time.perf_counter()
        model.predict([t])
        cpu.append((time.process_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
    return cpu, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--texts", type=int, default=200, help="messages per round and variant")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bare_dir = Path(tmp)
        for f in DEFAULT_MODEL_DIR.iterdir():
            if f.is_file():
                (bare_dir / f.name).symlink_to(f) if f.suffix == ".onnx" else shutil.copy(f, bare_dir / f.name)
        meta = json.loads((bare_dir / "model.json").read_text())
        meta.pop("heads", None)
        (bare_dir / "model.json").write_text(json.dumps(meta))
        heads = EmotionModel(DEFAULT_MODEL_DIR, intra_op_threads=1, prefer_gpu=False)
        bare = EmotionModel(bare_dir, intra_op_threads=1, prefer_gpu=False)
        if heads.heads is None:
            raise SystemExit("the shipped model has no heads")
        texts = [TEXTS[i % len(TEXTS)] for i in range(args.texts)]
        for m in (heads, bare):
            m.warmup(5)
        res: dict[str, tuple[list[float], list[float]]] = {"heads": ([], []), "bare": ([], [])}
        for _ in range(args.rounds):  # interleaved A B A B
            for name, m in (("heads", heads), ("bare", bare)):
                c, w = run(m, texts)
                res[name][0].extend(c)
                res[name][1].extend(w)
    print(f"\nEmotion heads cost ({machine()}; {args.rounds} x {args.texts} messages per variant, interleaved)\n")
    print("| variant | CPU p50 (ms) | CPU mean (ms) | wall p50 (ms) | wall p95 (ms) |")
    print("|---|---:|---:|---:|---:|")
    for name in ("bare", "heads"):
        c, w = res[name]
        print(
            f"| {name} | {percentile(c, 50):.3f} | {sum(c) / len(c):.3f} | {percentile(w, 50):.3f} | {percentile(w, 95):.3f} |"
        )
    dc = percentile(res["heads"][0], 50) - percentile(res["bare"][0], 50)
    dw = percentile(res["heads"][1], 50) - percentile(res["bare"][1], 50)
    print(f"\nheads add {dc:+.3f} ms CPU and {dw:+.3f} ms wall per message at p50 (target <= 0.5 ms)")


if __name__ == "__main__":
    main()
