"""The category classifier: numpy serving reproduces scikit-learn, and the shipped model is accurate."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.router.classifier import model
from services.router.classifier.model import CATEGORIES, MODEL_PATH, CategoryClassifier, char_wb_ngrams, word_ngrams
from services.router.training.train_classifier import build_pipeline, export, is_held_out, load_dataset


@pytest.fixture(scope="module")
def shipped() -> CategoryClassifier:
    return CategoryClassifier(MODEL_PATH)


def test_ngrams_match_scikit_learn_analyzers() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    text = "Why does  my   C++ code's loop,  x=1, never END? a I"
    word = TfidfVectorizer(analyzer="word", ngram_range=(1, 2)).build_analyzer()
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5)).build_analyzer()
    assert word_ngrams(text, 1, 2) == word(text)
    assert char_wb_ngrams(text, 2, 5) == char(text)


def test_numpy_serving_reproduces_the_sklearn_pipeline(tmp_path: Path) -> None:
    xtr, ytr, xte, _ = load_dataset()
    pipeline = build_pipeline(10.0)
    pipeline.fit(xtr[::4], ytr[::4])  # type: ignore[attr-defined]
    out = tmp_path / "m.npz"
    export(pipeline, out, "test", temperature=1.0)
    served = CategoryClassifier(out)
    expected = pipeline.predict_proba(xte[:40])  # type: ignore[attr-defined]
    classes = list(pipeline.named_steps["clf"].classes_)  # type: ignore[attr-defined]
    for text, row in zip(xte[:40], expected, strict=True):
        p = served.predict(text)
        six = np.array([row[classes.index(c)] for c in CATEGORIES])
        np.testing.assert_allclose(p.probabilities, six / six.sum(), atol=1e-5)
        if "followup" in classes:
            assert p.followup == pytest.approx(row[classes.index("followup")], abs=1e-5)


def test_shipped_model_held_out_accuracy(shipped: CategoryClassifier) -> None:
    _, _, xte, yte = load_dataset()
    correct = sum(shipped.predict_all(t) == y for t, y in zip(xte, yte, strict=True))
    accuracy = correct / len(xte)
    metrics = json.loads(MODEL_PATH.with_name("metrics.json").read_text())
    assert accuracy == pytest.approx(metrics["held_out_accuracy"], abs=1e-9)  # the card describes this model
    assert accuracy >= 0.85


def test_held_out_split_is_stable_and_disjoint() -> None:
    xtr, _, xte, _ = load_dataset()
    assert not set(xtr) & set(xte)
    assert all(is_held_out(t) for t in xte) and not any(is_held_out(t) for t in xtr)
    assert 0.15 < len(xte) / (len(xtr) + len(xte)) < 0.25


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("My Java method throws a NullPointerException when the list is empty", "coding"),
        ("What is the derivative of 3x^4 + 2x?", "math"),
        ("What were the consequences of the fall of Constantinople?", "research"),
        ("How would I say 'I am tired' in Spanish?", "language"),
        ("I'm so overwhelmed and scared I'll fail everything this semester", "empathy"),
        ("Can you suggest a fun weekend activity?", "general"),
    ],
)
def test_unseen_prompts(shipped: CategoryClassifier, text: str, category: str) -> None:
    assert shipped.predict(text).category == category


@pytest.mark.parametrize("text", ["why?", "ok, and then what?", "Can you show me another one like that?", "go on"])
def test_follow_ups_are_recognised(shipped: CategoryClassifier, text: str) -> None:
    assert shipped.predict(text).followup > 0.5


def test_prediction_is_a_distribution_and_long_text_is_cut(shipped: CategoryClassifier) -> None:
    p = shipped.predict("loop " * 10_000)
    assert p.probabilities.shape == (6,) and p.probabilities.sum() == pytest.approx(1.0)
    assert 0 <= p.followup <= 1 and p.confidence == pytest.approx(p.probabilities.max())


def _features_by_scanning(tfidf: Any, text: str) -> tuple[list[int], list[float]]:
    """The TF-IDF features computed from the whole text's n-grams at once (no per-word cache)."""
    analyzer = word_ngrams if tfidf.analyzer == "word" else char_wb_ngrams
    counts: dict[int, int] = {}
    for g in analyzer(text, *tfidf.ngram):
        if (i := tfidf.index.get(g)) is not None:
            counts[i] = counts.get(i, 0) + 1
    weights = [(1.0 + math.log(c)) * tfidf.idf_list[i] if c > 1 else tfidf.idf_list[i] for i, c in counts.items()]
    norm = math.sqrt(sum(w * w for w in weights))
    return list(counts), [w / norm for w in weights]


@pytest.mark.parametrize("cache_size", [65_536, 2])
def test_per_word_cache_gives_the_features_of_a_whole_text_scan(
    shipped: CategoryClassifier, cache_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model, "WORD_CACHE_SIZE", cache_size)
    shipped.char._word_hits.clear()
    texts = [
        "the loop the loop THE Loop, again and again",
        "tabs\tand\u00a0no-break\u2003spaces\n\nand  runs   of them",
        "I'm stuck on derivatives: d/dx (x^2 * sin x) = ?",
        "",
        "ünïcödé wörds und ÜNÏCÖDÉ",
    ]
    for _ in range(2):  # the second pass reads every word from the cache
        for text in texts:
            for tfidf in (shipped.word, shipped.char):
                assert tfidf.features(text) == _features_by_scanning(tfidf, text)
    assert len(shipped.char._word_hits) <= max(cache_size, 1)
