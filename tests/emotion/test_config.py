"""EmotionSettings: which parameter file goes with which model folder."""

from __future__ import annotations

from pathlib import Path

from masterx_runtime.config import load
from services.emotion.config import DEFAULT_MODEL_DIR, DEFAULT_PARAMS_PATH, EmotionSettings


def test_shipped_model_uses_the_shipped_parameters() -> None:
    cfg = load(EmotionSettings, {})
    assert cfg.model_path == DEFAULT_MODEL_DIR
    assert cfg.params_file == DEFAULT_PARAMS_PATH


def test_a_model_folder_with_its_own_parameters_uses_them(tmp_path: Path) -> None:
    (tmp_path / DEFAULT_PARAMS_PATH.name).write_text("{}", encoding="utf-8")
    cfg = load(EmotionSettings, {"EMOTION_MODEL_DIR": str(tmp_path)})
    assert cfg.params_file == tmp_path / DEFAULT_PARAMS_PATH.name


def test_a_model_folder_without_parameters_falls_back_to_the_shipped_ones(tmp_path: Path) -> None:
    cfg = load(EmotionSettings, {"EMOTION_MODEL_DIR": str(tmp_path)})
    assert cfg.params_file == DEFAULT_PARAMS_PATH


def test_an_explicit_parameter_file_wins(tmp_path: Path) -> None:
    (tmp_path / DEFAULT_PARAMS_PATH.name).write_text("{}", encoding="utf-8")
    other = tmp_path / "other.json"
    cfg = load(EmotionSettings, {"EMOTION_MODEL_DIR": str(tmp_path), "EMOTION_PARAMS_PATH": str(other)})
    assert cfg.params_file == other
