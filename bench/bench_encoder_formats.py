"""The emotion encoder's run per text by weight format and batch size, and what batching moves.

    .venv/bin/python bench/bench_encoder_formats.py [--seconds 3] [--batches 1 4 8 16]

Answers one question behind the emotion service's CPU per message: could concurrent messages
share one padded run without their results depending on their neighbours? The shipped model
quantizes activations dynamically with one scale per tensor, so in a padded batch a text's
probabilities move with what it is batched with (why the service runs one text at a time by
default). A float32 graph has no such scale. This script compares, on one intra-op thread as
served, with the service's own session options (``EmotionModel``):

* ``int8``: the shipped ``emotion.int8.onnx``;
* ``fp32``: the same network with the int8 weights dequantized into float32 ``MatMul`` weights
  (built here from the shipped file, so no other artifact is needed; needs the ``onnx``
  package of the ``train`` extra, the row is skipped without it);
* ``static``, with ``--static-calib DATA``: that twin quantized statically (fixed uint8
  activation scales, MinMax over 400 GoEmotions train texts of ``DATA/goemotions``; per-channel
  int8 weights; MatMuls only), which makes padded batches batch-invariant; also prints how often
  its primary label agrees with the shipped model's on the first 1,000 GoEmotions dev texts.

``--idle-gaps 0 5 20`` also prints the int8 run's CPU per text when runs are that many ms of idle
time apart (a service answering one message at a time), which costs more than back to back.

For each: CPU ms per text at each batch size over the messages below (padded batches of
neighbouring messages of ``bench_emotion.py``, as the micro-batcher forms them), and, for batches of 8, the largest
change of any emotion probability against the same text run alone and how many primary labels
change. Also prints whether the CPU has AVX-512 VNNI (int8 dot products), which decides how far
int8 is ahead of float32.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_emotion import MESSAGES  # noqa: E402  (the emotion benchmark's chat messages)

from masterx_runtime.testing.benchstats import cpu_flags, machine  # noqa: E402
from services.emotion.engine import DEFAULT_MODEL_DIR, EmotionModel  # noqa: E402
from services.emotion.training.data import read_goemotions  # noqa: E402


def dequantized(int8_path: Path, out: Path) -> bool:
    """Write the float32 twin of an ``quantize_dynamic`` graph; False without the onnx package.

    Each ``DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(x_scale * w_scale)`` chain
    becomes one ``MatMul(x, (W_q - W_zp) * w_scale)``; nodes nothing reads any more are dropped.
    """
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        return False
    model = onnx.load(str(int8_path))
    g = model.graph
    init = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    replaced: dict[int, onnx.NodeProto] = {}
    dropped: set[int] = set()
    for n in g.node:
        if n.op_type != "MatMulInteger":
            continue
        xq, wq, _xzp, wzp = n.input
        (cast,) = readers[n.output[0]]
        (mul,) = readers[cast.output[0]]
        scales = producer[next(i for i in mul.input if i != cast.output[0])]
        w_scale = next(i for i in scales.input if i in init)
        w = (numpy_helper.to_array(init[wq]).astype(np.float32) - numpy_helper.to_array(init[wzp])) * (
            numpy_helper.to_array(init[w_scale]).astype(np.float32)
        )
        g.initializer.append(numpy_helper.from_array(w.astype(np.float32), f"{wq}_fp32"))
        x = producer[xq].input[0]  # the DynamicQuantizeLinear's float input
        replaced[id(n)] = helper.make_node("MatMul", [x, f"{wq}_fp32"], [mul.output[0]], name=f"{n.name}_fp32")
        dropped |= {id(cast), id(mul)}
    nodes = [replaced.get(id(n), n) for n in g.node if id(n) not in dropped]
    needed = {o.name for o in g.output}
    kept = []
    for n in reversed(nodes):
        if any(o in needed for o in n.output):
            kept.append(n)
            needed |= set(n.input)
    del g.node[:]
    g.node.extend(reversed(kept))
    used = [i for i in g.initializer if i.name in needed]
    del g.initializer[:]
    g.initializer.extend(used)
    onnx.save(model, str(out))
    return True


def per_text_ms(model: EmotionModel, batch: int, seconds: float) -> float:
    groups = [[MESSAGES[(k + j) % len(MESSAGES)] for j in range(batch)] for k in range(len(MESSAGES))]
    for g in groups:
        model.infer_all(g)
    texts, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - wall0 < seconds:
        for g in groups:
            model.infer_all(g)
            texts += len(g)
    return (time.process_time() - cpu0) * 1000 / texts


def batch_effect(model: EmotionModel, batch: int) -> tuple[float, int]:
    """(largest |dprob| over all texts and labels, primary labels changed) in batches vs alone."""
    alone = np.concatenate([model.probabilities(model.infer_all([m])[0]) for m in MESSAGES])
    batched = np.concatenate(
        [model.probabilities(model.infer_all(MESSAGES[k : k + batch])[0]) for k in range(0, len(MESSAGES), batch)]
    )
    changed = int((alone.argmax(axis=1) != batched.argmax(axis=1)).sum())
    return float(np.abs(alone - batched).max()), changed


def idle_gap_ms(model: EmotionModel, gap_s: float, seconds: float) -> float:
    """CPU ms of one text's run (this thread) when the runs are ``gap_s`` of idle time apart."""
    runs, cpu, end = 0, 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        for m in MESSAGES:
            if gap_s:
                time.sleep(gap_s)
            c0 = time.thread_time()
            model.infer_all([m])
            cpu += time.thread_time() - c0
            runs += 1
    return cpu * 1000 / runs


