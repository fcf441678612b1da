"""Post-training steps: export fp32 ONNX, quantize int8, calibrate, evaluate, write the artifact."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .calibrate import EKMAN_RULE_TEXT, EKMAN_RULES, calibrate, evaluate_emotions, evaluate_pad, sigmoid
from .data import EKMAN_GROUPS, Corpus, dev_half_masks
from .model import encoder_path
from .tokenize import encode, load_tokenizer, pad_batch, token_lengths

INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAMES = ["emotion_logits", "pad"]
ONNX_FILE = "emotion.int8.onnx"
#: onnxruntime graph fusions the served model runs without (written to model.json, read by the
#: engine): the fused SkipLayerNormalization took ~45 us per call on one CPU thread for a
#: 22-token message against ~12 us for the Add + LayerNormalization it replaces (11% of the run).
ORT_DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]
LATENCY_TEXT = (
    "I finally finished the whole project tonight and honestly I am so proud and relieved that it works"  # 19 words
)


def export_onnx(
    ckpt: Path,
    path: Path,
    train_labels: np.ndarray | None = None,
    log: Callable[[str], None] = print,
    pad_refit_data: tuple[list[str], np.ndarray] | None = None,
) -> dict:
    """Export the checkpoint to ONNX (dynamic batch and sequence axes); return its train config.

    With ``train_labels``, the emotion-head bias is shifted by -log(pos_weight): training with
    BCE pos_weight w multiplies the predicted odds by w, so this restores probabilities on the
    data's own scale (better calibrated, fair argmax across labels).
    """
    import torch

    from .model import load_checkpoint
    from .train import pos_weights

    model, meta = load_checkpoint(ckpt, attn_implementation="eager")
    model.eval()
    shift = None
    if train_labels is not None:
        cfg = meta["config"]
        pw = pos_weights(train_labels, cfg["pos_weight_power"], cfg["pos_weight_max"])
        shift = np.log(pw)
        with torch.no_grad():
            model.emotion_head.bias.sub_(torch.from_numpy(shift))
    pad_refit = None
    if pad_refit_data is not None:
        from .padrefit import refit_pad_head

        tok = load_tokenizer(encoder_path() / "tokenizer.json", meta["config"]["max_seq_length"])
        pad_refit = refit_pad_head(
            model, encode(tok, pad_refit_data[0]), pad_refit_data[1], meta["config"]["seed"], log
        )
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (ids, mask),
        str(path),
        dynamo=False,
        input_names=INPUT_NAMES,
        output_names=OUTPUT_NAMES,
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "emotion_logits": {0: "batch"},
            "pad": {0: "batch"},
        },
        opset_version=17,
        do_constant_folding=True,
    )
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    lo, pa = sess.run(OUTPUT_NAMES, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    with torch.no_grad():
        tlo, tpa = model(ids, mask)
    diff = float(max(np.abs(lo - tlo.numpy()).max(), np.abs(pa - tpa.numpy()).max()))
    log(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB); max |onnx - torch| = {diff:.2e}")
    if diff > 1e-3:
        raise RuntimeError(f"ONNX export mismatch {diff}")
    return {
        "config": meta["config"],
        "epoch": meta["epoch"],
        "step": meta.get("step"),
        "export_max_abs_diff": diff,
        "logit_shift": None if shift is None else shift.tolist(),
        "pad_refit": pad_refit,
    }


def onnx_outputs(
    path: Path, seqs: list[list[int]], threads: int = 2, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and PAD of token sequences with onnxruntime (batches sorted by length)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(
        str(path), sess_options=so, providers=["CPUExecutionProvider"], disabled_optimizers=ORT_DISABLED_OPTIMIZERS
    )
    order = np.argsort([len(s) for s in seqs], kind="stable")
    logits = np.zeros((len(seqs), 28), dtype=np.float32)
    pad = np.zeros((len(seqs), 3), dtype=np.float32)
    for s in range(0, len(order), batch_size):
        sel = order[s : s + batch_size]
        ids, mask = pad_batch([seqs[i] for i in sel])
        lo, pa = sess.run(OUTPUT_NAMES, {"input_ids": ids, "attention_mask": mask})
        logits[sel] = lo
        pad[sel] = pa
    return logits, pad


class _CalibReader:
    """Static-quantization calibration data: a few hundred TRAIN sentences, one per batch."""

    def __init__(self, seqs: list[list[int]], fixed_len: int | None = None) -> None:
        self._it = iter(seqs)
        self._len = fixed_len  # histogram calibrators need one shape for every batch

    def get_next(self) -> dict[str, np.ndarray] | None:
        s = next(self._it, None)
        if s is None:
            return None
        ids, mask = pad_batch([s])
        if self._len is not None:
            ids = np.pad(ids, ((0, 0), (0, self._len - ids.shape[1])))
            mask = np.pad(mask, ((0, 0), (0, self._len - mask.shape[1])))
        return {"input_ids": ids, "attention_mask": mask}


def quantize_variants(
    fp32: Path, build: Path, calib_seqs: list[list[int]], log: Callable[[str], None] = print
) -> dict[str, Path]:
    """Write several int8 variants; return name -> path."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = build / "emotion.fp32.pre.onnx"
    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    except Exception as e:  # pragma: no cover - depends on the onnxruntime version
        log(f"quant_pre_process failed ({e}); quantizing the raw export")
        shutil.copy(fp32, pre)
    import onnx

    # the heads are Gemm nodes, which dynamic quantization leaves in fp32 anyway
    heads = [n.name for n in onnx.load(str(pre)).graph.node if "_head" in n.name and n.op_type in ("MatMul", "Gemm")]
    out: dict[str, Path] = {}
    for name, per_channel in (("dynamic_per_tensor", False), ("dynamic_per_channel", True)):
        p = build / f"emotion.int8.{name}.onnx"
        t = time.time()
        quantize_dynamic(str(pre), str(p), weight_type=QuantType.QInt8, per_channel=per_channel)
        out[name] = p
        log(f"quantized {name} in {time.time() - t:.0f}s ({p.stat().st_size / 1e6:.1f} MB)")
    statics: tuple[tuple[str, CalibrationMethod, dict[str, float], int | None], ...] = (
        ("static_qdq_per_channel_minmax", CalibrationMethod.MinMax, {}, None),
        (
            "static_qdq_per_channel_percentile",
            CalibrationMethod.Percentile,
            {"CalibPercentile": 99.999},
            max(len(s) for s in calib_seqs),
        ),
    )
    for name, method, extra, fixed_len in statics:
        p = build / f"emotion.int8.{name}.onnx"
        t = time.time()
        try:
            quantize_static(
                str(pre),
                str(p),
                _CalibReader(calib_seqs, fixed_len),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=method,
                nodes_to_exclude=heads,
                extra_options={"ActivationSymmetric": True, **extra},
            )
            out[name] = p
            log(f"quantized {name} in {time.time() - t:.0f}s")
        except Exception as e:  # keep going with the other variants
            log(f"static quantization {name} failed: {e}")
    return out


