"""Fault-injection suite: deselected by default; run with ``pytest -m faults tests/faults`` (CI does)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from masterx_runtime.testing.fake_llm import FakeLLMServer
from tests.gateway.system import emotion_model_dir


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _needs_servers_and_model() -> None:
    from masterx_runtime.testing import servers

    if servers.redis_binary() is None or servers.mongo_binary() is None:
        pytest.fail("the fault suite needs redis-server and a MongoDB-wire server", pytrace=False)
    if emotion_model_dir() is None:
        pytest.skip("emotion model not trained (make train-emotion)")
