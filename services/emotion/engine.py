"""Serving-side inference for the MasterX emotion model (onnxruntime + tokenizers + numpy only).

The model directory (``services/emotion/model``) holds ``emotion.int8.onnx``, ``tokenizer.json``
and ``model.json`` (labels, calibrated thresholds, temperature, Ekman groups, PAD scale, tensor
names). ``EmotionModel.predict`` runs one batch padded to its longest text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from .heads import CATEGORIES, FEATURES_OUTPUT, Heads

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "model"
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


@dataclass(frozen=True)
class Prediction:
    """Emotion analysis of one text.

    probabilities: calibrated probability of each label, in ``EmotionModel.labels`` order (28).
    active_labels: labels whose probability reaches their calibrated threshold (may be empty),
        sorted by probability, highest first.
    primary_label: the label with the highest probability; confidence: its probability.
    ekman: Ekman group of the primary label (anger, disgust, fear, joy, sadness, surprise, neutral).
    pad: (pleasure, arousal, dominance) in [0, 1]; EmoBank V/A/D 1-5 scale is ``1 + 4 * value``.
    truncated: the text was longer than ``max_seq_length`` tokens and was cut.
    ekman_probabilities: probability of each Ekman group (``EmotionModel.ekman_groups`` order) by
        the calibrated group rule in ``model.json``; empty if the model has no group calibration.
    ekman_active: Ekman groups whose probability reaches their calibrated threshold, highest
        first (may be empty).
    category_probabilities: probability of each router task category (``heads.CATEGORIES``
        order), summing to 1; empty when the model has no heads.
    followup_probability: probability that the message has no topic of its own ("why?", "ok,
        next one"): it continues the conversation's topic.
    urgency_probability: calibrated P(urgency >= 4 of 7): an instructor should step in (the
        urgency head, trained on coded forum posts); None when the model has no heads.
    urgency_score: expected urgency on the coders' 1-7 scale (0 when the model has no heads).
    """

    probabilities: tuple[float, ...]
    active_labels: tuple[str, ...]
    primary_label: str
    confidence: float
    ekman: str
    pad: tuple[float, float, float]
    truncated: bool
    ekman_probabilities: tuple[float, ...] = field(default=())
    ekman_active: tuple[str, ...] = field(default=())
    category_probabilities: tuple[float, ...] = field(default=())
    followup_probability: float = 0.0
    urgency_probability: float | None = None
    urgency_score: float = 0.0


def choose_providers(prefer_gpu: bool = True, enable_tensorrt: bool = False) -> list[str]:
    """Execution providers to request: GPU ones present in this onnxruntime build, then CPU."""
    available = ort.get_available_providers()
    wanted: list[str] = []
    if prefer_gpu:
        for p in GPU_PROVIDERS:
            if p == "TensorrtExecutionProvider" and not enable_tensorrt:
                continue
            if p in available:
                wanted.append(p)
    wanted.append("CPUExecutionProvider")
    return wanted


class EmotionModel:
    """Loaded emotion model; thread-safe for concurrent ``predict`` calls (onnxruntime is)."""

    def __init__(
        self,
        model_dir: str | Path = DEFAULT_MODEL_DIR,
        intra_op_threads: int = 1,
        providers: Sequence[str] | None = None,
        prefer_gpu: bool = True,
        enable_tensorrt: bool = False,
        model_file: str | None = None,
        batch_invariant: bool | None = None,
        intra_op_spinning: bool = False,
    ) -> None:
        """Load ``model.json``, the tokenizer and the ONNX session.

        intra_op_threads: onnxruntime intra-op threads (0 = onnxruntime default, all cores).
        intra_op_spinning: let idle intra-op threads spin-wait for the next operator (onnxruntime's
            default). Off here: with small per-message runs the spinning threads burned about as
            much CPU as the model itself (measured 9.1 vs 4.4 ms CPU per message with 2 threads).
        providers: explicit execution providers; default CUDA (and TensorRT if
            ``enable_tensorrt``) when available in this onnxruntime build, else CPU.
        model_file: ONNX file inside ``model_dir``; default from ``model.json``.
        batch_invariant: run every text on its own instead of one padded batch. The shipped
            int8 model quantizes activations dynamically with one scale per tensor, so in a
            padded batch a text's probabilities depend slightly on its neighbours (GoEmotions
            dev, batches of 32: mean |dprob| 0.003, primary label unchanged for ~94% of texts).
            Per-text runs give identical results however requests are grouped, for up to a
            third more CPU per text than batches of 4-16 (MODEL_CARD.md). Default (None): on for dynamically quantized models
            (``model.json`` ``quantization`` starting with ``dynamic``), off otherwise.
        """
        self.model_dir = Path(model_dir)
        meta = json.loads((self.model_dir / "model.json").read_text(encoding="utf-8"))
        self.meta: dict = meta
        self.model_version: str = meta["model_version"]
        self.labels: list[str] = list(meta["labels"])
        self.thresholds = np.asarray(meta["thresholds"], dtype=np.float32)
        self._thresholds: list[float] = self.thresholds.tolist()  # float32 values as Python floats
        self.temperature = float(meta["temperature"])
        self.ekman_of_label: list[str] = list(meta["ekman_of_label"])
        self.max_seq_length = int(meta["max_seq_length"])
        self._init_ekman_rule(meta)
        self.pad_id = int(meta.get("pad_token_id", 0))
        if batch_invariant is None:
            batch_invariant = str(meta.get("quantization", "")).startswith("dynamic")
        self.batch_invariant: bool = batch_invariant
        names = meta["tensors"]
        self._in_ids, self._in_mask = names["input_ids"], names["attention_mask"]
        self._out_logits, self._out_pad = names["emotion_logits"], names["pad"]
        self._init_heads(meta)

        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(intra_op_threads)
        so.inter_op_num_threads = 1
        spin = "1" if intra_op_spinning else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = str(self.model_dir / (model_file or meta["onnx_file"]))
        requested = list(providers) if providers else choose_providers(prefer_gpu, enable_tensorrt)
        # Graph fusions model.json turns off (see MODEL_CARD.md, "Serving"): onnxruntime's fused
        # SkipLayerNormalization is slower on one CPU thread than the Add + LayerNormalization it replaces.
        self.disabled_optimizers: list[str] = [str(o) for o in meta.get("ort_disabled_optimizers", [])]
        kw: dict = {"disabled_optimizers": self.disabled_optimizers} if self.disabled_optimizers else {}
        try:
            self.session = ort.InferenceSession(path, sess_options=so, providers=requested, **kw)
        except Exception:  # a GPU build without a usable GPU: fall back to CPU
            if requested == ["CPUExecutionProvider"]:
                raise
            log.warning("could not start %s, falling back to CPU", requested, exc_info=True)
            self.session = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"], **kw)
        self.providers: list[str] = list(self.session.get_providers())
        log.info("emotion model %s loaded with providers %s", self.model_version, self.providers)

    def _init_heads(self, meta: dict) -> None:
        """Category and urgency heads named in ``model.json`` (``heads``); none for older models.

        Raises ``heads.HeadsMismatch`` when the heads file does not fit this code's label set or
        the model's feature width, so a service with a wrong model refuses to start.
        """
        spec = meta.get("heads")
        self.heads: Heads | None = Heads(self.model_dir / spec["file"], spec) if spec else None
        self.heads_version: str = self.heads.version if self.heads else ""
        self.categories: list[str] = list(CATEGORIES) if self.heads else []
        self._outputs = [self._out_logits, self._out_pad] + ([spec["output"]] if spec else [])

    def _init_ekman_rule(self, meta: dict) -> None:
        """Ekman group rule from ``model.json`` (``ekman_group_rule``; older files: max rule)."""
        self.ekman_groups: list[str] = list(meta.get("ekman_groups", []))
        thr = meta.get("ekman_thresholds")
        self.ekman_thresholds = np.asarray(thr if thr is not None else [], dtype=np.float64)
        rule = meta.get("ekman_group_rule") or {"name": "max", "params": None}
        self.ekman_rule: str = str(rule["name"])
        if self.ekman_rule not in ("max", "noisy_or", "sum_clip", "logistic"):
            raise ValueError(f"unknown ekman_group_rule {self.ekman_rule!r}")
        self._ekman_members = np.zeros((len(self.labels), len(self.ekman_groups)), dtype=bool)
        for i, g in enumerate(self.ekman_of_label):
            if g in self.ekman_groups:
                self._ekman_members[i, self.ekman_groups.index(g)] = True
        self._ekman_w = self._ekman_b = None
        if self.ekman_rule == "logistic":
            params = rule["params"]
            self._ekman_w = np.asarray(params["weights"], dtype=np.float64)
            self._ekman_b = np.asarray(params["bias"], dtype=np.float64)
        if len(self.ekman_thresholds) != len(self.ekman_groups):
            self.ekman_groups = []  # no group calibration: predictions carry no group fields
        # Per-text fast path (plain Python floats, same IEEE operations in the same order as the
        # numpy rule): the member labels of each group, and the thresholds as Python floats.
        self._ekman_index = [np.flatnonzero(self._ekman_members[:, k]).tolist() for k in range(len(self.ekman_groups))]
        self._ekman_thr: list[float] = self.ekman_thresholds.tolist()

    def ekman_probabilities(self, logits: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """[B, groups] Ekman group probabilities by the calibrated rule (same as the pipeline)."""
        gm = self._ekman_members
        if self.ekman_rule == "logistic":
            assert self._ekman_w is not None and self._ekman_b is not None
            z = np.clip(logits.astype(np.float64) / self.temperature @ self._ekman_w.T + self._ekman_b, -60.0, 60.0)
            return 1.0 / (1.0 + np.exp(-z))
        p = probs.astype(np.float64)
        cols = [p[:, gm[:, k]] for k in range(gm.shape[1])]
        if self.ekman_rule == "noisy_or":
            return np.stack([1.0 - np.prod(1.0 - c, axis=1) for c in cols], axis=1)
        if self.ekman_rule == "sum_clip":
            return np.stack([np.minimum(c.sum(axis=1), 1.0) for c in cols], axis=1)
        return np.stack([c.max(axis=1, initial=0.0) for c in cols], axis=1)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[bool]]:
        """Tokenize and pad to the longest text: (input_ids, attention_mask, truncated flags)."""
        encs = self.tokenizer.encode_batch(list(texts))
        n = max(len(e.ids) for e in encs)
        ids = np.full((len(encs), n), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encs), n), dtype=np.int64)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        return ids, mask, [len(e.overflowing) > 0 for e in encs]

    def infer_all(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[bool]]:
        """One batch: emotion logits, PAD, the heads' pooled features (None without heads), truncated."""
        ids, mask, truncated = self.encode(texts)
        outs = self.session.run(self._outputs, {self._in_ids: ids, self._in_mask: mask})
        features = np.asarray(outs[2], dtype=np.float32) if len(outs) > 2 else None
        return np.asarray(outs[0], dtype=np.float32), np.asarray(outs[1], dtype=np.float32), features, truncated

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """The heads' raw input features [B, width] (per text when batch_invariant, as served).

        Needs only the ONNX ``features`` output, not trained heads: the heads are trained on it.
        """
        name = (self.meta.get("heads") or {}).get("output", FEATURES_OUTPUT)
        if name not in {o.name for o in self.session.get_outputs()}:
            raise ValueError(
                f"model {self.model_version} has no {name!r} output (python -m services.emotion.training.features)"
            )
        if self.batch_invariant and len(texts) > 1:
            return np.concatenate([self.features([t]) for t in texts])
        ids, mask, _truncated = self.encode(texts)
        (features,) = self.session.run([name], {self._in_ids: ids, self._in_mask: mask})
        return np.asarray(features, dtype=np.float32)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities: sigmoid(logits / temperature)."""
        # np.minimum(np.maximum()) is np.clip (NaN included) without its Python wrapper
        z = np.minimum(np.maximum(logits / self.temperature, -60.0), 60.0)
        return 1.0 / (1.0 + np.exp(-z))

    @property
    def batch_mode(self) -> str:
        """``per_text`` or ``padded``: how a micro-batch runs (reported in logs and health)."""
        return "per_text" if self.batch_invariant else "padded"

    def predict(self, texts: list[str]) -> list[Prediction]:
        """Analyse texts: one padded onnxruntime run, or one run per text if batch_invariant."""
        if not texts:
            return []
        if len(texts) == 1 or self.batch_invariant:
            return [self._predict_one(t) for t in texts]
        logits, pad, features, truncated = self.infer_all(texts)
        heads = self.heads(features) if self.heads is not None and features is not None else None
        probs = self.probabilities(logits)
        pad = np.minimum(np.maximum(pad, 0.0), 1.0)
        gp = self.ekman_probabilities(logits, probs) if self.ekman_groups else np.zeros((len(texts), 0))
        per_head: list[tuple[list[float], float, float, float]] | list[None] = [None] * len(texts)
        if heads is not None:
            h = (heads.category, heads.followup, heads.urgency_probability, heads.urgency_score)
            per_head = list(zip(*(a.tolist() for a in h), strict=True))
        tops = probs.argmax(axis=1).tolist()
        return [
            self._prediction(p, top, q, bool(t), g, hd)
            for p, top, q, t, g, hd in zip(
                probs.tolist(), tops, pad.tolist(), truncated, gp.tolist(), per_head, strict=True
            )
        ]

    def _predict_one(self, text: str) -> Prediction:
        """One text, one onnxruntime run: ``predict([text])`` without the batch bookkeeping.

        Same operations as the padded path on a batch of one (same array shapes for every numpy
        and BLAS call whose result could depend on them), so the results are bit-identical.
        """
        enc = self.tokenizer.encode(text)
        ids = np.array([enc.ids], dtype=np.int64)
        outs = self.session.run(self._outputs, {self._in_ids: ids, self._in_mask: np.ones_like(ids)})
        logits = np.asarray(outs[0], dtype=np.float32)
        probs = self.probabilities(logits)[0]
        pl: list[float] = probs.tolist()
        if not self.ekman_groups:
            gl: list[float] = []
        elif self.ekman_rule == "noisy_or":
            gl = self._noisy_or(pl)
        else:
            gl = self.ekman_probabilities(logits, probs[None, :])[0].tolist()
        heads = None
        if self.heads is not None and len(outs) > 2:
            h = self.heads(np.asarray(outs[2], dtype=np.float32))
            heads = (
                h.category[0].tolist(),
                float(h.followup[0]),
                float(h.urgency_probability[0]),
                float(h.urgency_score[0]),
            )
        pad = np.minimum(np.maximum(np.asarray(outs[1], dtype=np.float32)[0], 0.0), 1.0).tolist()
        return self._prediction(pl, int(probs.argmax()), pad, len(enc.overflowing) > 0, gl, heads)

    def _noisy_or(self, probs: list[float]) -> list[float]:
        """``ekman_probabilities`` of one text under the noisy-or rule, in Python floats.

        The numpy rule computes ``1 - prod(1 - p)`` per group in float64 with a sequential
        product, which is exactly this loop.
        """
        out = []
        for members in self._ekman_index:
            q = 1.0
            for j in members:
                q *= 1.0 - probs[j]
            out.append(1.0 - q)
        return out

    def _prediction(
        self,
        probs: list[float],
        top: int,
        pad: list[float],
        truncated: bool,
        groups: list[float],
        heads: tuple[list[float], float, float, float] | None,
    ) -> Prediction:
        """The Prediction of one text from its outputs as Python floats (argmax ``top``).

        Active labels and groups: those at or over their threshold, by probability, highest
        first, ties in label order (what a stable argsort of -p gives).
        """
        thr = self._thresholds
        active = sorted((j for j in range(len(probs)) if probs[j] >= thr[j]), key=probs.__getitem__, reverse=True)
        gthr = self._ekman_thr
        g_active = sorted((k for k in range(len(groups)) if groups[k] >= gthr[k]), key=groups.__getitem__, reverse=True)
        labels, ekman_groups = self.labels, self.ekman_groups
        p0, p1, p2 = pad
        cats, followup, urgency, score = heads if heads is not None else ((), 0.0, None, 0.0)
        return Prediction(
            probabilities=tuple(probs),
            active_labels=tuple([labels[j] for j in active]),
            primary_label=labels[top],
            confidence=probs[top],
            ekman=self.ekman_of_label[top],
            pad=(p0, p1, p2),
            truncated=truncated,
            ekman_probabilities=tuple(groups),
            ekman_active=tuple([ekman_groups[k] for k in g_active]),
            category_probabilities=tuple(cats),
            followup_probability=followup,
            urgency_probability=urgency,
            urgency_score=score,
        )

    def warmup(self, runs: int = 3) -> None:
        """Run a few predictions so the first real request is not slow."""
        for _ in range(runs):
            self.predict(["warming up the emotion model", "ok"])