def latency(model_dir: Path, onnx_file: str, threads: int, runs: int) -> dict:
    """p50/p95 ms of EmotionModel.predict on one ~20-word text (tokenization included)."""
    from services.emotion.engine import EmotionModel

    m = EmotionModel(model_dir, intra_op_threads=threads, model_file=onnx_file, prefer_gpu=False)
    for _ in range(20):
        m.predict([LATENCY_TEXT])
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        m.predict([LATENCY_TEXT])
        ts.append((time.perf_counter() - t) * 1000)
    a = np.asarray(ts)
    return {
        "threads": threads,
        "runs": runs,
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "mean_ms": float(a.mean()),
        "providers": m.providers,
        "words": len(LATENCY_TEXT.split()),
    }


def _strip(ev: dict) -> dict:
    return {k: v for k, v in ev.items() if not k.startswith("per_")}


def _assess(
    path: Path, dev_seqs: list[list[int]], eb_seqs: list[list[int]], corpus: Corpus, a: np.ndarray, b: np.ndarray
) -> dict:
    """Outputs of one ONNX file, calibration on dev half A, metrics on A, B, full dev, EmoBank dev."""
    # one text per run, as the engine serves the dynamically quantized model
    lo, _pa = onnx_outputs(path, dev_seqs, batch_size=1)
    _, pad = onnx_outputs(path, eb_seqs, batch_size=1)
    y, ek = corpus.ge_dev.labels, corpus.ekman_of_label
    full = np.ones_like(a)
    cal = calibrate(lo[a], y[a], ek)
    return {
        "logits": lo,
        "calibration": cal,
        "dev_A": evaluate_emotions(lo[a], y[a], cal, ek),
        "dev_B": evaluate_emotions(lo[b], y[b], cal, ek),
        "dev_full": evaluate_emotions(lo[full], y[full], cal, ek),
        "pad_dev": evaluate_pad(pad, corpus.eb_dev.vad),
        "pad_pred": pad,
        "size_mb": path.stat().st_size / 1e6,
    }


