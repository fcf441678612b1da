"""Behaviour of the shipped emotion model through the serving engine (no torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from services.emotion.engine import DEFAULT_MODEL_DIR, EmotionModel, Prediction

MODEL_DIR = Path(os.environ.get("EMOTION_TEST_MODEL_DIR", DEFAULT_MODEL_DIR))

JOY = "I just got accepted into my dream university, I am so happy and excited right now!"
THANKS = "Thank you so much for your help, I really appreciate it, you are amazing."
ANGER = "I am absolutely furious, this is outrageous and I hate how they lied to us."
GRIEF = "My grandmother passed away last night and I can't stop crying. I miss her so much."
FEAR = "I'm really scared and nervous about the surgery tomorrow, what if something goes wrong?"
CONFUSED = "I don't understand this at all, what does this even mean? I'm so confused."
NEUTRAL = "The meeting is scheduled for 3pm on Tuesday in room 204."
TEXTS = [JOY, THANKS, ANGER, GRIEF, FEAR, CONFUSED, NEUTRAL]


@pytest.fixture(scope="module")
def model() -> EmotionModel:
    return EmotionModel(MODEL_DIR, intra_op_threads=1)


@pytest.fixture(scope="module")
def preds(model: EmotionModel) -> dict[str, Prediction]:
    return dict(zip(TEXTS, model.predict(TEXTS), strict=True))


def test_model_json_consistent(model: EmotionModel) -> None:
    meta = json.loads((MODEL_DIR / "model.json").read_text())
    assert len(meta["labels"]) == 28 and meta["labels"][27] == "neutral"
    assert len(meta["thresholds"]) == 28 and len(meta["ekman_of_label"]) == 28
    assert all(0.0 < t < 1.0 for t in meta["thresholds"])
    assert meta["temperature"] > 0
    assert meta["max_seq_length"] == model.max_seq_length
    assert set(meta["ekman_of_label"]) <= {"anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"}
    assert (MODEL_DIR / meta["onnx_file"]).name == "emotion.int8.onnx"


def test_providers_reported(model: EmotionModel) -> None:
    import onnxruntime as ort

    assert model.providers
    assert set(model.providers) <= set(ort.get_available_providers())
    assert model.providers[-1] == "CPUExecutionProvider"


def test_output_shapes_and_ranges(model: EmotionModel, preds: dict[str, Prediction]) -> None:
    for p in preds.values():
        probs = np.asarray(p.probabilities)
        assert probs.shape == (28,)
        assert np.all((probs >= 0) & (probs <= 1))
        assert len(p.pad) == 3 and all(0.0 <= x <= 1.0 for x in p.pad)
        assert p.primary_label == model.labels[int(np.argmax(probs))]
        assert p.confidence == pytest.approx(float(probs.max()))
        assert p.ekman == model.ekman_of_label[model.labels.index(p.primary_label)]
        for lab in p.active_labels:
            j = model.labels.index(lab)
            assert probs[j] >= model.thresholds[j]
        assert not p.truncated


def test_sensible_emotions(preds: dict[str, Prediction]) -> None:
    check_sensible_emotions(preds)


def check_sensible_emotions(preds: dict[str, Prediction]) -> None:
    """The clear messages above get their emotion (also run on the 3-layer model)."""
    assert preds[JOY].ekman == "joy"
    assert preds[THANKS].primary_label == "gratitude"
    assert preds[ANGER].ekman == "anger"
    assert preds[GRIEF].ekman == "sadness"
    assert preds[FEAR].ekman == "fear"
    assert preds[CONFUSED].primary_label == "confusion"
    assert preds[NEUTRAL].primary_label == "neutral"
    assert "gratitude" in preds[THANKS].active_labels


def test_pleasure_ordering(preds: dict[str, Prediction]) -> None:
    check_pleasure_ordering(preds)


def check_pleasure_ordering(preds: dict[str, Prediction]) -> None:
    """Happy messages are more pleasant than unhappy ones, anger more aroused than a timetable."""
    pleasure = {t: p.pad[0] for t, p in preds.items()}
    for happy in (JOY, THANKS):
        for unhappy in (ANGER, GRIEF, FEAR):
            assert pleasure[happy] > pleasure[unhappy] + 0.05
    # being furious is more arousing than reading a meeting time
    assert preds[ANGER].pad[1] > preds[NEUTRAL].pad[1]


def test_batch_equals_single(model: EmotionModel, preds: dict[str, Prediction]) -> None:
    assert model.batch_invariant  # default for the dynamically quantized int8 model
    for text in TEXTS:
        assert model.predict([text])[0] == preds[text]


def test_padded_batch_mode_is_close() -> None:
    m = EmotionModel(MODEL_DIR, intra_op_threads=1, batch_invariant=False)
    batched = m.predict(TEXTS)
    for text, b in zip(TEXTS, batched, strict=True):
        single = m.predict([text])[0]
        assert single.ekman == b.ekman
        assert single.truncated == b.truncated
        # dynamic int8 activation scales are per batch tensor: neighbours and padding move
        # probabilities a little (fp32 agrees to ~1e-7)
        np.testing.assert_allclose(single.probabilities, b.probabilities, atol=0.2)
        assert np.abs(np.subtract(single.probabilities, b.probabilities)).mean() < 0.02
        np.testing.assert_allclose(single.pad, b.pad, atol=0.05)


def test_deterministic(model: EmotionModel) -> None:
    a = model.predict(TEXTS)
    b = model.predict(TEXTS)
    assert a == b


def test_truncation_flag(model: EmotionModel) -> None:
    long_text = " ".join(["I really love learning new things with this tutor every day."] * 40)
    out = model.predict([long_text, JOY])
    assert out[0].truncated is True
    assert out[1].truncated is False
    ids, _mask, flags = model.encode([long_text, JOY])
    assert ids.shape == (2, model.max_seq_length)  # padded only to the longest text
    assert flags == [True, False]


def test_pads_to_longest_only(model: EmotionModel) -> None:
    ids, mask, _ = model.encode(["hi", "hello there"])
    assert ids.shape[1] < 10 and ids.dtype == np.int64
    assert mask.sum(1).tolist()[0] < mask.sum(1).tolist()[1]


def test_edge_inputs(model: EmotionModel) -> None:
    assert model.predict([]) == []
    out = model.predict(["", "   ", "😀🎉"])
    assert len(out) == 3 and all(len(p.probabilities) == 28 for p in out)


def test_engine_imports_no_torch() -> None:
    code = (
        "import sys, services.emotion.engine; bad = {'torch', 'transformers'} & set(sys.modules); assert not bad, bad"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_ekman_group_rule(model: EmotionModel, preds: dict[str, Prediction]) -> None:
    """Group probabilities follow model.json's calibrated rule; old fields are unchanged."""
    meta = json.loads((MODEL_DIR / "model.json").read_text())
    rule = meta["ekman_group_rule"]["name"]
    assert model.ekman_rule == rule and model.ekman_groups == meta["ekman_groups"]
    for p in preds.values():
        probs = np.asarray(p.probabilities)
        gp = np.asarray(p.ekman_probabilities)
        assert gp.shape == (7,) and np.all((gp >= 0) & (gp <= 1))
        for k, g in enumerate(model.ekman_groups):
            member = probs[[model.ekman_of_label[j] == g for j in range(28)]]
            if rule == "max":
                assert gp[k] == pytest.approx(member.max())
            elif rule == "noisy_or":
                assert gp[k] == pytest.approx(1 - np.prod(1 - member))
            elif rule == "sum_clip":
                assert gp[k] == pytest.approx(min(1.0, member.sum()))
        active = {g for k, g in enumerate(model.ekman_groups) if gp[k] >= meta["ekman_thresholds"][k]}
        assert set(p.ekman_active) == active
        assert list(p.ekman_active) == sorted(p.ekman_active, key=lambda g: -gp[model.ekman_groups.index(g)])
    assert "joy" in preds[JOY].ekman_active and "anger" in preds[ANGER].ekman_active
    # constructing a Prediction with only the original fields still works
    q = Prediction((0.0,) * 28, (), "neutral", 0.0, "neutral", (0.5, 0.5, 0.5), False)
    assert q.ekman_probabilities == () and q.ekman_active == ()
