"""Export the emotion model for the CUDA provider: fp16 (or fp32) next to the int8 CPU model.

The shipped ``emotion.int8.onnx`` is dynamically quantized (``DynamicQuantizeLinear`` +
``MatMulInteger``): right for CPUs, wrong for a GPU, where ONNX Runtime's CUDA provider has no
fast kernels for those nodes and places them on the CPU (a copy to and from the device per layer).
This script turns the fp32 export the training pipeline writes (``model/build/emotion.fp32.onnx``,
:func:`services.emotion.training.pipeline.export_onnx`) into a float model for the GPU:

    python -m services.emotion.training.export_gpu \\
        --fp32 services/emotion/model/build/emotion.fp32.onnx \\
        --out services/emotion/model/emotion.fp16.onnx            # ~45 MB for MiniLM-L6

``--precision fp16`` (default) converts weights and activations to float16 but keeps the graph's
inputs (int64 token ids, mask) and outputs (float32 logits, PAD) as they are, so the engine feeds
and reads the same tensors as with the int8 model; LayerNorm/Softmax-style reductions stay fp32
where ONNX Runtime's converter blocks them. ``--precision fp32`` copies the export unchanged.

It then checks the export against the fp32 model on the same token sequences (seeded random
ids, batch of ``--check-batch``) with the best provider present (CUDA when onnxruntime-gpu and a
GPU are there, else CPU) and prints max |dlogit| and primary-label agreement as JSON; it fails
when agreement is below ``--min-agreement``. The engine chooses the file by provider (see
docs/deploy.md, "GPU image"): the int8 file on CPU, this one under CUDA.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np


def convert(fp32: Path, out: Path, precision: str) -> None:
    """Write ``out`` from the fp32 export in the requested precision."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if precision == "fp32":
        shutil.copyfile(fp32, out)
        return
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32))
    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    onnx.save(half, str(out))


def providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return (
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if "CUDAExecutionProvider" in available
        else ["CPUExecutionProvider"]
    )


def sample_inputs(session: Any, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded token ids and a mask with ragged lengths, for every int64 input of the graph."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, seq + 1, size=batch)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    feeds: dict[str, np.ndarray] = {}
    for inp in session.get_inputs():
        if "mask" in inp.name:
            feeds[inp.name] = mask
        elif "type" in inp.name:
            feeds[inp.name] = np.zeros((batch, seq), dtype=np.int64)
        else:
            feeds[inp.name] = rng.integers(1000, 20000, size=(batch, seq), dtype=np.int64) * mask
    return feeds


def compare(fp32: Path, export: Path, batch: int, seq: int) -> dict[str, Any]:
    """Max |difference| of every output and argmax agreement of the first one."""
    import onnxruntime as ort

    chosen = providers()
    ref = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    new = ort.InferenceSession(str(export), providers=chosen)
    feeds = sample_inputs(ref, batch, seq)
    want = ref.run(None, feeds)
    got = new.run(None, feeds)
    names = [o.name for o in ref.get_outputs()]
    diffs = {n: float(np.max(np.abs(np.asarray(g, np.float32) - w))) for n, g, w in zip(names, got, want, strict=True)}
    agree = float(np.mean(np.argmax(got[0], axis=-1) == np.argmax(want[0], axis=-1)))
    return {
        "providers": new.get_providers(),
        "max_abs_diff": diffs,
        "primary_agreement": agree,
        "size_mb": round(export.stat().st_size / 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fp32", type=Path, required=True, help="fp32 ONNX export of the trained model")
    p.add_argument("--out", type=Path, required=True, help="where to write the GPU model")
    p.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    p.add_argument("--check-batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64, help="sequence length of the check (model.json max_seq_length)")
    p.add_argument("--min-agreement", type=float, default=0.95)
    args = p.parse_args(argv)
    if not args.fp32.is_file():
        print(f"{args.fp32}: no fp32 export (run the training pipeline: make train-emotion)", file=sys.stderr)
        return 2
    convert(args.fp32, args.out, args.precision)
    report = {
        "out": str(args.out),
        "precision": args.precision,
        **compare(args.fp32, args.out, args.check_batch, args.seq),
    }
    print(json.dumps(report, indent=2))
    if report["primary_agreement"] < args.min_agreement:
        print(f"primary-label agreement {report['primary_agreement']:.3f} < {args.min_agreement}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