CALIBRATION_METHOD = (
    "single temperature T minimising BCE of sigmoid(logits/T) on dev A; then per-label thresholds "
    "maximising F1 on dev A (grid 0.01-0.95 step 0.01, F1 curve smoothed over +-0.05); Ekman "
    "groups: the group-probability rule is chosen on dev A among {rules} by repeated 5-fold "
    "cross-validation within dev A (3 repeats; each fold fits the rule's parameters and per-group "
    "thresholds on the other folds; pooled out-of-fold Ekman macro-F1), then refitted on all of "
    "dev A with per-group thresholds tuned the same way as the label thresholds"
)


def _model_json_calibration(cal: dict) -> dict:
    """The calibrated fields of model.json."""
    rule = cal["ekman_rule"]
    return {
        "thresholds": [round(float(x), 4) for x in cal["thresholds"]],
        "temperature": cal["temperature"],
        "ekman_thresholds": [round(float(x), 4) for x in cal["ekman_thresholds"]],
        "ekman_rule": EKMAN_RULE_TEXT[rule] + "; active if >= its ekman_threshold",
        "ekman_group_rule": {
            "name": rule,
            "input": "probabilities p = sigmoid(emotion_logits / temperature) (logistic: "
            "z = emotion_logits / temperature)",
            "params": cal["ekman_rule_params"],
        },
    }


