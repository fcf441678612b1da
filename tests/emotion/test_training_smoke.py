"""Smoke test of the training pipeline on a tiny synthetic dataset (imports torch: slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

LABELS = [
    "admiration",
    "amusement",
    "anger",
    "annoyance",
    "approval",
    "caring",
    "confusion",
    "curiosity",
    "desire",
    "disappointment",
    "disapproval",
    "disgust",
    "embarrassment",
    "excitement",
    "fear",
    "gratitude",
    "grief",
    "joy",
    "love",
    "nervousness",
    "optimism",
    "pride",
    "realization",
    "relief",
    "remorse",
    "sadness",
    "surprise",
    "neutral",
]
EKMAN = {
    "anger": ["anger", "annoyance", "disapproval"],
    "disgust": ["disgust"],
    "fear": ["fear", "nervousness"],
    "joy": [
        "joy",
        "amusement",
        "approval",
        "excitement",
        "gratitude",
        "love",
        "optimism",
        "relief",
        "pride",
        "admiration",
        "desire",
        "caring",
    ],
    "sadness": ["sadness", "disappointment", "embarrassment", "grief", "remorse"],
    "surprise": ["surprise", "realization", "confusion", "curiosity"],
}
SENTENCES = [
    ("thanks a lot, that really helped me", "15"),
    ("this is so annoying, why does it keep failing", "3,2"),
    ("I miss my dog so much", "25,16"),
    ("what do you mean by that?", "7,6"),
    ("the bus leaves at noon", "27"),
    ("haha that is hilarious", "1"),
    ("I'm worried about the exam tomorrow", "19,14"),
    ("wow, I did not expect that at all", "26"),
]


def write_tiny_data(root: Path) -> Path:
    ge = root / "goemotions"
    eb = root / "emobank"
    ge.mkdir(parents=True)
    eb.mkdir()
    (ge / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (ge / "ekman_mapping.json").write_text(json.dumps(EKMAN))
    for name, n in (("train.tsv", 24), ("dev.tsv", 16)):
        rows = [f"{SENTENCES[i % 8][0]} #{i}\t{SENTENCES[i % 8][1]}\tc{name[0]}{i}" for i in range(n)]
        (ge / name).write_text("\n".join(rows) + "\n")
    lines = ["id,split,V,A,D,text"]
    for i in range(20):
        text, _ = SENTENCES[i % 8]
        lines.append(f'e{i},{"train" if i < 14 else "dev"},{2 + (i % 3)},{2.5 + (i % 2)},3.0,"{text}"')
    lines.append('x1,test,3,3,3,"never read"')
    (eb / "emobank_train_dev.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.slow
@pytest.mark.timeout(1800)  # trains a model
@pytest.mark.parametrize(
    ("layers", "distil"), [(None, False), (2, True)], ids=["6-layers", "2-layers-distilled-from-the-shipped-model"]
)
def test_pipeline_end_to_end(tmp_path: Path, layers: int | None, distil: bool) -> None:
    import onnx
    import onnxruntime as ort

    from services.emotion.config import SERVICE_DIR
    from services.emotion.engine import EmotionModel
    from services.emotion.training.__main__ import main
    from services.emotion.training.data import load_corpus

    data = write_tiny_data(tmp_path / "data")
    corpus = load_corpus(data)
    assert len(corpus.eb_train.texts) == 14 and len(corpus.eb_dev.texts) == 6  # no test rows
    assert corpus.ge_train.labels.shape == (24, 28)

    out = tmp_path / "model"
    rc = main(
        [
            "--data",
            str(data),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--max-steps",
            "2",
            "--batch-size",
            "8",
            "--latency-runs",
            "3",
            "--quant-calib-sentences",
            "4",
            *(["--layers", str(layers)] if layers else []),
            *(["--teacher", str(SERVICE_DIR / "model")] if distil else []),
        ]
    )
    assert rc == 0
    for name in ("emotion.int8.onnx", "tokenizer.json", "model.json", "metrics.json", "MODEL_CARD.md"):
        assert (out / name).is_file(), name
    assert (out / "build" / "checkpoints" / "epoch1.pt").is_file()

    # the export has dynamic batch and sequence axes
    fp32 = out / "build" / "emotion.fp32.onnx"
    g = onnx.load(str(fp32)).graph
    for inp in g.input:
        dims = inp.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "sequence"], inp.name
        assert inp.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [o.name for o in g.output] == ["emotion_logits", "pad"]
    for path in (fp32, out / "emotion.int8.onnx"):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for b, s in ((1, 5), (3, 11)):
            ids = np.full((b, s), 1000, dtype=np.int64)
            lo, pad = sess.run(["emotion_logits", "pad"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})
            assert lo.shape == (b, 28) and pad.shape == (b, 3)
            assert np.all((pad >= 0) & (pad <= 1))

    meta = json.loads((out / "model.json").read_text())
    depth = layers or 6
    assert meta["encoder_layers"] == depth and meta["model_version"].startswith(f"emotion-minilm-l{depth}-")
    assert meta["features_layers"] == list(range(max(0, depth - 4), depth))
    feats = ort.InferenceSession(str(out / "emotion.int8.onnx"), providers=["CPUExecutionProvider"])
    ids = np.full((2, 7), 1000, dtype=np.int64)
    (f,) = feats.run(["features"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    assert f.shape == (2, 384 * len(meta["features_layers"]))

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["config"]["teacher"] == (str(SERVICE_DIR / "model") if distil else None)
    assert set(metrics["targets"]) == {
        "macro_f1_dev_B",
        "ekman_macro_f1_dev_B",
        "r_valence",
        "r_arousal",
        "r_dominance",
    }
    assert metrics["engine_vs_pipeline_max_abs_prob_diff_fp32"] < 1e-4
    assert "Intended use" in (out / "MODEL_CARD.md").read_text()

    m = EmotionModel(out)
    (p,) = m.predict(["thanks a lot"])
    assert len(p.probabilities) == 28 and p.primary_label in LABELS


def test_dev_split_is_deterministic_and_balanced() -> None:
    from services.emotion.training.data import dev_half, dev_half_masks

    ids = [f"c{i}" for i in range(2000)]
    a, b = dev_half_masks(ids)
    assert (a ^ b).all()
    assert 0.45 < a.mean() < 0.55
    assert [dev_half(i) for i in ids[:50]] == [dev_half(i) for i in ids[:50]]


def test_calibration_helpers() -> None:
    from services.emotion.training.calibrate import calibrate, evaluate_emotions

    rng = np.random.default_rng(0)
    y = (rng.random((400, 28)) < 0.1).astype(np.float32)
    logits = (y * 2 - 1) * 2 + rng.normal(0, 1.0, y.shape)
    ek = ["joy"] * 20 + ["anger"] * 7 + ["neutral"]
    cal = calibrate(logits, y, ek)
    ev = evaluate_emotions(logits, y, cal, ek)
    assert ev["macro_f1"] > 0.8
    assert len(cal["thresholds"]) == 28 and len(cal["ekman_thresholds"]) == 7
