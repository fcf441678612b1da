"""Data loading for GoEmotions (multi-label) and EmoBank (V/A/D regression)."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NUM_LABELS = 28
DEV_SPLIT_SALT = "masterx-emotion-dev-split-v1"
EKMAN_GROUPS = ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]


@dataclass
class GoEmotionsSplit:
    """Texts, multi-hot labels [N, 28] and comment ids of one GoEmotions file."""

    texts: list[str]
    labels: np.ndarray
    ids: list[str]


@dataclass
class EmoBankSplit:
    """Texts and V/A/D targets rescaled to 0-1 ([N, 3])."""

    texts: list[str]
    vad: np.ndarray


@dataclass
class Corpus:
    """Everything the pipeline reads from the data folder."""

    labels: list[str]
    ekman_of_label: list[str]
    ge_train: GoEmotionsSplit
    ge_dev: GoEmotionsSplit
    eb_train: EmoBankSplit
    eb_dev: EmoBankSplit
    meta: dict[str, object] = field(default_factory=dict)


def read_labels(data_dir: Path) -> list[str]:
    """Label names in id order (27 = neutral)."""
    lines = (data_dir / "goemotions" / "labels.txt").read_text(encoding="utf-8").split()
    labels = [x.strip() for x in lines if x.strip()]
    if len(labels) != NUM_LABELS:
        raise ValueError(f"expected {NUM_LABELS} labels, got {len(labels)}")
    return labels


def ekman_of_labels(data_dir: Path, labels: list[str]) -> list[str]:
    """Ekman group of every label (``neutral`` for neutral)."""
    mapping = json.loads((data_dir / "goemotions" / "ekman_mapping.json").read_text("utf-8"))
    group = {"neutral": "neutral"}
    for g, members in mapping.items():
        for m in members:
            group[m] = g
    missing = [lab for lab in labels if lab not in group]
    if missing:
        raise ValueError(f"labels without ekman group: {missing}")
    return [group[lab] for lab in labels]


def read_goemotions(path: Path, limit: int | None = None) -> GoEmotionsSplit:
    """Read a GoEmotions tsv (text, comma-separated label ids, comment id; no header)."""
    texts: list[str] = []
    ids: list[str] = []
    rows: list[list[int]] = []
    with path.open(encoding="utf-8", newline="") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            text, lab, cid = line.split("\t")
            texts.append(text)
            rows.append([int(x) for x in lab.split(",") if x != ""])
            ids.append(cid)
            if limit is not None and len(texts) >= limit:
                break
    y = np.zeros((len(texts), NUM_LABELS), dtype=np.float32)
    for i, r in enumerate(rows):
        y[i, r] = 1.0
    return GoEmotionsSplit(texts, y, ids)


def read_emobank(path: Path, limit: int | None = None) -> tuple[EmoBankSplit, EmoBankSplit]:
    """Read EmoBank train/dev (by its ``split`` column); V/A/D rescaled with (x-1)/4."""
    out: dict[str, tuple[list[str], list[list[float]]]] = {"train": ([], []), "dev": ([], [])}
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            split = row["split"]
            if split not in out:
                continue  # never touch anything but train/dev
            t, v = out[split]
            if limit is not None and len(t) >= limit:
                continue
            t.append(row["text"])
            v.append([(float(row[k]) - 1.0) / 4.0 for k in ("V", "A", "D")])

    def mk(split: str) -> EmoBankSplit:
        t, v = out[split]
        return EmoBankSplit(t, np.asarray(v, dtype=np.float32).reshape(-1, 3))

    return mk("train"), mk("dev")


def dev_half(comment_id: str) -> str:
    """Deterministic half ('A' tune / 'B' report) of a dev comment, by salted hash of its id."""
    h = hashlib.sha256(f"{DEV_SPLIT_SALT}:{comment_id}".encode()).digest()
    return "A" if h[0] % 2 == 0 else "B"


def dev_half_masks(ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (A, B) over the dev rows."""
    a = np.array([dev_half(i) == "A" for i in ids], dtype=bool)
    return a, ~a


def load_corpus(data_dir: Path, limit: int | None = None) -> Corpus:
    """Load GoEmotions train/dev and EmoBank train/dev; ``limit`` caps rows (dry runs)."""
    data_dir = Path(data_dir)
    labels = read_labels(data_dir)
    eb_train, eb_dev = read_emobank(data_dir / "emobank" / "emobank_train_dev.csv", limit)
    return Corpus(
        labels=labels,
        ekman_of_label=ekman_of_labels(data_dir, labels),
        ge_train=read_goemotions(data_dir / "goemotions" / "train.tsv", limit),
        ge_dev=read_goemotions(data_dir / "goemotions" / "dev.tsv", limit),
        eb_train=eb_train,
        eb_dev=eb_dev,
    )
