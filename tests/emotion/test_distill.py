"""Distillation targets (services/emotion/training/distill.py) from the shipped teacher model."""

from __future__ import annotations

import numpy as np
import pytest

from services.emotion.config import SERVICE_DIR
from services.emotion.training.distill import teacher_targets

TEACHER = SERVICE_DIR / "model"
SEQS = [
    [101, 1045, 2572, 2061, 5458, 2007, 2023, 102],  # "i am so lost with this"
    [101, 4067, 2017, 102],
    [101, 2339, 2515, 2009, 2467, 8246, 1010, 2009, 2003, 2061, 15703, 102],
]


def _served(seq: list[int]) -> tuple[np.ndarray, ...]:
    import onnxruntime as ort

    sess = ort.InferenceSession(
        str(TEACHER / "emotion.int8.onnx"),
        providers=["CPUExecutionProvider"],
        disabled_optimizers=["SkipLayerNormFusion"],
    )
    ids = np.asarray([seq], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    return tuple(sess.run(["emotion_logits", "pad", "features"], feed))


def test_targets_are_the_served_outputs_on_the_training_scale() -> None:
    shift = np.linspace(0.0, 2.3, 28)
    t = teacher_targets(TEACHER, SEQS, shift, threads=1, batch_size=1)
    assert t.logits.shape == (3, 28) and t.pad.shape == (3, 3) and t.pooled.shape == (3, 384)
    assert t.model_version.startswith("emotion-minilm-l6-")
    for i, seq in enumerate(SEQS):
        lo, pad, feats = _served(seq)
        np.testing.assert_allclose(t.logits[i], lo[0] + shift, atol=1e-5)
        np.testing.assert_allclose(t.pad[i], pad[0], atol=1e-6)
        np.testing.assert_allclose(t.pooled[i], feats[0, -384:], atol=1e-5)  # the pooled last layer
    assert not np.allclose(t.pooled[0], t.pooled[1])


def test_batched_rows_stay_with_their_texts() -> None:
    """Batches are formed by length, so the same texts in another order give the same rows."""
    a = teacher_targets(TEACHER, SEQS, np.zeros(28), threads=1, batch_size=2)
    b = teacher_targets(TEACHER, SEQS[::-1], np.zeros(28), threads=1, batch_size=2)
    for x, y in ((a.logits, b.logits), (a.pad, b.pad), (a.pooled, b.pooled)):
        np.testing.assert_allclose(x, y[::-1], atol=1e-6)
    single = teacher_targets(TEACHER, SEQS, np.zeros(28), threads=1, batch_size=1)
    # int8 activations are quantized per batch: close to the single runs, not equal
    assert float(np.abs(a.pad - single.pad).max()) < 0.05


def test_a_model_without_features_is_refused(tmp_path) -> None:
    import json
    import shutil

    onnx = pytest.importorskip("onnx")  # the train extra (as the distillation itself); make setup has no onnx
    model = onnx.load(str(TEACHER / "emotion.int8.onnx"))
    keep = [o for o in model.graph.output if o.name != "features"]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    onnx.save(model, str(tmp_path / "emotion.int8.onnx"))
    shutil.copy(TEACHER / "model.json", tmp_path / "model.json")
    assert json.loads((tmp_path / "model.json").read_text())["onnx_file"] == "emotion.int8.onnx"
    with pytest.raises(ValueError, match="features"):
        teacher_targets(tmp_path, SEQS, np.zeros(28))


@pytest.mark.slow
def test_loss_terms_vanish_only_at_the_teacher() -> None:
    torch = pytest.importorskip("torch")
    from services.emotion.training.distill import distill_loss_terms

    g = torch.Generator().manual_seed(0)
    t_lo, t_pad, t_emb = (
        torch.randn(4, 28, generator=g),
        torch.rand(4, 3, generator=g),
        torch.randn(4, 384, generator=g),
    )
    var = torch.full((3,), 0.01)
    s_lo = t_lo.clone().requires_grad_(True)
    emo, pad, emb = distill_loss_terms(s_lo, t_pad, 2.0 * t_emb, t_lo, t_pad, t_emb, var, temperature=2.0)
    assert float(pad) == 0.0 and abs(float(emb)) < 1e-6  # the cosine ignores the scale
    emo.backward()
    assert s_lo.grad is not None and float(s_lo.grad.abs().max()) < 1e-6  # the soft BCE's minimum
    emo2, pad2, emb2 = distill_loss_terms(t_lo + 1.0, t_pad * 0.5, -t_emb, t_lo, t_pad, t_emb, var, temperature=2.0)
    assert float(emo2) > float(emo) and float(pad2) > 0.0 and abs(float(emb2) - 2.0) < 1e-5
