"""CLI: train -> calibrate -> export fp32 ONNX -> quantize int8 -> evaluate -> model card.

Example::

    python -m services.emotion.training --data /path/to/data --out services/emotion/model --epochs 3
    python -m services.emotion.training --data D --out O --skip-train --checkpoint O/build/best.pt
    python -m services.emotion.training --data D --out O --recalibrate-only
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

# On a shared CPU, spinning OpenMP workers waste most of the time: let them sleep.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .train import TrainConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m services.emotion.training",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--data", type=Path, required=True, help="data folder (goemotions/, emobank/)")
    ap.add_argument("--out", type=Path, required=True, help="model dir to write")
    ap.add_argument("--build-dir", type=Path, default=None, help="default: OUT/build")
    ap.add_argument("--limit", type=int, default=None, help="cap rows per file (dry runs)")
    ap.add_argument("--skip-train", action="store_true", help="use --checkpoint instead")
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--train-only", action="store_true", help="stop after training")
    ap.add_argument(
        "--recalibrate-only",
        action="store_true",
        help="no training, export or quantization: redo calibration and evaluation on OUT/emotion.int8.onnx "
        "and BUILD/emotion.fp32.onnx, rewrite model.json, metrics.json and MODEL_CARD.md",
    )
    ap.add_argument("--latency-runs", type=int, default=300)
    ap.add_argument("--quant-calib-sentences", type=int, default=300)
    ap.add_argument(
        "--no-pad-refit",
        action="store_true",
        help="keep the jointly trained PAD head (default: ridge refit where it helps)",
    )
    d = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        default = getattr(d, f.name)
        typ = type(default) if default is not None else {"time_budget_min": float, "teacher": str}.get(f.name, int)
        ap.add_argument("--" + f.name.replace("_", "-"), type=typ, default=default)
    return ap.parse_args(argv)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from .data import load_corpus

    build = args.build_dir or (args.out / "build")
    build.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    corpus = load_corpus(args.data, args.limit)
    log(
        f"data: goemotions train {len(corpus.ge_train.texts)} dev {len(corpus.ge_dev.texts)}; "
        f"emobank train {len(corpus.eb_train.texts)} dev {len(corpus.eb_dev.texts)}"
    )
    if args.recalibrate_only:
        from .pipeline import recalibrate

        recalibrate(corpus, args.out, build, log=log)
        return 0
    if args.skip_train:
        ckpt = args.checkpoint or (build / "best.pt")
    else:
        from .train import train

        train(corpus, cfg, build, log=log)
        ckpt = build / "best.pt"
    if args.train_only:
        return 0
    from .pipeline import run_post_training

    run_post_training(
        corpus,
        ckpt,
        args.out,
        build,
        args.data,
        latency_runs=args.latency_runs,
        quant_calib_sentences=args.quant_calib_sentences,
        refit_pad=not args.no_pad_refit,
        log=log,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
