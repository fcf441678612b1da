"""Emotion model under ONNX Runtime's CUDA provider: does it really run there, and how fast.

Run by bench/gpu_check.sh (which installs the GPU variant first). Prints, for the model given:

* the providers the session really got (``session.get_providers()``);
* per-node placement from ONNX Runtime's profile (how many nodes, and which op types, ran on
  CUDA and which fell back to the CPU);
* latency p50/p95 of one ``session.run`` at batch 1, 8 and 32 (sequence 64, the model's
  max_seq_length) and throughput in texts per second.

Exit 0 when CUDA is the first provider and no node outside the CPU-only set fell back
(``--allow-cpu`` measures the CPU instead, to try the script on a machine without a GPU).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "services" / "emotion" / "model"


def feeds(session: Any, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, seq + 1, size=batch)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    out = {}
    for inp in session.get_inputs():
        if "mask" in inp.name:
            out[inp.name] = mask
        else:
            out[inp.name] = rng.integers(1000, 20000, size=(batch, seq), dtype=np.int64) * mask
    return out


def placement(model: Path, providers: list[str], seq: int) -> dict[str, Any]:
    """Nodes per provider (and op types per provider) from one profiled run."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    sess = ort.InferenceSession(str(model), sess_options=so, providers=providers)
    sess.run(None, feeds(sess, 8, seq))
    profile = json.loads(Path(sess.end_profiling()).read_text())
    by_provider: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    seen: set[str] = set()
    for ev in profile:
        args = ev.get("args", {})
        if ev.get("cat") == "Node" and "provider" in args and ev["name"] not in seen:
            seen.add(ev["name"])
            by_provider[args["provider"]][args.get("op_name", "?")] += 1
    return {p: dict(c) for p, c in by_provider.items()}


def latency(model: Path, providers: list[str], seq: int, batches: tuple[int, ...], seconds: float) -> dict[str, Any]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=providers)
    out: dict[str, Any] = {"providers": sess.get_providers()}
    for batch in batches:
        data = feeds(sess, batch, seq, seed=batch)
        for _ in range(10):
            sess.run(None, data)
        times: list[float] = []
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or len(times) < 20:
            t = time.perf_counter()
            sess.run(None, data)
            times.append(time.perf_counter() - t)
        ms = np.array(times) * 1e3
        out[f"batch_{batch}"] = {
            "runs": len(times),
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "texts_per_s": round(batch * len(times) / float(np.sum(times)), 1),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, help="ONNX file (default: emotion.fp16.onnx if present, else model.json's)")
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per batch size")
    p.add_argument("--allow-cpu", action="store_true", help="measure on CPU when CUDA is not there")
    args = p.parse_args(argv)
    import onnxruntime as ort

    meta = json.loads((MODEL_DIR / "model.json").read_text())
    model = args.model or next(
        (f for f in (MODEL_DIR / "emotion.fp16.onnx", MODEL_DIR / meta["onnx_file"]) if f.is_file()),
        MODEL_DIR / meta["onnx_file"],
    )
    seq = int(meta.get("max_seq_length", 64))
    available = ort.get_available_providers()
    print(f"onnxruntime {ort.__version__} ({ort.get_device()}), available providers: {available}")
    print(
        f"model: {model.relative_to(REPO) if model.is_relative_to(REPO) else model} ({model.stat().st_size / 1e6:.1f} MB)"
    )
    if "CUDAExecutionProvider" in available:
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    elif args.allow_cpu:
        providers = ["CPUExecutionProvider"]
    else:
        print("FAIL: CUDAExecutionProvider not available (onnxruntime-gpu installed? CUDA/cuDNN libraries found?)")
        return 1
    placed = placement(model, providers, seq)
    print("per-node placement (profile, batch 8):")
    for prov, ops in sorted(placed.items()):
        print(f"  {prov}: {sum(ops.values())} nodes {dict(sorted(ops.items()))}")
    result = latency(model, providers, seq, (1, 8, 32), args.seconds)
    print(f"session.get_providers(): {result.pop('providers')}")
    print(f"{'batch':>5} {'p50 ms':>9} {'p95 ms':>9} {'texts/s':>9} {'runs':>6}")
    for key, row in result.items():
        print(f"{key.split('_')[1]:>5} {row['p50_ms']:>9} {row['p95_ms']:>9} {row['texts_per_s']:>9} {row['runs']:>6}")
    if providers[0] == "CUDAExecutionProvider":
        on_cpu = sum(placed.get("CPUExecutionProvider", {}).values())
        on_gpu = sum(placed.get("CUDAExecutionProvider", {}).values())
        # Shape arithmetic (Shape/Gather on shapes) on the CPU is normal; the heavy ops must not be.
        heavy = {
            op
            for op in placed.get("CPUExecutionProvider", {})
            if op
            in {
                "MatMul",
                "MatMulInteger",
                "Gemm",
                "Attention",
                "MultiHeadAttention",
                "LayerNormalization",
                "SkipLayerNormalization",
                "DynamicQuantizeLinear",
                "FusedMatMul",
            }
        }
        print(f"CUDA nodes {on_gpu}, CPU nodes {on_cpu}; heavy ops on CPU: {sorted(heavy) or 'none'}")
        if on_gpu == 0 or heavy:
            print("FAIL: the model does not really run on the GPU")
            return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
