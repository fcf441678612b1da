"""The serving path stays light (no torch) and a bad configuration fails readably at start."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from masterx_runtime.config import ConfigError, load
from services.emotion.app import EmotionApp
from services.emotion.config import DEFAULT_PARAMS_PATH, EmotionSettings

ROOT = Path(__file__).resolve().parents[2]


def test_serving_path_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "import services.emotion.app, services.emotion.engine, services.emotion.refit\n"
        "heavy = [m for m in ('torch', 'transformers', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_missing_model_dir_is_a_config_error(tmp_path: Path) -> None:
    cfg = dataclasses.replace(load(EmotionSettings, environ={}), model_dir=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"no model\.json"):
        EmotionApp(cfg)


def test_bad_parameter_file_is_a_config_error(model_dir: Path, tmp_path: Path) -> None:
    doc = json.loads(DEFAULT_PARAMS_PATH.read_text())
    doc["intervention"]["weights"]["ctx:mood"] = 1.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    cfg = dataclasses.replace(load(EmotionSettings, environ={}), model_dir=str(model_dir), params_path=str(bad))
    with pytest.raises(ConfigError, match="unknown feature 'ctx:mood'"):
        EmotionApp(cfg)


def test_inconsistent_trajectory_thresholds_are_rejected(model_dir: Path) -> None:
    env = {"EMOTION_MODEL_DIR": str(model_dir), "EMOTION_TRAJECTORY_NEGATIVE_PLEASURE": "0.7"}
    with pytest.raises(ConfigError, match="NEGATIVE_PLEASURE must be below"):
        EmotionApp(load(EmotionSettings, environ=env))


def test_process_exits_2_with_a_readable_message(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "EMOTION_MODEL_DIR": str(tmp_path),
        "EMOTION_BATCH_MAX_SIZE": "0",
        "MASTERX_METRICS_PORT": "-1",
    }
    res = subprocess.run(
        [sys.executable, "-m", "services.emotion"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2
    assert "EMOTION_BATCH_MAX_SIZE='0': must be >= 1" in res.stderr