def _calibration_metrics(q: dict, f: dict, chosen: str) -> dict:
    """The metrics.json parts that depend on calibration and evaluation (int8 = q, fp32 = f)."""
    cal = q["calibration"]

    def block(r: dict) -> dict:
        return {
            "dev_A": _strip(r["dev_A"]),
            "dev_B": _strip(r["dev_B"]),
            "dev_full": _strip(r["dev_full"]),
            "pad_dev": r["pad_dev"],
            "calibration": {k: r["calibration"][k] for k in ("temperature", "ekman_rule")},
            "size_mb": r["size_mb"],
        }

    targets = {
        "macro_f1_dev_B": (q["dev_B"]["macro_f1"], 0.46),
        "ekman_macro_f1_dev_B": (q["dev_B"]["ekman_macro_f1"], 0.62),
        "r_valence": (q["pad_dev"]["r_valence"], 0.70),
        "r_arousal": (q["pad_dev"]["r_arousal"], 0.45),
        "r_dominance": (q["pad_dev"]["r_dominance"], 0.35),
    }
    deltas = {
        s: {
            "macro_f1": q[s]["macro_f1"] - f[s]["macro_f1"],
            "micro_f1": q[s]["micro_f1"] - f[s]["micro_f1"],
            "ekman_macro_f1": q[s]["ekman_macro_f1"] - f[s]["ekman_macro_f1"],
        }
        for s in ("dev_A", "dev_B", "dev_full")
    }
    deltas["pad_dev"] = {k: q["pad_dev"][k] - f["pad_dev"][k] for k in q["pad_dev"] if k.startswith("r_")}
    cands = cal["ekman_rule_candidates"]
    return {
        "calibration": {
            "fit_on": "GoEmotions dev half A",
            "temperature": cal["temperature"],
            "thresholds": cal["thresholds"],
            "ekman_rule": cal["ekman_rule"],
            "ekman_rule_params": cal["ekman_rule_params"],
            "ekman_thresholds": cal["ekman_thresholds"],
            "method": CALIBRATION_METHOD.format(rules=", ".join(EKMAN_RULES)),
        },
        "ekman_rule_selection": {
            "chosen": cal["ekman_rule"],
            "chosen_by": "highest cross-validated Ekman macro-F1 within dev half A (int8 outputs)",
            "n_candidates": len(cands),
            "candidates": {
                r: {
                    "description": EKMAN_RULE_TEXT[r],
                    "cv_macro_f1_dev_A": c["cv_macro_f1"],
                    "in_sample_macro_f1_dev_A": c["in_sample_macro_f1"],
                    "macro_f1_dev_B": q["dev_B"]["ekman_macro_f1_by_rule"][r],
                    "macro_f1_dev_full": q["dev_full"]["ekman_macro_f1_by_rule"][r],
                    "fp32_macro_f1_dev_B": f["dev_B"]["ekman_macro_f1_by_rule"][r],
                    "thresholds": c["thresholds"],
                    "logistic_C": (c["params"] or {}).get("C"),
                }
                for r, c in cands.items()
            },
        },
        "int8": {
            "variant": chosen,
            **block(q),
            "per_label_dev_B": q["dev_B"]["per_label"],
            "per_label_dev_full": q["dev_full"]["per_label"],
            "per_ekman_dev_B": q["dev_B"]["per_ekman"],
        },
        "fp32": block(f),
        "int8_minus_fp32": deltas,
        "targets": {k: {"value": v, "target": t, "met": bool(v >= t)} for k, (v, t) in targets.items()},
        "int8_within_0.01_macro_f1_of_fp32": bool(abs(deltas["dev_B"]["macro_f1"]) <= 0.01),
    }


