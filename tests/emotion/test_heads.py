"""Category and urgency heads on the emotion encoder: outputs, behaviour on written examples, and
refusal to load heads that do not fit the code or the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from services.emotion.engine import EmotionModel
from services.emotion.heads import CATEGORIES, HEAD_LABELS, HeadsMismatch, normalize_blocks

# Written for this test (not from any data set the heads were trained or validated on).
CLEAR = {
    "coding": "write a python function that removes duplicate words from a sentence",
    "math": "Ana buys 3 notebooks at $2.40 each and pays with a $10 bill. How much change does she get?",
    "research": "why do volcanoes form along the edges of tectonic plates?",
    "language": "how do you spell the word that means a feeling of nostalgia, is it nostalgia or nostalja?",
    "empathy": "I feel so worthless, I studied all week and still failed and I can't stop crying",
    "general": "good evening! what's a fun board game to play with my little brother?",
}


def test_every_prediction_carries_category_followup_and_urgency(shared_model: EmotionModel) -> None:
    assert shared_model.heads is not None and shared_model.heads_version
    assert shared_model.categories == list(CATEGORIES)
    for p in shared_model.predict([*CLEAR.values(), "why?"]):
        assert len(p.category_probabilities) == 6
        assert sum(p.category_probabilities) == pytest.approx(1.0, abs=1e-6)
        assert all(0.0 <= x <= 1.0 for x in p.category_probabilities)
        assert p.urgency_probability is not None and 0.0 <= p.urgency_probability <= 1.0
        assert 1.0 <= p.urgency_score <= 7.0
        assert 0.0 <= p.followup_probability <= 1.0


@pytest.mark.parametrize("category", CATEGORIES)
def test_clear_prompts_get_their_category(shared_model: EmotionModel, category: str) -> None:
    check_category(shared_model, category)


def check_category(model: EmotionModel, category: str) -> None:
    """The written prompt of ``category`` gets it (also run on the 3-layer model)."""
    (p,) = model.predict([CLEAR[category]])
    got = CATEGORIES[int(np.argmax(p.category_probabilities))]
    assert got == category, dict(zip(CATEGORIES, np.round(p.category_probabilities, 3), strict=True))


def test_followups_are_told_from_new_questions(shared_model: EmotionModel) -> None:
    follow = shared_model.predict(["why?", "ok, and the next one?", "can you say that again more slowly"])
    fresh = shared_model.predict(["explain how vaccines train the immune system", CLEAR["coding"]])
    assert min(p.followup_probability for p in follow) > 0.5
    assert max(p.followup_probability for p in fresh) < 0.2


def test_urgency_ranks_a_stuck_student_above_small_talk(shared_model: EmotionModel) -> None:
    check_urgency_ranking(shared_model)


def check_urgency_ranking(model: EmotionModel) -> None:
    """A stuck student before a deadline is urgent, a thank-you is not (also run on the 3-layer model)."""
    urgent, calm = model.predict(
        [
            "The quiz closes in an hour and the submit button gives an error every time, I have tried "
            "three browsers. Can someone from the staff please help me, I will lose my grade.",
            "Thanks for the lecture this week, the examples about poetry were lovely.",
        ]
    )
    assert urgent.urgency_probability is not None and calm.urgency_probability is not None
    assert urgent.urgency_probability > 0.5 > calm.urgency_probability
    assert urgent.urgency_score > calm.urgency_score + 1.0


def test_heads_do_not_change_the_emotion_outputs(model_dir: Path, tmp_path: Path) -> None:
    """The same ONNX run without the heads gives bit-identical emotion probabilities and PAD."""
    bare = _copy_model(model_dir, tmp_path)
    meta = json.loads((bare / "model.json").read_text())
    del meta["heads"]
    (bare / "model.json").write_text(json.dumps(meta))
    texts = [CLEAR["empathy"], "ok"]
    with_heads = EmotionModel(model_dir, prefer_gpu=False).predict(texts)
    without = EmotionModel(bare, prefer_gpu=False).predict(texts)
    for a, b in zip(with_heads, without, strict=True):
        assert a.probabilities == b.probabilities and a.pad == b.pad
        assert b.category_probabilities == () and b.urgency_probability is None


def test_heads_with_another_label_set_refuse_to_load(model_dir: Path, tmp_path: Path) -> None:
    bad = _copy_model(model_dir, tmp_path)
    data = dict(np.load(bad / "heads.npz"))
    data["category_labels"] = np.array([*HEAD_LABELS[:-1], "smalltalk"])
    np.savez(bad / "heads.npz", **data)
    with pytest.raises(HeadsMismatch, match="do not match the code"):
        EmotionModel(bad, prefer_gpu=False)


def test_heads_for_other_layers_refuse_to_load(model_dir: Path, tmp_path: Path) -> None:
    bad = _copy_model(model_dir, tmp_path)
    meta = json.loads((bad / "model.json").read_text())
    meta["heads"]["layers"] = [4, 5]
    (bad / "model.json").write_text(json.dumps(meta))
    with pytest.raises(HeadsMismatch, match="layers"):
        EmotionModel(bad, prefer_gpu=False)


def test_normalize_blocks_makes_each_block_unit_length() -> None:
    x = np.arange(1, 13, dtype=np.float32).reshape(2, 6)
    n = normalize_blocks(x, 3).reshape(2, 2, 3)
    assert np.allclose(np.linalg.norm(n, axis=2), 1.0)
    with pytest.raises(HeadsMismatch):
        normalize_blocks(x, 4)


def _copy_model(src: Path, dst: Path) -> Path:
    out = dst / "model"
    out.mkdir()
    for f in src.iterdir():
        if f.is_file():
            if f.suffix == ".onnx":
                (out / f.name).symlink_to(f.resolve())
            else:
                shutil.copy(f, out / f.name)
    return out


def test_the_service_refuses_to_start_with_heads_for_another_label_set(model_dir: Path, tmp_path: Path) -> None:
    """``python -m services.emotion`` exits 2 with a message naming the mismatch (no traceback)."""
    import os
    import subprocess
    import sys

    bad = _copy_model(model_dir, tmp_path)
    data = dict(np.load(bad / "heads.npz"))
    data["category_labels"] = np.array([*HEAD_LABELS[:-2], "smalltalk", HEAD_LABELS[-1]])
    np.savez(bad / "heads.npz", **data)
    env = {
        **os.environ,
        "EMOTION_MODEL_DIR": str(bad),
        "MASTERX_GRPC_PORT": "0",
        "MASTERX_METRICS_PORT": "-1",
        "MONGO_URL": "mongodb://127.0.0.1:1",
        "MASTERX_DATA_DIR": str(tmp_path / "data"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "services.emotion"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "do not match the code" in proc.stderr and "Traceback" not in proc.stderr
