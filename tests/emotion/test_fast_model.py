"""The shipped 3-layer model (`services/emotion/model-l3`): it loads, its heads fit it, it behaves.

The default 6-layer model is checked by test_engine, test_heads and the golden-output tests; this
file runs the same behaviour checks on the smaller encoder a deployment can pick with
EMOTION_MODEL_DIR, and checks that the service picks the parameter file fitted on its heads.
"""

from __future__ import annotations

import json

import pytest

from masterx_runtime.config import load
from services.emotion.config import SERVICE_DIR, EmotionSettings
from services.emotion.engine import EmotionModel, Prediction
from services.emotion.heads import CATEGORIES
from services.emotion.learning import load_params
from tests.emotion.test_engine import TEXTS, check_pleasure_ordering, check_sensible_emotions
from tests.emotion.test_heads import check_category, check_urgency_ranking

FAST_DIR = SERVICE_DIR / "model-l3"


@pytest.fixture(scope="module")
def fast() -> EmotionModel:
    return EmotionModel(FAST_DIR, intra_op_threads=1, prefer_gpu=False)


@pytest.fixture(scope="module")
def preds(fast: EmotionModel) -> dict[str, Prediction]:
    return dict(zip(TEXTS, fast.predict(TEXTS), strict=True))


def test_it_is_a_three_layer_encoder_with_heads_on_its_own_layers(fast: EmotionModel) -> None:
    meta = json.loads((FAST_DIR / "model.json").read_text(encoding="utf-8"))
    assert meta["encoder_layers"] == 3
    assert meta["heads"]["layers"] == meta["features_layers"] == [0, 1, 2]
    assert fast.model_version.startswith("emotion-minilm-l3-")
    assert fast.heads is not None and fast.heads_version.startswith("heads-minilm-l3-")


def test_sensible_emotions(preds: dict[str, Prediction]) -> None:
    check_sensible_emotions(preds)


def test_pleasure_ordering(preds: dict[str, Prediction]) -> None:
    check_pleasure_ordering(preds)


@pytest.mark.parametrize("category", CATEGORIES)
def test_clear_prompts_get_their_category(fast: EmotionModel, category: str) -> None:
    check_category(fast, category)


def test_the_service_reads_the_parameters_fitted_on_its_heads(fast: EmotionModel) -> None:
    cfg = load(EmotionSettings, {"EMOTION_MODEL_DIR": str(FAST_DIR)})
    assert cfg.params_file == FAST_DIR / "learning_v2.json"
    params = load_params(cfg.params_file, fast.labels)
    shipped = json.loads((SERVICE_DIR / "params" / "learning_v2.json").read_text(encoding="utf-8"))
    own = json.loads(cfg.params_file.read_text(encoding="utf-8"))
    assert fast.heads_version in own["intervention"]["cut_points_source"]
    assert own["intervention"]["cut_points"] != shipped["intervention"]["cut_points"]
    assert params.version == own["version"]


def test_urgency_ranks_a_stuck_student_above_small_talk(fast: EmotionModel) -> None:
    check_urgency_ranking(fast)