def recalibrate(corpus: Corpus, out: Path, build: Path, log: Callable[[str], None] = print) -> dict:
    """Redo only calibration and evaluation on the already exported files; no training/export.

    Reads OUT/emotion.int8.onnx (left byte-identical) and BUILD/emotion.fp32.onnx, refits the
    calibration on dev half A, re-evaluates, and rewrites the calibrated fields of model.json and
    the calibration-dependent parts of metrics.json (export, quantization-variant and latency
    numbers are kept from the last full run), then MODEL_CARD.md.
    """
    from .card import write_card

    t_start = time.time()
    meta = json.loads((out / "model.json").read_text(encoding="utf-8"))
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    tok = load_tokenizer(out / "tokenizer.json", int(meta["max_seq_length"]))
    dev_seqs = encode(tok, corpus.ge_dev.texts)
    eb_seqs = encode(tok, corpus.eb_dev.texts)
    a, b = dev_half_masks(corpus.ge_dev.ids)
    log("recalibrating int8")
    q = _assess(out / ONNX_FILE, dev_seqs, eb_seqs, corpus, a, b)
    log("recalibrating fp32")
    f = _assess(build / "emotion.fp32.onnx", dev_seqs, eb_seqs, corpus, a, b)
    meta.update(_model_json_calibration(q["calibration"]))
    (out / "model.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    metrics.update(_calibration_metrics(q, f, metrics["int8"]["variant"]))
    metrics["generated_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    metrics["recalibrated"] = {
        "wall_s": time.time() - t_start,
        "note": "calibration and evaluation redone with --recalibrate-only on the same ONNX files; "
        "quantization-variant and latency numbers are from the last full post-training run",
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    write_card(metrics, out / "MODEL_CARD.md")
    log("targets: " + json.dumps(metrics["targets"]))
    return metrics


def run_post_training(
    corpus: Corpus,
    ckpt: Path,
    out: Path,
    build: Path,
    data_dir: Path,
    latency_runs: int = 300,
    quant_calib_sentences: int = 300,
    log: Callable[[str], None] = print,
    refit_pad: bool = True,
) -> dict:
    """Export, quantize, calibrate (dev half A), evaluate (half B, full dev), write artifact."""
    from .card import write_card

    t_start = time.time()
    max_len = 64
    fp32 = build / "emotion.fp32.onnx"
    exp = export_onnx(
        ckpt,
        fp32,
        corpus.ge_train.labels,
        log,
        (corpus.eb_train.texts, corpus.eb_train.vad) if refit_pad else None,
    )
    max_len = int(exp["config"]["max_seq_length"])
    tok_path = encoder_path() / "tokenizer.json"
    tok = load_tokenizer(tok_path, max_len)
    dev_seqs = encode(tok, corpus.ge_dev.texts)
    eb_seqs = encode(tok, corpus.eb_dev.texts)
    rng = np.random.default_rng(0)
    pick = rng.choice(
        len(corpus.ge_train.texts), size=min(quant_calib_sentences, len(corpus.ge_train.texts)), replace=False
    )
    calib_seqs = encode(tok, [corpus.ge_train.texts[i] for i in pick])

    a, b = dev_half_masks(corpus.ge_dev.ids)
    ek = corpus.ekman_of_label

    def assess(path: Path) -> dict:
        return _assess(path, dev_seqs, eb_seqs, corpus, a, b)

    log("evaluating fp32 ONNX")
    res = {"fp32": assess(fp32)}
    variants = quantize_variants(fp32, build, calib_seqs, log)
    compare: dict[str, dict] = {}
    for name, p in variants.items():
        log(f"evaluating {name}")
        res[name] = assess(p)
        t = res["fp32"]["calibration"]["temperature"]
        pf = sigmoid(res["fp32"]["logits"] / t)
        pq = sigmoid(res[name]["logits"] / t)
        d = np.abs(pq - pf)
        compare[name] = {
            "size_mb": res[name]["size_mb"],
            "prob_abs_diff_mean": float(d.mean()),
            "prob_abs_diff_max": float(d.max()),
            "prob_abs_diff_mean_dev_A": float(d[a].mean()),
            "pad_abs_diff_max": float(np.abs(res[name]["pad_pred"] - res["fp32"]["pad_pred"]).max()),
            **{f"macro_f1_{s}": res[name][s]["macro_f1"] for s in ("dev_A", "dev_B", "dev_full")},
            "ekman_macro_f1_dev_B": res[name]["dev_B"]["ekman_macro_f1_by_rule"]["max"],  # comparable
            **{f"pad_{k}": v for k, v in res[name]["pad_dev"].items() if k.startswith("r_")},
        }
        log(f"{name}: {json.dumps(compare[name])}")
    # choose on dev half A only: per-channel variants, smallest mean |dprob| on A
    eligible = [n for n in compare if "per_channel" in n]
    chosen = min(eligible, key=lambda n: compare[n]["prob_abs_diff_mean_dev_A"])
    log(f"chosen int8 variant: {chosen}")
    shutil.copy(variants[chosen], out / ONNX_FILE)
    shutil.copy(tok_path, out / "tokenizer.json")
    # the category and urgency heads read pooled layers: expose them (python -m
    # services.emotion.training.heads then trains the heads on this model)
    from .features import add_features_output

    feature_layers = add_features_output(out / ONNX_FILE, out / ONNX_FILE)
    q, f = res[chosen], res["fp32"]
    cal = q["calibration"]

    n_layers = int((exp.get("config") or {}).get("layers") or 6)
    version = f"emotion-minilm-l{n_layers}-" + dt.date.today().strftime("%Y%m%d")
    kept = "" if n_layers == 6 else f", first {n_layers} of its 6 layers"
    model_json = {
        "model_version": version,
        "onnx_file": ONNX_FILE,
        "encoder": f"sentence-transformers/all-MiniLM-L6-v2 (fine-tuned{kept}), mean pooling",
        "encoder_layers": n_layers,
        "features_layers": list(feature_layers),
        "labels": corpus.labels,
        **{k: v for k, v in _model_json_calibration(cal).items() if k in ("thresholds", "temperature")},
        "probability": "sigmoid(emotion_logits / temperature)",
        "logit_adjustment": "emotion-head bias shifted by -log(train pos_weight) at export, "
        "so probabilities are not inflated by the class-imbalance weighting",
        "ekman_of_label": ek,
        "ekman_groups": EKMAN_GROUPS,
        **{k: v for k, v in _model_json_calibration(cal).items() if k.startswith("ekman_")},
        "max_seq_length": max_len,
        "pad_token_id": 0,
        "tensors": {
            "input_ids": "input_ids",
            "attention_mask": "attention_mask",
            "emotion_logits": "emotion_logits",
            "pad": "pad",
            "input_dtype": "int64",
            "input_shape": ["batch", "sequence"],
            "emotion_logits_shape": ["batch", 28],
            "pad_shape": ["batch", 3],
        },
        "pad": {
            "names": ["pleasure", "arousal", "dominance"],
            "source": "EmoBank valence, arousal, dominance (1-5 scale)",
            "range": [0.0, 1.0],
            "transform": "value = (x - 1) / 4; x = 1 + 4 * value",
            "activation": "sigmoid inside the graph",
        },
        "quantization": chosen,
        "quantized": True,
        "ort_disabled_optimizers": ORT_DISABLED_OPTIMIZERS,
    }
    (out / "model.json").write_text(json.dumps(model_json, indent=2) + "\n", encoding="utf-8")

    # engine consistency: with the fp32 file the engine must reproduce the pipeline's numbers
    # (same tokenizer, truncation and padding); with the int8 file, dynamic activation
    # quantization makes outputs depend slightly on the batch (scales are per tensor).
    from services.emotion.engine import EmotionModel

    sample = corpus.ge_dev.texts[:64]
    eng32 = EmotionModel(out, intra_op_threads=2, prefer_gpu=False, model_file=str(fp32.resolve()))
    ep32 = np.asarray([p.probabilities for p in eng32.predict(sample)])
    ref32 = sigmoid(res["fp32"]["logits"][:64] / cal["temperature"])
    engine_diff = float(np.abs(ep32 - ref32).max())
    eng = EmotionModel(out, intra_op_threads=2, prefer_gpu=False, batch_invariant=False)
    batch_p = np.asarray([p.probabilities for p in eng.predict(sample)])
    single_p = np.asarray([eng.predict([t])[0].probabilities for t in sample])
    batch_vs_single = float(np.abs(batch_p - single_p).max())
    log(
        f"engine(fp32) vs pipeline max |dprob| {engine_diff:.2e}; int8 batch-vs-single max "
        f"|dprob| {batch_vs_single:.2e}"
    )

    log("measuring latency")
    lat = [latency(out, ONNX_FILE, th, latency_runs) for th in (1, 2)]
    lat_fp32 = latency_fp32(out, fp32, latency_runs)
    lens = token_lengths(tok_path, corpus.ge_train.texts)
    eb_lens = token_lengths(tok_path, corpus.eb_train.texts)
    summary_path = build / "train_summary.json"
    train_summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}

    cm = _calibration_metrics(q, f, chosen)
    metrics = {
        "model_version": version,
        "generated_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "labels": corpus.labels,
        "ekman_of_label": ek,
        "ekman_groups": EKMAN_GROUPS,
        "data": {
            "goemotions_train": len(corpus.ge_train.texts),
            "goemotions_dev": len(corpus.ge_dev.texts),
            "goemotions_dev_A": int(a.sum()),
            "goemotions_dev_B": int(b.sum()),
            "emobank_train": len(corpus.eb_train.texts),
            "emobank_dev": len(corpus.eb_dev.texts),
            "dev_split_rule": "sha256('masterx-emotion-dev-split-v1:' + comment_id)[0] even -> "
            "A (tune), odd -> B (report)",
            "goemotions_train_token_len_pcts": {str(p): float(np.percentile(lens, p)) for p in (50, 90, 95, 99, 100)},
            "goemotions_train_truncated_frac": float((lens > max_len).mean()),
            "emobank_train_token_len_pcts": {str(p): float(np.percentile(eb_lens, p)) for p in (50, 90, 95, 99, 100)},
            "emobank_train_truncated_frac": float((eb_lens > max_len).mean()),
        },
        "training": {k: v for k, v in train_summary.items() if k != "history"}
        | {"checkpoint_epoch": exp["epoch"], "checkpoint_step": exp["step"]},
        "training_history": [
            {
                "epoch": h["epoch"],
                "dev_A_macro_f1": h["dev_A"]["macro_f1"],
                "dev_A_ekman_macro_f1": h["dev_A"]["ekman_macro_f1"],
                "pad_dev": h["pad_dev"],
                "elapsed_s": h["elapsed_s"],
            }
            for h in train_summary.get("history", [])
        ],
        **{k: cm[k] for k in ("calibration", "ekman_rule_selection", "int8", "fp32", "int8_minus_fp32")},
        "quantization_variants": compare,
        "prob_abs_diff_int8_vs_fp32": {
            "mean": compare[chosen]["prob_abs_diff_mean"],
            "max": compare[chosen]["prob_abs_diff_max"],
            "pad_max": compare[chosen]["pad_abs_diff_max"],
            "on": "full GoEmotions dev, probabilities at the fp32 temperature",
        },
        "export_max_abs_diff_onnx_vs_torch": exp["export_max_abs_diff"],
        "pad_head_refit": exp["pad_refit"],
        "earlier_candidates_viewed_on_B": json.loads(earlier.read_text())
        if (earlier := build / "earlier_candidates.json").exists()
        else None,
        "engine_vs_pipeline_max_abs_prob_diff_fp32": engine_diff,
        "int8_batch64_vs_single_max_abs_prob_diff": batch_vs_single,
        "artifact_size_mb": (out / ONNX_FILE).stat().st_size / 1e6,
        "fp32_size_mb": fp32.stat().st_size / 1e6,
        "latency_cpu_batch1": lat,
        "latency_cpu_batch1_fp32": lat_fp32,
        "latency_note": "EmotionModel.predict incl. tokenization, after 20 "
        f"warm-up runs; machine: {_hardware()}; measured while other jobs may share the CPU",
        "targets": cm["targets"],
        "int8_within_0.01_macro_f1_of_fp32": cm["int8_within_0.01_macro_f1_of_fp32"],
        "post_training_wall_s": time.time() - t_start,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    write_card(metrics, out / "MODEL_CARD.md")
    log("targets: " + json.dumps(metrics["targets"]))
    log(f"wrote {out}/emotion.int8.onnx, model.json, tokenizer.json, metrics.json, MODEL_CARD.md")
    return metrics


def latency_fp32(model_dir: Path, fp32: Path, runs: int) -> dict:
    """Same latency measurement for the fp32 model (for the card), 1 thread."""
    tmp = model_dir / "build" / "_fp32_latency"
    tmp.mkdir(parents=True, exist_ok=True)
    for n in ("model.json", "tokenizer.json"):
        shutil.copy(model_dir / n, tmp / n)
    shutil.copy(fp32, tmp / "fp32.onnx")
    r = latency(tmp, "fp32.onnx", 1, runs)
    shutil.rmtree(tmp, ignore_errors=True)
    return r


def _hardware() -> str:
    from .train import hardware

    return hardware() + f", onnxruntime {__import__('onnxruntime').__version__}"
