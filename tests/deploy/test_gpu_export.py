"""services/emotion/training/export_gpu.py on a small BERT-shaped graph (real onnx + onnxruntime).

The real model's fp32 export comes from training (torch, data): too heavy for the fast suite, so a
graph with the same inputs and outputs (int64 token ids and mask in; float32 logits and PAD out)
stands in. Checks the fp16 file keeps the I/O types, is smaller, and agrees with fp32.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from services.emotion.training import export_gpu  # noqa: E402


def tiny_model(path: Path, vocab: int = 20000, dim: int = 32, labels: int = 28) -> None:
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (vocab, dim)).astype(np.float32), "emb"),
        numpy_helper.from_array(rng.normal(0, 0.5, (dim, dim)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.5, (dim, labels)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.5, (dim, 3)).astype(np.float32), "w3"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["e"]),
        helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mf", "axis2"], ["m3"]),
        helper.make_node("Mul", ["e", "m3"], ["em"]),
        helper.make_node("MatMul", ["em", "w1"], ["h"]),
        helper.make_node("Tanh", ["h"], ["ht"]),
        helper.make_node("ReduceSum", ["ht", "axis1"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w2"], ["emotion_logits"]),
        helper.make_node("MatMul", ["pooled", "w3"], ["p"]),
        helper.make_node("Sigmoid", ["p"], ["pad"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [
            helper.make_tensor_value_info("emotion_logits", TensorProto.FLOAT, ["batch", labels]),
            helper.make_tensor_value_info("pad", TensorProto.FLOAT, ["batch", 3]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_fp16_export_keeps_io_types_and_agrees_with_fp32(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fp32 = tmp_path / "emotion.fp32.onnx"
    out = tmp_path / "emotion.fp16.onnx"
    tiny_model(fp32)
    assert export_gpu.main(["--fp32", str(fp32), "--out", str(out), "--check-batch", "16", "--seq", "12"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["primary_agreement"] >= 0.95
    assert out.stat().st_size < 0.6 * fp32.stat().st_size
    model = onnx.load(str(out))
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.INT64] * 2
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.FLOAT] * 2
    assert any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)


def test_missing_fp32_export_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export_gpu.main(["--fp32", str(tmp_path / "nope.onnx"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "no fp32 export" in capsys.readouterr().err
