"""Distillation targets: a trained emotion model's outputs on the training texts.

A smaller student (``--layers 3``) learns from the labels and from a trained teacher (the shipped
6-layer model): the teacher's emotion probabilities on every training text (EmoBank's texts too,
which have no emotion labels), its PAD on every text (GoEmotions' too, which have no PAD), and its
pooled last-layer embedding (the heads' main input). Only training texts are labelled by the
teacher; the dev and test splits stay unseen by both.

The teacher is read from its served artifact (``emotion.int8.onnx`` + ``model.json``), so a
reader can reproduce the student from the repository alone. Its logits are served with the
emotion-head bias shifted by ``-log(pos_weight)`` (see ``pipeline.export_onnx``); the shift is
added back here so that the targets are on the scale the student's pos-weighted loss trains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..heads import FEATURES_OUTPUT
from .features import HIDDEN
from .tokenize import pad_batch


@dataclass
class TeacherTargets:
    """Per training text: logits on the training scale [N, 28], PAD [N, 3], pooled [N, 384]."""

    logits: np.ndarray
    pad: np.ndarray
    pooled: np.ndarray
    model_version: str


def teacher_targets(
    model_dir: Path, seqs: list[list[int]], logit_shift: np.ndarray, threads: int = 2, batch_size: int = 64
) -> TeacherTargets:
    """Run the teacher's ONNX model over token sequences (batches sorted by length).

    ``logit_shift`` (log pos_weight of the student's loss) is added to the served logits.
    The pooled embedding is the last block of the ``features`` output (the last layer's mean).
    """
    import onnxruntime as ort

    meta = json.loads((model_dir / "model.json").read_text())
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(
        str(model_dir / meta["onnx_file"]),
        sess_options=so,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=meta.get("ort_disabled_optimizers", []),
    )
    outputs = {o.name for o in sess.get_outputs()}
    if FEATURES_OUTPUT not in outputs:
        raise ValueError(f"teacher {model_dir} has no {FEATURES_OUTPUT!r} output")
    n = len(seqs)
    logits = np.zeros((n, 28), dtype=np.float32)
    pad = np.zeros((n, 3), dtype=np.float32)
    pooled = np.zeros((n, HIDDEN), dtype=np.float32)
    order = np.argsort([len(s) for s in seqs], kind="stable")
    for s in range(0, n, batch_size):
        sel = order[s : s + batch_size]
        ids, mask = pad_batch([seqs[i] for i in sel])
        lo, pa, fe = sess.run(["emotion_logits", "pad", FEATURES_OUTPUT], {"input_ids": ids, "attention_mask": mask})
        logits[sel] = lo
        pad[sel] = pa
        pooled[sel] = fe[:, -HIDDEN:]
    return TeacherTargets(logits + logit_shift.astype(np.float32), pad, pooled, str(meta.get("model_version", "")))


def distill_loss_terms(
    student_logits,  # torch tensors; typed loosely so this module imports without torch
    student_pad,
    student_pooled,
    teacher_logits,
    teacher_pad,
    teacher_pooled,
    pad_var,
    temperature: float,
) -> tuple:
    """(emotion, PAD, embedding) distillation losses of one batch, each a scalar tensor.

    Emotion: BCE between the student's and the teacher's per-label probabilities at
    ``temperature`` (times T^2, so the gradient scale does not depend on T). PAD: the
    variance-normalised MSE of the labelled loss against the teacher's PAD. Embedding:
    1 - cosine similarity of the pooled last layers.
    """
    import torch.nn.functional as F

    t = float(temperature)
    emo = F.binary_cross_entropy_with_logits(student_logits / t, (teacher_logits / t).sigmoid()) * (t * t)
    pad = (((student_pad - teacher_pad) ** 2) / pad_var).mean()
    emb = (1.0 - F.cosine_similarity(student_pooled, teacher_pooled, dim=-1)).mean()
    return emo, pad, emb
