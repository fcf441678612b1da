"""Tokenization shared by training and evaluation (HF ``tokenizers`` fast tokenizer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


def load_tokenizer(path: Path, max_len: int) -> Tokenizer:
    """Tokenizer with truncation to ``max_len`` and no padding (we pad per batch)."""
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    return tok


def encode(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids (with [CLS]/[SEP]) of every text, truncated."""
    return [e.ids for e in tok.encode_batch(texts)]


def token_lengths(path: Path, texts: list[str]) -> np.ndarray:
    """Untruncated token counts (for the length distribution in the card)."""
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    return np.array([len(e.ids) for e in tok.encode_batch(texts)])


def pad_batch(seqs: list[list[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pad to the longest sequence: (input_ids, attention_mask), int64."""
    n = max(len(s) for s in seqs)
    ids = np.full((len(seqs), n), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), n), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask
