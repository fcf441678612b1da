"""Fixtures for the emotion service: the shipped model, an app wired to the real MongoDB."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from masterx.emotion.v1 import emotion_pb2_grpc
from masterx_runtime.config import load
from masterx_runtime.stores.mongo_store import MongoSettings
from masterx_runtime.testing.grpc_server import serving
from services.emotion.app import EmotionApp
from services.emotion.config import DEFAULT_MODEL_DIR, EmotionSettings
from services.emotion.engine import EmotionModel

MODEL_DIR = Path(os.environ.get("EMOTION_TEST_MODEL_DIR", str(DEFAULT_MODEL_DIR)))


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The shipped model (or EMOTION_TEST_MODEL_DIR); skipped until it has been trained."""
    if not (MODEL_DIR / "model.json").exists():
        pytest.skip(f"no emotion model in {MODEL_DIR} (make train-emotion)")
    return MODEL_DIR


@pytest.fixture(scope="session")
def shared_model(model_dir: Path) -> EmotionModel:
    """One loaded model for the whole session (loading it per test would dominate the runtime)."""
    return EmotionModel(model_dir, intra_op_threads=2, prefer_gpu=False)


@pytest.fixture
def emotion_settings(model_dir: Path) -> Callable[..., EmotionSettings]:
    """Settings from defaults (not the environment) with overrides."""

    def make(**overrides: Any) -> EmotionSettings:
        base = load(EmotionSettings, environ={})
        return dataclasses.replace(base, model_dir=str(model_dir), intra_op_threads=2, warmup_batches=1, **overrides)

    return make


@pytest.fixture
def mongo_settings(mongo_url: str, mongo_db_name: str) -> MongoSettings:
    return dataclasses.replace(load(MongoSettings, environ={}), url=mongo_url, database=mongo_db_name, timeout_ms=2000)


@pytest.fixture
async def emotion(
    emotion_settings: Callable[..., EmotionSettings], mongo_settings: MongoSettings, shared_model: EmotionModel
) -> AsyncIterator[tuple[EmotionApp, emotion_pb2_grpc.EmotionServiceStub, grpc.aio.Channel]]:
    """A running service on a free port: (app, stub, channel)."""
    app = EmotionApp(emotion_settings(), mongo_settings, model=shared_model)
    async with serving(app) as (_, chan):
        yield app, emotion_pb2_grpc.EmotionServiceStub(chan), chan
