"""masterx_runtime.gctuning: the collector's threshold and start-up freeze."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from masterx_runtime import gctuning
from masterx_runtime.config import load
from masterx_runtime.settings import ServerSettings


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_sets_the_young_threshold_keeps_the_older_ones_and_freezes() -> None:
    gc.set_threshold(700, 11, 12)
    gc.unfreeze()
    assert gctuning.apply(10_000, freeze=True) == (10_000, 11, 12)
    assert gc.get_threshold() == (10_000, 11, 12)
    assert gc.get_freeze_count() > 0  # this test process's modules, at least


def test_zero_keeps_pythons_threshold_and_no_freeze_freezes_nothing() -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    assert gctuning.apply(0, freeze=False) == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_settings_default_to_the_measured_values_and_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load(ServerSettings)
    assert (cfg.gc_threshold, cfg.gc_freeze) == (10_000, True)
    monkeypatch.setenv("MASTERX_GC_THRESHOLD", "0")
    monkeypatch.setenv("MASTERX_GC_FREEZE", "0")
    cfg = load(ServerSettings)
    assert (cfg.gc_threshold, cfg.gc_freeze) == (0, False)