def static_twin(fp32: Path, out: Path, model: EmotionModel, data: Path, texts: int = 400) -> None:
    """Write ``out``: ``fp32`` quantized with activation scales calibrated on GoEmotions train texts."""
    import random

    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    rows = list(read_goemotions(data / "goemotions" / "train.tsv").texts)
    random.Random(0).shuffle(rows)
    feeds = iter(rows[:texts])

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def get_next(self) -> dict[str, np.ndarray] | None:
            text = next(feeds, None)
            if text is None:
                return None
            ids, mask, _ = model.encode([text])
            return {"input_ids": ids, "attention_mask": mask}

    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        calibrate_method=CalibrationMethod.MinMax,
    )


def agreement(a: EmotionModel, b: EmotionModel, data: Path, n: int = 1000) -> tuple[float, float]:
    """(share of equal primary labels, max |dprob|) of two models on GoEmotions dev texts, one at a time."""
    texts = read_goemotions(data / "goemotions" / "dev.tsv", limit=n).texts
    pa = np.concatenate([a.probabilities(a.infer_all([t])[0]) for t in texts])
    pb = np.concatenate([b.probabilities(b.infer_all([t])[0]) for t in texts])
    return float((pa.argmax(axis=1) == pb.argmax(axis=1)).mean()), float(np.abs(pa - pb).max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per format and batch size")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument(
        "--idle-gaps", type=float, nargs="*", metavar="MS", help="also: int8 CPU per text with these idle gaps (ms)"
    )
    ap.add_argument("--static-calib", type=Path, help="data folder (goemotions/): add the static int8 row")
    args = ap.parse_args()
    flags = cpu_flags()
    print(f"machine: {machine()}")
    print(f"CPU: AVX2 {'yes' if 'avx2' in flags else 'no'}, AVX-512 VNNI {'yes' if 'avx512_vnni' in flags else 'no'}")
    models = {"int8": EmotionModel(intra_op_threads=1, prefer_gpu=False)}
    with tempfile.TemporaryDirectory(prefix="masterx-fp32-") as tmp:
        fp32 = Path(tmp) / "emotion.fp32.onnx"
        if dequantized(Path(DEFAULT_MODEL_DIR) / models["int8"].meta["onnx_file"], fp32):
            models["fp32"] = EmotionModel(intra_op_threads=1, prefer_gpu=False, model_file=str(fp32))
            if args.static_calib:
                static = Path(tmp) / "emotion.static.onnx"
                static_twin(fp32, static, models["int8"], args.static_calib)
                models["static"] = EmotionModel(intra_op_threads=1, prefer_gpu=False, model_file=str(static))
        else:
            print("fp32: skipped (pip install onnx, or the train extra)")
        header = " | ".join(f"batch {b}" for b in args.batches)
        print(f"\n| format | CPU ms per text: {header} | batch of 8 vs alone: max abs dprob | primary changed |")
        print("|---|" + "---|" * len(args.batches) + "---|---|")
        for name, model in models.items():
            ms = [per_text_ms(model, b, args.seconds) for b in args.batches]
            dprob, changed = batch_effect(model, 8)
            cells = " | ".join(f"{v:.2f}" for v in ms)
            print(f"| {name} | {cells} | {dprob:.4f} | {changed}/{len(MESSAGES)} |", flush=True)
        if "static" in models:
            share, dmax = agreement(models["int8"], models["static"], args.static_calib)
            print(f"\nstatic vs shipped int8, GoEmotions dev: primary label agrees {share:.1%}, max |dprob| {dmax:.2f}")
        for gap in args.idle_gaps or []:
            per_text = idle_gap_ms(models["int8"], gap / 1000, args.seconds)
            print(f"int8, one text at a time, {gap:g} ms idle between texts: {per_text:.2f} ms CPU per text")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
